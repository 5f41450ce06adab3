"""`tony sim`: build the compiled RTL with Verilator through cocotb's runner, run the whole-model
bench (testbench/bench_model.py), compare every layer output with the golden vectors."""
from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from ..errors import InputError
from .compile import MANIFEST, golden, tensor_keys

REPORT = "sim_report.json"


def _read_manifest(build: Path) -> dict:
    p = build / MANIFEST
    if not p.is_file():
        raise InputError(f"{build} is not a Tony build (no {MANIFEST})", hint="run `tony compile MODEL -o DIR` first")
    return json.loads(p.read_text())


class _Progress:
    """Polls the bench's progress file and shows a bar (the simulator's own output goes to a log)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        from tqdm import tqdm

        bar = None
        while not self.stop.wait(0.25):
            try:
                done, total, what = self.path.read_text().split(maxsplit=2)
            except (OSError, ValueError):
                continue
            if bar is None:
                bar = tqdm(total=int(total), desc="simulating", unit="tile", leave=False)
            bar.set_postfix_str(what.strip()[:30])
            bar.update(int(done) - bar.n)
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


def simulate(build_dir, *, inputs=None, waves: bool = False, progress: bool = True,
             simulator: str = "verilator") -> dict:
    """Run the compiled build; returns (and writes) the sim report."""
    from ..sim import run_cocotb

    build = Path(build_dir).resolve()
    m = _read_manifest(build)
    golden_dir = build / "golden"
    if inputs is not None:
        from ..api import load_ir, normalize_inputs

        g = load_ir(build / "model.onnx", requant=m["requant"], rounding=m["rounding"])
        feeds, _ = normalize_inputs(g, inputs)
        golden_dir = build / "sim" / "golden"
        golden(g, feeds, golden_dir, tensor_keys(g))
    work = build / "sim"
    work.mkdir(exist_ok=True)
    result_path, progress_path = work / "bench_result.json", work / "progress"
    for p in (result_path, progress_path):
        p.unlink(missing_ok=True)
    (build / REPORT).unlink(missing_ok=True)
    sources = [build / "rtl" / name for name in m["rtl"]]
    env = {"TONY_BUILD": str(build), "TONY_GOLDEN": str(golden_dir), "TONY_RESULT": str(result_path),
           "TONY_PROGRESS": str(progress_path)}
    t0 = time.perf_counter()
    with _Progress(progress_path, progress):
        run_cocotb(sources, m["toplevel"], "tony.testbench.bench_model", build_dir=work / "build",
                   extra_env=env, waves=waves, simulator=simulator, reuse_build=True)
    wall = time.perf_counter() - t0
    res = json.loads(result_path.read_text())
    a = m["array"]
    peak = a["rows"] * a["cols"]
    layers = []
    for l, r in zip(m["layers"], res["layers"]):
        macs = l.get("macs", 0) * res["samples"]
        layers.append({"name": l["name"], "op": l["op"], "K": l.get("K"), "M": l.get("M"), "macs": macs,
                       "cycles": r["cycles"], "mismatches": r["mismatches"],
                       "utilization": macs / (r["cycles"] * peak) if r["cycles"] and macs else None})
    cycles = res["cycles"]
    macs = sum(l["macs"] for l in layers)
    rep = {
        "model": m["model"], "array": a, "simulator": simulator, "samples": res["samples"],
        "bit_exact": res["mismatches"] == 0 and res["compared"] > 0, "mismatches": res["mismatches"],
        "compared": res["compared"], "first_mismatches": res.get("first_mismatches", []),
        "cycles": cycles, "macs": macs, "utilization": macs / (cycles * peak) if cycles else 0.0,
        "sim_seconds": res.get("sim_seconds"), "wall_seconds": wall,
        "cycles_per_second": cycles / res["sim_seconds"] if res.get("sim_seconds") else 0.0,
        "layers": layers, "golden": str(golden_dir),
    }
    (build / REPORT).write_text(json.dumps(rep, indent=2) + "\n")
    return rep
