"""Accumulator bounds: the largest |acc| a MAC op can reach, and the overflow check against ACC_BITS."""
from __future__ import annotations

import numpy as np

from . import ops as ir
from ..errors import OverflowRisk


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
