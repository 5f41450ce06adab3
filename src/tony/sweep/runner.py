"""`tony sweep`: run every point of a sweep as a task (in-process, on an embedded dask
LocalCluster, or on a dask scheduler's workers), write each row as it finishes, resume by skipping
the rows already written, then synthesize each distinct overlay once, mark the Pareto fronts and
write the HTML report."""
from __future__ import annotations

import json
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..build import write_json
from ..errors import InputError
from . import pareto, store
from .spec import Model, Overlay, Point, SynthJob, grid, unique_labels
from .task import run_point, run_synth

SUMMARY = "sweep.json"


@dataclass(frozen=True)
class Settings:
    """How to run a sweep (what to run is the list of points)."""

    scheduler: str | None = None   # a dask scheduler address; None: an embedded LocalCluster
    workers: int = 2               # LocalCluster worker processes (one thread each)
    serial: bool = False           # run the tasks in this process, one after another
    max_points: int | None = None  # stop after computing this many new points (the rest on a rerun)
    synth: str | None = None       # FPGA target to synthesize each overlay for
    pnr: bool = False
    keep_builds: bool = False      # keep build folders under SWEEP/builds (a folder the workers share)
    connect_timeout: float = 20.0  # seconds to reach --scheduler
    progress: bool = True
    report: bool = True


@dataclass
class Outcome:
    computed: list = field(default_factory=list)      # keys of the points computed by this run
    skipped: int = 0                                  # points already in the results
    synthesized: list = field(default_factory=list)   # keys of the overlays synthesized by this run
    wall_s: float = 0.0
    mode: str = ""
    rows: list = field(default_factory=list)


# ---- models -------------------------------------------------------------------------------------

def load_models(args: list[str], out: Path) -> list[tuple[Model, bytes]]:
    """Each MODEL argument as (Model, ONNX bytes): an .onnx file, or the name of a bundled example
    (built once into SWEEP/models/NAME)."""
    from ..models import EXAMPLES, build_example

    if not args:
        raise InputError("needs at least one model", where="tony sweep")
    out_models = []
    for label, a in zip(unique_labels(args), args):
        p = Path(a)
        if p.is_file():
            src = p
        elif a in EXAMPLES:
            src = out / "models" / a / "model.onnx"
            if not src.is_file():
                build_example(a, out / "models" / a)
        else:
            raise InputError("no such file or bundled example", where=f"model {a}",
                             hint=f"give an .onnx file or one of {', '.join(EXAMPLES)}")
        data = src.read_bytes()
        out_models.append((Model.from_bytes(label, data, str(a)), data))
    return out_models


# ---- executors: the same task functions, in-process or on dask -----------------------------------

class _Serial:
    mode = "serial"

    def run(self, fn, items: list, data: dict, extra):
        for it, key in items:
            yield fn(it, data[key], extra)

    def close(self):
        pass


class _Dask:
    def __init__(self, settings: Settings):
        if not settings.scheduler and settings.workers < 1:
            raise InputError("must be at least 1", where="--workers")
        self.settings = settings
        self.cluster = self.client = None
        self.mode = (f"dask scheduler {settings.scheduler}" if settings.scheduler else
                     f"dask LocalCluster, {settings.workers} worker processes")
        self.scattered: dict = {}

    def _start(self) -> None:
        """Connect (or start the LocalCluster) when there is work for it, not before."""
        import logging

        from distributed import Client, LocalCluster

        s = self.settings
        if s.scheduler:
            try:
                self.client = Client(s.scheduler, timeout=f"{s.connect_timeout}s")
            except (OSError, TimeoutError) as e:
                raise InputError(f"cannot reach the dask scheduler ({type(e).__name__})",
                                 where=f"--scheduler {s.scheduler}",
                                 hint="start `dask scheduler` there, or leave --scheduler out") from None
        else:
            self.cluster = LocalCluster(n_workers=s.workers, threads_per_worker=1, processes=True,
                                        dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(self.cluster)

    def run(self, fn, items: list, data: dict, extra):
        from distributed import as_completed

        if not items:
            return
        if self.client is None:
            self._start()
        for key in {k for _, k in items} - set(self.scattered):
            self.scattered[key] = self.client.scatter(data[key], broadcast=True)
        futures = [self.client.submit(fn, it, self.scattered[key], extra, pure=False) for it, key in items]
        try:
            for f in as_completed(futures):
                yield f.result()
        finally:
            self.client.cancel([f for f in futures if not f.done()])

    def close(self):
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


@contextmanager
def executor(settings: Settings):
    ex = _Serial() if settings.serial else _Dask(settings)
    try:
        yield ex
    finally:
        ex.close()


# ---- the results table ----------------------------------------------------------------------------

def overlays(rows: list[dict]) -> dict[tuple, Overlay]:
    """Per hardware configuration (rows, cols, abuf option, memory port): the overlay that runs
    every point on it that compiled."""
    out: dict[tuple, list] = {}
    for r in rows:
        if r["status"] == "ok":
            out.setdefault((r["rows"], r["cols"], r["abuf_words"], r["mem_bits"]), []).append(r)
    return {k: Overlay(k[0], k[1], k[3], *(max(r[b] for r in rs) for b in ("abuf", "wbuf", "bbuf", "imem")))
            for k, rs in out.items()}


def joined(points: list[dict], synth: dict[str, dict], settings: Settings) -> list[dict]:
    """The result rows: each point with its overlay's synthesis figures, then the Pareto marks."""
    ovl = overlays(points)
    out = []
    for r in points:
        r = {**dict.fromkeys(store.RESULT_COLUMNS), **r}
        o = ovl.get((r["rows"], r["cols"], r["abuf_words"], r["mem_bits"]))
        r["overlay"] = o.key if o else None
        s = synth.get(SynthJob(o, settings.synth, settings.pnr).key) if o and settings.synth else None
        if s and s["status"] == "ok":
            r.update(target=s["target"], lut=s["lut"], ff=s["ff"], dsp=s["dsp"], bram=s["bram"], fmax_mhz=s["fmax_mhz"])
            if s["fmax_mhz"] and r["cycles"] is not None:
                r["latency_us"] = r["cycles"] / s["fmax_mhz"]
        out.append(r)
    return pareto.mark(out)


class Results:
    """The sweep folder's rows, kept in the order of the points and rewritten as rows arrive."""

    def __init__(self, out: Path, points: list[Point], settings: Settings):
        self.out, self.settings = out, settings
        self.rows = {r["point"]: r for r in store.read_table(out / store.RESULTS, store.POINT_COLUMNS)}
        self.synth = {s["synth"]: s for s in store.read_table(out / store.SYNTH, store.SYNTH_COLUMNS)}
        order = {p.key: i for i, p in enumerate(points)}
        self.order = lambda key: (order.get(key, len(order)), key)

    def add(self, row: dict) -> None:
        self.rows[row["point"]] = row
        self.write()

    def add_synth(self, s: dict) -> None:
        self.synth[s["synth"]] = s
        store.write_table(self.out / store.SYNTH, list(self.synth.values()), store.SYNTH_COLUMNS)
        self.write()

    def table(self) -> list[dict]:
        return joined([self.rows[k] for k in sorted(self.rows, key=self.order)], self.synth, self.settings)

    def write(self) -> None:
        store.write_table(self.out / store.RESULTS, self.table(), store.RESULT_COLUMNS)


# ---- the sweep ------------------------------------------------------------------------------------

def _bar(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="point" if desc == "sweep" else "overlay", disable=not enabled,
                leave=False)


def _points(ex, res: Results, todo: list[Point], data: dict, settings: Settings, outcome: Outcome) -> None:
    builds = str(res.out / "builds") if settings.keep_builds else None
    with _bar(len(todo), "sweep", settings.progress) as bar:
        for row in ex.run(run_point, [(p, p.model.sha) for p in todo], data, builds):
            res.add(row)
            outcome.computed.append(row["point"])
            bar.set_postfix_str(row["point"].split("@")[0] + " " + row["point"].split("|")[1], refresh=False)
            bar.update()


def _synth_jobs(res: Results, points: list[Point], settings: Settings) -> list[tuple[SynthJob, str]]:
    """The overlays of this sweep's points not synthesized yet, each with a model that runs on it."""
    keys = {p.key for p in points}
    mine = [res.rows[k] for k in sorted(keys & set(res.rows), key=res.order)]
    jobs = []
    for hw, o in overlays(mine).items():
        job = SynthJob(o, settings.synth, settings.pnr)
        if job.key in res.synth:
            continue
        first = next(r for r in mine if r["status"] == "ok" and (r["rows"], r["cols"], r["abuf_words"],
                                                                 r["mem_bits"]) == hw)
        jobs.append((job, first["model_sha"]))
    return jobs


def run_sweep(model_args: list[str], out, *, arrays, abuf_words=(0,), mem_bits=(64,), batches=(1,), sim: int = 0,
              settings: Settings = Settings()) -> Outcome:
    """Run (or resume) the sweep of `model_args` x the grid into the folder `out`."""
    t0 = time.perf_counter()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is not a folder", where="-o")
    if settings.max_points is not None and settings.max_points < 0:
        raise InputError("must be 0 or more", where="--max-points")
    if not settings.serial and not settings.scheduler and settings.workers < 1:
        raise InputError("must be at least 1", where="--workers")
    grid([], arrays, abuf_words, mem_bits, batches, sim)  # refuses bad values before anything is written
    out.mkdir(parents=True, exist_ok=True)
    models = load_models(model_args, out)
    data = {m.sha: d for m, d in models}
    points = grid([m for m, _ in models], arrays, abuf_words, mem_bits, batches, sim)
    res = Results(out, points, settings)
    todo = [p for p in points if p.key not in res.rows]
    outcome = Outcome(skipped=len(points) - len(todo))
    if settings.max_points is not None:
        todo = todo[:settings.max_points]
    finished = len(todo) + outcome.skipped == len(points)
    with executor(settings) as ex:
        outcome.mode = ex.mode
        if todo:
            _points(ex, res, todo, data, settings, outcome)
        if settings.synth and finished:
            jobs = _synth_jobs(res, points, settings)
            with _bar(len(jobs), "synth", settings.progress) as bar:
                for s in ex.run(run_synth, [(j, sha) for j, sha in jobs], data,
                                str(out / "builds") if settings.keep_builds else None):
                    res.add_synth(s)
                    outcome.synthesized.append(s["synth"])
                    bar.update()
    res.write()
    outcome.rows = res.table()
    outcome.wall_s = time.perf_counter() - t0
    write_json(out / SUMMARY, {"models": [{"label": m.label, "sha": m.sha, "source": m.source} for m, _ in models],
                               "points": len(points), "computed": len(outcome.computed), "skipped": outcome.skipped,
                               "complete": finished, "mode": outcome.mode, "wall_s": round(outcome.wall_s, 3),
                               "synth": settings.synth, "pnr": settings.pnr, "sim": sim})
    if settings.report:
        from .report import write_sweep_report

        write_sweep_report(out, outcome.rows)
    return outcome


def summary_json(out) -> dict:
    p = Path(out) / SUMMARY
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return {}
