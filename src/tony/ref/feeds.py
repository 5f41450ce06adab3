"""Inputs as the reference (and every back end that runs a graph) takes them: one array or a
dict, a single sample or a stack, checked against the graph's inputs."""
from __future__ import annotations

import numpy as np

from .. import ir
from ..errors import InputError


def as_float32(x) -> np.ndarray:
    """`x` cast to float32, a value past float32's range becoming infinity without numpy's overflow
    warning: the callers refuse non-finite values with their own message."""
    with np.errstate(over="ignore"):
        return np.asarray(x).astype(np.float32)


def finite_float32(x, what: str) -> np.ndarray:
    """`x` as float32 (as_float32), refused with an InputError naming `what` if a value is NaN or
    infinite there."""
    x32 = as_float32(x)
    if not np.all(np.isfinite(x32)):
        raise InputError(f"{what} contains NaN or infinity (in float32, where |x| > 3.4e38 is infinity)")
    return x32


def normalize_inputs(g: ir.Graph, inputs) -> tuple[dict, bool]:
    """Feeds with a leading batch axis from one input or a stack of inputs.

    Returns (feeds, stacked): stacked is True when the user gave a stack of exact-shape inputs
    (first axis = sample), so outputs are returned stacked the same way.
    """
    if not isinstance(inputs, dict):
        if len(g.inputs) != 1:
            raise InputError(f"the model has {len(g.inputs)} inputs ({', '.join(g.inputs)}); pass a dict name -> array")
        inputs = {g.inputs[0]: inputs}
    unknown = set(inputs) - set(g.inputs)
    if unknown:
        raise InputError(f"unknown input name(s) {sorted(unknown)}; the model's inputs are {list(g.inputs)}")
    feeds, stacked = {}, None
    for name in g.inputs:
        if name not in inputs:
            raise InputError(f"missing input '{name}'")
        x = np.asarray(inputs[name])
        t = g.tensors[name]
        shape = t.shape
        if x.shape == shape:
            st = False
        elif x.ndim == len(shape) + 1 and x.shape[1:] == shape:
            st, x = True, x.reshape((x.shape[0] * shape[0],) + shape[1:])
        elif shape[0] == 1 and x.ndim == len(shape) and x.shape[1:] == shape[1:]:
            st = False
        else:
            stack = "(N, " + ", ".join(map(str, shape)) + ")"
            raise InputError(f"input '{name}' has shape {x.shape}; the model expects {shape} or a stack of N "
                             f"of them, {stack}", hint="give an array of one of these shapes")
        if x.shape[0] == 0:
            raise InputError(f"input '{name}' is empty")
        if t.dtype.is_float:
            if not np.issubdtype(x.dtype, np.number):
                raise InputError(f"input '{name}' is not numeric ({x.dtype})")
            x = finite_float32(x, f"input '{name}'")
        else:
            if np.any(x != np.rint(x)) or x.min() < t.dtype.min or x.max() > t.dtype.max:
                raise InputError(f"input '{name}' must hold {t.dtype} integers")
            x = x.astype(np.int64)
        stacked = st if stacked is None else (stacked or st)
        feeds[name] = x
    return feeds, bool(stacked)


def restack(g: ir.Graph, outs: dict, stacked: bool) -> list:
    res = []
    for name in g.outputs:
        y = outs[name]
        shape = g.tensors[name].shape
        if stacked:
            y = y.reshape((-1,) + shape)
        res.append(y)
    return res
