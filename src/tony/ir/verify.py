"""IR verifier: run after every pass. Checks names, dtypes, shapes and requant ranges."""
from __future__ import annotations

import math

import numpy as np

from . import ops as O
from .types import Requant


class IRVerifyError(AssertionError):
    """The IR is malformed: a bug in a pass, never the user's fault."""


def _check(cond: bool, op: O.Op, msg: str) -> None:
    if not cond:
        raise IRVerifyError(f"{type(op).__name__} {op.outputs} (from {op.origin!r}): {msg}")


def _check_requant(op: O.Op, rq: Requant | None, out) -> None:
    _check(rq is not None, op, "missing requant")
    _check(rq.lo <= rq.hi, op, f"empty clamp [{rq.lo}, {rq.hi}]")
    _check(out.dtype.contains(rq.lo, rq.hi), op, f"clamp [{rq.lo},{rq.hi}] outside {out.dtype}")
    mults = rq.mult if isinstance(rq.mult, tuple) else (rq.mult,)
    _check(all(0 < m < 2**31 for m in mults), op, f"multiplier out of range {rq.mult}")


def _conv_out(n, k, s, p0, p1, d):
    return (n + p0 + p1 - d * (k - 1) - 1) // s + 1


def _bshape(a, b):
    try:
        return tuple(np.broadcast_shapes(a, b))
    except ValueError:
        return None


def verify(g: O.Graph) -> O.Graph:
    """Raise IRVerifyError if `g` is malformed; return it unchanged otherwise."""
    defined = set(g.inputs) | set(g.constants)
    for name in list(g.inputs) + list(g.constants):
        if name not in g.tensors:
            raise IRVerifyError(f"tensor {name!r} has no declaration")
    for op in g.ops:
        for i in op.inputs:
            _check(i in defined, op, f"input {i!r} used before it is defined")
        for o in op.outputs:
            _check(o not in defined, op, f"output {o!r} defined twice")
            _check(o in g.tensors, op, f"output {o!r} has no declaration")
            defined.add(o)
        T = [g.tensors[i] for i in op.inputs]
        Y = [g.tensors[o] for o in op.outputs]
        if isinstance(op, O.Quantize):
            _check(T[0].dtype.is_float and not Y[0].dtype.is_float, op, "Quantize is float -> int")
        elif isinstance(op, O.Dequantize):
            _check(not T[0].dtype.is_float and Y[0].dtype.is_float, op, "Dequantize is int -> float")
        else:
            ints = T + (Y if not isinstance(op, O.FloatIsland) else [])
            for t in ints:
                _check(not t.dtype.is_float, op, f"{t.name} must be an integer tensor, is {t.dtype}")
        if isinstance(op, O.Conv):
            x, w = T[0], T[1]
            y = Y[0]
            _check(len(x.shape) == 4 and len(w.shape) == 4, op, "Conv needs NCHW x and MCkk w")
            _check(x.shape[1] == w.shape[1] * op.group, op, f"channels {x.shape[1]} != {w.shape[1]}*{op.group}")
            _check(w.shape[0] % op.group == 0, op, "output channels not divisible by group")
            oh = _conv_out(x.shape[2], w.shape[2], op.strides[0], op.pads[0], op.pads[2], op.dilations[0])
            ow = _conv_out(x.shape[3], w.shape[3], op.strides[1], op.pads[1], op.pads[3], op.dilations[1])
            _check(y.shape == (x.shape[0], w.shape[0], oh, ow), op, f"output shape {y.shape} != {(x.shape[0], w.shape[0], oh, ow)}")
            if len(T) > 2:
                _check(T[2].shape == (w.shape[0],), op, "bias shape")
            _check_requant(op, op.requant, y)
        elif isinstance(op, O.Dense):
            x, w, y = T[0], T[1], Y[0]
            _check(len(x.shape) >= 2 and len(w.shape) in (2, 3) and x.shape[-1] == w.shape[-2], op,
                   f"shapes {x.shape} @ {w.shape}")
            if len(w.shape) == 3:
                _check(len(x.shape) >= 3 and x.shape[-3] == w.shape[0], op, f"batched shapes {x.shape} @ {w.shape}")
            _check(y.shape == x.shape[:-1] + (w.shape[-1],), op, f"output shape {y.shape}")
            if len(T) > 2:
                _check(T[2].shape == (w.shape[-1],), op, "bias shape")
            _check_requant(op, op.requant, y)
        elif isinstance(op, O.Add):
            _check(_bshape(T[0].shape, T[1].shape) == Y[0].shape, op, "Add inputs broadcast to the output shape")
            _check(op.shift_a >= 0 and op.shift_b >= 0, op, "alignment shifts are left shifts")
            _check_requant(op, op.requant, Y[0])
        elif isinstance(op, O.Concat):
            _check(len(op.requants) == len(T), op, "one requant per input")
            total = sum(t.shape[op.axis] for t in T)
            _check(Y[0].shape[op.axis] == total, op, "concat axis size")
            for rq in op.requants:
                _check_requant(op, rq, Y[0])
        elif isinstance(op, (O.MaxPool, O.AvgPool)):
            x, y = T[0], Y[0]
            d = getattr(op, "dilations", (1, 1))
            oh = _conv_out(x.shape[2], op.kernel[0], op.strides[0], op.pads[0], op.pads[2], d[0])
            ow = _conv_out(x.shape[3], op.kernel[1], op.strides[1], op.pads[1], op.pads[3], d[1])
            _check(y.shape == (x.shape[0], x.shape[1], oh, ow), op, f"pool output {y.shape} != {(x.shape[0], x.shape[1], oh, ow)}")
            if op.requant is not None or isinstance(op, O.AvgPool):
                _check_requant(op, op.requant, y)
            for c, num, den in getattr(op, "partial", ()):
                _check(c > 0 and num > 0 and den > 0, op, "window divisor")
        elif isinstance(op, O.Clamp):
            _check(T[0].shape == Y[0].shape, op, "Clamp keeps the shape")
            _check_requant(op, op.requant, Y[0])
        elif isinstance(op, O.Reshape):
            _check(math.prod(T[0].shape) == math.prod(Y[0].shape), op, "Reshape keeps the size")
            _check(tuple(op.shape) == Y[0].shape, op, "Reshape shape attribute")
        elif isinstance(op, O.Mul):
            _check(_bshape(T[0].shape, T[1].shape) == Y[0].shape, op, "Mul inputs broadcast to the output shape")
            _check_requant(op, op.requant, Y[0])
        elif isinstance(op, O.Table):
            x, tab = T[0], g.constants.get(op.inputs[1])
            _check(tab is not None and tab.shape[-1] == 1 << x.dtype.bits, op, "table of 2^bits entries")
            _check(T[0].shape == Y[0].shape, op, "Table keeps the shape")
            _check(Y[0].dtype.contains(int(tab.min()), int(tab.max())), op, "table values outside the output dtype")
        elif isinstance(op, (O.ReduceMean, O.MatMul)):
            _check_requant(op, op.requant, Y[0])
        elif isinstance(op, O.PixelMatMul):
            (n_, k, h, t), bs = T[0].shape if len(T[0].shape) == 4 else (0, 0, 0, 0), T[1].shape
            _check(len(T[0].shape) == 4 and len(bs) == 4 and bs[0] == n_ and bs[2] == h and bs[3] == k, op,
                   "PixelMatMul takes a [N, K, H, T] and b [N, M, H, K]")
            _check(Y[0].shape == (n_, bs[1], h, t), op, f"PixelMatMul output {Y[0].shape} != {(n_, bs[1], h, t)}")
            _check_requant(op, op.requant, Y[0])
        elif isinstance(op, O.Softmax):
            _check(T[0].shape == Y[0].shape and T[0].zero_point == 0 and Y[0].zero_point == 0, op,
                   "Softmax keeps the shape; zero points 0")
            _check(op.x_exp <= 15 - op.frac_bits, op, f"input scale 2^{op.x_exp} too coarse")
            _check(-len(T[0].shape) < op.axis < len(T[0].shape) and op.axis % len(T[0].shape) != 0, op,
                   f"Softmax axis {op.axis} of a {len(T[0].shape)}-D tensor (not the batch axis)")
        elif isinstance(op, O.LayerNorm):
            _check(-len(T[0].shape) < op.axis < len(T[0].shape) and op.axis % len(T[0].shape) != 0, op,
                   f"LayerNorm axis {op.axis} of a {len(T[0].shape)}-D tensor (not the batch axis)")
            n = T[0].shape[op.axis]
            _check(T[0].shape == Y[0].shape and T[1].shape == (n,) and T[2].shape == (n,), op,
                   "LayerNorm keeps the shape; gamma and beta per channel")
            _check(Y[0].dtype.contains(op.lo, op.hi), op, f"clamp [{op.lo},{op.hi}] outside {Y[0].dtype}")
        elif isinstance(op, O.Transpose):
            _check(tuple(T[0].shape[p] for p in op.perm) == Y[0].shape, op, "Transpose shape")
    for o in g.outputs:
        if o not in defined:
            raise IRVerifyError(f"graph output {o!r} is never defined")
    return g
