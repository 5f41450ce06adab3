"""Memory budget: what running a graph on a number of samples would hold in memory, checked before
anything is allocated, so that a model whose dimensions need gigabytes or terabytes is refused in
one line instead of exhausting the machine (or ending in an out-of-memory kill).

The reference (tony.ref.execute) keeps every tensor of the graph for every sample (the golden
vectors are all of them), integers as int64 and floats as float32 or float64; a convolution also
holds its windows (kh * kw values per input value and output pixel). `ir_bytes` adds that up;
`onnx_bytes` does the same from onnx's shape inference for a float model run in calibration.

The limit is TONY_MEMORY_LIMIT (bytes, or with a K, M, G or T suffix) or else 8 GiB, or half the
machine's memory where that is less.
"""
from __future__ import annotations

import math
import os

from .errors import InputError

VALUE_BYTES = 8          # int64 / float64: what the reference holds a value in
DEFAULT_LIMIT = 8 << 30
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def limit_bytes() -> int:
    """The most a run may need: TONY_MEMORY_LIMIT, else min(8 GiB, half the physical memory)."""
    text = os.environ.get("TONY_MEMORY_LIMIT", "").strip().upper().removesuffix("B").removesuffix("I")
    if text:
        unit = text[-1] if text[-1] in _UNITS and not text[-1].isdigit() else ""
        try:
            value = float(text[:-1] if unit else text) * _UNITS[unit]
        except ValueError:
            raise InputError(f"TONY_MEMORY_LIMIT={os.environ['TONY_MEMORY_LIMIT']!r}: expected bytes, "
                             "optionally with a K, M, G or T suffix (e.g. 16G)") from None
        if not math.isfinite(value) or value <= 0:
            raise InputError(f"TONY_MEMORY_LIMIT={os.environ['TONY_MEMORY_LIMIT']!r} must be positive")
        return int(value)
    try:
        physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        physical = 0
    return min(DEFAULT_LIMIT, physical // 2) if physical > 0 else DEFAULT_LIMIT


def _gib(n: float) -> str:
    return f"{n / (1 << 30):,.1f} GiB" if n >= 1 << 30 else f"{n / (1 << 20):,.1f} MiB"


def ir_bytes(g, samples: int) -> tuple[int, str, tuple]:
    """(bytes, the largest tensor's name, its shape) the reference needs for `samples` samples of
    the IR graph `g`."""
    from . import ir

    total, big, big_n = 0, "", -1
    for name, t in g.tensors.items():
        if name in g.constants:
            continue
        n = math.prod(int(d) for d in t.shape)
        total += n
        if n > big_n:
            big, big_n = name, n
    temp = 0
    for op in g.ops:
        if isinstance(op, ir.Conv):
            kh, kw = g.tensors[op.inputs[1]].shape[2:4]
            cin = g.tensors[op.inputs[1]].shape[1]
            out = g.tensors[op.outputs[0]].shape
            pixels = math.prod(int(d) for d in out) // max(int(out[1]), 1)
            temp = max(temp, pixels * int(cin) * op.group * int(kh) * int(kw))   # im2col's windows
    shape = tuple(g.tensors[big].shape) if big else ()
    return (total + temp) * VALUE_BYTES * max(int(samples), 1), big, shape


def samples_in(g, feeds: dict) -> int:
    """Samples in `feeds` (input name -> array whose leading axis holds samples x the graph's batch)."""
    import numpy as np

    for name, x in feeds.items():
        if name in g.tensors and np.ndim(x):
            return max(1, int(np.shape(x)[0]) // max(int(g.tensors[name].shape[0] or 1), 1))
    return 1


def check_ir(g, samples: int, what: str = "running the reference") -> None:
    """Refuse (InputError, one line) a graph that would need more than the limit for `samples`."""
    need, big, shape = ir_bytes(g, samples)
    _check(need, samples, what, big, shape)


def onnx_bytes(model, samples: int) -> tuple[int, str, tuple]:
    """(bytes, largest tensor, its shape) of every tensor of an ONNX model whose shapes onnx can
    infer, for `samples` samples (a dimension it cannot infer counts as 1)."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:  # noqa: BLE001 - no estimate without shapes; the run itself reports the model's faults
        inferred = model
    total, big, big_n, big_shape = 0, "", -1, ()
    seen = set()
    for vi in list(inferred.graph.input) + list(inferred.graph.value_info) + list(inferred.graph.output):
        if vi.name in seen or not vi.type.HasField("tensor_type"):
            continue
        seen.add(vi.name)
        dims = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                     for d in vi.type.tensor_type.shape.dim)
        n = math.prod(dims)
        total += n
        if n > big_n:
            big, big_n, big_shape = vi.name, n, dims
    return total * VALUE_BYTES * max(int(samples), 1), big, big_shape


def check_onnx(model, samples: int, what: str) -> None:
    need, big, shape = onnx_bytes(model, samples)
    _check(need, samples, what, big, shape)


def _check(need: int, samples: int, what: str, big: str, shape: tuple) -> None:
    limit = limit_bytes()
    if need > limit:
        name = big if len(big) <= 60 else big[:57] + "..."
        raise InputError(f"{what} on {samples} sample(s) would need about {_gib(need)} (the largest tensor, "
                         f"'{name}', is {'x'.join(map(str, shape)) or 'a scalar'}); the limit is {_gib(limit)}",
                         hint="use smaller input dimensions or fewer samples, or raise TONY_MEMORY_LIMIT")
