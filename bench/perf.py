"""Simulation and compile speed, as ratios against baselines measured in the same run and the limits.

    python bench/perf.py [--work DIR] [--python-samples 40] [--skip-compile] [--skip-sim]

(a) `tony sim` speed (simulated cycles per second of the run loop, the one-time Verilator build
excluded) of the digits CNN over 360 samples and of ResNet-8 at 8x8, each against
  - the baseline: the same build through the Python memory model (tony_accel with
    tony/sim/benches/memory.py, memory="python"), on the first --python-samples samples;
  - the limit: the same design (tony_sim_top, same files, same runs, same build options and, as
    tony sim does unless TONY_SIM_PGO=0, a profile-guided build trained on a run of its own) in a
    bare verilated C++ loop with no cocotb, its clock from the loop, timing only its run loop.
(b) `tony compile` wall time of ResNet-8 at 8x8 with 1 and with 360 golden samples (a process per
compile, as a user runs it), against NNgen's published 10.5 s and the 1 s / 3 s targets, with
numpy's BLAS threads as they come and with one BLAS thread (idle BLAS threads spin, which adds CPU
time, and on a loaded machine wall time).

Every number is wall time on this machine as it is; the load average is printed (on a shared
machine the ratios are what to read), and the CPU seconds next to the wall seconds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NNGEN_COMPILE_S = 10.5
TARGET_SIM = 1_000_000
TARGET_COMPILE = {1: 1.0, 360: 3.0}

HARNESS = r"""
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include "Vtony_sim_top.h"
#include "verilated.h"
// A bare loop over tony_sim_top: reset, one batch of runs through its sequencer, time the batch.
int main(int argc, char** argv) {
  VerilatedContext ctx;
  ctx.commandArgs(argc, argv);
  Vtony_sim_top top(&ctx);
  auto tick = [&]() { top.clk_i = 0; top.eval(); top.clk_i = 1; top.eval(); };
  top.rst_ni = 0; top.go_i = 0;
  top.prog_addr_i = atoi(argv[1]); top.prog_len_i = atoi(argv[2]);
  top.dump_lo_i = atoi(argv[3]); top.dump_hi_i = atoi(argv[4]);
  top.first_run_i = 0; top.n_runs_i = atoi(argv[5]);
  for (int i = 0; i < 3; i++) tick();
  top.rst_ni = 1; tick();
  auto t0 = std::chrono::steady_clock::now(); std::clock_t c0 = std::clock();
  top.go_i = 1; tick(); top.go_i = 0;
  while (top.busy_o) tick();
  double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  double cpu = double(std::clock() - c0) / CLOCKS_PER_SEC;
  std::printf("%.6f %.6f\n", wall, cpu);
  top.final();
  return 0;
}
"""


BLAS_ONE_THREAD = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _compile(model, out, inputs=None, samples=None, env=None) -> dict:
    """`tony compile` in its own process (bytecode caching on, as installed: PYTHONDONTWRITEBYTECODE
    dropped); wall and CPU seconds. `env`: extra environment variables."""
    cmd = [sys.executable, "-m", "tony.cli", "compile", str(model), "-o", str(out), "--array", "8x8"]
    cmd += ["--inputs", str(inputs)] if inputs is not None else ["--samples", str(samples)]
    child = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | (env or {})
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=child)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)}


def _bare(build: Path, work: Path) -> dict:
    """tony_sim_top of `build` in a bare verilated loop (same sources, plusargs and runs as
    `tony sim`); seconds of the run loop and the simulated cycles."""
    from tony.build import Build
    from tony.sim.accel import SIM_TOP_BUILD_ARGS, SIM_TOP_CXX_OPT, _sim_top
    from tony.sim.benches.accel import MEMORY_FILES
    from tony.sim.benches.common import load_runs
    from tony.sim.runner import PGO_GENERATE, PGO_USE, cxx_opt_level, cxx_opt_make_vars, pgo_enabled
    from tony.sim.verilator import MAKE_VARS, find_verilator, split_headers

    b = Build.open(build, kind="accel")
    m = b.manifest
    work.mkdir(parents=True, exist_ok=True)
    xfer = Path(tempfile.mkdtemp(prefix="tony-bare-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None))
    sources, _, plusargs = _sim_top(b, work, xfer)
    files, incdirs = split_headers(sources)
    _, exe = find_verilator()
    (work / "main.cpp").write_text(HARNESS)
    # tony sim's Verilator options; the clock from this loop (clk_i) instead of the HDL's own
    vargs = [*SIM_TOP_BUILD_ARGS, "-GCLOCK=0"]
    pgo = pgo_enabled()
    opt_vars = cxx_opt_make_vars(cxx_opt_level(SIM_TOP_CXX_OPT))
    key = hashlib.sha256(repr((vargs, MAKE_VARS, opt_vars, pgo, [Path(f).read_bytes() for f in files])).encode()).hexdigest()[:12]
    obj = work / f"obj-{key}"  # rebuilt when the sources or options change
    n_out = next(iter(np.load(b.path / "golden" / f"{m['outputs'][0]['key']}.npy", mmap_mode="r").shape[:1]))
    runs = load_runs(b.path, b.path / "golden", n_out, m["batch"])
    digits = m["accel"]["mem_bits"] // 4
    for r, row in enumerate(runs):
        (xfer / f"{MEMORY_FILES['load']}{r}.hex").write_text("".join(
            f"@{i['ext']:x}\n" + "".join(format(int(v), f"0{digits}x") + "\n" for v in row[i["offset"]:i["offset"] + i["beats"]])
            for i in m["inputs"]))
    lo = min(o["ext"] for o in m["outputs"])
    hi = max(o["ext"] + o["beats"] for o in m["outputs"]) - 1

    def run():
        for name in (MEMORY_FILES["results"], MEMORY_FILES["dump"]):
            (xfer / name).unlink(missing_ok=True)
        return subprocess.run([str(obj / "Vtony_sim_top"), str(m["program"]["addr"]), str(m["program"]["length"]),
                               str(lo), str(hi), str(len(runs)), *plusargs], check=True, capture_output=True, text=True)

    def make(extra):
        for f in [*obj.glob("*.o"), *obj.glob("*.a"), obj / "Vtony_sim_top"]:
            f.unlink(missing_ok=True)
        subprocess.run([str(exe), "--cc", "--exe", *vargs, *extra, "--top-module", "tony_sim_top",
                        "-Wno-fatal", "-Wno-lint", "-Wno-style", "-Mdir", str(obj), *[f"-I{d}" for d in incdirs],
                        *map(str, files), str(work / "main.cpp")], check=True, capture_output=True)
        subprocess.run(["make", "-C", str(obj), "-f", "Vtony_sim_top.mk", "-j2",
                        *[f"{k}={v}" for k, v in MAKE_VARS.items()], *opt_vars], check=True, capture_output=True)

    if not (obj / "Vtony_sim_top").exists():
        if pgo:  # as tony sim builds it: trained on a run of its own, then built with the profile
            make(PGO_GENERATE)
            run()
            make(PGO_USE)
        else:
            make([])
    out = run()
    wall, cpu = map(float, out.stdout.split())
    cycles = sum(int(line.split()[2]) for line in (xfer / MEMORY_FILES["results"]).read_text().splitlines()
                 if line.startswith("run "))
    for p in xfer.iterdir():
        p.unlink()
    xfer.rmdir()
    return {"cycles": cycles, "wall": wall, "cpu": cpu}


def _sim(name: str, d: Path, work: Path, samples: int, py_samples: int) -> dict:
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    x = np.load(d / "inputs.npy")
    x = x[np.arange(samples) % len(x)]
    out = work / f"{name}_8x8"
    if not (out / "manifest.json").exists():
        compile_model(d / "model.onnx", out, config=AccelConfig(8, 8), inputs=x)
    simulate(out, progress=False)  # builds (or finds) the verilated model
    hdl = simulate(out, progress=False)
    base_out = work / f"{name}_8x8_py"
    if not (base_out / "manifest.json").exists():
        compile_model(d / "model.onnx", base_out, config=AccelConfig(8, 8), inputs=x[:py_samples])
    py = simulate(base_out, progress=False, memory="python")
    bare = _bare(out, work / f"{name}_bare")
    for rep in (hdl, py):
        assert rep["bit_exact"] and rep["cycles_match"] and rep["issue_match"], rep["model"]
    assert bare["cycles"] == hdl["cycles"], (bare["cycles"], hdl["cycles"])
    return {"hdl": hdl, "py": py, "bare": bare}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=None, help="folder for models and builds (kept)")
    ap.add_argument("--python-samples", type=int, default=40, help="samples of the Python-memory baseline")
    ap.add_argument("--skip-sim", action="store_true")
    ap.add_argument("--skip-compile", action="store_true")
    a = ap.parse_args(argv)
    from tony.models import build_example

    work = (a.work or Path(tempfile.mkdtemp(prefix="tony-perf-"))).resolve()
    models = {}
    for name in ("digits-cnn", "resnet8"):
        d = work / name
        if not (d / "model.onnx").exists():
            build_example(name, d)
        models[name] = d
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; work folder {work}")

    if not a.skip_sim:
        print("\n(a) tony sim: simulated cycles per second of the run loop (8x8; the Verilator build excluded)")
        print(f"{'workload':<12} {'runs':>5} {'cycles':>11} {'tony sim':>11} {'python mem':>11} {'bare loop':>11}"
              f" {'x python':>9} {'of bare':>8} {'target 1M':>9}")
        for name, samples in (("digits-cnn", 360), ("resnet8", 4)):
            r = _sim(name, models[name], work, samples, min(a.python_samples, samples))
            hdl = r["hdl"]["cycles"] / r["hdl"]["sim_seconds"]
            py = r["py"]["cycles"] / r["py"]["sim_seconds"]
            bare = r["bare"]["cycles"] / r["bare"]["wall"]
            print(f"{name:<12} {r['hdl']['runs']:>5} {r['hdl']['cycles']:>11,} {hdl:>11,.0f} {py:>11,.0f} {bare:>11,.0f}"
                  f" {hdl / py:>8.1f}x {hdl / bare:>7.0%} {hdl / TARGET_SIM:>8.0%}")
            cpu = r["hdl"]["cycles"] / json.loads((work / f"{name}_8x8" / "sim" / "bench_result.json").read_text())[
                "sim_cpu_seconds"]
            bare_cpu = r["bare"]["cycles"] / r["bare"]["cpu"]
            print(f"{'':<12} per CPU second: tony sim {cpu:,.0f} ({cpu / TARGET_SIM:.0%} of the 1M target), bare loop "
                  f"{bare_cpu:,.0f} (tony sim {cpu / bare_cpu:.0%} of it)")

    if not a.skip_compile:
        print("\n(b) tony compile of ResNet-8 at 8x8 (a process each, as a user runs it)")
        x = np.load(models["resnet8"] / "inputs.npy")
        np.save(work / "resnet8_360.npy", x[np.arange(360) % len(x)])
        from importlib.metadata import version

        print(f"numpy {version('numpy')}, onnx {version('onnx')}, ml_dtypes {version('ml_dtypes')} (constraints.txt pins 0.6.0); "
              "best of 3; BLAS threads: the default, then 1 (the CPU seconds of a single-threaded process "
              "approximate the wall time on an idle machine)")
        print(f"{'golden samples':<15} {'BLAS':>7} {'wall s':>7} {'cpu s':>6} {'NNgen 10.5 s':>13} {'target':>7}"
              f" {'of target':>9} {'load':>5}")
        for n in (1, 360):
            for blas, env in (("default", None), ("1", BLAS_ONE_THREAD)):
                best = None
                for _ in range(3):
                    t = _compile(models["resnet8"] / "model.onnx", work / f"compile_{n}",
                                 inputs=work / "resnet8_360.npy" if n == 360 else None, samples=n, env=env)
                    best = t if best is None or t["wall"] < best["wall"] else best
                print(f"{n:<15} {blas:>7} {best['wall']:>7.2f} {best['cpu']:>6.2f}"
                      f" {NNGEN_COMPILE_S / best['wall']:>12.1f}x {TARGET_COMPILE[n]:>6.1f}s"
                      f" {best['wall'] / TARGET_COMPILE[n]:>8.0%} {os.getloadavg()[0]:>5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
