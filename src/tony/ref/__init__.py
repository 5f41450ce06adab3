"""Bit-exact numpy interpreter of the integer IR: the executable form of docs/arithmetic.md."""
from __future__ import annotations

import numpy as np

from .. import ir
from .kernels import KERNELS


def execute(g: ir.Graph, feeds: dict, *, keep_all: bool = False) -> dict:
    """Run `g` on `feeds` (graph input name -> array with a leading batch axis).

    Returns a dict of graph outputs (or every tensor with keep_all=True).
    """
    env = {name: np.asarray(arr) for name, arr in g.constants.items()}
    env.update(feeds)
    for op in g.ops:
        kernel = KERNELS[type(op)]
        env[op.outputs[0]] = kernel(op, g, *(env[i] for i in op.inputs))
    if keep_all:
        return env
    return {name: env[name] for name in g.outputs}


__all__ = ["execute", "KERNELS"]
