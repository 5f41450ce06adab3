"""Digits models trained with PyTorch (tony.models.torchnet), for holding the quantizer to models
built apart from the numpy-trained examples.

mlp        64-64-32-10 ReLU MLP (Gemm), input 1x64.
mobilenet  MobileNet-like, input 1x1x8x8: Conv 3x3 16 + BN + ReLU6; a depthwise-separable block
           (depthwise 3x3 + BN + ReLU6, pointwise 32 + BN + ReLU6); two branches joined by a
           Concat (a depthwise-separable one to 16 channels, a pointwise one to 16 channels);
           AveragePool 4x4 (to 2x2), Flatten, Dense 10.

The data: scikit-learn's digits, the same splits as the other digits models (`digits_data(0)`);
a validation split (20%, seeded) is carved from the training split for keeping the best epoch.
"""
from __future__ import annotations

import numpy as np

from . import torchnet as t
from .digits import digits_data

ARCHS = ("mlp", "mobilenet")


def mlp_net(seed: int):
    import torch

    torch.manual_seed(seed)
    return t.Seq(t.Dense(64, 64), t.Act(), t.Dense(64, 32), t.Act(), t.Dense(32, 10))


def mobilenet_net(seed: int):
    import torch

    torch.manual_seed(seed)

    def cbr(cin, cout, k, groups=1):
        p = k // 2
        return [t.Conv(cin, cout, k, 1, (p, p, p, p), groups=groups, bias=False), t.BN(cout), t.Act(6.0)]
    return t.Seq(*cbr(1, 16, 3), *cbr(16, 16, 3, 16), *cbr(16, 32, 1),
                 t.Concat(t.Seq(*cbr(32, 32, 3, 32), *cbr(32, 16, 1)), t.Seq(*cbr(32, 16, 1))),
                 t.AvgPool(4), t.Flatten(), t.Dense(32 * 4, 10))


def data(arch: str, seed: int = 0):
    """(x_train, y_train, x_val, y_val, x_test, y_test) shaped for `arch` (1x64 or 1x1x8x8 per sample)."""
    xtr, ytr, xte, yte = digits_data(0)
    shape = (-1, 64) if arch == "mlp" else (-1, 1, 8, 8)
    xtr, xte = xtr.reshape(shape), xte.reshape(shape)
    idx = np.random.default_rng(1000 + seed).permutation(len(xtr))
    n_val = len(xtr) // 5
    va, tr = idx[:n_val], idx[n_val:]
    return xtr[tr], ytr[tr], xtr[va], ytr[va], xte, yte


def train(arch: str, seed: int, *, epochs: int = 60, progress: bool = False):
    """(float ONNX model, test accuracy of the torch network) for `arch` trained from `seed`."""
    make = {"mlp": mlp_net, "mobilenet": mobilenet_net}[arch]
    xtr, ytr, xva, yva, xte, yte = data(arch, seed)
    net, _ = t.fit(make(seed), xtr, ytr, xva, yva, t.Fit(epochs=epochs, lr=3e-3, batch=32, seed=seed, threads=1),
                   desc=f"digits {arch} (seed {seed})", progress=progress)
    in_shape = (1, 64) if arch == "mlp" else (1, 1, 8, 8)
    return t.to_onnx(net, in_shape, 10, f"digits_{arch}_torch"), t.accuracy(net, xte, yte)
