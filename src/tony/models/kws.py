"""Keyword-spotting models trained on the eSpeak NG data set (tony.models.kws_data), input
1x1x49x10 MFCC, 12 classes.

kws         DS-CNN of MLPerf Tiny (the graph of tony.models.tiny `dscnn`): Conv 64 10x4 stride 2
            ('same' padding) + BN + ReLU, four depthwise-separable blocks (depthwise 3x3 + BN +
            ReLU, pointwise 64 + BN + ReLU), AveragePool (24, 5), Dense 12; dropout 0.2 in training.
kws-conv1d  A 1-D convolutional net over time, the 10 MFCCs as channels, written as 2-D
            convolutions that are exactly 1-D ones: the first Conv has a 3x10 kernel (3 frames x
            all 10 coefficients, no padding across coefficients) and makes a 64 x 49 x 1 map; the
            next three have 3x1 kernels (stride 2 in time); then GlobalAveragePool, Dense 12.

Trained with PyTorch on the CPU (AdamW, cosine learning rate, the best epoch on the validation
split kept), exported to ONNX opset 13 by tony.models.torchnet.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx

from ..errors import TonyError
from .kws_data import CLASSES, FRAMES, IN_SHAPE, KwsSpec, dataset


def _torchnet():
    try:
        from . import torchnet
    except ImportError:
        raise TonyError("the keyword-spotting models are trained with PyTorch", hint="pip install 'tony[train]'") \
            from None
    return torchnet


def dscnn_net(seed: int = 0, width: int = 64):
    t = _torchnet()
    import torch

    torch.manual_seed(seed)
    layers = [t.Conv(1, width, (10, 4), 2, t.same_pads((FRAMES, 10), (10, 4), (2, 2))), t.BN(width, eps=1e-3),
              t.Act(), t.Dropout(0.2)]
    for _ in range(4):
        layers += [t.Conv(width, width, 3, 1, (1, 1, 1, 1), groups=width), t.BN(width, eps=1e-3), t.Act(),
                   t.Conv(width, width, 1), t.BN(width, eps=1e-3), t.Act()]
    layers += [t.AvgPool((FRAMES // 2, 10 // 2)), t.Flatten(), t.Dropout(0.2), t.Dense(width, len(CLASSES))]
    return t.Seq(*layers)


def conv1d_net(seed: int = 0, width: int = 64):
    t = _torchnet()
    import torch

    torch.manual_seed(seed)
    layers = [t.Conv(1, width, (3, 10), 1, (1, 0, 1, 0)), t.BN(width, eps=1e-3), t.Act()]
    for _ in range(3):
        layers += [t.Conv(width, width, (3, 1), (2, 1), (1, 0, 1, 0)), t.BN(width, eps=1e-3), t.Act()]
    layers += [t.GlobalAvgPool(), t.Flatten(), t.Dropout(0.1), t.Dense(width, len(CLASSES))]
    return t.Seq(*layers)


# example name -> (network maker, graph name, epochs, learning rate)
ARCHS = {"kws": (dscnn_net, "dscnn_kws", 16, 3e-3), "kws-conv1d": (conv1d_net, "conv1d_kws", 16, 3e-3)}


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """SpecAugment-style masks on a training batch: per sample, up to 5 frames and 1 coefficient
    (not the energy) replaced by the batch mean."""
    x = x.copy()
    mean = x.mean(axis=(0, 1, 2), keepdims=True)[0]
    for k in range(len(x)):
        f0, fw = rng.integers(0, FRAMES), rng.integers(0, 6)
        x[k, :, f0:f0 + fw] = mean[:, :1]
        c = rng.integers(1, 10)
        if rng.random() < 0.5:
            x[k, :, :, c] = mean[0, 0, c]
    return x


def train_kws(arch: str = "kws", *, spec: KwsSpec = KwsSpec(), seed: int = 0, epochs: int | None = None,
              progress: bool = True, data: dict | None = None):
    """(float ONNX model, test accuracy, the data set) of a network trained on the KWS set."""
    t = _torchnet()
    make, gname, default_epochs, lr = ARCHS[arch]
    d = data if data is not None else dataset(spec, progress=progress)
    net = make(seed)
    cfg = t.Fit(epochs=epochs or default_epochs, lr=lr, batch=64, seed=seed)
    net, _ = t.fit(net, d["x_train"], d["y_train"], d["x_val"], d["y_val"], cfg, desc=f"{arch}: training",
                   progress=progress, augment=augment)
    acc = t.accuracy(net, d["x_test"], d["y_test"])
    return t.to_onnx(net, IN_SHAPE, len(CLASSES), gname), acc, d


def build_kws(out_dir, *, arch: str = "kws", spec: KwsSpec = KwsSpec(), seed: int = 0, calib_size: int = 256,
              epochs: int | None = None, method: str = "kl-j", progress: bool = True) -> dict:
    """Train, quantize (pow2 QDQ, one calibration batch, `method`), and write float.onnx, model.onnx,
    inputs.npy / labels.npy (the voice-disjoint test split, stacked 1x1x49x10), calib.npy (one
    seeded batch of training clips) and train.npz (x, y: training split; x_val, y_val: validation)."""
    fm, acc, d = train_kws(arch, spec=spec, seed=seed, epochs=epochs, progress=progress)
    return write_example(out_dir, fm, acc, d, seed=seed, calib_size=calib_size, method=method)


def write_example(out_dir, fm, acc: float, d: dict, *, seed: int, calib_size: int, method: str,
                  sequential: bool = True) -> dict:
    """Quantize a trained keyword-spotting float model `fm` (pow2 QDQ from one seeded calibration
    batch of `d`'s training clips) and write the files of the kws examples (see build_kws)."""
    from ..quant.qdq import quantize_static

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    calib = d["x_train"][np.sort(rng.choice(len(d["x_train"]), min(calib_size, len(d["x_train"])), replace=False))]
    qm = quantize_static(fm, calib, method=method, sequential=sequential)
    out.mkdir(parents=True, exist_ok=True)
    onnx.save(fm, out / "float.onnx")
    onnx.save(qm, out / "model.onnx")
    np.save(out / "inputs.npy", d["x_test"][:, None])
    np.save(out / "labels.npy", d["y_test"])
    np.save(out / "calib.npy", calib[:, None])
    np.savez(out / "train.npz", x=d["x_train"][:, None], y=d["y_train"], x_val=d["x_val"][:, None], y_val=d["y_val"])
    return {"float_accuracy": acc, "dir": str(out)}
