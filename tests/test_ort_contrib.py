"""onnxruntime's com.microsoft QLinearAdd, QLinearConcat, QLinearAveragePool and
QLinearGlobalAveragePool, rewritten to DQ -> float op -> Q and lowered in multiplier mode, against
onnxruntime on small models (golden values: onnxruntime).

onnxruntime evaluates these ops through float (or its own fixed-point) arithmetic; the compiler
through integer multipliers and a rounding shift (docs/arithmetic.md). Neither is the real-number
result, so each test predicts both sides independently with exact fractions:

- onnxruntime's integers equal round_half_even(real result / s_out) + z_out computed exactly from
  the float32 scales (checked, element for element); for QLinearAdd, onnxruntime's float kernel
  (float32 scale ratios, a fused multiply-add) is modelled in numpy instead, and where it differs
  from the exact rounding the exact value lies within float error of a .5 tie;
- the reference's integers equal round_half_even of the integer formula (multipliers and shift read
  from the IR op) computed exactly;
- the two differ in exactly the elements where those two predictions differ (counted, printed,
  asserted); at each such element a .5 tie lies between (or on) the two sides' unrounded values,
  and they differ by 1.
"""
from fractions import Fraction

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from _ort_helpers import compare_predictions, rhe
from tony.api import load_ir, run_reference

SEED = 20240611


def _model(nodes, inputs, out, out_shape, inits, elem):
    g = helper.make_graph(nodes, "contrib", [helper.make_tensor_value_info(n, elem, s) for n, s in inputs],
                          [helper.make_tensor_value_info(out, elem, out_shape)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13), helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m


def _qparams(inits, name, scale, zp, npt):
    inits += [numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
              numpy_helper.from_array(np.array(zp, npt), f"{name}_z")]
    return [f"{name}_s", f"{name}_z"]


def _ort(m, feeds):
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)[0].astype(np.int64)


def _types(signed):
    return (TensorProto.INT8, np.int8, -128, 127) if signed else (TensorProto.UINT8, np.uint8, 0, 255)


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
@pytest.mark.parametrize("scales", ["random", "thirds"])
def test_qlinear_add_against_onnxruntime(signed, scales):
    """'thirds': s_a / s_c = 1/3 and s_b / s_c = 1/6, so (2a + b) / 6 lands on exact .5 ties often,
    where the float32 ratios and the compiler's multipliers each leave the tie on their own side."""
    elem, npt, lo, hi = _types(signed)
    rng = np.random.default_rng(SEED + signed)
    shape = [1, 4, 16, 16]
    if scales == "random":
        sa, sb, sc = (float(np.float32(rng.uniform(0.01, 0.1))) for _ in range(3))
        za, zb, zc = (int(rng.integers(lo // 2, hi // 2 + 1)) for _ in range(3))
    else:
        sa, sb, sc, za, zb, zc = 1.0, 0.5, 3.0, 0, 0, 0
    inits = []
    node = helper.make_node("QLinearAdd", ["a", *_qparams(inits, "a", sa, za, npt), "b", *_qparams(inits, "b", sb, zb, npt),
                                           *_qparams(inits, "c", sc, zc, npt)], ["c"], domain="com.microsoft", name="add")
    m = _model([node], [("a", shape), ("b", shape)], "c", shape, inits, elem)
    a = rng.integers(lo, hi + 1, size=shape).astype(npt)
    b = rng.integers(lo, hi + 1, size=shape).astype(npt)
    ort_y = _ort(m, {"a": a, "b": b})
    g = load_ir(m, requant="multiplier")
    ref_y = run_reference(g, {"a": a, "b": b})[0].astype(np.int64)
    op = g.ops[0]
    rq = op.requant
    fa, fb, fc = Fraction(sa), Fraction(sb), Fraction(sc)
    exact = np.array([(fa * (int(x) - za) + fb * (int(y) - zb)) / fc for x, y in zip(a.ravel(), b.ravel())],
                     dtype=object).reshape(shape)
    exact_pred = np.clip(np.vectorize(rhe, otypes=[object])(exact) + zc, lo, hi).astype(np.int64)
    # onnxruntime's float kernel: scale ratios in float32, fma(A, s_a/s_c, (s_b/s_c) * B), round half to even.
    # float64 holds A * ratio and the float32 addend exactly, so rounding their sum once to float32 is the fma.
    f32 = np.float32
    ra, rb = f32(f32(sa) / f32(sc)), f32(f32(sb) / f32(sc))
    A, B = a.astype(np.int64) - za, b.astype(np.int64) - zb
    fma = (A.astype(np.float64) * np.float64(ra) + (rb * B.astype(f32)).astype(np.float64)).astype(f32)
    ort_pred = np.clip(np.rint(fma).astype(np.int64) + zc, lo, hi)
    off = ort_pred != exact_pred
    dist = np.vectorize(lambda v: abs(v - v.numerator // v.denominator - Fraction(1, 2)), otypes=[object])(exact)
    print(f"{scales}: {int((dist == 0).sum())} exact ties; onnxruntime's float rounding differs from the exact "
          f"rounding in {int(off.sum())} elements, all within float error of a tie")
    assert all(dist[off] <= Fraction(1, 2**16))
    if scales == "thirds":
        assert off.any()  # the float ratios 1/3 and 1/6 push some exact ties off the tie
    acc = [((int(x) - za) * op.mult_a << op.shift_a) + ((int(y) - zb) * op.mult_b << op.shift_b)
           for x, y in zip(a.ravel(), b.ravel())]
    ref_pred = np.clip(np.array([rhe(Fraction(v * rq.mult, 2**rq.shift)) for v in acc]).reshape(shape) + rq.zero_point,
                       rq.lo, rq.hi)
    ort_val = np.vectorize(lambda v: Fraction(float(v)), otypes=[object])(fma)
    ref_val = np.array([Fraction(v * rq.mult, 2**rq.shift) for v in acc], dtype=object).reshape(shape)
    compare_predictions(f"QLinearAdd {scales} {npt.__name__}", ort_y, ref_y, ort_pred, ref_pred, ort_val, ref_val)


@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
def test_qlinear_concat_against_onnxruntime(signed):
    """Three inputs: one at the output's scale and zero point (a copy), two requantized."""
    elem, npt, lo, hi = _types(signed)
    rng = np.random.default_rng(SEED + 10 + signed)
    params = [(0.05, 3), (0.0371, -7 if signed else 20), (0.112, 5)]
    ys, yz = 0.05, 3
    inits = []
    ins = _qparams(inits, "y", ys, yz, npt)
    shapes = [[1, 2, 4, 4], [1, 3, 4, 4], [1, 1, 4, 4]]
    for i, (s, z) in enumerate(params):
        ins += [f"x{i}", *_qparams(inits, f"x{i}", s, z, npt)]
    node = helper.make_node("QLinearConcat", ins, ["y"], domain="com.microsoft", axis=1, name="concat")
    m = _model([node], [(f"x{i}", s) for i, s in enumerate(shapes)], "y", [1, 6, 4, 4], inits, elem)
    xs = {f"x{i}": rng.integers(lo, hi + 1, size=s).astype(npt) for i, s in enumerate(shapes)}
    ort_y = _ort(m, xs)
    g = load_ir(m, requant="multiplier")
    ref_y = run_reference(g, xs)[0].astype(np.int64)
    op = g.ops[0]
    exact, ort_pred, ref_pred, ref_val = [], [], [], []
    for i, ((s, z), rq) in enumerate(zip(params, op.requants)):
        x = xs[f"x{i}"].astype(np.int64)
        ex = np.array([(int(v) - z) * Fraction(s) / Fraction(ys) for v in x.ravel()], dtype=object).reshape(x.shape)
        exact.append(ex)
        ort_pred.append(np.clip(np.vectorize(rhe, otypes=[object])(ex) + yz, lo, hi).astype(np.int64))
        ref_pred.append(np.clip(np.array([rhe(Fraction((int(v) - z) * rq.mult, 2**rq.shift)) if rq.shift > 0
                                          else (int(v) - z) * rq.mult << -rq.shift for v in x.ravel()]
                                         ).reshape(x.shape) + rq.zero_point, rq.lo, rq.hi))
        ref_val.append(np.array([Fraction((int(v) - z) * rq.mult, 2**max(rq.shift, 0)) * 2**max(-rq.shift, 0)
                                 for v in x.ravel()], dtype=object).reshape(x.shape))
    cat = lambda parts: np.concatenate(parts, axis=1)  # noqa: E731
    assert np.array_equal(ref_y[:, :2], xs["x0"])  # same scale and zero point: copied
    compare_predictions(f"QLinearConcat {npt.__name__}", ort_y, ref_y, cat(ort_pred), cat(ref_pred), cat(exact), cat(ref_val))


POOLS = [("QLinearAveragePool", dict(kernel_shape=[3, 3], strides=[1, 1], count_include_pad=1, pads=[1, 1, 1, 1])),
         ("QLinearAveragePool", dict(kernel_shape=[2, 2], strides=[2, 2])),
         ("QLinearGlobalAveragePool", {})]


@pytest.mark.parametrize("scales", ["other", "same"])
@pytest.mark.parametrize("signed", [False, True], ids=["uint8", "int8"])
@pytest.mark.parametrize("op_type,attrs", POOLS, ids=["avg3x3pad", "avg2x2", "global"])
def test_qlinear_average_pools_against_onnxruntime(op_type, attrs, signed, scales):
    """Output scale 'other' than the input's: the window division folds into one 31-bit multiplier.
    The 'same' scale: a non-power-of-2 window (3x3, global 6x6) uses the 8-bit reciprocal multiplier
    R = round(2^k / area), which rounds some sums differently from ONNX's division; 2x2 divides
    exactly by a shift (docs/arithmetic.md, 'Pooling')."""
    elem, npt, lo, hi = _types(signed)
    rng = np.random.default_rng(SEED + 20 + signed)
    shape = [1, 3, 6, 6]
    (xs_, xz), (ys_, yz) = (0.04, 5 if signed else 60), (0.05, -3 if signed else 70)
    if scales == "same":
        xs_ = ys_ = 0.0625
    inits = []
    node = helper.make_node(op_type, ["x", *_qparams(inits, "x", xs_, xz, npt), *_qparams(inits, "y", ys_, yz, npt)],
                            ["y"], domain="com.microsoft", name="pool", **attrs)
    k = attrs.get("kernel_shape", shape[2:])
    st = attrs.get("strides", [1, 1])
    p = attrs.get("pads", [0, 0, 0, 0])
    oshape = [1, 3, (6 + p[0] + p[2] - k[0]) // st[0] + 1, (6 + p[1] + p[3] - k[1]) // st[1] + 1]
    m = _model([node], [("x", shape)], "y", oshape, inits, elem)
    x = rng.integers(lo, hi + 1, size=shape).astype(npt)
    ort_y = _ort(m, {"x": x})
    g = load_ir(m, requant="multiplier")
    ref_y = run_reference(g, {"x": x})[0].astype(np.int64)
    rq = g.ops[0].requant
    xp = np.pad(x.astype(np.int64) - xz, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])))
    sums = np.array([[[[int(xp[0, c, i * st[0]:i * st[0] + k[0], j * st[1]:j * st[1] + k[1]].sum())
                        for j in range(oshape[3])] for i in range(oshape[2])] for c in range(3)]])
    area = k[0] * k[1]
    exact = np.vectorize(lambda s: s * Fraction(xs_) / (area * Fraction(ys_)), otypes=[object])(sums)
    # onnxruntime adds the output zero point before it rounds: with an odd zero point, exact ties
    # round the other way than the contract's round-then-add
    ort_pred = np.clip(np.vectorize(rhe, otypes=[object])(exact + yz), lo, hi).astype(np.int64)
    ref_val = np.vectorize(lambda s: Fraction(int(s) * rq.mult, 2**rq.shift), otypes=[object])(sums)
    ref_pred = np.clip(np.vectorize(rhe, otypes=[object])(ref_val) + rq.zero_point, rq.lo, rq.hi).astype(np.int64)
    compare_predictions(f"{op_type} {k} {npt.__name__} {scales} scale", ort_y, ref_y, ort_pred, ref_pred, exact, ref_val)
