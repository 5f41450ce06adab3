"""Convolutional digits models (input 1x1x8x8), trained here with numpy (no torch needed).

digits-cnn        Conv-ReLU, a residual block (Conv-ReLU-Conv + skip, Add, ReLU), MaxPool, Gemm.
digits-mobilenet  MobileNet-like: Conv-BN-ReLU6, then depthwise-separable blocks (depthwise 3x3
                  Conv-BN-ReLU6, pointwise 1x1 Conv-BN-ReLU6), GlobalAveragePool, Gemm. After
                  BatchNorm folding the depthwise weights spread over very different ranges per
                  channel: the case where per-tensor static quantization loses the most.
"""
from __future__ import annotations

import numpy as np

from . import nn
from .digits import digits_data

IN_SHAPE = (1, 1, 8, 8)


def images(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 1, 8, 8).astype(np.float32)


def cnn_net(seed: int = 0) -> nn.Seq:
    r = np.random.default_rng(seed)
    return nn.Seq(nn.Conv(1, 8, rng=r), nn.ReLU(),
                  nn.Residual(nn.Conv(8, 8, rng=r), nn.ReLU(), nn.Conv(8, 8, rng=r)), nn.ReLU(),
                  nn.MaxPool2(), nn.Flatten(), nn.Dense(8 * 4 * 4, 10, r))


def mobilenet_net(seed: int = 0) -> nn.Seq:
    r = np.random.default_rng(seed)

    def cbr(cin, cout, k=3, stride=1, groups=1):
        return [nn.Conv(cin, cout, k, stride, k // 2, groups, rng=r, bias=False), nn.BatchNorm(cout), nn.ReLU(6.0)]
    return nn.Seq(*cbr(1, 8),
                  *cbr(8, 8, groups=8), *cbr(8, 16, k=1),
                  *cbr(16, 16, stride=2, groups=16), *cbr(16, 32, k=1),
                  nn.GlobalAvgPool(), nn.Dense(32, 10, r))


ARCHS = {"digits_cnn": (cnn_net, 15, 1e-2), "digits_mobilenet": (mobilenet_net, 25, 1e-2)}


def train_digits(arch: str, *, seed: int = 0, epochs: int | None = None):
    """Train `arch` on digits; returns (float ONNX model, test accuracy of the numpy net)."""
    make, default_epochs, lr = ARCHS[arch]
    xtr, ytr, xte, yte = digits_data(seed)
    net = nn.train(make(seed), images(xtr), ytr, epochs=epochs or default_epochs, lr=lr, seed=seed)
    return nn.to_onnx(net, IN_SHAPE, 10, arch), nn.accuracy(net, images(xte), yte)
