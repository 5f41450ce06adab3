"""The compiled accelerator through its SoC wrapper (tony_axi_top): AXI4-Lite host, AXI4 memory
with random idle/back-pressure on every channel (tony/sim/benches/axi.py, `tony sim --axi-stall`)."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def cnn_build(tmp_path_factory):
    """digits-cnn compiled for a 4x4 accelerator, 2 golden samples (2 runs: the second one
    checks that a run after DONE needs no reset)."""
    from tony.compiler import compile_model
    from tony.models import build_example

    d = tmp_path_factory.mktemp("digits_cnn")
    build_example("digits-cnn", d / "model")
    compile_model(d / "model" / "model.onnx", d / "build", samples=2)
    return d / "build"


@pytest.mark.parametrize("stall", [0.0, 0.3])
def test_digits_cnn_bit_exact_through_axi(cnn_build, stall):
    from tony.sim.accel import simulate

    rep = simulate(cnn_build, axi_stall=stall, progress=False)
    res = json.loads((cnn_build / "sim" / "bench_result.json").read_text())
    assert rep["toplevel"] == "tony_axi_top"
    assert rep["bit_exact"] and rep["compared"] > 0 and rep["runs"] == 2
    # CYCLES read over AXI-Lite is the core's own count, and what the report says
    assert [r["cycles"] for r in res["runs"]] == [r["core_cycles"] for r in res["runs"]] == rep["cycles_per_run"]
    if stall == 0:
        # the cycle model, with the AXI path's read latency, predicts every run and every issue exactly
        assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    else:
        assert min(rep["cycles_per_run"]) > rep["predicted_cycles"]


def test_sim_axi_stall_flag_heavy_stalls(cnn_build, tony_cli):
    res = tony_cli("sim", cnn_build, "--axi-stall", "0.7", "-q")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((cnn_build / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["axi_stall"] == 0.7 and rep["toplevel"] == "tony_axi_top"
    # the memory the simulated SoC left after each run passes the board-side check
    res = tony_cli("compare", cnn_build, "--hw-dump", cnn_build / "sim" / "hw_memory.bin", "--memory")
    assert res.returncode == 0 and "PASS" in res.stdout, res.stdout + res.stderr


def test_axi_top_robustness(cnn_build):
    """Bus error response, CTRL.ABORT, rst_ni and an illegal instruction in the middle of a run: each
    stops cleanly and the next run is bit-exact (cocotb tests in tony/sim/benches/axi.py), under 30% stalls."""
    from tony.build import Build
    from tony.sim.axi import run_axi

    work = cnn_build / "sim_robust"
    work.mkdir(exist_ok=True)
    env = {"TONY_BUILD": str(cnn_build), "TONY_GOLDEN": str(cnn_build / "golden"),
           "TONY_RESULT": str(work / "unused.json")}
    run_axi(Build.open(cnn_build), work, env, 0.3, testcase=["test_bus_error_stops_cleanly_then_next_run_is_exact",
                                                    "test_abort_mid_run_then_next_run_is_exact",
                                                    "test_reset_mid_run_recovers",
                                                    "test_illegal_instruction_stops_then_next_run_is_exact"])


def test_axi_stall_out_of_range_is_refused(cnn_build, tony_cli):
    res = tony_cli("sim", cnn_build, "--axi-stall", "1.5", "-q")
    assert res.returncode == 1 and "--axi-stall" in res.stderr + res.stdout


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits-mlp", "digits-mobilenet", "dscnn", "resnet8"])
def test_workload_bit_exact_through_axi(tmp_path, example):
    from tony.compiler import compile_model
    from tony.sim.accel import simulate
    from tony.models import build_example

    build_example(example, tmp_path / "model")
    compile_model(tmp_path / "model" / "model.onnx", tmp_path / "build", samples=2, config=_array())
    for stall in (0.0, 0.5):
        rep = simulate(tmp_path / "build", axi_stall=stall, progress=False)
        assert rep["bit_exact"], rep["first_mismatches"]
        if stall == 0:
            assert rep["cycles_match"], (rep["cycles_per_run"], rep["predicted_cycles"])


def _array():
    from tony.accel.program import AccelConfig

    return AccelConfig(8, 8)


def test_a_program_in_pages_bit_exact_through_axi(tmp_path):
    """digits-mlp on a 2x2 array with a 16-word instruction memory (73 instructions, 5 pages): the
    host writes PROG_LEN = the first page (the manifest's program.boot), the pages load themselves;
    bit-exact under back-pressure, cycle-exact without."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.models import build_example
    from tony.sim.accel import simulate

    build_example("digits-mlp", tmp_path / "model")
    m = compile_model(tmp_path / "model" / "model.onnx", tmp_path / "build", samples=1,
                      config=AccelConfig(2, 2, imem_words=16))
    assert m["program"]["boot"] == 16 < m["program"]["length"]
    for stall in (0.0, 0.3):
        rep = simulate(tmp_path / "build", axi_stall=stall, progress=False)
        assert rep["toplevel"] == "tony_axi_top" and rep["bit_exact"] and rep["compared"] > 0, rep["first_mismatches"]
        if stall == 0:
            assert rep["cycles_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
