"""Bit-exact numpy interpreter of the integer IR: the executable form of docs/arithmetic.md."""
from __future__ import annotations

import numpy as np

from .. import ir
from ..budget import check_ir, samples_in
from .kernels import KERNELS


def execute(g: ir.Graph, feeds: dict, *, keep_all: bool = False) -> dict:
    """Run `g` on `feeds` (graph input name -> array with a leading batch axis).

    Returns a dict of graph outputs (or every tensor with keep_all=True). A graph that would need
    more memory than tony.budget allows for these samples is refused before anything runs.
    """
    check_ir(g, samples_in(g, feeds))
    env = {name: np.asarray(arr) for name, arr in g.constants.items()}
    env.update(feeds)
    for op in g.ops:
        run_op(op, g, env)
    if keep_all:
        return env
    return {name: env[name] for name in g.outputs}


def run_op(op: ir.Op, g: ir.Graph, env: dict) -> None:
    """Run one op's kernel on `env` (tensor name -> array), adding its outputs."""
    y = KERNELS[type(op)](op, g, *(env[i] for i in op.inputs))
    if len(op.outputs) == 1:
        env[op.outputs[0]] = y
    else:
        env.update(zip(op.outputs, y))


def execute_segments(g: ir.Graph, part, feeds: dict, run_device) -> dict:
    """Run `g` segment by segment (a tony.ir.partition.Partition): host segments in the
    reference, device segments by `run_device(index, segment, {input: array}) -> [arrays in
    segment.outputs order]`. Returns every tensor computed (graph outputs included)."""
    check_ir(g, samples_in(g, feeds))
    env = {name: np.asarray(arr) for name, arr in g.constants.items()}
    env.update(feeds)
    for k, seg in enumerate(part.segments):
        if seg.device:
            ys = run_device(k, seg, {n: env[n] for n in seg.inputs})
            env.update(zip(seg.outputs, ys))
        else:
            for op in seg.ops:
                run_op(op, g, env)
    return env


__all__ = ["execute", "execute_segments", "run_op", "KERNELS"]
