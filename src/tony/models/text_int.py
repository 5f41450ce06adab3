"""text-langid with Tony's integer nonlinear kernels (tony.ref.nonlinear) in place of float Softmax,
LayerNorm and GELU: the rest of the encoder stays float, so this measures what the kernels (and
the int8 activations they take) cost in accuracy before any other quantization.

At every site the input is quantized to int8 with a power-of-2 scale from ONE calibration batch
(2^ceil(log2 max|x|) / 2^7, as `tony quantize --method max` does), the integer kernel runs, and
its output is dequantized: Softmax to uint8 at 2^-8, LayerNorm and GELU to int8 at the pow2
scale of their calibrated float output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ref import nonlinear as nl
from .text import FloatOps, _torch, accuracy

KINDS = ("softmax", "layernorm", "gelu")


class Recorder(FloatOps):
    """Float functions that record max |input| and max |output| per site."""

    def __init__(self):
        self.ranges: dict[str, tuple[float, float]] = {}

    def _note(self, site, x, y):
        a, b = self.ranges.get(site, (0.0, 0.0))
        self.ranges[site] = (max(a, float(x.abs().max())), max(b, float(y.abs().max())))
        return y

    def softmax(self, site, x):
        return self._note(site, x, super().softmax(site, x))

    def layernorm(self, site, x, weight, bias, eps):
        return self._note(site, x, super().layernorm(site, x, weight, bias, eps))

    def gelu(self, site, x):
        return self._note(site, x, super().gelu(site, x))


def _quant(x, e: int) -> np.ndarray:
    return np.clip(np.rint(x.numpy().astype(np.float64) / 2.0**e), -128, 127).astype(np.int64)


def _back(y: np.ndarray, e: int, like):
    torch = _torch()
    return torch.from_numpy((y * 2.0**e).astype(np.float32)).to(like.dtype)


@dataclass(frozen=True)
class IntegerOps(FloatOps):
    """Integer kernels at the sites of the kinds in `kinds`, float elsewhere. With fake_quant the
    sites keep the float functions but quantize input and output on the same grids (the int8
    cost alone)."""

    ranges: dict
    kinds: frozenset = frozenset(KINDS)
    fake_quant: bool = False

    def _exps(self, site) -> tuple[int, int]:
        a, b = self.ranges[site]
        return nl.pow2_exp(a, 8), nl.pow2_exp(b, 8)

    def softmax(self, site, x):
        if "softmax" not in self.kinds:
            return super().softmax(site, x)
        ex, _ = self._exps(site)
        q = _quant(x, ex)
        if self.fake_quant:
            p = super().softmax(site, _back(q, ex, x)).numpy()
            return _back(np.clip(np.rint(p * 256), 0, 255), -8, x)
        return _back(nl.softmax(q, nl.SoftmaxSpec(x_exp=ex)), -8, x)

    def layernorm(self, site, x, weight, bias, eps):
        if "layernorm" not in self.kinds:
            return super().layernorm(site, x, weight, bias, eps)
        ex, ey = self._exps(site)
        q = _quant(x, ex)
        if self.fake_quant:
            return _back(_quant(super().layernorm(site, _back(q, ex, x), weight, bias, eps), ey), ey, x)
        spec = nl.layernorm_spec(x.shape[-1], ex, ey, weight.detach().numpy(), bias.detach().numpy(), eps=eps)
        return _back(nl.layernorm(q, spec), ey, x)

    def gelu(self, site, x):
        if "gelu" not in self.kinds:
            return super().gelu(site, x)
        ex, ey = self._exps(site)
        q = _quant(x, ex)
        if self.fake_quant:
            return _back(_quant(super().gelu(site, _back(q, ex, x)), ey), ey, x)
        return _back(nl.lookup(q, nl.gelu_table(ex, ey)), ey, x)


def calibrate(model, tokens) -> dict:
    """max |input| and max |output| of every nonlinear site on one batch of token ids."""
    torch = _torch()
    rec = Recorder()
    with torch.no_grad():
        model(torch.from_numpy(tokens), rec)
    return rec.ranges


def integer_accuracies(model, cfg, data) -> dict[str, float]:
    """Test accuracy with each integer kernel alone, all of them, and all sites only int8-quantized."""
    ranges = calibrate(model, data["x_train"][:cfg.calib_size])
    x, y = data["x_test"], data["y_test"]
    rows = {k: IntegerOps(ranges, frozenset([k])) for k in KINDS}
    rows["int8 sites, float functions"] = IntegerOps(ranges, fake_quant=True)
    rows["all three"] = IntegerOps(ranges)
    return {name: accuracy(model, x, y, ops) for name, ops in rows.items()}
