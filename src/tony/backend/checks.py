"""What the hardware can run: capability and overflow checks with one-line errors."""
from __future__ import annotations

import numpy as np

from .. import ir
from ..errors import OverflowRisk, UnsupportedError


def accumulator_bound(g: ir.Graph, op: ir.Op) -> int:
    """Largest |acc| this MAC op can reach for any input in its dtype range (exact, from the weights)."""
    x = g.tensors[op.inputs[0]]
    w = g.constants[op.inputs[1]].astype(np.int64) - g.tensors[op.inputs[1]].zero_point
    xmax = max(abs(x.dtype.min - x.zero_point), abs(x.dtype.max - x.zero_point))
    if isinstance(op, ir.Conv):
        per_out = np.abs(w).reshape(w.shape[0], -1).sum(axis=1)
    else:
        per_out = np.abs(w).sum(axis=-2)  # [K, M] or batched [B, K, M]
    bias = np.abs(g.constants[op.inputs[2]]) if len(op.inputs) > 2 else 0
    return int((per_out * xmax + bias).max())


def check_overflow(g: ir.Graph, acc_bits: int) -> None:
    lim = 1 << (acc_bits - 1)
    for op in g.ops:
        if isinstance(op, (ir.Conv, ir.Dense)):
            b = accumulator_bound(g, op)
            if b >= lim:
                raise OverflowRisk(f"accumulator can reach {b} (needs {b.bit_length() + 1} bits) but ACC_BITS={acc_bits}",
                                   where=op.where, hint="raise --acc-bits, or quantize weights/activations to fewer bits")


HOST_DRIVEN = (ir.Dense, ir.Conv, ir.Reshape)


def check_hardware(g: ir.Graph, *, a_bits: int = 8, w_bits: int = 8, acc_bits: int = 32) -> None:
    """Refuse, naming the node, anything the generated hardware cannot execute."""
    for op in g.device_ops:
        if not isinstance(op, HOST_DRIVEN):
            raise UnsupportedError(f"{type(op).__name__} has no hardware mapping yet (supported on the array: "
                                   "Conv, Gemm/MatMul, Reshape/Flatten)", where=op.where,
                                   hint="`tony run` executes it in the reference")
        for name in op.inputs + op.outputs:
            t = g.tensors[name]
            if t.zero_point and name not in g.constants:
                raise UnsupportedError(f"tensor '{name}' has zero point {t.zero_point}; the accelerator needs 0",
                                       where=op.where, hint="quantize activations symmetrically")
        if isinstance(op, ir.Dense) and (len(g.tensors[op.inputs[0]].shape) != 2
                                         or len(g.tensors[op.inputs[1]].shape) != 2):
            raise UnsupportedError("the array runs MatMul/Gemm as [N, K] x [K, M]; this one is "
                                   f"{list(g.tensors[op.inputs[0]].shape)} x {list(g.tensors[op.inputs[1]].shape)}",
                                   where=op.where, hint="`tony run` executes it in the reference")
        if isinstance(op, (ir.Conv, ir.Dense)):
            w = g.tensors[op.inputs[1]]
            if w.zero_point:
                raise UnsupportedError("weight zero point must be 0 on hardware", where=op.where)
            if not (w.dtype.signed and w.dtype.bits <= w_bits):
                raise UnsupportedError(f"weights are {w.dtype}; the array takes signed <= {w_bits} bits", where=op.where)
            for name in (op.inputs[0], op.outputs[0]):
                t = g.tensors[name]
                if t.dtype.bits > a_bits:
                    raise UnsupportedError(f"'{name}' is {t.dtype}; the array takes {a_bits}-bit activations",
                                           where=op.where)
            if op.requant.per_channel:
                raise UnsupportedError("per-channel requantization is not supported on hardware yet",
                                       where=op.where)
    check_overflow(g, acc_bits)
