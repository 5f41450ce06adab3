"""Model builders: the bundled examples and the workloads (built here, never downloaded)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import InputError


def build_digits_mlp(out_dir, *, seed: int = 0, calib_size: int = 256) -> dict:
    """Train the digits MLP, quantize it to pow2 QDQ (max calibration on one batch), and write
    float.onnx, model.onnx (quantized), inputs.npy (test samples, stacked) and labels.npy."""
    from ..quant.qdq import quantize_static
    from .digits import digits_data, mlp_onnx, train_mlp

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers, acc = train_mlp(seed=seed)
    fm = mlp_onnx(layers)
    xtr, _, xte, yte = digits_data(seed)
    qm = quantize_static(fm, xtr[:calib_size])
    onnx.save(fm, out / "float.onnx")
    onnx.save(qm, out / "model.onnx")
    np.save(out / "inputs.npy", xte[:, None, :])
    np.save(out / "labels.npy", yte)
    return {"float_accuracy": acc, "dir": str(out)}


EXAMPLES = {"digits-mlp": build_digits_mlp}


def build_example(name: str, out_dir, **kw) -> dict:
    if name not in EXAMPLES:
        raise InputError(f"unknown example {name!r}; available: {', '.join(EXAMPLES)}")
    return EXAMPLES[name](out_dir, **kw)
