"""Differential fuzzing (tony.tools.fuzz): random valid QDQ graphs through the reference, onnxruntime's
unoptimized Q/DQ path, the cycle model's functional execution, the HLS C++ and the RTL.

The default suite runs fixed-seed slices (TONY_FUZZ_SEED moves them); `make fuzz N=...` runs any
number. Every file in tests/regressions/ (a shrunk failure) is replayed here.
"""
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tony import ir
from tony.tools import fuzz

SEED = int(os.environ.get("TONY_FUZZ_SEED", "0")) or 1
REGRESSIONS = Path(__file__).resolve().parent / "regressions"


def _failures(seeds, engines, tmp_path=None):
    bad, counts = [], {e: {} for e in engines}
    for s in seeds:
        case = fuzz.case_from_seed(s)
        res = fuzz.run_case(case, engines, tmp_path)
        for e in engines:
            key = res.status.get(e, "none").split(":")[0]
            counts[e][key] = counts[e].get(key, 0) + 1
        if res.failures:
            bad.append(f"seed {s}: {res.failures} ({case.summary()})")
    return bad, counts


def test_fuzz_slice_reference_cycle_model_and_onnxruntime_agree():
    n = 200
    print(f"seed={SEED} graphs={n}")
    bad, counts = _failures(range(SEED, SEED + n), ("ref", "ort", "model"))
    print(counts)
    assert not bad, "\n".join(bad) + "\nreplay one with `python -m tony.tools.fuzz -n 1 --seed SEED`"
    # the slice exercises every engine, not only refusals and skips
    assert counts["ref"]["ok"] == n
    assert counts["ort"]["ok"] >= n // 3 and counts["model"]["ok"] >= n // 4, counts


def test_fuzz_slice_covers_the_supported_operators_and_types():
    ops, text = set(), []
    for s in range(SEED, SEED + 200):
        case = fuzz.case_from_seed(s)
        ops |= {n.op_type for n in case.model.graph.node}
        text += case.desc + [("pow2" if case.pow2 else "multiplier")]
        text += [f"batch{case.batch}", f"mem{case.mem_bits}", f"abuf{case.abuf_words}"]
        text += [f"uint8 in {case.model.graph.name}" for i in case.model.graph.initializer
                 if i.name.startswith("z") and i.data_type == 2]
    joined = " | ".join(text)
    assert {"Conv", "Gemm", "MatMul", "MaxPool", "AveragePool", "GlobalAveragePool", "Add", "Concat", "Relu",
            "Clip", "Reshape", "Flatten", "QuantizeLinear", "DequantizeLinear"} <= ops, ops
    for needle in ("wint4", "per-channel", "multiplier", "pow2", "transB", "batch3", "mem32", "abuf16",
                   "uint8 in", " d(2,", "s(2,"):
        assert needle in joined, needle
    assert any("g" + str(c) in d and f"conv {c}->" in d for d in text for c in range(2, 7)), "no depthwise conv"


@settings(max_examples=100, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_fuzz_hypothesis_graphs_agree(data):
    """The same generator under hypothesis, which shrinks a failing graph by itself."""
    case = fuzz.generate(fuzz.HypothesisChooser(data))
    res = fuzz.run_case(case, ("ref", "ort", "model"))
    assert not res.failures, f"{res.failures} ({case.summary()})"


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")
def test_fuzz_slice_hls_csim_agrees(tmp_path):
    seeds = range(SEED + 1000, SEED + 1004)
    print(f"seeds={list(seeds)}")
    bad, counts = _failures(seeds, ("ref", "hls"), tmp_path)
    print(counts)
    assert not bad, "\n".join(bad)
    assert counts["hls"].get("ok", 0) >= 3, counts


# the suite's RTL slice: odd arrays, both memory widths, activation buffers that spill
RTL_SLICE_OVERLAYS = ("fuzz-2x3-m64-a64", "fuzz-3x5-m32-a128")


def _accepted(start, count, overlays):
    """The first `count` graphs from seed `start` that the accelerator accepts, each on one of
    `overlays` (at most 2 samples)."""
    out, s = [], start
    while len(out) < count:
        case = fuzz.case_from_seed(s, overlays)
        case = dataclasses.replace(case, x=case.x[:2])
        if fuzz.run_case(case, ("ref", "model")).status.get("model") == "ok":
            out.append((s, case))
        s += 1
    return out


@pytest.mark.sim
def test_fuzz_slice_rtl_bit_exact_with_the_predicted_cycles_one_verilator_build_per_overlay(tmp_path, monkeypatch):
    """20 graphs on the RTL: bit-exact, measured cycles = predicted, and Verilator builds each
    overlay's simulator at most once (every later graph for it reuses the build)."""
    import time

    from tony.sim import runner

    designs, real = [], runner.fill_once

    def fill_once(folder, build, **kw):
        built = real(folder, build, **kw)
        designs.append((folder.name, built))
        return built

    monkeypatch.setattr(runner, "fill_once", fill_once)
    cases = _accepted(SEED + 2000, 20, RTL_SLICE_OVERLAYS)
    t0 = time.perf_counter()
    for s, case in cases:
        print(f"seed={s} {case.summary()}")
        res = fuzz.run_case(case, ("ref", "rtl"), tmp_path)
        assert res.status["rtl"] == "ok", f"seed {s}: {res.status['rtl']}"
    print(f"{len(cases)} graphs in {time.perf_counter() - t0:.1f} s; builds {designs}")
    assert len(designs) >= len(cases)   # a simulation per device segment: a graph may have several
    assert len({d for d, _ in designs}) <= len(RTL_SLICE_OVERLAYS), designs
    assert sum(built for _, built in designs) <= len(RTL_SLICE_OVERLAYS), designs


def _depthwise(case) -> bool:
    return any("g" + str(c) in d and f"conv {c}->{c} " in d for d in case.desc for c in range(2, 9))


@pytest.mark.sim
@pytest.mark.slow
def test_fuzz_depthwise_graphs_rtl_bit_exact_in_depthwise_mode(tmp_path):
    """Random graphs with a depthwise conv (strides, dilations, padding, partial channel groups,
    after plain convs) on arrays that run it in the depthwise mode, and one that falls back."""
    arrays = [(4, 4), (2, 2), (3, 4), (2, 5), (2, 6)]
    out, s = [], SEED
    while len(out) < len(arrays):
        case = fuzz.case_from_seed(s)
        s += 1
        if not _depthwise(case):
            continue
        r, c = arrays[len(out)]
        case = dataclasses.replace(case, rows=r, cols=c, x=case.x[:2])
        if fuzz.run_case(case, ("ref", "model")).status.get("model") == "ok":
            out.append((s - 1, case))
    for sd, case in out:
        print(f"seed={sd} {case.summary()}")
        res = fuzz.run_case(case, ("ref", "rtl"), tmp_path)
        assert res.status["rtl"] == "ok", f"seed {sd}: {res.status['rtl']}"


# ---- the fuzzer's own machinery -----------------------------------------------------------------

def test_an_injected_off_by_one_is_caught_by_onnxruntime_and_the_cycle_model(monkeypatch):
    """The comparisons can fail: a Conv kernel one LSB off is reported by both engines."""
    from tony.ref import kernels

    real = kernels.KERNELS[ir.Conv]
    monkeypatch.setitem(kernels.KERNELS, ir.Conv, lambda op, g, *a: np.minimum(real(op, g, *a) + 1, 127))
    seen = set()
    for s in range(SEED, SEED + 60):
        case = fuzz.case_from_seed(s)
        if not any(n.op_type == "Conv" for n in case.model.graph.node):
            continue
        res = fuzz.run_case(case, ("ref", "ort", "model"))
        seen |= res.signature()
    assert {("ort", "mismatch"), ("model", "mismatch")} <= seen, seen


def test_shrinking_keeps_the_failure_and_makes_the_graph_small(tmp_path):
    def fails(case):  # a stand-in defect: any strided max pool
        return any(n.op_type == "MaxPool" and 2 in list(next(a.ints for a in n.attribute if a.name == "strides"))
                   for n in case.model.graph.node)

    seed = next(s for s in range(SEED, SEED + 500)
                if fails(fuzz.case_from_seed(s)) and len(fuzz.case_from_seed(s).model.graph.node) > 14)
    print(f"seed={seed}")
    big = fuzz.case_from_seed(seed)
    small = fuzz.generate(fuzz.ReplayChooser(fuzz.shrink(big.choices, fails)))
    assert fails(small)
    ops = [n.op_type for n in small.model.graph.node if "Linear" not in n.op_type]
    assert len(ops) <= 2 and len(small.model.graph.node) < len(big.model.graph.node), small.summary()
    path = fuzz.save_regression(small, tmp_path, "strided_maxpool", ["ref", "model"], "stand-in")
    case, engines = fuzz.load_regression(path)
    assert case.model.SerializeToString() == small.model.SerializeToString()
    assert np.array_equal(case.x, small.x) and engines == ["ref", "model"]


def test_fuzz_command_reports_counts_and_exits_0(capsys, tmp_path):
    assert fuzz.main(["-n", "5", "--seed", str(SEED), "--regressions", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"seed {SEED}" in out and "5 graphs" in out and "0 failing" in out
    assert fuzz.main(["-n", "1", "--engines", "ref,gpu"]) == 2


# ---- shrunk failures, kept --------------------------------------------------------------------------

def _regressions():
    files = sorted(REGRESSIONS.glob("*.onnx"))
    marks = []
    for f in files:
        meta = json.loads(f.with_suffix(".json").read_text())
        m = [pytest.mark.xfail(strict=True, reason=meta["open_defect"])] if meta.get("open_defect") else []
        m += [pytest.mark.sim] if "rtl" in meta["engines"] else []
        marks.append(pytest.param(f, marks=m, id=f.stem))
    return marks


def test_regression_folder_is_not_empty():
    assert list(REGRESSIONS.glob("*.onnx")), "the replay below would test nothing"


@pytest.mark.parametrize("path", _regressions())
def test_regression_replays_clean(path, tmp_path):
    case, engines = fuzz.load_regression(path)
    engines = [e for e in engines if e in ("ref", "ort", "model") or shutil.which("g++")]
    res = fuzz.run_case(case, engines, tmp_path)
    assert not res.failures, f"{path.name}: {res.failures}"
    assert all(res.status.get(e) is not None for e in engines)
    if "refused" not in json.loads(path.with_suffix(".json").read_text()):  # fixed: runs, not refused
        assert all(res.status[e] == "ok" for e in engines), res.status


# ---- fault injection on the SoC ---------------------------------------------------------------------

@pytest.mark.sim
@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_axi_faults_over_random_seeds_end_clean_or_exact(seed, tmp_path_factory):
    """The AXI bench's robustness tests (bus error response, CTRL.ABORT, rst_ni mid-run, an illegal
    instruction), each under random stalls with its own COCOTB_RANDOM_SEED: every run stops with a
    clean error status and the next run is bit-exact; a hang would end in the bench's timeout."""
    from tony.build import Build
    from tony.compiler import compile_model
    from tony.models import build_example
    from tony.sim.axi import run_axi

    print(f"seed={seed}")
    d = tmp_path_factory.mktemp(f"axi_faults_{seed}")
    build_example("digits-mlp", d / "model")
    compile_model(d / "model" / "model.onnx", d / "build", samples=2, config=fuzz._config(
        dataclasses.replace(fuzz.case_from_seed(seed), rows=2 + seed % 3, cols=2 + seed % 2, mem_bits=64,
                            abuf_words=0)))
    work = d / "build" / "sim_faults"
    work.mkdir()
    env = {"TONY_BUILD": str(d / "build"), "TONY_GOLDEN": str(d / "build" / "golden"),
           "TONY_RESULT": str(work / "unused.json"), "COCOTB_RANDOM_SEED": str(seed)}
    run_axi(Build.open(d / "build"), work, env, 0.1 * seed, testcase=[
        "test_bus_error_stops_cleanly_then_next_run_is_exact", "test_abort_mid_run_then_next_run_is_exact",
        "test_reset_mid_run_recovers", "test_illegal_instruction_stops_then_next_run_is_exact"])
