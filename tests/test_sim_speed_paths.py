"""The fast paths of `tony compile` and `tony sim` against the plain code they replace: the same
hex text, the same memory beats, the same node order, and (on Verilator) the HDL memory bench
against the Python memory model: the same outputs, cycles and issue cycles."""
import json
import random

import numpy as np
import pytest

from tony.accel.layout import beats_to_words, words_to_beats
from tony.golden import hex_text, to_hex_lines


def _hex_plain(arr, bits):
    mask, width = (1 << bits) - 1, (bits + 3) // 4
    return [format(int(v) & mask, f"0{width}x") for v in np.asarray(arr, np.int64).reshape(-1)]


@pytest.mark.parametrize("bits", [1, 4, 5, 8, 9, 16, 24, 32, 33, 64])
def test_hex_text_equals_formatting_each_value(bits, rng):
    half = 1 << (min(bits, 63) - 1)
    a = rng.integers(-half, half, 500) if bits > 1 else rng.integers(-1, 2, 500)
    a = np.concatenate([a, [0, -1, 1, np.iinfo(np.int64).min, np.iinfo(np.int64).max]])
    assert to_hex_lines(a, bits) == _hex_plain(a, bits)
    assert hex_text(a, bits) == "".join(v + "\n" for v in _hex_plain(a, bits))


def _beats_plain(words, lane_bits, mem_bits):
    per = -(-words.shape[1] * lane_bits // mem_bits)
    out = []
    for row in words.tolist():
        wv = sum((int(v) & ((1 << lane_bits) - 1)) << (i * lane_bits) for i, v in enumerate(row))
        out.extend((wv >> (b * mem_bits)) & ((1 << mem_bits) - 1) for b in range(per))
    return out


@pytest.mark.parametrize("lane_bits,mem_bits,cols", [(8, 64, 8), (8, 32, 5), (4, 64, 16), (32, 64, 3), (9, 64, 12),
                                                     (33, 32, 2)])
def test_words_to_beats_packs_like_shifting_each_lane(lane_bits, mem_bits, cols, rng):
    words = rng.integers(-(1 << lane_bits), 1 << lane_bits, (9, cols))
    beats = words_to_beats(words, lane_bits, mem_bits)
    assert beats == _beats_plain(words, lane_bits, mem_bits)
    assert all(type(b) is int for b in beats)
    back = beats_to_words(beats, cols, lane_bits, mem_bits)
    assert np.array_equal(back, words & ((1 << lane_bits) - 1))


@pytest.mark.parametrize("block", [1 << 16, 100])  # all runs in one block; a run or two per block
@pytest.mark.parametrize("batch,n,mem_bits", [(1, 5, 64), (2, 5, 64), (3, 7, 32), (4, 2, 64)])
def test_run_beats_equals_packing_each_run(batch, n, mem_bits, block, rng, monkeypatch):
    """The runs' beats in blocks of runs against packing each run's samples (the last run padded
    with zero samples) one by one, two inputs (a 10-channel image, a dense [N, 3] input)."""
    from tony.accel import layout
    from tony.accel.layout import pack_act, run_beats
    from tony.accel.program import AccelConfig

    monkeypatch.setattr(layout, "_RUN_BLOCK", block)

    cfg = AccelConfig(4, 8, mem_bits=mem_bits)
    a, b = rng.integers(-128, 128, (n, 10, 3, 2)), rng.integers(-128, 128, (n, 3))
    shapes = {"a": (10, 3, 2), "b": (3, 1, 1)}
    runs = -(-n // batch)
    plain = []
    for r in range(runs):
        row = []
        for key, x in (("a", a), ("b", b)):
            x = x[r * batch:(r + 1) * batch]
            x = np.concatenate([x, np.zeros((batch - len(x),) + x.shape[1:], x.dtype)])
            row += words_to_beats(pack_act(x, *shapes[key], cfg.cols, cfg.a_bits), cfg.a_bits, cfg.mem_bits)
        plain.append(row)
    inputs = [{"key": k, "c": shapes[k][0], "h": shapes[k][1], "w": shapes[k][2],
               "beats": len(words_to_beats(pack_act(np.zeros((batch,) + shapes[k]), *shapes[k], cfg.cols, cfg.a_bits),
                                           cfg.a_bits, cfg.mem_bits))} for k in ("a", "b")]
    got = run_beats(cfg, batch, inputs, {"a": a, "b": b})
    assert got.dtype == np.uint64 and got.tolist() == plain


def test_toposort_keeps_networkx_lexicographic_order():
    import networkx as nx
    from onnx import helper

    from tony.errors import ModelError
    from tony.frontend.passes import to_networkx, toposort

    rnd = random.Random(0)
    for _ in range(100):
        n = rnd.randint(1, 20)
        nodes = [helper.make_node("Add", [f"v{j}" for j in rnd.sample(range(n), rnd.randint(0, min(3, n)))] + ["x"],
                                  [f"v{i}"]) for i in range(n)]
        rnd.shuffle(nodes)
        m = helper.make_model(helper.make_graph(nodes, "g", [], []))
        try:
            want = [m.graph.node[i].output[0] for i in nx.lexicographical_topological_sort(to_networkx(m))]
        except nx.NetworkXUnfeasible:
            want = None
        try:
            got = [x.output[0] for x in toposort(m).graph.node]
        except ModelError:
            got = None
        assert got == want


@pytest.mark.sim
def test_hdl_memory_bench_equals_python_memory_bench(tmp_path, digits_mlp):
    """One small build through both benches: every output value, every run's cycles and every
    instruction's issue cycle are the same (and equal to the cycle model's)."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    x = np.load(digits_mlp / "inputs.npy")[:5]
    out = tmp_path / "b"
    compile_model(digits_mlp / "model.onnx", out, config=AccelConfig(2, 3), inputs=x, batch=2)
    reps, hw, res = {}, {}, {}
    for memory in ("python", "hdl"):
        reps[memory] = simulate(out, progress=False, memory=memory)
        hw[memory] = {p.name: np.load(p) for p in sorted((out / "sim").glob("hw_*.npy"))}
        res[memory] = json.loads((out / "sim" / "bench_result.json").read_text())
    py, hd = reps["python"], reps["hdl"]
    assert hd["memory"] == "hdl" and py["memory"] == "python"
    assert py["bit_exact"] and hd["bit_exact"] and hd["compared"] == py["compared"] > 0
    assert hw["hdl"].keys() == hw["python"].keys() and hw["hdl"]
    for k in hw["hdl"]:
        assert np.array_equal(hw["hdl"][k], hw["python"][k]), k
    assert hd["runs"] == py["runs"] == 3
    assert res["hdl"]["runs"] == res["python"]["runs"]  # cycles and issue cycles of every run
    assert hd["cycles_match"] and hd["issue_match"]


@pytest.mark.sim
@pytest.mark.slow
def test_hdl_bench_burst_clock_equals_plain_hdl_clock(tmp_path, digits_mlp):
    """tony_sim_top's clock in bursts of cycles per time step (CLOCK 2, tony sim's) and its plain
    clock (CLOCK 1, the one of --waves) run every run in the same cycles, with the same issue
    cycles and outputs."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    x = np.load(digits_mlp / "inputs.npy")[:5]
    out = tmp_path / "b"
    compile_model(digits_mlp / "model.onnx", out, config=AccelConfig(2, 3), inputs=x, batch=2)
    res, hw = {}, {}
    for clock in (1, 2):
        rep = simulate(out, progress=False, clock=clock)
        assert rep["bit_exact"] and rep["cycles_match"] and rep["issue_match"], clock
        res[clock] = json.loads((out / "sim" / "bench_result.json").read_text())["runs"]
        hw[clock] = {p.name: np.load(p) for p in sorted((out / "sim").glob("hw_*.npy"))}
    assert res[1] == res[2] and len(res[2]) == 3
    assert hw[1].keys() == hw[2].keys() and hw[2]
    for k in hw[2]:
        assert np.array_equal(hw[1][k], hw[2][k]), k


@pytest.mark.sim
@pytest.mark.slow
def test_profile_guided_build_trains_on_its_first_run_then_is_rebuilt(tmp_path, digits_mlp, monkeypatch):
    """TONY_SIM_PGO=1: the first tony sim of a design runs the instrumented binary (its results
    as any run's), leaves the profile and the optimized build; the second runs that build."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    monkeypatch.setenv("TONY_SIM_PGO", "1")
    monkeypatch.setenv("TONY_CACHE_DIR", str(tmp_path / "cache"))
    x = np.load(digits_mlp / "inputs.npy")[:3]
    out = tmp_path / "b"
    compile_model(digits_mlp / "model.onnx", out, config=AccelConfig(2, 3), inputs=x, batch=2)
    runs = []
    for _ in range(2):
        rep = simulate(out, progress=False)
        assert rep["bit_exact"] and rep["cycles_match"] and rep["issue_match"]
        runs.append(json.loads((out / "sim" / "bench_result.json").read_text())["runs"])
    assert runs[0] == runs[1] and len(runs[0]) == 2
    (design,) = (tmp_path / "cache" / "verilated-designs").glob("tony_sim_top-*")
    assert (design / ".complete").exists() and not (design / ".instrumented").exists()
    assert list(design.glob("*.gcda"))


def test_cxx_opt_level_sets_the_model_code_only_and_a_bad_one_is_one_line(tmp_path, digits_mlp, monkeypatch, tony_cli):
    """TONY_SIM_CXX_OPT: g++ -O<level> for the model's code and Verilator's runtime, over the
    build's own level; the model's construction code (a huge function with --public-flat-rw,
    minutes at -O1) keeps -O0. Anything else stops tony sim with one line naming the variable,
    before any build."""
    import re

    from tony import sim
    from tony.sim.runner import cxx_opt_level

    monkeypatch.delenv("TONY_SIM_CXX_OPT", raising=False)
    assert cxx_opt_level() is None and cxx_opt_level("3") == "3"
    monkeypatch.setenv("TONY_SIM_CXX_OPT", "1")
    assert cxx_opt_level("3") == "1"
    # a tiny design, split into files (as big designs are) and built as the suite builds (level 1
    # from the environment)
    src = tmp_path / "tiny.v"
    src.write_text("module tiny (input wire clk_i, output wire o_o);\n  assign o_o = clk_i;\nendmodule\n")
    (tmp_path / "tiny_bench.py").write_text("import cocotb\nfrom cocotb.triggers import Timer\n\n\n"
                                            "@cocotb.test()\nasync def test_runs(dut):\n    await Timer(1, unit='ns')\n")
    sim.run_cocotb([src], "tiny", "tiny_bench", build_dir=tmp_path / "build", test_dir=tmp_path, cxx_opt="3",
                   build_args=["--output-split", "1"])
    compiles = [line for line in (tmp_path / "build" / "build.log").read_text().splitlines()
                if re.match(r"c\+\+|g\+\+", line) and " -c " in line and "Vtop" in line]
    slow = [line for line in compiles if "__Slow" in line or "__Syms" in line]
    fast = [line for line in compiles if line not in slow]
    assert slow and fast, compiles
    assert all(" -O1" in line and " -O3" not in line for line in fast), fast
    assert not any(re.search(r" -O[1-3sg]\b", line) for line in slow), slow
    out = tmp_path / "b"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", "2x2", "--samples", "1").returncode == 0
    monkeypatch.setenv("TONY_SIM_CXX_OPT", "fast\nest")
    monkeypatch.setenv("TONY_CACHE_DIR", str(tmp_path / "cache"))
    res = tony_cli("sim", out, "-q")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "TONY_SIM_CXX_OPT" in line and "'fast\\nest'" in line and "0, 1, 2, 3, s or g" in line
    designs = tmp_path / "cache" / "verilated-designs"
    assert not designs.exists() or not any(designs.iterdir())


def test_progress_into_a_log_writes_a_line_per_change_not_per_poll(tmp_path, capsys):
    """`tony sim`'s bar into a file or CI console (stderr not a terminal): the phases and the run
    count appear, each change once, instead of a redraw every 0.25 s poll."""
    import time

    from tony.sim.accel import _Progress

    progress = tmp_path / "progress"
    with _Progress(progress, True) as bar:
        bar.phase("building the simulator (once per design)")
        time.sleep(1.5)                        # six polls, one change
        bar.phase(None)
        progress.write_text("0 3 x")
        time.sleep(0.6)
        progress.write_text("3 3 x")
        time.sleep(0.6)
    err = capsys.readouterr().err
    assert "building the simulator" in err and "simulating" in err
    assert err.count("\r") <= 8, err
