"""`tony sim`: build the compiled accelerator with Verilator through cocotb's runner, run the
whole-model bench (tony/sim/benches/accel.py) on the memory image, compare every output byte with
the golden vectors, and hold the measured cycles to the cycle model's prediction."""
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
                bar = tqdm(total=int(total), desc="simulating", unit="run", leave=False)
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
             simulator: str = "verilator", axi_stall: float | None = None) -> dict:
    """Run the compiled build; returns (and writes) the sim report."""
    from ..sim import run_cocotb

    build = Path(build_dir).resolve()
    m = _read_manifest(build)
    if m.get("toplevel") != "tony_accel":
        raise InputError(f"{build} was compiled by an older Tony (no accelerator program)",
                         hint="compile it again with `tony compile`")
    golden_dir = build / "golden"
    if inputs is not None:
        import numpy as np

        from ..api import normalize_inputs
        from .compile import device_runs, rebuild_program

        g, prog = rebuild_program(build, m)
        feeds, _ = normalize_inputs(g, inputs)
        golden_dir = build / "sim" / "golden"
        keys = tensor_keys(g)
        golden(g, feeds, golden_dir, keys)
        np.save(golden_dir / "runs.npy", device_runs(g, prog, feeds, keys))
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
        if axi_stall is not None:  # through the SoC wrapper (AXI4-Lite host, AXI4 memory): sim_axi.py
            from .sim_axi import run_axi

            m = run_axi(build, m, work, env, axi_stall, waves=waves, simulator=simulator)
        else:
            run_cocotb(sources, m["toplevel"], "tony.sim.benches.accel", build_dir=work / "build",
                       extra_env=env, waves=waves, simulator=simulator, build_args=["-O3"])
    wall = time.perf_counter() - t0
    res = json.loads(result_path.read_text())
    rep = report_from(m, res)
    rep.update(simulator=simulator, wall_seconds=wall, golden=str(golden_dir))
    if axi_stall is not None:
        rep.update(toplevel=m["toplevel"], axi_stall=axi_stall)
    (build / REPORT).write_text(json.dumps(rep, indent=2) + "\n")
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
            end = issue[row["last"]] if row["last"] < len(issue) else first["cycles"]
            meas = end - (0 if row["name"] == "(load)" else issue[row["first"]])
        macs = row["macs"]
        layers.append({**{k: v for k, v in row.items() if k not in ("first", "last")}, "cycles": meas,
                       "utilization": macs / (meas * peak) if meas and macs else None,
                       "predicted_utilization": row.get("utilization")})
    cycles = res["cycles"]
    macs = m["macs_per_run"] * len(runs)
    sim_s = res.get("sim_seconds") or 0.0
    return {
        "model": m["model"], "array": m["array"], "accel": a, "samples": res["samples"], "batch": m["batch"],
        "runs": len(runs), "bit_exact": res["mismatches"] == 0 and res["compared"] > 0,
        "mismatches": res["mismatches"], "compared": res["compared"], "first_mismatches": res.get("first_mismatches", []),
        "cycles": cycles, "cycles_per_run": [r["cycles"] for r in runs], "predicted_cycles": m["predicted_cycles"],
        "cycles_match": all(r["cycles"] == m["predicted_cycles"] for r in runs) and bool(runs),
        "issue_match": all(r["issue"] == m["predicted_issue"] for r in runs) and bool(runs),
        "macs": macs, "utilization": macs / (cycles * peak) if cycles else 0.0,
        "sim_seconds": sim_s, "cycles_per_second": cycles / sim_s if sim_s else 0.0,
        "layers": layers,
    }
