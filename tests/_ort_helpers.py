"""Helpers shared by the tests that predict, element by element, where onnxruntime and the
reference round differently (test_ort_contrib, test_ort_quantized, test_tiny_models).

Each side's integers are predicted independently with exact fractions (or, for onnxruntime's
float kernels, a numpy model of its float32 arithmetic); `compare_predictions` then checks that
each side equals its prediction and that they differ only at .5 ties.
"""
from fractions import Fraction

import numpy as np
import onnxruntime as ort


def rhe(v: Fraction) -> int:
    """round half to even of an exact fraction"""
    fl = v.numerator // v.denominator
    r = v - fl
    return fl + (1 if r > Fraction(1, 2) or (r == Fraction(1, 2) and fl % 2) else 0)


def tie_between(u: Fraction, v: Fraction) -> bool:
    """Is some k + 1/2 in [min(u, v), max(u, v)]? (then round-half-to-even of u and v may differ)"""
    lo, hi = min(u, v) - Fraction(1, 2), max(u, v) - Fraction(1, 2)
    return -((-lo.numerator) // lo.denominator) <= hi.numerator // hi.denominator


def compare_predictions(name, ort_y, ref_y, ort_pred, ref_pred, ort_val, ref_val):
    """ort_val / ref_val: each side's value before rounding, in output LSBs, as exact fractions."""
    assert np.array_equal(ort_y, ort_pred), f"{name}: onnxruntime differs from its predicted rounding"
    assert np.array_equal(ref_y, ref_pred), f"{name}: the reference differs from its integer formula"
    diff = ort_y != ref_y
    predicted = int((ort_pred != ref_pred).sum())
    print(f"{name}: {int(diff.sum())} of {diff.size} elements differ from onnxruntime (predicted {predicted})")
    assert int(diff.sum()) == predicted
    assert all(tie_between(u, v) for u, v in zip(ort_val[diff], ref_val[diff])), "a difference not at a tie"
    assert (np.abs(ort_y - ref_y) <= 1).all()


def ort_run(path_or_model, feeds_list, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, name="input"):
    """Run each sample of `feeds_list` through onnxruntime (CPU); every graph output stacked over samples."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {name: x}) for x in feeds_list]
    return [np.stack([o[k] for o in outs]) for k in range(len(outs[0]))]


def calibration_reader(x, name: str = "input", *, add_batch_axis: bool = True):
    """An onnxruntime.quantization CalibrationDataReader over the samples of x, one feed each
    (with a batch axis of 1 added unless the samples already have it)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: xi[None] if add_batch_axis else xi} for xi in x])

        def get_next(self):
            return next(self.it, None)

    return _Reader()
