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


# ---- CNNs: residual Add, Concat, depthwise-separable (digits 1x1x8x8) -------------------------------
def concat_cnn(seed=0) -> onnx.ModelProto:
    """Conv-ReLU, a residual block (Conv-ReLU-Conv + skip, Add, ReLU), a 1x1 Conv branch concatenated
    with its input, MaxPool, Gemm; seeded random weights (only equality with onnxruntime matters)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w(name, shape):
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), size=shape).astype(np.float32), name)

    def b(name, n):
        return numpy_helper.from_array(rng.normal(0, 0.05, size=n).astype(np.float32), name)
    inits = [w("w1", (8, 1, 3, 3)), b("b1", 8), w("w2", (8, 8, 3, 3)), b("b2", 8), w("w3", (8, 8, 3, 3)), b("b3", 8),
             w("w4", (4, 8, 1, 1)), b("b4", 4), w("wf", (10, 12 * 16)), b("bf", 10)]
    N = helper.make_node
    nodes = [N("Conv", ["input", "w1", "b1"], ["c1"], pads=[1] * 4), N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4), N("Relu", ["c2"], ["r2"]),
             N("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1] * 4), N("Add", ["c3", "r1"], ["s"]), N("Relu", ["s"], ["r3"]),
             N("Conv", ["r3", "w4", "b4"], ["c4"]), N("Relu", ["c4"], ["r4"]),
             N("Concat", ["r3", "r4"], ["cat"], axis=1), N("MaxPool", ["cat"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             N("Flatten", ["p"], ["f"]), N("Gemm", ["f", "wf", "bf"], ["output"], transB=1)]
    g = helper.make_graph(nodes, "concat_cnn", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 10])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


class _ImageReader(CalibrationDataReader):
    def __init__(self, x):
        self.it = iter([{"input": xi} for xi in x])

    def get_next(self):
        return next(self.it, None)


CNNS = ("concat-cnn", "digits-cnn", "digits-mobilenet")


@pytest.fixture(scope="module")
def ort_cnns(tmp_path_factory):
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from tony.models import build_example

    d = tmp_path_factory.mktemp("ort_cnns")
    build_example("digits-cnn", d / "digits-cnn")
    build_example("digits-mobilenet", d / "digits-mobilenet")
    onnx.save(concat_cnn(), d / "concat-cnn.onnx")
    # onnxruntime's own pre-processing folds the mobilenet's BatchNormalization before quantizing
    quant_pre_process(str(d / "digits-mobilenet" / "float.onnx"), str(d / "digits-mobilenet.onnx"))
    src = {"concat-cnn": d / "concat-cnn.onnx", "digits-cnn": d / "digits-cnn" / "float.onnx",
           "digits-mobilenet": d / "digits-mobilenet.onnx"}
    calib = np.load(d / "digits-cnn" / "calib.npy")[:64]
    x = np.load(d / "digits-cnn" / "inputs.npy")[:100]
    paths = {}
    for name in CNNS:
        for fmt, sym in VARIANTS:
            out = d / f"{name}_{fmt}_{'sym' if sym else 'asym'}.onnx"
            quantize_static(str(src[name]), str(out), _ImageReader(calib), quant_format=getattr(QuantFormat, fmt),
                            activation_type=QuantType.QInt8 if sym else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": sym})
            paths[(name, fmt, sym)] = out
    return paths, x


def _ort_images(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": xi})[0] for xi in x])


CNN_CASES = [(n, f, s) for n in CNNS for f, s in VARIANTS]


@pytest.mark.parametrize("name,fmt,sym", [
    pytest.param(n, f, s, marks=pytest.mark.xfail(strict=True, reason=(
        "onnxruntime's QLinearConv with int8 activations rounds 7 of 51200 first-layer outputs "
        "differently from the 31-bit multiplier (not yet predicted element by element)")))
    if (n, f, s) == ("digits-cnn", "QOperator", True) else (n, f, s)
    for n, f, s in CNN_CASES if (n, f, s) != ("digits-mobilenet", "QOperator", True)],
    ids=lambda v: v if isinstance(v, str) else ("sym" if v else "asym"))
def test_reference_equals_onnxruntime_quantized_cnns(ort_cnns, name, fmt, sym):
    paths, x = ort_cnns
    path = paths[(name, fmt, sym)]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    if name == "concat-cnn":
        assert {"QLinearConcat", "QLinearAdd"} <= ops if fmt == "QOperator" else {"Concat", "Add"} <= ops
    if name == "digits-mobilenet":
        assert ops & {"QLinearGlobalAveragePool", "GlobalAveragePool"}
    got = _ort_images(path, x)
    ref = run_reference(path, x, requant="multiplier")[0].reshape(got.shape)
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


def test_float_average_pool_after_clip_is_refused(ort_cnns):
    """Symmetric QOperator mobilenet: onnxruntime leaves Clip (ReLU6) and GlobalAveragePool in float
    between a DequantizeLinear and a QuantizeLinear; an average of unquantized values has no exact
    integer form, so the compiler refuses it, naming the Clip."""
    paths, _ = ort_cnns
    with pytest.raises(UnsupportedError, match=r"\(Clip\): output .* is not quantized"):
        load_ir(paths[("digits-mobilenet", "QOperator", True)], requant="multiplier")
