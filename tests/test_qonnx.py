"""QONNX Quant / IntQuant models (Brevitas, FINN, hls4ml) run in the reference with outputs equal to
the QONNX semantics.

Golden values: the float model executed by onnx's own reference evaluator with the Quant node
implemented below in numpy straight from the QONNX spec (docs/qonnx-custom-ops/quant_op.md in the
qonnx repository), and, when the qonnx package is installed, by qonnx's own executor. Scales are
powers of two (as Brevitas/FINN po2 scaling writes them), so the float model is exact and the
integer reference must equal it element for element.
"""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun

from tony.api import load_ir, run_reference
from tony.errors import UnsupportedError

DOMAIN = "qonnx.custom_op.general"


# ---- the QONNX Quant semantics, from the spec ------------------------------------------------
def spec_round(v, mode):
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return np.round(v)
    if mode == "CEIL":
        return np.ceil(v)
    if mode == "FLOOR":
        return np.floor(v)
    if mode == "UP":
        return np.sign(v) * np.ceil(np.abs(v))
    if mode == "DOWN":
        return np.trunc(v)
    if mode == "HALF_UP":
        return np.sign(v) * np.floor(np.abs(v) + 0.5)
    if mode == "HALF_DOWN":
        return np.sign(v) * np.ceil(np.abs(v) - 0.5)
    raise ValueError(mode)


def spec_quant(x, scale, zeropt, bitwidth, signed, narrow, rounding_mode):
    b = int(bitwidth)
    lo = -(2 ** (b - 1)) + narrow if signed else 0
    hi = 2 ** (b - 1) - 1 if signed else 2**b - 1 - narrow
    y = x / scale + zeropt
    y = np.where(y > hi, np.float32(hi), y)
    y = np.where(y < lo, np.float32(lo), y)
    y = spec_round(y, rounding_mode)
    return ((y - zeropt) * scale).astype(np.float32)


class Quant(OpRun):
    op_domain = DOMAIN

    def _run(self, x, scale, zeropt, bitwidth, signed=1, narrow=0, rounding_mode="ROUND"):
        return (spec_quant(x, scale, zeropt, bitwidth, signed, narrow, rounding_mode),)


def run_spec(model, x):
    ev = ReferenceEvaluator(model, new_ops=[Quant])
    return np.stack([ev.run(None, {"x": xi[None]})[0][0] for xi in x])


# ---- model builders ------------------------------------------------------------------------
class _Builder:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)
        self.nodes, self.inits, self.k = [], [], 0

    def init(self, name, arr):
        self.inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    def quant(self, x, bits, signed, narrow, scale, zeropt=0.0, mode="ROUND", op="Quant"):
        self.k += 1
        n = f"q{self.k}"
        self.nodes.append(helper.make_node(
            op, [x, self.init(f"{n}_s", np.asarray(scale, np.float32)),
                 self.init(f"{n}_z", np.asarray(zeropt, np.float32)), self.init(f"{n}_b", np.float32(bits))],
            [f"{n}_y"], name=n, domain=DOMAIN, signed=int(signed), narrow=int(narrow), rounding_mode=mode))
        return f"{n}_y"

    def weight(self, shape, bits, narrow, per_channel_axis=None, mode="ROUND"):
        w = self.rng.normal(0, 0.5, size=shape).astype(np.float32)
        if per_channel_axis is None:
            s = np.float32(2.0 ** -(bits - 2))
        else:
            sshape = [1] * len(shape)
            sshape[per_channel_axis] = shape[per_channel_axis]
            s = (2.0 ** -self.rng.integers(bits - 3, bits, size=sshape)).astype(np.float32)
        self.k += 1
        return self.quant(self.init(f"w{self.k}", w), bits, True, narrow, s, mode=mode), s

    def model(self, shape_in, out, shape_out):
        g = helper.make_graph(self.nodes, "qonnx", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info(out, TensorProto.FLOAT, shape_out)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])
        m.ir_version = 8
        return m


def qonnx_mlp(act_bits, w_bits, narrow, seed=0, w_mode="ROUND", act_mode="ROUND", op="Quant"):
    """x[16] -> Quant(int) -> Gemm(Quant w per-channel, Quant bias int32) -> Relu -> Quant(uint)
    -> MatMul(Quant w) -> Quant(int) -> y[5]."""
    b = _Builder(seed)
    xs = 2.0**-4
    xq = b.quant("x", act_bits, True, narrow, xs, op=op)
    w1, s1 = b.weight((12, 16), w_bits, narrow, per_channel_axis=0, mode=w_mode)  # Gemm transB: [out, in]
    bias = b.rng.normal(0, 0.3, size=(12,)).astype(np.float32)
    bq = b.quant(b.init("bias", bias), 32, True, False, (xs * s1).reshape(12), op=op)
    b.nodes.append(helper.make_node("Gemm", [xq, w1, bq], ["h"], transB=1))
    b.nodes.append(helper.make_node("Relu", ["h"], ["hr"]))
    hq = b.quant("hr", act_bits, False, narrow, 2.0**-3, mode=act_mode, op=op)
    w2, _ = b.weight((12, 5), w_bits, narrow, mode=w_mode)
    b.nodes.append(helper.make_node("MatMul", [hq, w2], ["z"]))
    yq = b.quant("z", act_bits, True, narrow, 2.0**-2, mode=act_mode, op=op)
    return b.model([1, 16], yq, [1, 5])


def qonnx_cnn(act_bits, w_bits, narrow, seed=0, zeropt=0.0):
    """x[2,6,6] -> Quant(uint, zero point) -> Conv3x3(Quant w per-channel) -> Quant(int, 6 bits when
    narrow: clip fused into the Conv) -> Relu -> Quant(uint 3 bits: clip after) -> Conv1x1 -> Quant(int)."""
    b = _Builder(seed)
    xs = 2.0**-5
    xq = b.quant("x", act_bits, False, narrow, xs, zeropt=zeropt)
    w1, _ = b.weight((4, 2, 3, 3), w_bits, narrow, per_channel_axis=0)
    b.nodes.append(helper.make_node("Conv", [xq, w1], ["c1"], pads=[1, 1, 1, 1]))
    c1q = b.quant("c1", 6 if narrow else act_bits, True, narrow, 2.0**-3)
    b.nodes.append(helper.make_node("Relu", [c1q], ["r1"]))
    r1q = b.quant("r1", 3 if narrow else act_bits, False, narrow, 2.0**-2)
    w2, _ = b.weight((3, 4, 1, 1), w_bits, narrow)
    b.nodes.append(helper.make_node("Conv", [r1q, w2], ["c2"], strides=[2, 2]))
    yq = b.quant("c2", act_bits, True, narrow, 2.0**-2)
    return b.model([1, 2, 6, 6], yq, [1, 3, 3, 3])


def _inputs(shape, n=64, seed=1):
    rng = np.random.default_rng(seed)
    return (rng.integers(-300, 300, size=(n,) + shape) * 2.0**-6).astype(np.float32)  # many exact ties


CASES = [(a, w, nr) for a, w in ((8, 8), (4, 4), (8, 4)) for nr in (False, True)]
IDS = [f"a{a}-w{w}-{'narrow' if nr else 'full'}" for a, w, nr in CASES]


@pytest.mark.parametrize("act_bits,w_bits,narrow", CASES, ids=IDS)
def test_qonnx_mlp_equals_spec(act_bits, w_bits, narrow):
    m = qonnx_mlp(act_bits, w_bits, narrow)
    x = _inputs((16,))
    want = run_spec(m, x)
    got = run_reference(m, x[:, None, :])[0].reshape(want.shape)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} differ"
    assert len(np.unique(want)) > 8  # the test data exercise the range, not one saturated value


@pytest.mark.parametrize("act_bits,w_bits,narrow", CASES, ids=IDS)
def test_qonnx_cnn_equals_spec(act_bits, w_bits, narrow):
    m = qonnx_cnn(act_bits, w_bits, narrow, zeropt=4.0 if act_bits == 8 else 0.0)
    x = np.abs(_inputs((2, 6, 6), n=32))
    want = run_spec(m, x)
    got = run_reference(m, x[:, None])[0].reshape(want.shape)
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} differ"
    assert len(np.unique(want)) > 4


def test_qonnx_ranges_reach_the_ir():
    """4-bit weights become int4 constants; a 3-bit unsigned narrow activation clamps to [0, 6]."""
    g = load_ir(qonnx_cnn(4, 4, True))
    wdt = {str(g.tensors[n].dtype) for n in g.constants if n.endswith(".weight")}
    assert wdt == {"int4"}
    clamps = [op.requant for op in g.ops if type(op).__name__ == "Clamp"]
    assert any((rq.lo, rq.hi) == (0, 6) for rq in clamps)
    conv1 = next(op for op in g.ops if type(op).__name__ == "Conv")
    assert (conv1.requant.lo, conv1.requant.hi) == (-31, 31)  # signed 6-bit narrow, fused clip


@pytest.mark.parametrize("mode", ["ROUND", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"])
def test_qonnx_weight_rounding_modes(mode):
    m = qonnx_mlp(8, 4, False, w_mode=mode)
    x = _inputs((16,), n=16)
    assert np.array_equal(run_reference(m, x[:, None, :])[0].reshape(16, 5), run_spec(m, x))


def test_qonnx_floor_activations_with_floor_rounding():
    m = qonnx_mlp(8, 8, False, act_mode="FLOOR")
    x = _inputs((16,))
    g = load_ir(m, rounding="floor")
    assert np.array_equal(run_reference(g, x[:, None, :])[0].reshape(len(x), 5), run_spec(m, x))
    with pytest.raises(UnsupportedError, match="--rounding floor"):
        load_ir(m)


def test_intquant_op_and_finn_domain():
    m = qonnx_mlp(8, 8, False, op="IntQuant")
    for n in m.graph.node:
        if n.op_type == "IntQuant":
            n.domain = "finn.custom_op.general"
    m.opset_import.append(helper.make_opsetid("finn.custom_op.general", 1))
    x = _inputs((16,), n=8)
    want = qonnx_mlp(8, 8, False)
    assert np.array_equal(run_reference(m, x[:, None, :])[0], run_reference(want, x[:, None, :])[0])


def _set(m, node_name, **kw):
    n = next(n for n in m.graph.node if n.name == node_name)
    for k, v in kw.items():
        if k == "bitwidth":
            init = next(i for i in m.graph.initializer if i.name == n.input[3])
            init.CopyFrom(numpy_helper.from_array(np.float32(v), init.name))
        elif k == "scale":
            init = next(i for i in m.graph.initializer if i.name == n.input[1])
            init.CopyFrom(numpy_helper.from_array(np.asarray(v, np.float32), init.name))
        else:
            for a in n.attribute:
                if a.name == k:
                    a.CopyFrom(helper.make_attribute(k, v))
    return m


@pytest.mark.parametrize("change,match", [
    (dict(bitwidth=4.5), "not one positive integer"),
    (dict(rounding_mode="CEIL"), "rounding_mode CEIL"),
    (dict(bitwidth=1.0), "bipolar"),
    (dict(scale=np.full((1, 16), 2.0**-4)), "per-channel quantization of an activation"),
])
def test_qonnx_refusals_name_the_node(change, match):
    m = _set(qonnx_mlp(8, 8, False), "q1", **change)
    with pytest.raises(UnsupportedError, match=match) as e:
        load_ir(m)
    assert 'node "q1" (Quant)' in str(e.value)


def test_qonnx_odd_zero_point_is_refused_and_why():
    """QONNX rounds x/s + z half to even; for odd z that differs from round(x/s) + z at ties
    (x/s = 0.5, z = 3: QONNX gives 4, the contract 3). The spec model shows such ties in these data,
    and the compiler refuses the model rather than differ there."""
    m = qonnx_cnn(8, 8, False, zeropt=3.0)
    x = np.abs(_inputs((2, 6, 6), n=4))
    v = x / np.float32(2.0**-5)
    ties = np.abs(v - np.floor(v)) == 0.5
    assert ties.any() and not np.array_equal(spec_round(v + 3, "ROUND"), spec_round(v, "ROUND") + 3)
    with pytest.raises(UnsupportedError, match="zero point 3 is odd"):
        load_ir(m)


def test_qonnx_package_agrees():
    """qonnx's own executor on the same models (skipped when the qonnx package is not installed)."""
    pytest.importorskip("qonnx")
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.core.onnx_exec import execute_onnx
    from qonnx.transformation.infer_shapes import InferShapes

    for m, shape in ((qonnx_mlp(4, 4, True), (16,)), (qonnx_cnn(8, 4, True, zeropt=4.0), (2, 6, 6))):
        x = np.abs(_inputs(shape, n=4))
        mw = ModelWrapper(m).transform(InferShapes())
        out = m.graph.output[0].name
        want = np.stack([execute_onnx(mw, {"x": xi[None]})[out][0] for xi in x])
        got = run_reference(m, x[:, None])[0].reshape(want.shape)
        assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} differ"
