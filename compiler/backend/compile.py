"""`tony compile`: IR -> rendered RTL, memory images, golden vectors and a run manifest.

The output folder is written to a temporary sibling and moved into place only when complete,
so a failed compile never leaves a folder that looks valid.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from .. import __version__, ir
from ..api import load_ir, normalize_inputs
from ..errors import InputError
from ..ref import execute
from . import checks
from .memfile import write_tensor
from .fusesoc import write_core
from .names import safe_id
from .output import MANIFEST, staged_output



@dataclass(frozen=True)
class ArrayConfig:
    rows: int = 4
    cols: int = 4
    a_bits: int = 8
    w_bits: int = 8
    acc_bits: int = 32

    @classmethod
    def parse(cls, text: str, **kw) -> "ArrayConfig":
        try:
            r, c = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise InputError(f"--array {text!r}: expected ROWSxCOLS, e.g. 8x8") from None
        if not (1 <= r <= 64 and 1 <= c <= 64):
            raise InputError(f"--array {text!r}: rows and columns must be between 1 and 64")
        return cls(r, c, **kw)

    def hdl_params(self) -> dict:
        return {"ROWS": self.rows, "COLS": self.cols, "A_BITS": self.a_bits, "W_BITS": self.w_bits,
                "ACC_BITS": self.acc_bits}


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


def schedule(g: ir.Graph, keys: dict[str, str]) -> list[dict]:
    """Host-driven schedule: one entry per device op, in order."""
    layers, used = [], set()
    for op in g.device_ops:
        lname = safe_id(op.origin or op.outputs[0], used, prefix="layer")
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        entry = {"name": lname, "op": op.kind, "input": keys[x.name], "output": keys[y.name],
                 "in_dtype": x.dtype.name, "out_dtype": y.dtype.name, "out_shape": list(y.shape)}
        if isinstance(op, (ir.Dense, ir.Conv)):
            w = g.constants[op.inputs[1]]
            if isinstance(op, ir.Dense):
                k, m = w.shape
                wmat = w                                       # K x M
                entry.update(K=int(k), M=int(m), group=1, macs=int(k * m * y.shape[0]))
            else:
                m, cg, kh, kw = w.shape
                wmat = w.reshape(m, cg * kh * kw).T            # (cg*kh*kw) x M, im2col order (c, kh, kw)
                oh, ow = y.shape[2:]
                entry.update(K=int(cg * kh * kw), M=int(m), group=op.group, macs=int(cg * kh * kw * m * oh * ow),
                             kernel=[int(kh), int(kw)], strides=list(op.strides), pads=list(op.pads),
                             dilations=list(op.dilations))
            bias = g.constants[op.inputs[2]] if len(op.inputs) > 2 else np.zeros(wmat.shape[1], np.int64)
            rq = op.requant
            entry.update(weight=f"mem/{lname}_w", bias=f"mem/{lname}_b",
                         requant={"shift": int(rq.shift), "mult": int(rq.mult), "lo": int(rq.lo), "hi": int(rq.hi),
                                  "rounding": rq.rounding.value})
            entry["_arrays"] = (wmat, bias)
        layers.append(entry)
    return layers


def compile_model(model, out_dir, *, array: ArrayConfig = ArrayConfig(), inputs=None, samples: int = 20,
                  seed: int = 0, requant: str = "pow2", rounding: str = "half_even") -> dict:
    """Compile `model` for the host-driven array slice; returns the manifest."""
    from ..hw_templates import render_to

    g = load_ir(model, requant=requant, rounding=rounding)
    checks.check_hardware(g, a_bits=array.a_bits, w_bits=array.w_bits, acc_bits=array.acc_bits)
    if inputs is None:
        feeds = default_inputs(g, samples, seed)
    else:
        feeds, _ = normalize_inputs(g, inputs)
    with staged_output(out_dir) as tmp:
        return _write(g, model, tmp, array, feeds, render_to)


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


def _write(g: ir.Graph, model, out: Path, array: ArrayConfig, feeds: dict, render_to) -> dict:
    keys = tensor_keys(g)
    layers = schedule(g, keys)
    for entry in layers:
        arrays = entry.pop("_arrays", None)
        if arrays:
            wmat, bias = arrays
            write_tensor(out / entry["weight"], wmat, array.w_bits, comment=f"{entry['name']} weights K x M")
            write_tensor(out / entry["bias"], bias, array.acc_bits, comment=f"{entry['name']} bias")
    from ..ir.types import Rounding

    rtl = render_to(out / "rtl", ["tony_core"], ROUND_MODE=Rounding(g.meta["rounding"]).code, **array.hdl_params())
    files = golden(g, feeds, out / "golden", keys)
    src = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    onnx.save(src, out / "model.onnx")
    np.save(out / "inputs.npy", *[feeds[n] for n in g.inputs][:1])
    (out / "ir.txt").write_text(ir.format_graph(g) + "\n")
    device_in = [keys[op.inputs[0]] for op in g.device_ops][:1]
    manifest = {
        "tony_version": __version__,
        "model": g.name,
        "array": {"rows": array.rows, "cols": array.cols, "a_bits": array.a_bits, "w_bits": array.w_bits,
                  "acc_bits": array.acc_bits},
        "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
        "samples": int(next(iter(feeds.values())).shape[0]),
        "rtl": [p.name for p in rtl],
        "toplevel": "tony_core",
        "device_input": device_in[0] if device_in else None,
        "device_outputs": [keys[op.outputs[0]] for op in g.device_ops][-1:],
        "layers": layers,
        "golden": files,
        "macs_per_sample": sum(l.get("macs", 0) for l in layers),
    }
    manifest["fusesoc"] = write_core(out, model=g.name, version=__version__, toplevel="tony_core",
                                     rtl=manifest["rtl"], params=array.hdl_params(),
                                     description="Tony systolic array core (generated)")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
