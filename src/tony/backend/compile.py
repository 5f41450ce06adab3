"""`tony compile`: IR -> the accelerator's RTL, its program and memory image, golden vectors and a
run manifest (docs/isa.md for the program, docs/golden.md for the vectors).

The output folder is written to a temporary sibling and moved into place only when complete,
so a failed compile never leaves a folder that looks valid.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import __version__, ir
from ..api import load_ir, normalize_inputs
from ..errors import InputError
from ..ref import execute
from . import checks
from ..accel.compiler import compile_program
from ..accel.layout import input_beats
from ..accel.program import AccelConfig
from .memfile import write_tensor
from .fusesoc import write_core
from .bringup import write_bringup
from .names import safe_id
from .output import MANIFEST, staged_output



@dataclass(frozen=True)
class ArrayConfig:
    rows: int = 4
    cols: int = 4
    a_bits: int = 8
    w_bits: int = 8
    acc_bits: int = 32
    mem_bits: int = 64

    @classmethod
    def parse(cls, text: str, **kw) -> "ArrayConfig":
        try:
            r, c = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise InputError(f"--array {text!r}: expected ROWSxCOLS, e.g. 8x8") from None
        if not (1 <= r <= 64 and 1 <= c <= 64):
            raise InputError(f"--array {text!r}: rows and columns must be between 1 and 64")
        return cls(r, c, **kw)


def rebuild_program(build: Path, m: dict):
    """The IR graph and the program of a build, compiled again from its model and manifest."""
    g = load_ir(build / "model.onnx", requant=m["requant"], rounding=m["rounding"])
    return g, compile_program(g, AccelConfig(**m["accel"]), batch=m["batch"])


def default_inputs(g: ir.Graph, n: int, seed: int) -> dict:
    """Seeded random float inputs spanning each input quantizer's range."""
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.tensors[name]
        q = next((op for op in g.ops if isinstance(op, ir.Quantize) and op.inputs[0] == name), None)
        if q is not None:
            lo, hi = (q.dtype.min - q.zero_point) * q.scale, (q.dtype.max - q.zero_point) * q.scale
            x = rng.uniform(lo, hi, size=(n,) + t.shape[1:]).astype(np.float32)
        else:
            x = rng.integers(t.dtype.min, t.dtype.max + 1, size=(n,) + t.shape[1:])
        feeds[name] = x
    return feeds


def compile_model(model, out_dir, *, array: ArrayConfig = ArrayConfig(), inputs=None, samples: int = 20,
                  seed: int = 0, requant: str = "pow2", rounding: str = "half_even", batch: int = 1,
                  mem_latency: int = 2, abuf_words: int = 0) -> dict:
    """Compile `model` for the accelerator (tony_accel) with `batch` samples per run; returns the manifest."""
    from ..rtl import render_to

    g = load_ir(model, requant=requant, rounding=rounding)
    checks.check_overflow(g, array.acc_bits)
    if batch < 1:
        raise InputError("--batch must be at least 1")
    cfg = AccelConfig(array.rows, array.cols, array.a_bits, array.w_bits, array.acc_bits, array.mem_bits,
                      abuf_words=abuf_words, mem_latency=mem_latency)
    prog = compile_program(g, cfg, batch=batch)
    if inputs is None:
        feeds = default_inputs(g, samples, seed)
    else:
        feeds, _ = normalize_inputs(g, inputs)
    with staged_output(out_dir) as tmp:
        return _write(g, model, tmp, prog, feeds, render_to)


def golden(g: ir.Graph, feeds: dict, folder: Path, keys: dict[str, str]) -> dict:
    """Run the reference and write every device tensor (and host inputs/outputs) as golden vectors."""
    env = execute(g, feeds, keep_all=True)
    files = {}
    for name, key in keys.items():
        t = g.tensors[name]
        arr = env[name]
        if t.dtype.is_float:
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{key}.npy", np.asarray(arr, np.float32))
            files[key] = {"npy": f"{key}.npy"}
        else:
            files[key] = write_tensor(folder / key, arr, t.dtype.bits, comment=f"{key}: {t.dtype} {list(t.shape)}")
        files[key].update(dtype=t.dtype.name, shape=list(t.shape), tensor=name)
    return files


def tensor_keys(g: ir.Graph) -> dict[str, str]:
    used: set[str] = set()
    names = list(g.inputs) + [o for op in g.ops for o in op.outputs]
    return {n: safe_id(n, used) for n in names}


def device_runs(g: ir.Graph, prog, feeds: dict, keys: dict[str, str]) -> np.ndarray:
    """External-memory beats of the device inputs, one row per run of `prog.batch` samples
    (the last run padded with zero samples); inputs laid out back to back in manifest order."""
    env = execute(g, feeds, keep_all=True)
    n = next(iter(feeds.values())).shape[0]
    rows = []
    for r in range(-(-n // prog.batch)):
        part = {}
        for name in prog.inputs:
            x = np.asarray(env[name][r * prog.batch:(r + 1) * prog.batch])
            if x.shape[0] < prog.batch:
                x = np.concatenate([x, np.zeros((prog.batch - x.shape[0],) + x.shape[1:], x.dtype)])
            part[name] = x
        beats = input_beats(prog, part)
        rows.append([b for name in prog.inputs for b in beats[name]])
    return np.asarray(rows, dtype=np.uint64)


def _write(g: ir.Graph, model, out: Path, prog, feeds: dict, render_to) -> dict:
    from ..ir.types import Rounding
    from ..accel import model as accel_model

    cfg = prog.cfg
    keys = tensor_keys(g)
    rtl = render_to(out / "rtl", ["tony_accel"], ROUND_MODE=Rounding(g.meta["rounding"]).code, **cfg.hdl_params())
    files = golden(g, feeds, out / "golden", keys)
    src = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    onnx.save(src, out / "model.onnx")
    np.save(out / "inputs.npy", *[feeds[n] for n in g.inputs][:1])
    (out / "ir.txt").write_text(ir.format_graph(g) + "\n")
    (out / "program.txt").write_text("".join(f"{i:5d}  {t}\n" for i, t in enumerate(prog.text)))
    mem = out / "mem"
    mem.mkdir()
    if cfg.mem_bits > 64:
        raise InputError(f"--mem-bits {cfg.mem_bits}: the memory image is written as 64-bit words; use 32 or 64")
    np.save(mem / "image.npy", np.asarray(prog.image, dtype=np.uint64))
    digits = cfg.mem_bits // 4
    (mem / "image.hex").write_text(f"// tony_accel memory image: {len(prog.image)} beats of {cfg.mem_bits} bits, "
                                   "program at beat 0\n" + "".join(format(b, f"0{digits}x") + "\n" for b in prog.image))
    runs = device_runs(g, prog, feeds, keys)
    np.save(mem / "runs.npy", runs)
    timing = accel_model.cycles(prog)
    table = accel_model.layer_table(prog, timing)
    off, inputs = 0, []
    for name, info in prog.inputs.items():
        inputs.append({"key": keys[name], "ext": info["ext"], "beats": info["beats"], "offset": off})
        off += info["beats"]
    outputs = []
    for name, info in prog.outputs.items():
        st = info["stored"]
        outputs.append({"key": keys[name], "ext": info["ext"], "beats": info["beats"], "n": st.n, "c": st.c,
                        "h": st.h, "w": st.w, "signed": info["signed"], "shape": list(info["shape"])})
    manifest = {
        "tony_version": __version__,
        "model": g.name,
        "accel": asdict(cfg),
        "array": {"rows": cfg.rows, "cols": cfg.cols, "a_bits": cfg.a_bits, "w_bits": cfg.w_bits,
                  "acc_bits": cfg.acc_bits},
        "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
        "samples": int(next(iter(feeds.values())).shape[0]),
        "batch": prog.batch,
        "runs": int(runs.shape[0]),
        "rtl": [p.name for p in rtl],
        "toplevel": "tony_accel",
        "program": {"addr": prog.prog_addr, "length": len(prog.words), "text": "program.txt"},
        "inputs": inputs,
        "outputs": outputs,
        "device_outputs": [o["key"] for o in outputs],
        "predicted_cycles": timing.total,
        "predicted_issue": timing.issue,
        "layers": table,
        "golden": files,
        "macs_per_run": sum(r["macs"] for r in table),
    }
    manifest.update(write_bringup(out, manifest, len(prog.image)))  # AXI wrapper RTL, C header, driver
    manifest["fusesoc"] = write_core(out, model=g.name, version=__version__, toplevel="tony_accel",
                                     rtl=manifest["rtl"], params=cfg.hdl_params(),
                                     description="Tony instruction-driven systolic accelerator (generated)",
                                     axi=manifest["axi"])
    (out / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest
