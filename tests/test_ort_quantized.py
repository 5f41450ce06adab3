"""Models quantized by onnxruntime's own quantize_static (QDQ and QOperator formats, symmetric and
asymmetric activations) run in the reference in multiplier mode with outputs equal to
onnxruntime's, element for element (golden values: onnxruntime).

The exact comparison everywhere is onnxruntime's unoptimized Q/DQ path (QOperator models written
as DequantizeLinear -> float op -> QuantizeLinear by _ort_helpers.qoperator_to_qdq), whose result
does not depend on the CPU. onnxruntime's int8 kernels (QOperator nodes, fused QDQ groups) are a
second comparison on CPUs where they sum exactly (VNNI/AMX); elsewhere they are skipped, naming
the missing feature (_ort_helpers.int8_kernels_exact_reason)."""
import platform

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from _ort_helpers import (calibration_reader, compare_predictions, ort_run, qoperator_to_qdq,
                          require_exact_int8_kernels, rhe)
from tony.api import load_ir, normalize_inputs, run_reference
from tony.errors import UnsupportedError
from tony.models.digits import digits_data, mlp_onnx, train_mlp

VARIANTS = [(fmt, sym) for fmt in ("QDQ", "QOperator") for sym in (False, True)]
LEVELS = {"unfused": ort.GraphOptimizationLevel.ORT_DISABLE_ALL, "fused": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}


@pytest.fixture(scope="module")
def ort_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("ort_quantized")
    layers, _ = train_mlp((32,), seed=0)
    xtr, _, xte, yte = digits_data(0)
    onnx.save(mlp_onnx(layers), d / "float.onnx")
    paths = {}
    for fmt, sym in VARIANTS:
        out = d / f"mlp_{fmt}_{'sym' if sym else 'asym'}.onnx"
        quantize_static(str(d / "float.onnx"), str(out), calibration_reader(xtr[:200]),
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


def _qdq_path(path, tmp_path):
    """the model as onnxruntime's Q/DQ path runs it: QOperator nodes written as Q/DQ around float ops"""
    m = onnx.load(path)
    if not any(n.op_type.startswith(("QLinear", "QGemm")) for n in m.graph.node):
        return path
    out = tmp_path / f"{path.stem}_as_qdq.onnx"
    onnx.save(qoperator_to_qdq(m), out)
    return out


@pytest.mark.parametrize("fmt,sym", VARIANTS, ids=[f"{f}-{'sym' if s else 'asym'}" for f, s in VARIANTS])
def test_reference_equals_onnxruntime_quantized_mlp(ort_models, fmt, sym, tmp_path):
    """against onnxruntime's unoptimized Q/DQ path: the same on every CPU"""
    paths, x, _ = ort_models
    path = paths[(fmt, sym)]
    if fmt == "QOperator":
        assert any(n.op_type == "QGemm" for n in onnx.load(path).graph.node)
    got = _ort(_qdq_path(path, tmp_path), x, "unfused")
    ref = run_reference(path, x[:, None, :], requant="multiplier")[0].reshape(got.shape)
    assert ref.dtype == got.dtype == np.float32
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


INT8_KERNEL_CASES = [(f, s, lv) for f, s in VARIANTS for lv in LEVELS if f == "QOperator" or lv == "fused"]


@pytest.mark.parametrize("fmt,sym,level", INT8_KERNEL_CASES,
                         ids=[f"{f}-{'sym' if s else 'asym'}-{lv}" for f, s, lv in INT8_KERNEL_CASES])
def test_reference_equals_onnxruntime_int8_kernels_mlp(ort_models, fmt, sym, level):
    """against onnxruntime's int8 kernels (QGemm, fused QDQ), where this CPU makes them exact"""
    require_exact_int8_kernels()
    paths, x, _ = ort_models
    path = paths[(fmt, sym)]
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


def concat_input_cnn(seed=1):
    """Conv-ReLU whose output is concatenated with the graph input and with itself again (two
    inputs the planner must copy), then MaxPool; returns the float model and 3 seeded inputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (4, 4, 3, 3)).astype(np.float32), "w")
    N = helper.make_node
    nodes = [N("Conv", ["x", "w"], ["c"], pads=[1] * 4), N("Relu", ["c"], ["r"]),
             N("Concat", ["r", "x", "r"], ["y"], axis=1, name="cat"),
             N("MaxPool", ["y"], ["z"], kernel_shape=[2, 2], strides=[2, 2])]
    gr = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 4])],
                           [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 12, 2, 2])], [w])
    m = helper.make_model(gr, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m, rng.uniform(-1, 1, (3, 4, 4, 4)).astype(np.float32)


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
            quantize_static(str(src[name]), str(out), calibration_reader(calib, add_batch_axis=False), quant_format=getattr(QuantFormat, fmt),
                            activation_type=QuantType.QInt8 if sym else QuantType.QUInt8,
                            weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": sym})
            paths[(name, fmt, sym)] = out
    return paths, x


CNN_CASES = [(n, f, s) for n in CNNS for f, s in VARIANTS]


# ("digits-mobilenet", "QOperator", sym) is refused: test_float_average_pool_after_clip_is_refused.
@pytest.mark.parametrize("name,fmt,sym", [c for c in CNN_CASES if c != ("digits-mobilenet", "QOperator", True)],
                         ids=lambda v: v if isinstance(v, str) else ("sym" if v else "asym"))
def test_reference_equals_onnxruntime_quantized_cnns(ort_cnns, name, fmt, sym, tmp_path):
    """against onnxruntime's unoptimized Q/DQ path (QOperator models written as Q/DQ): the same on
    every CPU"""
    paths, x = ort_cnns
    path = paths[(name, fmt, sym)]
    ops = {n.op_type for n in onnx.load(path).graph.node}
    if name == "concat-cnn":
        assert {"QLinearConcat", "QLinearAdd"} <= ops if fmt == "QOperator" else {"Concat", "Add"} <= ops
    if name == "digits-mobilenet":
        assert ops & {"QLinearGlobalAveragePool", "GlobalAveragePool"}
    got = ort_run(str(_qdq_path(path, tmp_path)), list(x))[0]
    ref = run_reference(path, x, requant="multiplier")[0].reshape(got.shape)
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


# ("digits-cnn", "QOperator", sym): onnxruntime's int8 QLinearConv rounds a few first-layer values
# on the other side of a .5 tie; test_int8_qlinearconv_differs_only_at_float32_ties predicts them.
@pytest.mark.parametrize("name,fmt,sym", [
    c for c in CNN_CASES if c[1] == "QOperator" and c[0:3:2] not in {("digits-cnn", True), ("digits-mobilenet", True)}],
    ids=lambda v: v if isinstance(v, str) else ("sym" if v else "asym"))
def test_reference_equals_onnxruntime_int8_kernels_cnns(ort_cnns, name, fmt, sym):
    """against onnxruntime's QLinearConv/QGemm/contrib kernels, where this CPU makes them exact"""
    require_exact_int8_kernels()
    paths, x = ort_cnns
    path = paths[(name, fmt, sym)]
    got = ort_run(str(path), list(x))[0]
    ref = run_reference(path, x, requant="multiplier")[0].reshape(got.shape)
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


def test_float_average_pool_after_clip_is_refused(ort_cnns):
    """Symmetric QOperator mobilenet: onnxruntime leaves Clip (ReLU6) and GlobalAveragePool in float
    between a DequantizeLinear and a QuantizeLinear; an average of unquantized values has no exact
    integer form, so the compiler refuses it, naming the Clip."""
    paths, _ = ort_cnns
    with pytest.raises(UnsupportedError, match=r"\(Clip\): output .* is not quantized"):
        load_ir(paths[("digits-mobilenet", "QOperator", True)], requant="multiplier")


# ---- int8 QLinearConv: onnxruntime's float32 requantization against the 31-bit multiplier ----------
def _ort_qlinearconv_float32(acc, x_scale, w_scale, y_scale, y_zp, lo, hi):
    """onnxruntime's QLinearConv requantization, as its CPU kernels compute it in float32
    (MLAS on x86: MlasRequantizeOutput after the int32 GEMM, or the same steps fused into the
    symmetric-convolution kernel): output_scale = x_scale * w_scale / y_scale in float32
    (left to right, per output channel for per-channel weights); float(acc) * output_scale in
    float32; clamp to [lo - zp, hi - zp]; convert with round-half-to-even (cvtps2dq under the
    default MXCSR); add the zero point. acc: int64 [N, M, H, W]."""
    f32 = np.float32
    scale = (f32(x_scale) * np.asarray(w_scale, f32).reshape(-1) / f32(y_scale)).astype(f32)
    v = acc.astype(f32) * scale.reshape(1, -1, 1, 1)
    assert v.dtype == f32
    q = np.rint(np.clip(v, f32(lo - y_zp), f32(hi - y_zp))).astype(np.int64) + y_zp
    return q, v


def _conv_acc(x, w, bias, x_zp, pads):
    """sum (x - x_zp) * w + bias, NCHW, stride 1, group 1, one kernel tap at a time in int64."""
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    top, left, bottom, right = pads
    xp = np.pad(x.astype(np.int64) - x_zp, ((0, 0), (0, 0), (top, bottom), (left, right)))
    oh, ow = h + top + bottom - kh + 1, wd + left + right - kw + 1
    acc = np.zeros((n, m, oh, ow), np.int64) + bias.astype(np.int64).reshape(1, m, 1, 1)
    for i in range(kh):
        for j in range(kw):
            acc += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + oh, j:j + ow], w[:, :, i, j].astype(np.int64))
    return acc


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"),
                    reason="models onnxruntime's x86 float32 requantization (its ARM kernels may use a fixed-point scale)")
def test_int8_qlinearconv_differs_only_at_float32_ties(ort_cnns):
    """digits-cnn quantized by quantize_static, QOperator, symmetric int8 activations.

    onnxruntime's QLinearConv requantizes the exact int32 accumulator in float32
    (_ort_qlinearconv_float32); the reference multiplies it by a 31-bit M and rounds the shift
    half to even (docs/arithmetic.md). Where acc * s_x * s_w / s_y lies within float32 error of a
    .5 tie the two round to different sides. For the first QLinearConv:

    (a) onnxruntime's integers equal the numpy float32 model, element for element;
    (b) the reference's equal round_half_even(acc * M / 2^shift) + zp in Python integers
        (M, shift read from the IR op);
    (c) they differ exactly where the two models differ, by 1, each time with a .5 tie between
        the two unrounded values and the exact product (float32 scales as fractions) within
        float error of that tie;
    (d) fed onnxruntime's first-layer integers, the reference's remaining layers give every
        later integer tensor and the output of onnxruntime exactly, so every differing output
        element comes from a sample with a differing first-layer value.
    """
    from fractions import Fraction

    from onnx import helper, numpy_helper

    from tony.ref import KERNELS, execute

    require_exact_int8_kernels()  # (a) and (d) assume onnxruntime's int8 kernels sum exactly

    paths, x = ort_cnns
    path = paths[("digits-cnn", "QOperator", True)]
    m = onnx.load(path)
    g = load_ir(path, requant="multiplier")
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    node = next(n for n in m.graph.node if n.op_type == "QLinearConv")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert all(v == 1 for v in attrs.get("strides", [1, 1]) + attrs.get("dilations", [1, 1]) + [attrs.get("group", 1)])
    xn, xs, xz, wn, ws, wz, ys, yz, bn = node.input
    assert inits[xz].dtype == np.int8 and not inits[wz].any()
    conv = next(op for op in g.ops if op.outputs[0] == node.output[0])
    assert type(conv).__name__ == "Conv" and conv.inputs[0] == xn

    # onnxruntime with every integer tensor the reference also has as an extra graph output
    ints = [o for n in m.graph.node if n.op_type in ("QuantizeLinear", "QLinearConv", "QLinearAdd", "QGemm")
            for o in n.output]
    ints = [t for t in ints if any(t == op.outputs[0] for op in g.ops)]
    m.graph.output.extend([helper.make_empty_tensor_value_info(t) for t in ints])
    y_ort, *outs = ort_run(m, list(x))
    feeds, _ = normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    ort_env = {t: o.reshape(env[t].shape).astype(np.int64) for t, o in zip(ints, outs)}
    assert np.array_equal(env[xn], ort_env[xn]), "the quantized input differs"

    acc = _conv_acc(ort_env[xn], inits[wn], inits[bn], int(inits[xz]), attrs.get("pads", [0, 0, 0, 0]))
    rq = conv.requant
    lo, hi = rq.lo, rq.hi
    assert (lo, hi) == (-128, 127) and rq.zero_point == int(inits[yz]) and not rq.per_channel
    ort_pred, v32 = _ort_qlinearconv_float32(acc, inits[xs], inits[ws], inits[ys], int(inits[yz]), lo, hi)
    ref_val = np.array([Fraction(int(a) * rq.mult, 2**rq.shift) for a in acc.ravel()], dtype=object).reshape(acc.shape)
    ref_pred = np.clip(np.vectorize(rhe, otypes=[np.int64])(ref_val) + rq.zero_point, lo, hi)
    ort_val = np.vectorize(lambda f: Fraction(float(f)), otypes=[object])(v32)
    ort_y, ref_y = ort_env[node.output[0]], env[node.output[0]]
    compare_predictions("digits-cnn int8 QLinearConv (first layer)", ort_y, ref_y, ort_pred, ref_pred, ort_val, ref_val)

    # each differing element: the exact product is within float error of a .5 tie
    diff = ort_y != ref_y
    s_exact = Fraction(float(inits[xs])) * Fraction(float(inits[ws])) / Fraction(float(inits[ys]))
    for a, f in zip(acc[diff], v32[diff]):
        exact = int(a) * s_exact
        off = abs(exact - exact.numerator // exact.denominator - Fraction(1, 2))
        print(f"  acc {int(a)}: exact {float(exact):.9f}, onnxruntime's float32 {float(f):.9f}")
        assert off <= abs(exact) * Fraction(1, 2**21), f"acc {int(a)}: {float(off):.3g} from a tie"

    # (d) the remaining layers, run by the reference from onnxruntime's first-layer integers
    env2 = dict(env)
    env2[conv.outputs[0]] = ort_y
    for op in g.ops[g.ops.index(conv) + 1:]:
        env2[op.outputs[0]] = KERNELS[type(op)](op, g, *(env2[i] for i in op.inputs))
    for t in ints[ints.index(node.output[0]):]:
        assert np.array_equal(env2[t], ort_env[t]), f"{t}: {int((env2[t] != ort_env[t]).sum())} elements differ"
    tail = env2[g.outputs[0]].reshape(y_ort.shape)
    assert tail.dtype == y_ort.dtype == np.float32 and np.array_equal(tail, y_ort)
    ref = env[g.outputs[0]].reshape(y_ort.shape)
    n_out = int((ref != y_ort).sum())
    print(f"{n_out} of {ref.size} outputs differ from onnxruntime, all downstream of the first layer")
    samples_conv = set(np.nonzero(diff.reshape(len(x), -1).any(axis=1))[0].tolist())
    samples_out = set(np.nonzero((ref != y_ort).reshape(len(x), -1).any(axis=1))[0].tolist())
    assert samples_out <= samples_conv
