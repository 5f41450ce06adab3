"""The pow2 quantizer on the digits models: scales, sharing, accuracy, onnxruntime = reference, CLI errors."""
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import tony
from _ort_helpers import require_exact_int8_kernels
from tony.quant.qdq import quantize_static


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory):
    from tony.models import build_example

    d = tmp_path_factory.mktemp("digits_cnn")
    build_example("digits-cnn", d)
    return d


@pytest.fixture(scope="session")
def digits_mobilenet(tmp_path_factory):
    from tony.models import build_example

    d = tmp_path_factory.mktemp("digits_mobilenet")
    build_example("digits-mobilenet", d)
    return d


def _ort(model, x, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL):
    """onnxruntime's outputs; by default on its unoptimized Q/DQ path (the same on every CPU)"""
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.stack([sess.run(None, {name: xi})[0] for xi in x])


def _acc(out, y):
    return float((out.reshape(len(y), -1).argmax(1) == y).mean())


def _scales(m):
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    return {n.input[1]: inits[n.input[1]] for n in m.graph.node
            if n.op_type in ("QuantizeLinear", "DequantizeLinear")}


def _dq_scale(m, tensor):
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    n = next(n for n in m.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == tensor)
    zp = next(i for i in m.graph.initializer if i.name == n.input[2])
    return float(inits[n.input[1]]), zp.data_type


@pytest.mark.parametrize("example", ["digits_mlp", "digits_cnn", "digits_mobilenet"])
def test_every_scale_in_the_written_model_is_a_power_of_two(example, request, tmp_path, tony_cli):
    d = request.getfixturevalue(example)
    calib = tmp_path / "calib.npy"
    x = np.load(d / "inputs.npy")
    np.save(calib, x[:64])
    out = tmp_path / "q.onnx"
    res = tony_cli("quantize", d / "float.onnx", "--calib", calib, "--method", "kl-j", "-o", out)
    assert res.returncode == 0, res.stderr
    m = onnx.load(out)
    scales = _scales(m)
    assert len(scales) >= 4
    for name, s in scales.items():
        for v in np.ravel(s):
            assert v > 0 and math.log2(float(v)) == round(math.log2(float(v))), (name, v)


@pytest.mark.parametrize("example", ["digits_mlp", "digits_cnn", "digits_mobilenet"])
@pytest.mark.parametrize("method,bits", [("kl-j", 8), ("max", 8), ("kl-j", 4)])
@pytest.mark.parametrize("level", ["unfused", "fused"])
def test_reference_equals_onnxruntime_on_quantized_model(example, method, bits, level, request):
    """unfused: onnxruntime's Q/DQ path, the same on every CPU; fused: its int8 kernels, where this
    CPU makes them exact (see _ort_helpers)."""
    if level == "fused":
        require_exact_int8_kernels()
    d = request.getfixturevalue(example)
    x = np.load(d / "inputs.npy")[:120]
    q = quantize_static(onnx.load(d / "float.onnx"), x[:64], method=method, weight_bits=bits)
    ref = tony.run_reference(q, x)[0]
    got = _ort(q, x, {"unfused": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                      "fused": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[level])
    assert ref.shape == got.shape
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


@pytest.mark.parametrize("example", ["digits_mlp", "digits_cnn", "digits_mobilenet"])
def test_ptq_kl_j_int8_is_within_one_point_of_float(example, request):
    d = request.getfixturevalue(example)
    x, y = np.load(d / "inputs.npy"), np.load(d / "labels.npy")
    fm = onnx.load(d / "float.onnx")
    calib = np.load(d / "calib.npy") if (d / "calib.npy").exists() else x[:256]
    q = quantize_static(fm, calib, method="kl-j")
    acc_f, acc_q = _acc(_ort(fm, x), y), _acc(tony.run_reference(q, x)[0], y)
    print(f"{example}: float {acc_f:.4f} PTQ kl-j int8 {acc_q:.4f}")
    assert acc_q >= acc_f - 0.01


def test_batchnorm_folds_and_relu6_gives_uint8_with_a_clamp(digits_mobilenet):
    fm = onnx.load(digits_mobilenet / "float.onnx")
    assert any(n.op_type == "BatchNormalization" for n in fm.graph.node)
    q = onnx.load(digits_mobilenet / "model.onnx")
    assert not any(n.op_type == "BatchNormalization" for n in q.graph.node)
    clips = [n for n in q.graph.node if n.op_type == "Clip"]
    assert clips
    for c in clips:
        _, zdt = _dq_scale(q, c.output[0] + "_dq")
        assert zdt == TensorProto.UINT8
    from tony.api import load_ir

    g = load_ir(q)
    convs = [op for op in g.ops if type(op).__name__ == "Conv"]
    assert len(convs) == 5
    for op in convs:  # the ReLU6 clamp: 6 / scale, or the uint8 limit when the threshold is below 6
        s = g.tensors[op.outputs[0]].scale
        assert (op.requant.lo, op.requant.hi) == (0, min(255, round(6 / s)))


def test_add_inputs_share_one_threshold(digits_cnn):
    q = onnx.load(digits_cnn / "model.onnx")
    add = next(n for n in q.graph.node if n.op_type == "Add")
    exps = []
    for i in add.input:
        s, zdt = _dq_scale(q, i)
        exps.append(math.log2(s) + (8 if zdt == TensorProto.UINT8 else 7))  # log2 of the pow2 threshold
    assert exps[0] == exps[1]


def test_int4_weights_lie_in_the_int4_range_and_first_last_can_stay_8bit(digits_cnn):
    fm = onnx.load(digits_cnn / "float.onnx")
    x = np.load(digits_cnn / "calib.npy")

    def weights(m):
        inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
        return [inits[n.input[0]] for n in m.graph.node
                if n.op_type == "DequantizeLinear" and n.input[0].endswith(".weight_quant")]
    w4 = weights(quantize_static(fm, x, weight_bits=4))
    assert len(w4) == 4 and all(w.min() >= -8 and w.max() <= 7 for w in w4)
    assert all(np.abs(w).max() >= 4 for w in w4)  # 2^ceil(log2 max|w|) < 2 max|w|: at least half the range
    w48 = weights(quantize_static(fm, x, weight_bits=4, first_last_8bit=True))
    assert np.abs(w48[0]).max() > 8 and np.abs(w48[-1]).max() > 8
    assert all(w.min() >= -8 and w.max() <= 7 for w in w48[1:-1])


def _pool_model():
    rng = np.random.default_rng(7)
    print("seed=7")
    w = numpy_helper.from_array(rng.normal(0, 0.5, (4, 1, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, 4).astype(np.float32), "b")
    fw = numpy_helper.from_array(rng.normal(0, 0.5, (3, 4)).astype(np.float32), "fw")
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("AveragePool", ["r"], ["ap"], name="avg3", kernel_shape=[3, 3], strides=[1, 1]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gap"], name="gap"),
             helper.make_node("Flatten", ["gap"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw"], ["y"], name="fc", transB=1)]
    g = helper.make_graph(nodes, "pool", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])], [w, b, fw])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), rng


def test_qdq_around_average_pools_lowers_and_tracks_onnxruntime():
    from tony.api import load_ir

    m, rng = _pool_model()
    x = rng.uniform(0, 1, (40, 1, 1, 8, 8)).astype(np.float32)
    q = quantize_static(m, x[:20], method="kl-j")
    g = load_ir(q)
    assert sum(type(op).__name__ == "AvgPool" for op in g.ops) == 2
    ref = tony.run_reference(q, x)[0]
    got = _ort(q, x)
    s, _ = _dq_scale(q, "y")
    lsb = np.abs(ref - got) / s
    print(f"average pools: {int((lsb > 0).sum())} of {lsb.size} outputs differ from onnxruntime, max {lsb.max()} LSB")
    assert lsb.max() <= 2  # the 3x3 window divides by a reciprocal multiply (docs: arithmetic contract)


def test_float_model_runs_in_the_tony_pipeline_only_after_quantization(digits_cnn):
    with pytest.raises(tony.TonyError):
        tony.run_reference(digits_cnn / "float.onnx", np.load(digits_cnn / "inputs.npy")[:2])


# ---- CLI errors ---------------------------------------------------------------------------------
def _one_line_error(res, *needles):
    assert res.returncode == 1, res.stderr
    err = res.stderr.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    for n in needles:
        assert n in err, err


@pytest.mark.parametrize("bad,needle", [
    (np.zeros((5, 3, 3), np.float32), "shape"),
    (np.full((4, 1, 64), np.nan, np.float32), "NaN"),
    (np.zeros((0, 1, 64), np.float32), "empty"),
], ids=["wrong-shape", "nan", "empty"])
def test_bad_calibration_data_is_one_clear_line(bad, needle, digits_mlp, tmp_path, tony_cli):
    p = tmp_path / "calib.npy"
    np.save(p, bad)
    _one_line_error(tony_cli("quantize", digits_mlp / "float.onnx", "--calib", p, "-o", tmp_path / "q.onnx"),
                    "calibration", needle)
    assert not (tmp_path / "q.onnx").exists()


def test_bad_training_data_is_one_clear_line(digits_mlp, tmp_path, tony_cli):
    pytest.importorskip("torch")
    c = tmp_path / "calib.npy"
    np.save(c, np.load(digits_mlp / "inputs.npy")[:16])
    t = tmp_path / "train.npz"
    np.savez(t, inputs=np.zeros((3, 1, 64)))
    _one_line_error(tony_cli("quantize", digits_mlp / "float.onnx", "--calib", c, "--train-data", t,
                             "-o", tmp_path / "q.onnx"), "--train-data", "'x'")
    np.savez(t, x=np.zeros((3, 1, 64), np.float32), y=np.array([0, 1]))
    _one_line_error(tony_cli("quantize", digits_mlp / "float.onnx", "--calib", c, "--train-data", t,
                             "-o", tmp_path / "q.onnx"), "labels")
