"""`tony sim`: build the compiled accelerator with Verilator through cocotb's runner, run the
whole-model bench (tony/sim/benches/accel.py) on the memory image, compare every output byte with
the golden vectors, and hold the measured cycles to the cycle model's prediction."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import numpy as np

from ..build import Build, write_json

REPORT = "sim_report.json"


class _Progress:
    """Polls the bench's progress file and shows a bar (the simulator's own output goes to a log);
    before the first run and after the last, the phase the runner reports (building the simulator,
    rebuilding it with its profile) with its elapsed time."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.phase_text: str | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def phase(self, text: str | None) -> None:
        """The runner's current phase (None: back to the runs)."""
        self.phase_text = text

    def _run(self):
        import sys

        from tqdm import tqdm

        # on a terminal the bar is redrawn every poll (its elapsed time ticks); into a log file or a
        # CI console only when the phase or the count changes, and at most every 10 s, so that a
        # long simulation leaves a few lines there rather than four per second
        tty = sys.stderr.isatty()
        bar, last = None, None
        while not self.stop.wait(0.25):
            try:
                done, total, _ = self.path.read_text().split(maxsplit=2)
            except (OSError, ValueError):
                done = total = None
            if bar is None and (total is not None or self.phase_text):
                bar = tqdm(total=None if total is None else int(total), desc="simulating", unit="run",
                           leave=False, mininterval=0.25 if tty else 10.0)
            if bar is None:
                continue
            state = (self.phase_text, done, total)
            if state == last and not tty:
                continue
            new_phase = last is None or state[0] != last[0]
            last = state
            if total is not None and bar.total != int(total):
                bar.reset(total=int(total))
            bar.set_description_str(self.phase_text or "simulating", refresh=False)
            bar.update((int(done) if done is not None else 0) - bar.n)
            if tty or new_phase:
                bar.refresh()
        if bar is not None:
            bar.close()

    def __enter__(self):
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        if self.enabled:
            self.thread.join()


def _golden_for(build: Build, inputs, graph=None) -> Path:
    """The golden folder to compare with: the build's own, or for new `inputs` a fresh one under
    sim/golden with the reference's vectors and the per-run memory contents of those inputs."""
    if inputs is None:
        return build.path / "golden"
    from ..accel.layout import run_beats
    from ..accel.program import AccelConfig
    from ..ref.feeds import normalize_inputs
    from ..golden import tensor_keys, write_golden

    m = build.manifest
    g = graph if graph is not None else build.graph()
    feeds, _ = normalize_inputs(g, inputs)
    folder = build.path / "sim" / "golden"
    if folder.exists():
        shutil.rmtree(folder)
    _, env = write_golden(g, feeds, folder, tensor_keys(g))
    by_key = {k: n for n, k in tensor_keys(g).items()}
    arrays = {i["key"]: env[by_key[i["key"]]] for i in m["inputs"]}
    np.save(folder / "runs.npy", run_beats(AccelConfig(**m["accel"]), m["batch"], m["inputs"], arrays))
    return folder


def _exchange_dir() -> str | None:
    """Where the bench and the HDL memory exchange their small per-run files: a RAM file system
    when there is one (rewriting a file on a disk costs milliseconds, on tmpfs microseconds)."""
    import os

    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def _pow2_at_least(n: int, floor: int) -> int:
    """The smallest power of two >= n, and at least `floor` (a power of two)."""
    return max(floor, 1 << max(n - 1, 0).bit_length())


def mem_capacity(words: int) -> int:
    """tony_sim_mem's capacity for a memory image of `words` words: a power of two, at least 2^16,
    so that builds of one accelerator configuration with images of similar size are one design
    (one Verilator build, reused; the image's own size bounds the accesses at run time)."""
    return _pow2_at_least(words, 1 << 16)


def trace_capacity(instructions: int) -> int:
    """tony_sim_top's issue-trace depth for a program of `instructions` (all pages): a power of
    two, at least 256, so that programs of similar length share one Verilator build."""
    return _pow2_at_least(instructions, 256)


def _sim_top(build: Build, work: Path, xfer: Path, clock: int = 2) -> tuple[list, dict, list]:
    """The sources of tony_sim_top (the build's tony_accel with tony_sim_mem, the memory the cycle
    model assumes, in HDL), its parameters, and the plusargs naming the memory's files (in
    `xfer`) and bounding the memory to the image's size. `clock`: tony_sim_top's CLOCK (2: its
    own clock in bursts of cycles per time step, the fast one; 1: its own plain clock, every edge
    in a waveform; 0: clk_i)."""
    from ..accel.program import AccelConfig
    from ..ir import Rounding
    from ..rtl import render
    from .benches.accel import MEMORY_FILES
    from .benches.common import CLOCK_PERIOD_NS

    m = build.manifest
    cfg = AccelConfig(**m["accel"])
    words = int(np.load(build.path / "mem" / "image.npy", mmap_mode="r").shape[0])
    params = {**cfg.hdl_params(), "ROUND_MODE": Rounding(m["rounding"]).code, "MEM_WORDS": mem_capacity(words),
              "MEM_LATENCY": cfg.mem_latency, "N_INSTR": trace_capacity(m["program"]["length"]),
              "CLOCK": clock, "HALF_PERIOD": CLOCK_PERIOD_NS // 2}
    rtl = work / "rtl_sim"
    rtl.mkdir(exist_ok=True)
    (rtl / "tony_sim_mem.v").write_text(render("tony_sim_mem"))
    (rtl / "tony_sim_top.v").write_text(render("tony_sim_top", **params))
    sources = [build.file(f"rtl/{name}") for name in m["rtl"]] + [rtl / "tony_sim_mem.v", rtl / "tony_sim_top.v"]
    plusargs = [f"+tony_mem_image={build.path / 'mem' / 'image.hex'}", f"+tony_mem_words={words}"]
    plusargs += [f"+tony_{k}={xfer / MEMORY_FILES[f]}" for k, f in (("mem_load", "load"), ("mem_dump", "dump"),
                                                                   ("sim_results", "results"))]
    return sources, params, plusargs


SIM_TOP_BUILD_ARGS = ["--timing", "-O3", "-CFLAGS", "-march=native"]
SIM_TOP_CXX_OPT = "3"
"""Verilator options of tony_sim_top: --timing for its own clock (CLOCK 1 and 2); g++ -O3 (of the
model's code, SIM_TOP_CXX_OPT) for this machine's CPU (the design cache's key holds the CPU) runs
the model about 1.2x faster than -O2, which is 1.6x faster than Verilator's default -Os."""


def simulate(build_dir, *, inputs=None, waves: bool = False, progress: bool = True,
             simulator: str = "verilator", axi_stall: float | None = None, memory: str = "hdl", graph=None,
             reuse_build: bool = True, clock: int | None = None) -> dict:
    """Run the compiled build on `inputs` (default: the build's golden inputs); returns (and
    writes) the sim report. `memory`: "hdl" (tony_sim_top: the memory in HDL, Python woken a few
    times per run) or "python" (tony_accel with the Python memory model of sim/benches/memory.py).
    `graph`: the build's IR graph when it has no model.onnx of its own (a device segment of a
    partitioned build). `reuse_build`: one Verilator build per design, shared by builds of it.
    `clock` (memory "hdl"): tony_sim_top's CLOCK, by default 2 (bursts of cycles per time step), 1
    with `waves` (a plain clock, every edge at its own time in the waveform)."""
    from . import run_cocotb
    from .runner import pgo_enabled

    build = Build.open(Path(build_dir).resolve(), kind="accel")
    if axi_stall is not None:
        from .axi import check_stall

        check_stall(axi_stall)
    m = build.manifest
    (build.path / REPORT).unlink(missing_ok=True)   # a run that fails leaves no report of an earlier one
    if "segments" in m:
        return simulate_segments(build, inputs=inputs, waves=waves, progress=progress, simulator=simulator,
                                 axi_stall=axi_stall)
    golden_dir = _golden_for(build, inputs, graph)
    work = build.path / "sim"
    work.mkdir(exist_ok=True)
    result_path, progress_path = work / "bench_result.json", work / "progress"
    for p in (result_path, progress_path):
        p.unlink(missing_ok=True)
    sources = [build.file(f"rtl/{name}") for name in m["rtl"]]
    env = {"TONY_BUILD": str(build.path), "TONY_GOLDEN": str(golden_dir), "TONY_RESULT": str(result_path),
           "TONY_PROGRESS": str(progress_path), "TONY_MEMORY": memory}
    t0 = time.perf_counter()
    with _Progress(progress_path, progress) as bar:
        if axi_stall is not None:  # through the SoC wrapper (AXI4-Lite host, AXI4 memory)
            from .axi import run_axi

            m = run_axi(build, work, env, axi_stall, waves=waves, simulator=simulator)
        elif memory == "hdl":
            import tempfile

            with tempfile.TemporaryDirectory(prefix="tony-sim-", dir=_exchange_dir()) as xfer:
                top_clock = clock if clock is not None else 1 if waves else 2
                sources, params, plusargs = _sim_top(build, work, Path(xfer), clock=top_clock)
                env["TONY_SIM_FILES"] = xfer
                run_cocotb(sources, "tony_sim_top", "tony.sim.benches.accel", build_dir=work / "build_sim",
                           extra_env=env, waves=waves, simulator=simulator,
                           build_args=SIM_TOP_BUILD_ARGS,
                           reuse_build=True, plusargs=plusargs, public_flat=False, pgo=pgo_enabled(),
                           status=bar.phase, cxx_opt=SIM_TOP_CXX_OPT)
        elif memory == "python":
            run_cocotb(sources, m["toplevel"], "tony.sim.benches.accel", build_dir=work / "build",
                       extra_env=env, waves=waves, simulator=simulator, build_args=["-O3"],
                       reuse_build=reuse_build, status=bar.phase)
        else:
            raise ValueError(f"memory {memory!r}: 'hdl' or 'python'")
    wall = time.perf_counter() - t0
    res = json.loads(result_path.read_text())
    rep = report_from(m, res)
    rep.update(simulator=simulator, wall_seconds=wall, golden=str(golden_dir),
               memory="axi" if axi_stall is not None else memory)
    if axi_stall is not None:
        rep.update(toplevel=m["toplevel"], axi_stall=axi_stall)
    if waves:
        rep["waves"] = _wave_files(work)
    write_json(build.path / REPORT, rep)
    return rep


def _wave_files(work: Path) -> list[str]:
    """The waveform files a run with `waves` left under its sim folder, newest first."""
    found = [p for pat in ("*.vcd", "*.fst") for p in work.rglob(pat)]
    return [str(p) for p in sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)]


def simulate_segments(build: Build, *, inputs=None, **opts) -> dict:
    """A partitioned build: each device segment runs on Verilator, on the values the segments
    before it produced (the simulated hardware's own outputs, not the reference's), host segments
    in the reference between them; the graph's outputs are compared with the reference of the
    whole graph. Returns (and writes) the sim report: the end-to-end comparison and one report
    per device segment."""
    from ..accel.program import AccelConfig
    from ..compiler import accel_partition
    from ..golden import tensor_keys
    from ..ir.partition import subgraph
    from ..ref import execute, execute_segments
    from ..ref.feeds import normalize_inputs

    m = build.manifest
    g = build.graph()
    keys = tensor_keys(g)
    if inputs is None:
        feeds = {n: build.golden(keys[n]) for n in g.inputs}
    else:
        feeds, _ = normalize_inputs(g, inputs)
    part = accel_partition(g, AccelConfig(**m["accel"]))
    for old in build.path.glob(f"seg*/{REPORT}"):   # none left from an earlier run if this one stops midway
        old.unlink()
    reps: list[dict] = []

    def device(k, seg, ins):
        sub = subgraph(g, seg, f"{g.name}.seg{k}")
        seg_dir = build.path / f"seg{k}"
        rep = simulate(seg_dir, inputs=ins, graph=sub, reuse_build=True, **opts)  # one design for all
        rep["segment"] = k
        reps.append(rep)
        sk = tensor_keys(sub)
        return [np.load(seg_dir / "sim" / f"hw_{sk[n]}.npy").reshape(ins[seg.inputs[0]].shape[:1] +
                                                                      sub.tensors[n].shape[1:])
                for n in seg.outputs]
    env = execute_segments(g, part, feeds, device)
    want = execute(g, feeds)
    mism, compared, first = 0, 0, []
    for n in g.outputs:
        got, exp = np.asarray(env[n]), np.asarray(want[n])
        bad = np.argwhere(got != exp)
        mism += len(bad)
        compared += exp.size
        first += [{"tensor": keys[n], "index": [int(i) for i in idx], "expected": exp[tuple(idx)].item(),
                   "got": got[tuple(idx)].item()} for idx in bad[:10]]
    cycles = sum(r["cycles"] for r in reps)
    macs = sum(r["macs"] for r in reps)
    peak = m["accel"]["rows"] * m["accel"]["cols"]
    rep = {"model": m["model"], "accel": m["accel"], "samples": int(next(iter(feeds.values())).shape[0]),
           "batch": m["batch"], "runs": sum(r["runs"] for r in reps),
           "bit_exact": mism == 0 and compared > 0 and all(r["bit_exact"] for r in reps),
           "mismatches": mism + sum(r["mismatches"] for r in reps), "compared": compared,
           "first_mismatches": first, "cycles": cycles,
           "predicted_cycles": m["predicted_cycles"],
           "cycles_match": all(r["cycles_match"] for r in reps), "issue_match": all(r["issue_match"] for r in reps),
           "macs": macs, "utilization": macs / (cycles * peak) if cycles else 0.0,
           "sim_seconds": sum(r["sim_seconds"] for r in reps), "layers": [l for r in reps for l in r["layers"]],
           "segments": reps, "placement": m["placement"], "simulator": opts.get("simulator", "verilator"),
           "memory": "axi" if opts.get("axi_stall") is not None else "hdl"}
    rep["cycles_per_run"] = [sum(r["cycles_per_run"][0] for r in reps if r["cycles_per_run"])]
    rep["cycles_per_second"] = cycles / rep["sim_seconds"] if rep["sim_seconds"] else 0.0
    rep["sim_cpu_seconds"] = sum(r.get("sim_cpu_seconds", 0.0) for r in reps)
    rep["cycles_per_cpu_second"] = cycles / rep["sim_cpu_seconds"] if rep["sim_cpu_seconds"] else 0.0
    if any("waves" in r for r in reps):
        rep["waves"] = [w for r in reps for w in r.get("waves", [])]
    write_json(build.path / REPORT, rep)
    return rep


def report_from(m: dict, res: dict) -> dict:
    """The sim report: bit-exactness, measured and predicted cycles, the per-layer table."""
    a = m["accel"]
    peak = a["rows"] * a["cols"]
    runs = res["runs"]
    first = runs[0] if runs else {"cycles": 0, "issue": []}
    issue = first["issue"]
    layers = []
    for row in m["layers"]:
        meas = None
        if len(issue) == len(m["predicted_issue"]):
            i0, i1 = row.get("start", row["first"]), row.get("end", row["last"])   # (older manifests: first/last)
            end = issue[i1] if i1 < len(issue) else first["cycles"]
            meas = end - (0 if row["name"] == "(load)" else issue[i0])
        macs = row["macs"]
        layers.append({**{k: v for k, v in row.items() if k not in ("first", "last", "start", "end")}, "cycles": meas,
                       "utilization": macs / (meas * peak) if meas and macs else None,
                       "predicted_utilization": row.get("utilization")})
    cycles = res["cycles"]
    macs = m["macs_per_run"] * len(runs)
    sim_s = res.get("sim_seconds") or 0.0
    cpu_s = res.get("sim_cpu_seconds") or 0.0  # the simulator process's CPU time in the run loop
    return {
        "model": m["model"], "accel": a, "samples": res["samples"], "batch": m["batch"],
        "runs": len(runs), "bit_exact": res["mismatches"] == 0 and res["compared"] > 0,
        "mismatches": res["mismatches"], "compared": res["compared"], "first_mismatches": res.get("first_mismatches", []),
        "cycles": cycles, "cycles_per_run": [r["cycles"] for r in runs], "predicted_cycles": m["predicted_cycles"],
        "cycles_match": all(r["cycles"] == m["predicted_cycles"] for r in runs) and bool(runs),
        "issue_match": all(r["issue"] == m["predicted_issue"] for r in runs) and bool(runs),
        "macs": macs, "utilization": macs / (cycles * peak) if cycles else 0.0,
        "sim_seconds": sim_s, "cycles_per_second": cycles / sim_s if sim_s else 0.0,
        "sim_cpu_seconds": cpu_s, "cycles_per_cpu_second": cycles / cpu_s if cpu_s else 0.0,
        "layers": layers,
    }
