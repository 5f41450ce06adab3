"""The work of one sweep task, the same function whether it runs in-process (serial) or on a
dask worker: it takes a point (or a synthesis job) and the model's ONNX bytes, and returns a small
dict of plain values; build folders stay in a temporary folder or under `builds`."""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from ..errors import TonyError, show
from .spec import Point, SynthJob


@lru_cache(maxsize=8)
def _graph(data: bytes):
    import onnx

    from ..api import load_ir
    from ..ir.partition import partition

    g = load_ir(onnx.load_from_string(data), requant="pow2")
    partition(g)
    return g


def _error(e: BaseException) -> str:
    return show(str(e)) if isinstance(e, TonyError) else show(f"{type(e).__name__}: {e}")


@contextmanager
def _folder(builds, name: str):
    """A build folder: under `builds` (kept), or a temporary one removed afterwards."""
    if builds:
        p = Path(builds) / name
        p.parent.mkdir(parents=True, exist_ok=True)
        yield p
        return
    tmp = Path(tempfile.mkdtemp(prefix="tony-sweep-"))
    try:
        yield tmp / "build"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _layers(table: list[dict], traffic: dict) -> list[dict]:
    by_name = {t["name"]: t["total"] for t in traffic["layers"]}
    keep = ("name", "op", "macs", "predicted", "utilization", "bound")
    return [{**{k: r.get(k) for k in keep}, "traffic_bytes": by_name.get(r["name"])} for r in table]


def _cycle_model(p: Point, g) -> dict:
    """Compile the point's program and run the cycle model: the row's figures."""
    from ..accel import model as accel_model
    from ..accel import traffic as accel_traffic
    from ..accel.compiler import compile_program
    from ..accel.isa import INSTR_BITS
    from ..accel.program import AccelConfig
    from ..ir import bounds

    cfg = AccelConfig(p.hw.rows, p.hw.cols, mem_bits=p.hw.mem_bits, abuf_words=p.hw.abuf_words)
    bounds.check_overflow(g, cfg.acc_bits)
    prog = compile_program(g, cfg, batch=p.batch)
    timing = accel_model.cycles(prog)
    table = accel_model.layer_table(prog, timing)
    tr = accel_traffic.of_program(prog, table)
    c = prog.cfg
    macs = sum(r["macs"] for r in table)
    buffer_bits = c.cols * (c.abuf_words * c.a_bits + c.wbuf_words * c.w_bits) + c.bbuf_words * c.bias_bits \
        + c.imem_words * INSTR_BITS
    return {
        "cycles": timing.total, "cycles_per_inference": timing.total / p.batch, "macs": macs,
        "utilization": macs / (timing.total * c.rows * c.cols), "instructions": len(prog.words),
        "abuf": c.abuf_words, "wbuf": c.wbuf_words, "bbuf": c.bbuf_words, "imem": c.imem_words,
        "buffer_words": c.abuf_words + c.wbuf_words + c.bbuf_words + c.imem_words, "buffer_bits": buffer_bits,
        "traffic_bytes": tr["total"]["total"], "weight_bytes": tr["total"]["weights"],
        "act_bytes": tr["total"]["act_in"] + tr["total"]["act_out"],
        "layers": json.dumps(_layers(table, tr), sort_keys=True),
    }


def _simulate(p: Point, g, builds) -> dict:
    """Compile the point into a build folder, simulate p.sim samples on Verilator."""
    from ..accel.program import AccelConfig
    from ..compiler import compile_accel
    from ..golden import default_inputs
    from ..names import safe_id
    from ..sim.accel import simulate

    cfg = AccelConfig(p.hw.rows, p.hw.cols, mem_bits=p.hw.mem_bits, abuf_words=p.hw.abuf_words)
    name = f"{p.model.label}_{p.model.sha}_{p.hw.rows}x{p.hw.cols}_a{p.hw.abuf_words}_m{p.hw.mem_bits}_b{p.batch}"
    with _folder(builds, safe_id(name, max_len=120)) as out:
        compile_accel(g, out, cfg, default_inputs(g, p.sim, 0), batch=p.batch)
        rep = simulate(out, progress=False)
    return {"sim_samples": p.sim, "bit_exact": bool(rep["bit_exact"]), "sim_cycles": rep["cycles_per_run"][0],
            "cycles_match": bool(rep["cycles_match"])}


def run_point(p: Point, data: bytes, builds: str | None = None) -> dict:
    """One row of the results: the point's identity, then its figures or the error that stopped it."""
    row = {"point": p.key, "model": p.model.label, "model_sha": p.model.sha, "rows": p.hw.rows, "cols": p.hw.cols,
           "pes": p.hw.pes, "abuf_words": p.hw.abuf_words, "mem_bits": p.hw.mem_bits, "batch": p.batch,
           "status": "ok", "error": None}
    try:
        g = _graph(data)
        row.update(_cycle_model(p, g))
        if p.sim:
            row.update(_simulate(p, g, builds))
    except Exception as e:  # one failed point never stops the sweep; its row says why
        row.update(status="error", error=_error(e))
    return row


def run_synth(job: SynthJob, data: bytes, builds: str | None = None) -> dict:
    """Synthesize the overlay of `job` (compiled for the model `data`, one sample): its resources
    and, with place and route, Fmax."""
    from ..compiler import compile_accel
    from ..golden import default_inputs
    from ..names import safe_id
    from ..synth import synthesize

    o = job.overlay
    out = {"synth": job.key, "target": job.target, "pnr": job.pnr, "status": "ok", "error": None, "report": None}
    try:
        g = _graph(data)
        with _folder(builds, "synth_" + safe_id(job.key, max_len=120)) as b:
            compile_accel(g, b, o.config(), default_inputs(g, 1, 0))
            rep = synthesize(b, target=job.target, pnr=job.pnr, progress=False)
        t = rep["total"]
        out.update(lut=t["logic_luts"], ff=t["ff"], dsp=t["dsp"], bram=t["bram"], fmax_mhz=rep.get("fmax_mhz"),
                   report=json.dumps({k: rep[k] for k in ("total", "modules", "target", "device", "fmax_mhz")}))
    except Exception as e:
        out.update(status="error", error=_error(e))
    return out
