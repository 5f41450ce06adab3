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


def _build_digits_conv(arch: str, out_dir, *, seed: int = 0, calib_size: int = 256, epochs: int | None = None,
                       method: str = "kl-j") -> dict:
    """Train a digits CNN with numpy, quantize it (one calibration batch, `method`), and write
    float.onnx, model.onnx, inputs.npy / labels.npy (test split, stacked 1x1x8x8), calib.npy
    (the calibration batch) and train.npz (x, y: the training split, for threshold training)."""
    from ..quant.qdq import quantize_static
    from .cnn import images, train_digits
    from .digits import digits_data

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fm, acc = train_digits(arch, seed=seed, epochs=epochs)
    xtr, ytr, xte, yte = digits_data(seed)
    calib = images(xtr[:calib_size])
    qm = quantize_static(fm, calib, method=method)
    onnx.save(fm, out / "float.onnx")
    onnx.save(qm, out / "model.onnx")
    np.save(out / "inputs.npy", images(xte)[:, None])
    np.save(out / "labels.npy", yte)
    np.save(out / "calib.npy", calib[:, None])
    np.savez(out / "train.npz", x=images(xtr)[:, None], y=ytr)
    return {"float_accuracy": acc, "dir": str(out)}


def build_digits_cnn(out_dir, **kw) -> dict:
    """Small CNN with a residual Add on the digits (input 1x1x8x8)."""
    return _build_digits_conv("digits_cnn", out_dir, **kw)


def build_digits_mobilenet(out_dir, **kw) -> dict:
    """MobileNet-like depthwise-separable CNN with BatchNorm and ReLU6 on the digits."""
    return _build_digits_conv("digits_mobilenet", out_dir, **kw)


def _tiny(name: str):
    def build(out_dir, **kw) -> dict:
        from .tiny import build as build_tiny

        return build_tiny(name, out_dir, **kw)
    build.__doc__ = f"MLPerf Tiny {name} with seeded random weights (tony.models.tiny); no labels.npy."
    return build


def build_text_langid(out_dir, **kw) -> dict:
    """A 2-layer transformer encoder naming the language of 32 characters (wordfreq's word lists);
    float ONNX at opsets 13 and 17, embeddings as inputs (tony.models.text)."""
    from .text import build_text_langid as build

    return build(out_dir, **kw)


EXAMPLES = {"digits-mlp": build_digits_mlp, "digits-cnn": build_digits_cnn, "digits-mobilenet": build_digits_mobilenet}
# MLPerf Tiny workloads (random weights: float.onnx, model.onnx, inputs.npy)
TINY = ("resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder")
EXAMPLES.update({name: _tiny(name) for name in TINY})


# examples whose quantized graphs run partly on the host (attention MatMuls, LayerNorm, Softmax, GELU):
# `tony compile` splits them into device segments; EXAMPLES holds the whole-graph accelerator workloads
SEGMENTED_EXAMPLES = {"text-langid": build_text_langid}


def _kws(arch: str):
    def build(out_dir, **kw) -> dict:
        from .kws import build_kws

        return build_kws(out_dir, arch=arch, **kw)
    build.__doc__ = (f"Keyword spotting ({arch}) trained on words spoken by eSpeak NG (tony.models.kws); "
                     "needs tony[train].")
    return build


EXAMPLES.update({"kws": _kws("kws"), "kws-conv1d": _kws("kws-conv1d")})


def build_kws_transformer(out_dir, **kw) -> dict:
    """Keyword Transformer (KWT-1 style: MFCC frames as tokens, a MatMul projection to 64, 1 head,
    MLP 128, 2 layers) on the eSpeak NG keyword-spotting set (tony.models.kwt); needs tony[train]."""
    from .kwt import build_kwt

    return build_kwt(out_dir, **kw)


SEGMENTED_EXAMPLES["kws-transformer"] = build_kws_transformer


def build_example(name: str, out_dir, **kw) -> dict:
    builders = EXAMPLES | SEGMENTED_EXAMPLES
    if name not in builders:
        raise InputError(f"unknown example {name!r}; available: {', '.join(builders)}")
    from ..build import make_folder

    return builders[name](make_folder(out_dir), **kw)   # an unusable output path refused before training
