"""Calibration: observe activations of a float model on one batch and pick thresholds."""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError


def activations(model: onnx.ModelProto, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Float values of `names` (plus graph outputs) on input batch x, via onnx's reference evaluator."""
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_empty_tensor_value_info(n))
    ev = ReferenceEvaluator(m)
    inp = model.graph.input[0]
    in_shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    outs_all: dict[str, list] = {}
    for sample in x:  # the model has a fixed batch of 1: run sample by sample
        feed = {inp.name: np.asarray(sample, np.float32).reshape(in_shape)}
        res = ev.run(None, feed)
        for o, v in zip([o.name for o in m.graph.output], res):
            outs_all.setdefault(o, []).append(np.asarray(v))
    return {k: np.concatenate(v, axis=0) for k, v in outs_all.items()}


def check_calibration_data(x, in_shape: tuple[int, ...]) -> np.ndarray:
    x = np.asarray(x)
    if x.size == 0:
        raise InputError("the calibration set is empty")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"the calibration set is not numeric ({x.dtype})")
    if x.shape == in_shape:
        x = x[None]
    elif in_shape[0] == 1 and x.shape[1:] == in_shape[1:]:
        x = x[:, None]
    elif x.shape[1:] != in_shape:
        raise InputError(f"calibration data has shape {x.shape}; expected a stack of model inputs ('N',)+{in_shape}")
    if not np.all(np.isfinite(x)):
        raise InputError("the calibration set contains NaN or infinity")
    return x.astype(np.float32)


def threshold_max(v: np.ndarray) -> float:
    return float(np.max(np.abs(v))) if v.size else 0.0


def pow2_scale(threshold: float, bits: int, signed: bool) -> float:
    """Graffitist/TQT: s = 2^ceil(log2 t) / 2^(b - signed)."""
    t = max(float(threshold), 2.0**-30)
    return 2.0 ** (math.ceil(math.log2(t)) - (bits - int(signed)))
