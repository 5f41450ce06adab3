"""The reference equals onnxruntime, element for element, on the bundled pow2 QDQ models."""
import numpy as np
import onnxruntime as ort
import pytest

import tony
from _ort_helpers import require_exact_int8_kernels


def _ort_outputs(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: xi})[0] for xi in x])


@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL], ids=["unfused", "fused"])
def test_reference_equals_onnxruntime_on_digits_mlp(digits_mlp, level):
    """unfused: onnxruntime's Q/DQ path, the same on every CPU; fused: its int8 kernels, where exact."""
    if level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
        require_exact_int8_kernels()
    x = np.load(digits_mlp / "inputs.npy")
    assert len(x) >= 100
    ref = tony.run_reference(digits_mlp / "model.onnx", x)[0]
    got = _ort_outputs(digits_mlp / "model.onnx", x, level)
    assert ref.shape == got.shape
    assert ref.dtype == got.dtype == np.float32
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


def test_quantized_mlp_keeps_float_accuracy(digits_mlp):
    import onnx
    from onnx.reference import ReferenceEvaluator

    x = np.load(digits_mlp / "inputs.npy")
    y = np.load(digits_mlp / "labels.npy")
    q = tony.run_reference(digits_mlp / "model.onnx", x)[0].reshape(len(x), -1).argmax(1)
    ev = ReferenceEvaluator(onnx.load(digits_mlp / "float.onnx"))
    f = np.stack([ev.run(None, {"input": xi})[0] for xi in x]).reshape(len(x), -1).argmax(1)
    acc_q, acc_f = (q == y).mean(), (f == y).mean()
    print(f"float {acc_f:.4f} pow2 int8 {acc_q:.4f}")
    assert acc_q >= acc_f - 0.02
