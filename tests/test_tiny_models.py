"""MLPerf Tiny workloads (tony.models.tiny): sizes against the reference definitions, the
reference against onnxruntime element for element, and the HLS C simulation bit-exact.

Golden values come from onnxruntime (on the QDQ model) and from hand counts of the reference
Keras definitions (mlcommons/tiny benchmark/training: the EEMBC ResNet-v1 with 16 filters, the
DS-CNN of keyword_spotting, the EEMBC MobileNetV1 with 8 stem filters, the DCASE autoencoder).
"""
import json
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper, numpy_helper

import tony
from _ort_helpers import ort_run, require_exact_int8_kernels, rhe
from tony.api import load_ir
from tony.models import tiny
from tony.ref import KERNELS, execute

NAMES = ["resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder"]
SAMPLES = 8


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """name -> directory with float.onnx, model.onnx, inputs.npy (built once per module)."""
    cache = {}

    def get(name):
        if name not in cache:
            d = tmp_path_factory.mktemp(name)
            tony.models.build_example(name, d, samples=SAMPLES)
            cache[name] = d
        return cache[name]
    return get


# ---- sizes ---------------------------------------------------------------------------------------

def _conv(oh, ow, cout, cin_g, kh, kw):
    """(parameters with bias, MACs) of one convolution."""
    return cout * cin_g * kh * kw + cout, oh * ow * cout * cin_g * kh * kw


def _dense(nin, nout):
    return nin * nout + nout, nin * nout


def _hand_count(name):
    """(conv/dense parameters, BatchNorm channels, MACs) from the reference layer list."""
    layers, bn = [], []
    if name == "resnet8":
        layers += [_conv(32, 32, 16, 3, 3, 3), _conv(32, 32, 16, 16, 3, 3), _conv(32, 32, 16, 16, 3, 3)]
        bn += [16, 16, 16]
        for hw, f, cin in ((16, 32, 16), (8, 64, 32)):
            layers += [_conv(hw, hw, f, cin, 3, 3), _conv(hw, hw, f, f, 3, 3), _conv(hw, hw, f, cin, 1, 1)]
            bn += [f, f]
        layers.append(_dense(64, 10))
    elif name == "dscnn":
        layers.append(_conv(25, 5, 64, 1, 10, 4))
        bn.append(64)
        for _ in range(4):
            layers += [_conv(25, 5, 64, 1, 3, 3), _conv(25, 5, 64, 64, 1, 1)]
            bn += [64, 64]
        layers.append(_dense(64, 12))
    elif name == "mobilenet-v1-025":
        layers.append(_conv(48, 48, 8, 3, 3, 3))
        bn.append(8)
        hw, c = 48, 8
        for s, f in [(1, 16), (2, 32), (1, 32), (2, 64), (1, 64), (2, 128)] + [(1, 128)] * 5 + [(2, 256), (1, 256)]:
            hw //= s
            layers += [_conv(hw, hw, c, 1, 3, 3), _conv(hw, hw, f, c, 1, 1)]
            bn += [c, f]
            c = f
        layers.append(_dense(256, 2))
    else:
        widths = [640, 128, 128, 128, 128, 8, 128, 128, 128, 128, 640]
        layers = [_dense(a, b) for a, b in zip(widths, widths[1:])]
        bn = widths[1:-1]
    return sum(p for p, _ in layers), sum(bn), sum(m for _, m in layers)


# Keras model.summary() totals (BatchNorm counted with its 4 vectors) and MACs per inference as
# published for the MLPerf Tiny reference models.
PUBLISHED = {"resnet8": (78_666, 12.5e6), "dscnn": (24_908, None), "mobilenet-v1-025": (221_794, 7.5e6),
             "fc-autoencoder": (269_992, 0.264e6)}


@pytest.mark.parametrize("name", NAMES)
def test_parameter_and_mac_counts_match_the_reference_definition(name):
    fm, _ = tiny.float_model(name, batch=2)
    got = tiny.param_mac_counts(fm)
    mac_params, bn_ch, macs = _hand_count(name)
    print(name, got)
    assert got["mac_params"] == mac_params
    assert got["bn_params"] == 4 * bn_ch
    assert got["macs"] == macs
    total, pub_macs = PUBLISHED[name]
    assert got["params"] == total
    if pub_macs is not None:
        assert abs(got["macs"] - pub_macs) / pub_macs < 0.01


@pytest.mark.parametrize("name", NAMES)
def test_float_graph_is_batch_1_opset_13_with_batchnorm(name, built):
    fm = onnx.load(built(name) / "float.onnx")
    assert fm.opset_import[0].version == 13
    assert [d.dim_value for d in fm.graph.input[0].type.tensor_type.shape.dim][0] == 1
    assert any(n.op_type == "BatchNormalization" for n in fm.graph.node)
    g = load_ir(built(name) / "model.onnx")
    assert list(g.inputs) == ["input"] and list(g.outputs) == ["output"]


# ---- the reference against onnxruntime -----------------------------------------------------------

@pytest.mark.parametrize("level", [ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                   ort.GraphOptimizationLevel.ORT_ENABLE_ALL], ids=["unfused", "fused"])
@pytest.mark.parametrize("name", ["resnet8", "fc-autoencoder"])
def test_reference_equals_onnxruntime(name, level, built):
    """No average pool over a non-power-of-2 window here (ResNet-8 pools 8x8): every op is exact
    in both, so every element is equal. unfused: onnxruntime's Q/DQ path, the same on every CPU;
    fused: its int8 kernels, where this CPU makes them exact."""
    if level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL:
        require_exact_int8_kernels()
    d = built(name)
    x = np.load(d / "inputs.npy")
    ref = tony.run_reference(d / "model.onnx", x)[0]
    got = ort_run(str(d / "model.onnx"), list(x), level)[0]
    assert ref.shape == got.shape and ref.dtype == got.dtype == np.float32
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


@pytest.mark.parametrize("name", ["dscnn", "mobilenet-v1-025"])
def test_reference_differs_from_onnxruntime_only_where_the_reciprocal_pool_predicts(name, built):
    """DS-CNN pools a 24x5 window (area 120) and the MobileNet a 3x3 one (area 9). ONNX divides
    the window sum by the area; the compiler multiplies it by an 8-bit reciprocal R and shifts
    (docs/arithmetic.md, 'Pooling'), which rounds differently for some sums. So:

    - every tensor up to the pool's input is equal in both;
    - onnxruntime's pooled integers equal round_half_even(S * s_in / (area * s_out)) computed
      here with exact fractions, and the reference's equal round_half_even(S * R / 2^shift);
    - the two differ in exactly the elements where those two formulas differ, by at most 1;
    - fed onnxruntime's pooled integers, the reference's remaining layers give onnxruntime's
      output exactly."""
    d = built(name)
    x = np.load(d / "inputs.npy")
    g = load_ir(d / "model.onnx")
    pool = next(op for op in g.ops if type(op).__name__ == "AvgPool")
    area = pool.kernel[0] * pool.kernel[1]
    assert area & (area - 1), "this workload pools a power-of-2 window"
    pin, pout = pool.inputs[0], pool.outputs[0]

    # onnxruntime with the pool's integer input and output as extra graph outputs
    m = onnx.load(d / "model.onnx")
    m.graph.output.extend([helper.make_empty_tensor_value_info(pin), helper.make_empty_tensor_value_info(pout)])
    y_ort, in_ort, pool_ort = ort_run(m, list(x))
    feeds, _ = tony.api.normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    assert np.array_equal(env[pin], in_ort.reshape(env[pin].shape).astype(np.int64))

    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    s_in = Fraction(float(inits[pin.removesuffix("_q") + "_scale"]))
    s_out = Fraction(float(inits[pout.removesuffix("_q") + "_scale"]))
    rq = pool.requant
    assert isinstance(rq.mult, int) and rq.shift > 0
    kh, kw = pool.kernel
    sums = in_ort.reshape(env[pin].shape)[:, :, :kh, :kw].astype(np.int64).sum(axis=(2, 3))  # one window (1x1 out)
    assert env[pout].shape[2:] == (1, 1)
    onnx_pred = np.array([[min(max(rhe(int(s) * s_in / (area * s_out)), rq.lo), rq.hi) for s in row]
                          for row in sums])
    recip_pred = np.array([[min(max(rhe(Fraction(int(s) * rq.mult, 2**rq.shift)), rq.lo), rq.hi)
                            for s in row] for row in sums])
    ref_pool = env[pout].reshape(sums.shape)
    ort_pool = pool_ort.reshape(sums.shape).astype(np.int64)
    assert np.array_equal(ort_pool, onnx_pred)
    assert np.array_equal(ref_pool, recip_pred)
    predicted = int((onnx_pred != recip_pred).sum())
    print(f"{name}: window area {area}, R = {rq.mult} / 2^{rq.shift}; {predicted} of {ref_pool.size} pooled "
          f"values differ from ONNX's division")
    assert int((ref_pool != ort_pool).sum()) == predicted
    assert np.abs(ref_pool - ort_pool).max() <= 1

    # the rest of the network, run by the reference from onnxruntime's pooled values
    env2 = dict(env)
    env2[pout] = ort_pool.reshape(env[pout].shape)
    k = g.ops.index(pool)
    for op in g.ops[k + 1:]:
        env2[op.outputs[0]] = KERNELS[type(op)](op, g, *(env2[i] for i in op.inputs))
    tail = env2[g.outputs[0]].reshape(y_ort.shape)
    assert np.array_equal(tail, y_ort)
    ref = env[g.outputs[0]].reshape(y_ort.shape)
    n_out = int((ref != y_ort).sum())
    print(f"{name}: {n_out} of {ref.size} output elements differ from onnxruntime (all downstream of the pool)")
    samples_pool = {int(i) for i in np.nonzero((ref_pool != ort_pool).any(axis=1))[0]}
    samples_out = {int(i) for i in np.nonzero((ref != y_ort).reshape(len(x), -1).any(axis=1))[0]}
    assert samples_out <= samples_pool


# ---- BatchNorm folding into Gemm ----------------------------------------------------------------

@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_batchnorm_into_gemm(trans_b, rng):
    from tony.frontend.passes import fold_batchnorm

    w = rng.standard_normal((6, 5) if trans_b else (5, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    stats = [rng.uniform(0.5, 1.5, 6), rng.standard_normal(6), rng.standard_normal(6), rng.uniform(0.5, 2, 6)]
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for a, n in
             zip([w, b, *stats], ["w", "b", "gamma", "beta", "mean", "var"])]
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["h"], name="fc", transB=trans_b),
             helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"], name="bn",
                              epsilon=1e-3)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    folded = fold_batchnorm(m)
    assert [n.op_type for n in folded.graph.node] == ["Gemm"]
    x = rng.standard_normal((4, 1, 5)).astype(np.float32)
    sess = [ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]) for mm in (m, folded)]
    want, got = ([s.run(None, {"x": xi})[0] for xi in x] for s in sess)
    np.testing.assert_allclose(np.stack(got), np.stack(want), rtol=1e-5, atol=1e-5)  # float folding: not integer


def test_fold_batchnorm_leaves_gemm_with_alpha(rng):
    from tony.frontend.passes import fold_batchnorm

    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for s, n in [((5, 6), "w"), ((6,), "gamma"), ((6,), "beta"), ((6,), "mean")]]
    inits.append(numpy_helper.from_array(np.ones(6, np.float32), "var"))
    nodes = [helper.make_node("Gemm", ["x", "w"], ["h"], alpha=0.5),
             helper.make_node("BatchNormalization", ["h", "gamma", "beta", "mean", "var"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 5])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert [n.op_type for n in fold_batchnorm(m).graph.node] == ["Gemm", "BatchNormalization"]


# ---- HLS C simulation ----------------------------------------------------------------------------

def _hls_case(name, built, tony_cli, tmp_path):
    import shutil

    if shutil.which("g++") is None:
        pytest.skip("needs g++")
    from tony.hls import backend as hls

    d = built(name)
    r = tony_cli("compile", "--backend", "hls", d / "model.onnx", "-o", tmp_path / "b", "--inputs", d / "inputs.npy")
    assert r.returncode == 0, r.stderr
    r = tony_cli("csim", tmp_path / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / hls.REPORT).read_text())
    assert rep["bit_exact"] and rep["samples"] == SAMPLES and rep["mismatches"] == 0
    x = np.load(d / "inputs.npy")[:3]
    got = hls.run_csim(tmp_path / "b", x)
    want = tony.run_reference(d / "model.onnx", x)
    assert all(np.array_equal(a, b) for a, b in zip(got, want))


@pytest.mark.parametrize("name", ["dscnn", "fc-autoencoder"])
def test_hls_csim_bit_exact(name, built, tony_cli, tmp_path):
    _hls_case(name, built, tony_cli, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet8", "mobilenet-v1-025"])
def test_hls_csim_bit_exact_large(name, built, tony_cli, tmp_path):
    _hls_case(name, built, tony_cli, tmp_path)


# ---- the reference's fast exact path (float32 / float64 / int64 by the accumulator bound) -----------

def test_matmul_exact_float32_tier_is_exact_and_needed_above_2_24():
    from tony.ref import arith

    for k, tier in ((1023, np.float32), (1025, np.float64)):
        a = np.concatenate([np.full((1, k), -128), [[1]]], axis=1).astype(np.int64)
        b = np.concatenate([np.full((k, 1), -128), [[1]]], axis=0).astype(np.int64)
        want = 16384 * k + 1  # odd: float32 cannot hold it above 2^24
        assert arith.exact_float_dtype(float(np.abs(a).max()) * float(np.abs(b).sum())) is tier
        assert int(arith.matmul_exact(a, b)[0, 0]) == want
    assert int((a.astype(np.float32) @ b.astype(np.float32))[0, 0]) != want  # k = 1025: float32 would be wrong


@pytest.mark.parametrize("cin,group", [(2, 1), (128, 1), (8, 8), (600, 600)])
def test_conv_fast_path_exact_at_worst_case_magnitudes(cin, group):
    """All-255 uint8 inputs against all -128 weights: the bound falls in each float tier
    (2x3x3: float32; 128x3x3 = 37.6M: float64) and the depthwise loop; compared with an int64
    einsum (no floats)."""
    from tony import ir
    from tony.ir import INT8, INT32, UINT8, Requant, Tensor

    m, cg = cin, cin // group
    x = np.full((2, cin, 5, 5), 255, np.int64)
    x[:, :, 1, 2] = 254  # break the symmetry
    w = np.full((m, cg, 3, 3), -128, np.int64)
    w[:, :, 0, 0] = 127
    rq = Requant(shift=0, lo=-(2**31), hi=2**31 - 1)
    tensors = {"x": Tensor("x", (1, cin, 5, 5), UINT8), "w": Tensor("w", w.shape, INT8),
               "y": Tensor("y", (1, m, 5, 5), INT32)}
    op = ir.Conv(("x", "w"), ("y",), strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), group=group, requant=rq)
    g = ir.verify(ir.Graph("t", tensors=tensors, constants={"w": w}, ops=(op,), inputs=("x",), outputs=("y",)))
    got = execute(g, {"x": x})["y"]
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    win = np.lib.stride_tricks.sliding_window_view(xp, (3, 3), axis=(2, 3))  # N C 5 5 3 3
    if group == 1:
        want = np.einsum("nchwij,mcij->nmhw", win, w)
    else:
        want = np.einsum("nchwij,cij->nchw", win, w[:, 0])
    assert np.array_equal(got, want)
