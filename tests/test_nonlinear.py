"""Integer Softmax, LayerNorm and GELU (tony.ref.nonlinear): bit-exact against a slow Python-int
implementation of the same specification (docs/transformer.md), and within the documented error
of float computed by onnx's reference evaluator."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

from tony.ref import nonlinear as nl

# ---------------------------------------------------------------- slow Python-int specification


def shift_half_even(p: int, s: int) -> int:
    """p / 2^s rounded half to even (s > 0), or p * 2^-s (s <= 0), with Python integers."""
    if s <= 0:
        return p << -s
    r, rem = divmod(p, 1 << s)
    h = 1 << (s - 1)
    return r + (rem > h or (rem == h and r % 2 == 1))


def slow_softmax(row: list[int], x_exp: int, f: int, p: int, out_bits: int) -> list[int]:
    log2e = round(math.log2(math.e) * 2**15)
    table = [round(math.pow(2.0, p - r / 2**f)) for r in range(2**f)]
    m = max(row)
    es = []
    for v in row:
        u = shift_half_even((m - v) * log2e, 15 - x_exp - f)
        z, r = divmod(u, 2**f)
        es.append(table[r] // 2 ** min(z, p + 1))
    k = p + 31
    recip = 2**k // sum(es)
    return [min(max(shift_half_even(e * recip, k - out_bits), 0), 2**out_bits - 1) for e in es]


def slow_layernorm(row: list[int], spec: nl.LayerNormSpec) -> list[int]:
    n, a = len(row), spec.sqrt_bits
    s1, s2 = sum(row), sum(v * v for v in row)
    w = n * s2 - s1 * s1
    r = math.isqrt((w + spec.eps_int) * 4**a)
    recip = 2 ** (a + 40) // r if r else 0
    out = []
    for v, g, b in zip(row, spec.gamma, spec.beta):
        norm = shift_half_even((n * v - s1) * recip, 40 - spec.norm_bits)
        out.append(min(max(shift_half_even(norm * g + b, spec.shift), spec.lo), spec.hi))
    return out


def slow_gelu(q: int, x_exp: int, y_exp: int, approximate: str) -> int:
    x = q * 2.0**x_exp
    if approximate == "tanh":
        g = 0.5 * x * (1 + math.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
    else:
        g = 0.5 * x * (1 + math.erf(x / math.sqrt(2)))
    return min(max(round(g / 2.0**y_exp), -128), 127)


# ---------------------------------------------------------------- floats from onnx's reference


def onnx_eval(op: str, x: np.ndarray, *extra, opset: int = 20, **attrs) -> np.ndarray:
    names = ["x"] + [f"p{i}" for i in range(len(extra))]
    node = helper.make_node(op, names, ["y"], **attrs)
    ins = [helper.make_tensor_value_info(nm, TensorProto.DOUBLE, None) for nm in names]
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", TensorProto.DOUBLE, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    feeds = {"x": x.astype(np.float64), **{f"p{i}": e.astype(np.float64) for i, e in enumerate(extra)}}
    return ReferenceEvaluator(m).run(None, feeds)[0]


# ---------------------------------------------------------------- isqrt


@settings(max_examples=500, deadline=None)
@given(st.lists(st.integers(0, 2**62 - 1), min_size=1, max_size=50))
def test_isqrt_is_floor_sqrt(values):
    assert nl.isqrt(np.array(values, np.int64)).tolist() == [math.isqrt(v) for v in values]


def test_isqrt_at_squares_and_powers_of_two():
    k = np.array([1, 2, 3, 255, 256, 65535, 2**20 + 7, 2**31 - 1], np.int64)
    n = np.concatenate([k * k, k * k - 1, k * k + 1, 2 ** np.arange(62, dtype=np.int64),
                        2 ** np.arange(1, 62, dtype=np.int64) - 1, [0, 2**62 - 1]])
    assert nl.isqrt(n).tolist() == [math.isqrt(int(v)) for v in n]


def test_isqrt_needs_all_its_newton_steps(monkeypatch):
    """docs/transformer.md: the 6 steps are exactly enough; m = 1,125,899,973,951,488 is still one
    above floor(sqrt(m)) after 5, so a unit computing floor(sqrt(m)) directly agrees with the kernel
    only because the kernel runs all 6."""
    m = np.array([1125899973951488], np.int64)
    assert nl.isqrt(m).tolist() == [math.isqrt(int(m[0]))]
    monkeypatch.setattr(nl, "ISQRT_ITERATIONS", nl.ISQRT_ITERATIONS - 1)
    assert nl.isqrt(m).tolist() == [math.isqrt(int(m[0])) + 1]


def test_bit_length_matches_python():
    v = np.array([0, 1, 2, 3, 4, 255, 256, 2**31, 2**40 - 1, 2**62 - 1], np.int64)
    assert nl.bit_length(v).tolist() == [int(x).bit_length() for x in v]


# ---------------------------------------------------------------- softmax


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 40).flatmap(lambda n: st.lists(st.lists(st.integers(-128, 127), min_size=n, max_size=n),
                                                     min_size=1, max_size=4)),
       st.integers(-7, 0), st.sampled_from([4, 6, 8]), st.sampled_from([8, 16]))
def test_softmax_int8_equals_python_spec(rows, x_exp, f, out_bits):
    spec = nl.SoftmaxSpec(x_exp=x_exp, frac_bits=f, out_bits=out_bits)
    got = nl.softmax(np.array(rows), spec)
    assert got.tolist() == [slow_softmax(r, x_exp, f, 15, out_bits) for r in rows]


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(-2**31, 2**31 - 1), min_size=1, max_size=64), st.integers(-16, -4))
def test_softmax_int32_scores_equal_python_spec(row, x_exp):
    spec = nl.SoftmaxSpec(x_exp=x_exp)
    assert nl.softmax(np.array([row]), spec)[0].tolist() == slow_softmax(row, x_exp, 6, 15, 8)


def test_softmax_constants():
    assert nl.LOG2E == 47274
    spec = nl.SoftmaxSpec(x_exp=-4)
    t = spec.table
    assert t[0] == 2**15 and len(t) == 64 and np.all(np.diff(t) < 0) and t[-1] > 2**14


def test_softmax_refuses_a_coarse_input_scale():
    with pytest.raises(ValueError, match="too coarse"):
        nl.SoftmaxSpec(x_exp=10)


@pytest.mark.parametrize("x_exp", [-3, -4, -5])
def test_softmax_error_against_float_is_within_documented_bound(x_exp):
    rng = np.random.default_rng(1234)
    q = rng.integers(-128, 128, (2000, 32))
    y = nl.softmax(q, nl.SoftmaxSpec(x_exp=x_exp))
    ref = onnx_eval("Softmax", q * 2.0**x_exp, opset=13, axis=-1) * 256
    err = np.abs(y - np.minimum(ref, 255))
    assert err.max() < 0.9 and err.mean() < 0.3  # docs/transformer.md: F = 6


def test_softmax_one_dominant_value_saturates_and_equal_values_split():
    spec = nl.SoftmaxSpec(x_exp=-4)
    assert nl.softmax(np.array([[127, -128, -128, -128]]), spec).tolist() == [[255, 0, 0, 0]]
    assert nl.softmax(np.array([[5, 5, 5, 5]]), spec).tolist() == [[64, 64, 64, 64]]


# ---------------------------------------------------------------- layernorm


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 48).flatmap(lambda n: st.tuples(
    st.lists(st.lists(st.integers(-128, 127), min_size=n, max_size=n), min_size=1, max_size=3),
    st.lists(st.floats(-3, 3), min_size=n, max_size=n), st.lists(st.floats(-2, 2), min_size=n, max_size=n))),
    st.integers(-6, -2), st.integers(-6, -2), st.sampled_from([8, 16]), st.sampled_from([1e-5, 1e-12, 0.5]))
def test_layernorm_equals_python_spec(data, x_exp, y_exp, gamma_bits, eps):
    rows, gamma, beta = data
    spec = nl.layernorm_spec(len(gamma), x_exp, y_exp, gamma, beta, eps=eps, gamma_bits=gamma_bits)
    got = nl.layernorm(np.array(rows), spec)
    assert got.tolist() == [slow_layernorm(r, spec) for r in rows]


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(-2**15, 2**15 - 1), min_size=2, max_size=300), st.integers(-12, -6))
def test_layernorm_int16_input_equals_python_spec(row, x_exp):
    spec = nl.layernorm_spec(len(row), x_exp, -5, in_bits=16)
    assert nl.layernorm(np.array([row]), spec)[0].tolist() == slow_layernorm(row, spec)


def test_layernorm_constant_row_is_beta():
    beta = np.linspace(-1, 1, 8)
    spec = nl.layernorm_spec(8, -4, -4, beta=beta, eps=0.0)
    y = nl.layernorm(np.full((2, 8), 17), spec)
    assert y.tolist() == [np.rint(beta / 2**-4).astype(int).tolist()] * 2


@pytest.mark.parametrize("gamma_bits, bound", [(16, 0.51), (8, 1.0)])
def test_layernorm_error_against_float_is_within_documented_bound(gamma_bits, bound):
    rng = np.random.default_rng(99)
    n, x_exp, y_exp = 64, -4, -5
    gamma, beta = rng.uniform(0.5, 1.5, n), rng.uniform(-0.5, 0.5, n)
    q = rng.integers(-128, 128, (1000, n))
    y = nl.layernorm(q, nl.layernorm_spec(n, x_exp, y_exp, gamma, beta, gamma_bits=gamma_bits))
    ref = onnx_eval("LayerNormalization", q * 2.0**x_exp, gamma, beta, opset=17, axis=-1, epsilon=1e-5) / 2**y_exp
    err = np.abs(y - np.clip(ref, -128, 127))
    assert err.max() < bound


# ---------------------------------------------------------------- gelu


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("x_exp, y_exp", [(-4, -4), (-5, -6), (-3, -5)])
def test_gelu_table_equals_python_spec_over_all_int8(approximate, x_exp, y_exp):
    lut = nl.gelu_table(x_exp, y_exp, approximate)
    q = np.arange(-128, 128)
    assert nl.lookup(q, lut).tolist() == [slow_gelu(int(v), x_exp, y_exp, approximate) for v in q]


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_float_matches_onnx_gelu(approximate):
    x = np.linspace(-8, 8, 1001)
    ref = onnx_eval("Gelu", x, opset=20, approximate=approximate)
    np.testing.assert_allclose(nl.gelu_float(x, approximate), ref, rtol=1e-6, atol=1e-6)  # onnx evaluates in float32


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_table_error_is_half_an_lsb(approximate):
    q = np.arange(-128, 128)
    y = nl.lookup(q, nl.gelu_table(-4, -5, approximate))
    ref = onnx_eval("Gelu", q * 2.0**-4, opset=20, approximate=approximate) / 2**-5
    assert np.abs(y - np.clip(ref, -128, 127)).max() <= 0.5


def test_lookup_refuses_out_of_range_inputs():
    with pytest.raises(ValueError, match="outside"):
        nl.lookup(np.array([128]), nl.gelu_table(-4, -4))
