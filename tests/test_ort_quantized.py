"""Models quantized by onnxruntime's own quantize_static (QDQ and QOperator formats, symmetric and
asymmetric activations) run in the reference in multiplier mode with outputs equal to
onnxruntime's, element for element (golden values: onnxruntime)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from tony.api import load_ir, run_reference
from tony.errors import UnsupportedError
from tony.models.digits import digits_data, mlp_onnx, train_mlp

VARIANTS = [(fmt, sym) for fmt in ("QDQ", "QOperator") for sym in (False, True)]
LEVELS = {"unfused": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "fused": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


class _Reader(CalibrationDataReader):
    def __init__(self, x):
        self.it = iter([{"input": xi[None]} for xi in x])

    def get_next(self):
        return next(self.it, None)


@pytest.fixture(scope="module")
def ort_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort_quantized")
    layers, _ = train_mlp((32,), seed=0)
    xtr, _, xte, yte = digits_data(0)
    onnx.save(mlp_onnx(layers), d / "float.onnx")
    paths = {}
    for fmt, sym in VARIANTS:
        out = d / f"mlp_{fmt}_{'sym' if sym else 'asym'}.onnx"
        quantize_static(str(d / "float.onnx"), str(out), _Reader(xtr[:200]),
                        quant_format=getattr(QuantFormat, fmt),
                        activation_type=QuantType.QInt8 if sym else QuantType.QUInt8,
                        weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": sym})
        paths[(fmt, sym)] = out
    return paths, xte, yte


def _ort(path, x, level):
    so = ort.SessionOptions()
    so.graph_optimization_level = LEVELS[level]
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": xi[None]})[0] for xi in x])


@pytest.mark.parametrize("level", list(LEVELS))
@pytest.mark.parametrize("fmt,sym", VARIANTS, ids=[f"{f}-{'sym' if s else 'asym'}" for f, s in VARIANTS])
def test_reference_equals_onnxruntime_quantized_mlp(ort_models, fmt, sym, level):
    paths, x, _ = ort_models
    path = paths[(fmt, sym)]
    if fmt == "QOperator":
        assert any(n.op_type == "QGemm" for n in onnx.load(path).graph.node)
    got = _ort(path, x, level)
    ref = run_reference(path, x[:, None, :], requant="multiplier")[0].reshape(got.shape)
    assert ref.dtype == got.dtype == np.float32
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


@pytest.mark.parametrize("fmt,sym", VARIANTS, ids=[f"{f}-{'sym' if s else 'asym'}" for f, s in VARIANTS])
def test_onnxruntime_scales_are_refused_in_pow2_mode(ort_models, fmt, sym):
    paths, _, _ = ort_models
    with pytest.raises(UnsupportedError, match="--requant multiplier"):
        load_ir(paths[(fmt, sym)], requant="pow2")


def test_quantized_mlp_keeps_its_accuracy(ort_models):
    paths, x, y = ort_models
    acc = {k: float((run_reference(p, x[:, None, :], requant="multiplier")[0].reshape(len(x), -1).argmax(1) == y).mean())
           for k, p in paths.items()}
    print(acc)
    assert min(acc.values()) > 0.93
