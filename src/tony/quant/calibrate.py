"""Calibration: observe activations of a float model on one batch and pick thresholds.

Thresholds are real values t > 0; the quantizer's scale is s = 2^ceil(log2 t) / 2^(b - signed)
(Graffitist/TQT). Activation calibrators (Settle et al. 2018, "Quantizing Convolutional Neural
Networks for Low-Power High-Throughput Inference Engines"):

  max         t = max |x|
  percentile  t = the given percentile of |x| (default 99.99)
  mse         the power of 2 t minimizing the mean squared quantization error
  kl-j        the clipping point minimizing the symmetric KL (J) divergence between the
              histogram of |x| and its quantized version (see `threshold_kl_j`)

Weight calibrators: max (static quantization), 3sd = |mean| + 3 std, and mse (the power of 2 with
the least squared error at the weight's bits: the start of threshold training).
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper

from ..errors import InputError, UnsupportedError
from ..ref.feeds import finite_float32

ACT_METHODS = ("max", "percentile", "mse", "kl-j")
WEIGHT_METHODS = ("max", "3sd", "mse")

# ops that compute each sample independently with the batch on axis 0 (safe to run batched)
_BATCH_SAFE = {"Conv", "Gemm", "MatMul", "Relu", "Clip", "Add", "Concat", "MaxPool", "AveragePool",
               "GlobalAveragePool", "Flatten", "BatchNormalization", "QuantizeLinear", "DequantizeLinear",
               "Identity", "Dropout"}


def _batchable(model: onnx.ModelProto) -> bool:
    for n in model.graph.node:
        if n.op_type not in _BATCH_SAFE:
            return False
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Concat" and attrs.get("axis") in (0,):
            return False
        if n.op_type == "Flatten" and attrs.get("axis", 1) != 1:
            return False
    return True


def activations(model: onnx.ModelProto, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Float values of `names` (plus graph outputs) on input batch x, via onnx's reference evaluator.

    x is a stack of model inputs, shape (N,) + input shape. Models whose operators all treat
    samples independently run as one batch; others run sample by sample."""
    from onnx.reference import ReferenceEvaluator

    m = onnx.ModelProto()
    m.CopyFrom(model)
    inp = m.graph.input[0]
    in_shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    del m.graph.value_info[:]
    outs = [o.name for o in m.graph.output]
    del m.graph.output[:]
    for n in list(dict.fromkeys(outs + list(names))):
        m.graph.output.append(helper.make_empty_tensor_value_info(n))
    for op in m.opset_import:  # onnx's evaluator implements Q/DQ from opset 19 on (same semantics)
        if op.domain in ("", "ai.onnx") and op.version < 19:
            op.version = 19
    x = np.asarray(x, np.float32)
    if in_shape and in_shape[0] == 1 and _batchable(m):
        inp.type.tensor_type.shape.dim[0].dim_param = "N"
        ev = ReferenceEvaluator(m)
        feed = x.reshape((-1,) + in_shape[1:])
        res = ev.run(None, {inp.name: feed})
        return {o.name: np.asarray(v) for o, v in zip(m.graph.output, res)}
    ev = ReferenceEvaluator(m)
    outs_all: dict[str, list] = {}
    for sample in x:  # the model has a fixed batch of 1: run sample by sample
        res = ev.run(None, {inp.name: np.asarray(sample, np.float32).reshape(in_shape)})
        for o, v in zip(m.graph.output, res):
            outs_all.setdefault(o.name, []).append(np.asarray(v))
    return {k: np.concatenate(v, axis=0) for k, v in outs_all.items()}


def check_calibration_data(x, in_shape: tuple[int, ...], what: str = "calibration data") -> np.ndarray:
    """A stack of model inputs as float32, shape (N,) + in_shape; one clear InputError otherwise."""
    x = np.asarray(x)
    if x.size == 0:
        raise InputError(f"the {what} is empty", hint="pass at least one model input")
    if not np.issubdtype(x.dtype, np.number):
        raise InputError(f"the {what} is not numeric ({x.dtype})")
    if x.shape == in_shape:
        x = x[None]
    elif in_shape and in_shape[0] == 1 and x.ndim == len(in_shape) and x.shape[1:] == in_shape[1:]:
        x = x[:, None]
    elif x.shape[1:] != in_shape:
        raise InputError(f"{what} has shape {x.shape}; expected a stack of model inputs {('N',) + in_shape}")
    return finite_float32(x, f"the {what}")


# ---- thresholds ---------------------------------------------------------------------------------
def threshold_max(v: np.ndarray) -> float:
    return float(np.max(np.abs(v))) if v.size else 0.0


def threshold_percentile(v: np.ndarray, q: float = 99.99) -> float:
    return float(np.percentile(np.abs(v), q)) if v.size else 0.0


def pow2_scale(threshold: float, bits: int, signed: bool) -> float:
    """Graffitist/TQT: s = 2^ceil(log2 t) / 2^(b - signed)."""
    t = max(float(threshold), 2.0**-30)
    return 2.0 ** (math.ceil(math.log2(t)) - (bits - int(signed)))


def fake_quant(v: np.ndarray, scale: float, bits: int, signed: bool) -> np.ndarray:
    """Quantize-dequantize with round-half-even and saturation (what QuantizeLinear does)."""
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
    return np.clip(np.rint(v / scale), lo, hi) * scale


def threshold_mse(v: np.ndarray, bits: int, signed: bool, span: int = 10) -> float:
    """The power-of-2 threshold (from 2^ceil(log2 max|x|) down `span` octaves) with the least
    mean squared quantization error."""
    v = np.asarray(v, np.float64).ravel()
    tmax = threshold_max(v)
    if tmax == 0:
        return 0.0
    top = math.ceil(math.log2(tmax))
    best, best_err = 2.0**top, math.inf
    for e in range(top, top - span - 1, -1):
        err = float(np.mean((fake_quant(v, pow2_scale(2.0**e, bits, signed), bits, signed) - v) ** 2))
        if err < best_err:
            best, best_err = 2.0**e, err
    return best


def _j_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Symmetric KL divergence J(P, Q) = KL(P||Q) + KL(Q||P) = sum (p - q) ln(p / q), over the bins
    where both are non-zero (a bin empty in one of them carries no log-ratio)."""
    m = (p > 0) & (q > 0)
    return float(np.sum((p[m] - q[m]) * np.log(p[m] / q[m])))


def kl_j_divergences(v: np.ndarray, bits: int, signed: bool, bins: int | None = None):
    """Candidate thresholds and their J divergences (Settle et al., as in Graffitist).

    0. exact zeros are left out (they cost nothing at any threshold; a ReLU's spike at zero, smeared
       over the first quantization level by the downsampling, would otherwise favour clipping hard);
    1. histogram of |x| over [0, max|x|] with about sqrt(N) bins; normalized CDF at the bin edges;
    2. for each candidate bin i > M = 2^(b - signed) (threshold = right edge of bin i):
       clip: P = the distribution with everything beyond bin i folded into bin i
       (its CDF: the CDF up to edge i-1, then 1);
       downsample: the clipped CDF at M + 1 evenly spaced points of [0, t] (M quantization levels);
       upsample back: linear interpolation of that coarse CDF at the i fine bin edges, giving Q;
       J(P, Q) between the two per-bin distributions;
    Returns (thresholds, divergences), one entry per candidate.
    """
    a = np.abs(np.asarray(v, np.float64).ravel())
    a = a[a > 0]  # zero is exact at every scale: the spike of a ReLU's zeros must not pick the clip
    levels = 2 ** (bits - int(signed))
    top = float(a.max()) if a.size else 0.0
    if top == 0.0:
        return np.zeros(0), np.zeros(0)
    n_bins = bins or int(min(max(round(math.sqrt(a.size)), levels + 1), 4096))
    hist, edges = np.histogram(a, bins=n_bins, range=(0.0, top))
    cdf = np.concatenate([[0.0], np.cumsum(hist) / a.size])
    ts, js = [], []
    for i in range(levels + 1, n_bins + 1):
        fine_edges = edges[: i + 1]
        clipped = cdf[: i + 1].copy()
        clipped[i] = 1.0
        coarse_x = np.linspace(0.0, fine_edges[-1], levels + 1)
        coarse = np.interp(coarse_x, fine_edges, clipped)
        up = np.interp(fine_edges, coarse_x, coarse)
        ts.append(float(fine_edges[-1]))
        js.append(_j_divergence(np.diff(clipped), np.diff(up)))
    return np.array(ts), np.array(js)


def threshold_kl_j(v: np.ndarray, bits: int, signed: bool, bins: int | None = None) -> float:
    """The KL-J threshold (before the power-of-2 ceil). Too few values for more bins than levels:
    the max."""
    ts, js = kl_j_divergences(v, bits, signed, bins)
    if ts.size == 0:
        return threshold_max(v)
    return float(ts[int(np.argmin(js))])


def act_threshold(v: np.ndarray, method: str, bits: int, signed: bool) -> float:
    if method == "max":
        return threshold_max(v)
    if method == "percentile":
        return threshold_percentile(v)
    if method == "mse":
        return threshold_mse(v, bits, signed)
    if method == "kl-j":
        return threshold_kl_j(v, bits, signed)
    raise UnsupportedError(f"activation calibration method {method!r} is unknown",
                           hint="use one of " + ", ".join(ACT_METHODS))


def weight_threshold(w: np.ndarray, method: str = "max", bits: int = 8) -> float:
    w = np.asarray(w, np.float64)
    if method == "max":
        return threshold_max(w)
    if method == "mse":
        return threshold_mse(w, bits, True)
    if method == "3sd":
        return float(min(abs(w.mean()) + 3 * w.std(), threshold_max(w))) or threshold_max(w)
    raise UnsupportedError(f"weight calibration method {method!r} is unknown",
                           hint="use one of " + ", ".join(WEIGHT_METHODS))
