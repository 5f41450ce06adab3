"""Reference kernels against slow, obviously correct loop implementations (random shapes)."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _ort_helpers import rhe
from tony import ir
from tony.ir import INT8, INT32, UINT8, Requant, Tensor
from tony.ref import execute
from tony.ref.arith import requantize


def slow_conv(x, w, b, strides, pads, dil, group, zx=0):
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    t, l, bo, r = pads
    oh = (h + t + bo - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (wd + l + r - dil[1] * (kw - 1) - 1) // strides[1] + 1
    out = np.zeros((n, m, oh, ow), dtype=object)
    mg = m // group
    for ni in range(n):
        for mi in range(m):
            gi = mi // mg
            for i in range(oh):
                for j in range(ow):
                    s = int(b[mi])
                    for ci in range(cg):
                        for u in range(kh):
                            for v in range(kw):
                                yy = i * strides[0] - t + u * dil[0]
                                xx = j * strides[1] - l + v * dil[1]
                                if 0 <= yy < h and 0 <= xx < wd:
                                    xv = int(x[ni, gi * cg + ci, yy, xx]) - zx
                                else:
                                    xv = 0
                                s += xv * int(w[mi, ci, u, v])
                    out[ni, mi, i, j] = s
    return out


def _graph(op, tensors, constants, inp, out):
    return ir.verify(ir.Graph("t", tensors=tensors, constants=constants, ops=(op,), inputs=(inp,), outputs=(out,)))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_conv_matches_loops(data):
    group = data.draw(st.sampled_from([1, 2, 3]))
    cg = data.draw(st.integers(1, 3))
    mg = data.draw(st.integers(1, 3))
    depthwise = data.draw(st.booleans())
    if depthwise:
        cg, mg = 1, 1
    c, m = cg * group, mg * group
    h, w = data.draw(st.integers(3, 7)), data.draw(st.integers(3, 7))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    strides = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dil = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, 2)) for _ in range(4))
    if h + pads[0] + pads[2] < dil[0] * (kh - 1) + 1 or w + pads[1] + pads[3] < dil[1] * (kw - 1) + 1:
        return
    shift = data.draw(st.integers(-2, 12))
    signed = data.draw(st.booleans())
    zx = data.draw(st.integers(-3, 3)) if signed else 0
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    dt = INT8 if signed else UINT8
    x = rng.integers(dt.min, dt.max + 1, size=(2, c, h, w))
    wt = rng.integers(-128, 128, size=(m, cg, kh, kw))
    b = rng.integers(-5000, 5000, size=(m,))
    oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // strides[1] + 1
    rq = Requant(shift=shift, lo=-128, hi=127)
    tensors = {"x": Tensor("x", (1, c, h, w), dt, zero_point=zx), "w": Tensor("w", wt.shape, INT8),
               "b": Tensor("b", (m,), INT32), "y": Tensor("y", (1, m, oh, ow), INT8)}
    op = ir.Conv(("x", "w", "b"), ("y",), strides=strides, pads=pads, dilations=dil, group=group, requant=rq)
    g = _graph(op, tensors, {"w": wt, "b": b}, "x", "y")
    got = execute(g, {"x": x})["y"]
    want = requantize(slow_conv(x, wt, b, strides, pads, dil, group, zx).astype(np.int64), rq)
    assert (got == want).all(), f"seed={seed}"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 4), k=st.integers(1, 40), m=st.integers(1, 12), shift=st.integers(0, 14),
       seed=st.integers(0, 2**31))
def test_dense_matches_loops(n, k, m, shift, seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, k))
    w = rng.integers(-128, 128, size=(k, m))
    b = rng.integers(-1000, 1000, size=(m,))
    rq = Requant(shift=shift, lo=0, hi=255)
    tensors = {"x": Tensor("x", (1, k), UINT8), "w": Tensor("w", (k, m), INT8), "b": Tensor("b", (m,), INT32),
               "y": Tensor("y", (1, m), UINT8)}
    g = _graph(ir.Dense(("x", "w", "b"), ("y",), requant=rq), tensors, {"w": w, "b": b}, "x", "y")
    want = np.array([[sum(int(x[i, j]) * int(w[j, c]) for j in range(k)) + int(b[c]) for c in range(m)]
                     for i in range(n)], dtype=np.int64)
    assert (execute(g, {"x": x})["y"] == requantize(want, rq)).all()


@settings(max_examples=30, deadline=None)
@given(data=st.data())
def test_pools_match_loops(data):
    c, h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(2, 7)), data.draw(st.integers(2, 7))
    k = (data.draw(st.integers(1, min(3, h))), data.draw(st.integers(1, min(3, w))))
    s = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, min(k) - 1)) for _ in range(4))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    x = rng.integers(-128, 128, size=(1, c, h, w))
    oh = (h + pads[0] + pads[2] - k[0]) // s[0] + 1
    ow = (w + pads[1] + pads[3] - k[1]) // s[1] + 1
    tensors = {"x": Tensor("x", (1, c, h, w), INT8), "y": Tensor("y", (1, c, oh, ow), INT8)}
    mx = np.full((1, c, oh, ow), -999)
    sm = np.zeros((1, c, oh, ow), dtype=np.int64)
    for ci in range(c):
        for i in range(oh):
            for j in range(ow):
                vals = []
                for u in range(k[0]):
                    for v in range(k[1]):
                        yy, xx = i * s[0] - pads[0] + u, j * s[1] - pads[1] + v
                        vals.append(int(x[0, ci, yy, xx]) if 0 <= yy < h and 0 <= xx < w else None)
                mx[0, ci, i, j] = max(-128 if v is None else v for v in vals)
                sm[0, ci, i, j] = sum(0 if v is None else v for v in vals)
    g = _graph(ir.MaxPool(("x",), ("y",), kernel=k, strides=s, pads=pads), tensors, {}, "x", "y")
    assert (execute(g, {"x": x})["y"] == mx).all()
    rq = Requant(shift=9, lo=-128, hi=127, mult=171)
    g = _graph(ir.AvgPool(("x",), ("y",), kernel=k, strides=s, pads=pads, requant=rq), tensors, {}, "x", "y")
    assert (execute(g, {"x": x})["y"] == requantize(sm, rq)).all()


def test_add_aligns_to_finer_scale():
    tensors = {"a": Tensor("a", (1, 4), INT8, 2.0**-3), "b": Tensor("b", (1, 4), INT8, 2.0**-5),
               "y": Tensor("y", (1, 4), INT8, 2.0**-4)}
    rq = Requant(shift=1, lo=-128, hi=127)
    g = ir.verify(ir.Graph("t", tensors, {}, (ir.Add(("a", "b"), ("y",), shift_a=2, shift_b=0, requant=rq),),
                           ("a", "b"), ("y",)))
    a = np.array([[1, -3, 127, 5]])
    b = np.array([[1, 2, 127, -1]])
    # real: a/8 + b/32 -> in units of 1/16: (4a + b)/2, rounded half to even
    want = [min(max(v, -128), 127) for v in [round((4 * x + y) / 2) for x, y in zip(a[0], b[0])]]
    assert execute(g, {"a": a, "b": b})["y"][0].tolist() == want


def test_verifier_rejects_bad_shapes():
    import pytest

    tensors = {"x": Tensor("x", (1, 3), INT8), "w": Tensor("w", (4, 2), INT8), "y": Tensor("y", (1, 2), INT8)}
    g = ir.Graph("t", tensors, {"w": np.zeros((4, 2), np.int64)},
                 (ir.Dense(("x", "w"), ("y",), requant=Requant(0, -128, 127)),), ("x",), ("y",))
    with pytest.raises(ir.IRVerifyError, match="shapes"):
        ir.verify(g)


# ---- the remaining ops against Python-int / Fraction implementations of docs/arithmetic.md ------------
def _slow_requant(v: int, mult: int, shift: int, zp: int, lo: int, hi: int) -> int:
    """round_half_even(v * mult / 2^shift) + zp, clamped; exact with Fractions."""
    from fractions import Fraction

    return min(max(rhe(Fraction(v * mult) / Fraction(2) ** shift) + zp, lo), hi)


def _dt(data):
    bits = data.draw(st.sampled_from([2, 4, 8, 16]))
    return ir.DType(bits, data.draw(st.booleans()))


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_add_matches_fractions(data):
    da, db, dy = _dt(data), _dt(data), _dt(data)
    shape = (1, data.draw(st.integers(1, 3)), data.draw(st.integers(1, 5)))
    za = data.draw(st.integers(da.min, da.max)) if not da.signed else 0
    zb = data.draw(st.integers(db.min, db.max)) if not db.signed else 0
    ma, mb, mult = (data.draw(st.integers(1, 2**20)) for _ in range(3))
    sa, sb = data.draw(st.integers(0, 4)), data.draw(st.integers(0, 4))
    shift = data.draw(st.integers(-2, 40))
    zp = data.draw(st.integers(dy.min, dy.max))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    a = rng.integers(da.min, da.max + 1, size=(2,) + shape[1:])
    b = rng.integers(db.min, db.max + 1, size=(2,) + shape[1:])
    rq = Requant(shift=shift, lo=dy.min, hi=dy.max, mult=mult, zero_point=zp)
    tensors = {"a": Tensor("a", shape, da, zero_point=za), "b": Tensor("b", shape, db, zero_point=zb),
               "y": Tensor("y", shape, dy)}
    op = ir.Add(("a", "b"), ("y",), shift_a=sa, shift_b=sb, mult_a=ma, mult_b=mb, requant=rq)
    g = ir.verify(ir.Graph("t", tensors, {}, (op,), ("a", "b"), ("y",)))
    got = execute(g, {"a": a, "b": b})["y"]
    sums = [((int(x) - za) * ma << sa) + ((int(y) - zb) * mb << sb) for x, y in zip(a.ravel(), b.ravel())]
    if shift >= 0:
        want = [_slow_requant(v, mult, shift, zp, dy.min, dy.max) for v in sums]
    else:  # an exact left shift
        want = [min(max(v * mult * 2**-shift + zp, dy.min), dy.max) for v in sums]
    assert got.ravel().tolist() == want, f"seed={seed}"


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_concat_and_clamp_match_fractions(data):
    n_in = data.draw(st.integers(1, 3))
    dy = _dt(data)
    axis = data.draw(st.integers(1, 2))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    tensors, xs, rqs, parts = {}, {}, [], []
    for i in range(n_in):
        dt = _dt(data)
        z = data.draw(st.integers(dt.min, dt.max))
        shape = (1, 2, 3)
        shape = shape[:axis] + (data.draw(st.integers(1, 3)),) + shape[axis + 1:]
        rq = Requant(shift=data.draw(st.integers(0, 34)), lo=data.draw(st.integers(dy.min, 0 if dy.signed else dy.max)),
                     hi=dy.max, mult=data.draw(st.integers(1, 2**31 - 1)), zero_point=data.draw(st.integers(dy.min, dy.max)))
        x = rng.integers(dt.min, dt.max + 1, size=(2,) + shape[1:])
        tensors[f"x{i}"] = Tensor(f"x{i}", shape, dt, zero_point=z)
        xs[f"x{i}"] = x
        rqs.append(rq)
        parts.append(np.array([_slow_requant(int(v) - z, rq.mult, rq.shift, rq.zero_point, rq.lo, rq.hi)
                               for v in x.ravel()]).reshape(x.shape))
    out_shape = list(tensors["x0"].shape)
    out_shape[axis] = sum(t.shape[axis] for t in tensors.values())
    tensors["y"] = Tensor("y", tuple(out_shape), dy)
    op = ir.Concat(tuple(xs), ("y",), axis=axis, requants=tuple(rqs))
    g = ir.verify(ir.Graph("t", tensors, {}, (op,), tuple(xs), ("y",)))
    assert np.array_equal(execute(g, xs)["y"], np.concatenate(parts, axis=axis)), f"seed={seed}"
    # Clamp of the first input with the first requant: the same formula alone
    t0 = tensors["x0"]
    g = ir.verify(ir.Graph("t", {"x0": t0, "y": Tensor("y", t0.shape, dy)}, {},
                           (ir.Clamp(("x0",), ("y",), requant=rqs[0]),), ("x0",), ("y",)))
    assert np.array_equal(execute(g, {"x0": xs["x0"]})["y"], parts[0]), f"seed={seed}"


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 3), k=st.integers(1, 24), m=st.integers(1, 6), seed=st.integers(0, 2**31),
       per_channel=st.booleans())
def test_dense_multiplier_and_per_channel_requant_match_fractions(n, k, m, seed, per_channel):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, k))
    w = rng.integers(-128, 128, size=(k, m))
    b = rng.integers(-5000, 5000, size=(m,))
    mults = [int(v) for v in rng.integers(2**30, 2**31, size=m)]
    shifts = [int(v) for v in rng.integers(30, 44, size=m)]
    zx = int(rng.integers(0, 256))
    if per_channel:
        rq = Requant(shift=tuple(shifts), lo=-128, hi=127, mult=tuple(mults), zero_point=0)
    else:
        mults, shifts = [mults[0]] * m, [shifts[0]] * m
        rq = Requant(shift=shifts[0], lo=-128, hi=127, mult=mults[0], zero_point=3)
    tensors = {"x": Tensor("x", (1, k), UINT8, zero_point=zx), "w": Tensor("w", (k, m), INT8),
               "b": Tensor("b", (m,), INT32), "y": Tensor("y", (1, m), INT8)}
    g = _graph(ir.Dense(("x", "w", "b"), ("y",), requant=rq), tensors, {"w": w, "b": b}, "x", "y")
    want = [[_slow_requant(sum((int(x[i, j]) - zx) * int(w[j, c]) for j in range(k)) + int(b[c]), mults[c], shifts[c],
                           rq.zero_point, -128, 127) for c in range(m)] for i in range(n)]
    assert execute(g, {"x": x})["y"].tolist() == want, f"seed={seed}"


def _slow_requant_mode(v: int, mult: int, shift: int, zp: int, lo: int, hi: int, rounding: ir.Rounding) -> int:
    """v * mult / 2^shift rounded by `rounding` (exact Fractions), plus zp, clamped."""
    from fractions import Fraction

    if rounding is ir.Rounding.HALF_EVEN:
        return _slow_requant(v, mult, shift, zp, lo, hi)
    q = Fraction(v * mult) / Fraction(2) ** shift
    if rounding is ir.Rounding.HALF_UP:
        q += Fraction(1, 2)
    return min(max(q.numerator // q.denominator + zp, lo), hi)


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_conv_multiplier_and_per_channel_requant_match_fractions(data):
    """Conv in multiplier mode: acc (loops, Python ints, input and weight zero points) times a
    31-bit multiplier and shifted, per tensor or per output channel (shifts <= 0 included),
    each rounding mode, output zero point and clamp, against exact Fractions."""
    group = data.draw(st.sampled_from([1, 2]))
    cg, mg = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    if data.draw(st.booleans()):  # depthwise
        cg, mg = 1, 1
    c, m = cg * group, mg * group
    h, w = data.draw(st.integers(2, 5)), data.draw(st.integers(2, 5))
    kh, kw = data.draw(st.integers(1, min(3, h))), data.draw(st.integers(1, min(3, w)))
    strides = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    pads = tuple(data.draw(st.integers(0, 1)) for _ in range(4))
    dt, dy = _dt(data), _dt(data)
    if dt.bits > 8:
        dt = ir.DType(8, dt.signed)
    zx = data.draw(st.integers(dt.min, dt.max))
    zw = data.draw(st.sampled_from([0, 0, -3, 5]))
    per_channel = data.draw(st.booleans())
    n_rq = m if per_channel else 1
    mults = [data.draw(st.integers(1, 2**31 - 1)) for _ in range(n_rq)]
    shifts = [data.draw(st.integers(-2, 46)) for _ in range(n_rq)]
    rounding = data.draw(st.sampled_from(list(ir.Rounding)))
    zp = data.draw(st.integers(dy.min, dy.max))
    lo = data.draw(st.integers(dy.min, dy.max))
    hi = data.draw(st.integers(lo, dy.max))
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    x = rng.integers(dt.min, dt.max + 1, size=(2, c, h, w))
    wt = rng.integers(-128, 128, size=(m, cg, kh, kw))
    b = rng.integers(-20000, 20000, size=(m,))
    oh = (h + pads[0] + pads[2] - kh) // strides[0] + 1
    ow = (w + pads[1] + pads[3] - kw) // strides[1] + 1
    if per_channel:
        rq = Requant(shift=tuple(shifts), lo=lo, hi=hi, mult=tuple(mults), rounding=rounding, zero_point=zp)
    else:
        rq = Requant(shift=shifts[0], lo=lo, hi=hi, mult=mults[0], rounding=rounding, zero_point=zp)
        mults, shifts = mults * m, shifts * m
    tensors = {"x": Tensor("x", (1, c, h, w), dt, zero_point=zx), "w": Tensor("w", wt.shape, INT8, zero_point=zw),
               "b": Tensor("b", (m,), INT32), "y": Tensor("y", (1, m, oh, ow), dy)}
    op = ir.Conv(("x", "w", "b"), ("y",), strides=strides, pads=pads, group=group, requant=rq)
    g = _graph(op, tensors, {"w": wt, "b": b}, "x", "y")
    got = execute(g, {"x": x})["y"]
    acc = slow_conv(x, wt - zw, b, strides, pads, (1, 1), group, zx)
    want = np.array([_slow_requant_mode(int(acc[i]), mults[i[1]], shifts[i[1]], zp, lo, hi, rounding)
                     for i in np.ndindex(acc.shape)]).reshape(acc.shape)
    assert np.array_equal(got, want), f"seed={seed}"


@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_reshape_keeps_row_major_order(data):
    """Reshape of a stack of samples: element k of each sample, in row-major order, stays element k."""
    import itertools
    import math

    dims = data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=4))
    size = math.prod(dims)
    factors = [p for p in range(2, size + 1) for _ in range(_multiplicity(size, p))]
    perm = data.draw(st.permutations(factors))
    cut = sorted(data.draw(st.lists(st.integers(0, len(perm)), max_size=3)))
    bounds = [0, *cut, len(perm)]
    new = tuple(math.prod(perm[a:b]) for a, b in zip(bounds, bounds[1:]))
    dt = _dt(data)
    seed = data.draw(st.integers(0, 2**31))
    rng = np.random.default_rng(seed)
    samples = data.draw(st.integers(1, 3))
    x = rng.integers(dt.min, dt.max + 1, size=(samples, *dims))
    tensors = {"x": Tensor("x", (1, *dims), dt), "y": Tensor("y", (1, *new), dt)}
    g = _graph(ir.Reshape(("x",), ("y",), shape=(1, *new)), tensors, {}, "x", "y")
    got = execute(g, {"x": x})["y"]
    assert got.shape == (samples, *new)
    for s in range(samples):
        flat_in = [int(x[(s, *i)]) for i in itertools.product(*map(range, dims))]
        flat_out = [int(got[(s, *i)]) for i in itertools.product(*map(range, new))]
        assert flat_out == flat_in, f"seed={seed}"


def _multiplicity(n: int, p: int) -> int:
    """How often the prime p divides n (0 for a composite p)."""
    if any(p % d == 0 for d in range(2, p)):
        return 0
    k = 0
    while n % p == 0:
        n, k = n // p, k + 1
    return k


def _boundary_layout(data, shape):
    """A Quantize/Dequantize layout for `shape` (batch axis included): per tensor, per axis or
    blocked, as ONNX QuantizeLinear's axis / block_size. Returns (axis, block_size, param_shape)."""
    kind = data.draw(st.sampled_from(["tensor", "axis", "blocked"]))
    if kind == "tensor":
        return 1, 0, ()
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    a = axis % len(shape)
    if kind == "axis":
        return axis, 0, (shape[a],)
    block = data.draw(st.integers(1, 3))
    return axis, block, tuple(-(-d // block) if i == a else d for i, d in enumerate(shape))


def _param_index(idx, axis, block, param_shape):
    """Flat index of the scale / zero point that applies at element `idx` (ONNX layout rules)."""
    if not param_shape:
        return 0
    a = axis % len(idx)
    if not block:
        return idx[a]
    return int(np.ravel_multi_index(idx[:a] + (idx[a] // block,) + idx[a + 1:], param_shape))


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_quantize_matches_onnx_definition(data):
    """ONNX QuantizeLinear: saturate(round_half_even(x / y_scale) + y_zero_point), the division in
    float32 (numpy float32 scalars, one element at a time), the rounding and saturation on exact
    Fractions and Python ints. Inputs include exact .5 ties, huge values and an overflow to inf."""
    from fractions import Fraction

    shape = (1, *data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dt = _dt(data)
    axis, block, param_shape = _boundary_layout(data, shape)
    n_par = int(np.prod(param_shape)) if param_shape else 1
    scales = [np.float32(data.draw(st.floats(2.0**-12, 2.0**6, width=32))) for _ in range(n_par)]
    zps = [data.draw(st.integers(dt.min, dt.max)) for _ in range(n_par)]
    samples = data.draw(st.integers(1, 2))
    x = np.zeros((samples, *shape), np.float32)
    for i in np.ndindex(x.shape):
        sc = scales[_param_index(i[1:], axis, block, param_shape)]
        x[i] = data.draw(st.one_of(
            st.floats(width=32, allow_nan=False, allow_infinity=False),
            st.integers(2 * dt.min - 4, 2 * dt.max + 4).map(lambda k, sc=sc: np.float32(k / 2 * float(sc))),
            st.floats(-300.0, 300.0, width=32)))
    if param_shape:
        op = ir.Quantize(("x",), ("y",), scale=tuple(float(s) for s in scales), zero_point=tuple(zps), dtype=dt,
                         axis=axis, block_size=block, param_shape=param_shape)
    else:
        op = ir.Quantize(("x",), ("y",), scale=float(scales[0]), zero_point=zps[0], dtype=dt)
    tensors = {"x": Tensor("x", shape, ir.FLOAT32), "y": Tensor("y", shape, dt)}
    got = execute(_graph(op, tensors, {}, "x", "y"), {"x": x})["y"]
    want = np.zeros(x.shape, np.int64)
    with np.errstate(over="ignore"):
        for i in np.ndindex(x.shape):
            k = _param_index(i[1:], axis, block, param_shape)
            q = x[i] / scales[k]                      # float32 / float32 -> float32
            assert q.dtype == np.float32
            y = (dt.max if q > 0 else dt.min) if np.isinf(q) else rhe(Fraction(float(q))) + zps[k]
            want[i] = min(max(y, dt.min), dt.max)
    assert np.array_equal(got, want), [(i, x[i], got[i], want[i]) for i in np.ndindex(x.shape) if got[i] != want[i]][:3]


@settings(max_examples=100, deadline=None)
@given(data=st.data())
def test_dequantize_matches_onnx_definition(data):
    """ONNX DequantizeLinear: (x - x_zero_point) * x_scale in float32. The product of an integer of
    at most 17 bits and a float32 is exact as a Fraction and in float64 (checked), so rounding it
    once to float32 is the float32 product; compared bit for bit. The scale and zero point come
    from the input tensor, from the op (per tensor), or per axis / blocked."""
    from fractions import Fraction

    shape = (1, *data.draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    dt = _dt(data)
    source = data.draw(st.sampled_from(["tensor", "op"]))
    axis, block, param_shape = _boundary_layout(data, shape) if source == "op" else (1, 0, ())
    n_par = int(np.prod(param_shape)) if param_shape else 1
    scales = [np.float32(data.draw(st.floats(2.0**-30, 2.0**30, width=32))) for _ in range(n_par)]
    zps = [data.draw(st.integers(dt.min, dt.max)) for _ in range(n_par)]
    seed = data.draw(st.integers(0, 2**31))
    q = np.random.default_rng(seed).integers(dt.min, dt.max + 1, size=(data.draw(st.integers(1, 2)), *shape))
    if source == "tensor":
        xt = Tensor("x", shape, dt, scale=float(scales[0]), zero_point=zps[0])
        op = ir.Dequantize(("x",), ("y",))
    elif param_shape:
        xt = Tensor("x", shape, dt)
        op = ir.Dequantize(("x",), ("y",), scale=tuple(float(s) for s in scales), zero_point=tuple(zps),
                           axis=axis, block_size=block, param_shape=param_shape)
    else:
        xt = Tensor("x", shape, dt)
        op = ir.Dequantize(("x",), ("y",), scale=float(scales[0]), zero_point=zps[0])
    got = execute(_graph(op, {"x": xt, "y": Tensor("y", shape, ir.FLOAT32)}, {}, "x", "y"), {"x": q})["y"]
    assert got.dtype == np.float32
    want = np.zeros(q.shape, np.float32)
    for i in np.ndindex(q.shape):
        k = _param_index(i[1:], axis, block, param_shape)
        exact = (int(q[i]) - zps[k]) * Fraction(float(scales[k]))
        assert Fraction(float(exact)) == exact
        want[i] = np.float32(float(exact))
    assert np.array_equal(got.view(np.int32), want.view(np.int32)), f"seed={seed}"


@pytest.mark.parametrize("strides,dil,pads,k", [((1, 1), (1, 1), (1, 1, 1, 1), 3), ((1, 1), (2, 1), (0, 2, 1, 0), 3),
                                                ((2, 2), (1, 1), (1, 1, 1, 1), 3), ((1, 1), (1, 1), (0, 0, 0, 0), 1),
                                                ((1, 2), (1, 1), (2, 0, 0, 1), 2), ((1, 1), (1, 1), (0, 0, 0, 0), 5)])
@pytest.mark.parametrize("chunk", [1, 2500])
def test_dense_conv_blocks_of_samples_match_einsum(monkeypatch, strides, dil, pads, k, chunk):
    """The dense convolution in blocks of samples (a block smaller than the stack, the last one
    partial; the flattened-image and strided window copies) against an int64 einsum."""
    from tony.ref import kernels

    monkeypatch.setattr(kernels, "_CONV_CHUNK", chunk)  # blocks of 1 sample; of 2 (the last one partial)
    rng = np.random.default_rng(7)
    n, c, h, w, m = 7, 3, 6, 5, 4
    x = rng.integers(-128, 128, size=(n, c, h, w))
    wt = rng.integers(-128, 128, size=(m, c, k, k))
    t, l, bo, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bo), (l, r)))
    win = np.lib.stride_tricks.sliding_window_view(xp, ((k - 1) * dil[0] + 1, (k - 1) * dil[1] + 1), axis=(2, 3))
    win = win[:, :, ::strides[0], ::strides[1], ::dil[0], ::dil[1]]
    want = np.einsum("nchwij,mcij->nmhw", win, wt)
    rq = Requant(shift=0, lo=-(2**31), hi=2**31 - 1)
    tensors = {"x": Tensor("x", (1, c, h, w), INT8), "w": Tensor("w", wt.shape, INT8),
               "y": Tensor("y", (1, m) + want.shape[2:], INT32)}
    op = ir.Conv(("x", "w"), ("y",), strides=strides, pads=pads, dilations=dil, group=1, requant=rq)
    got = execute(_graph(op, tensors, {"w": wt}, "x", "y"), {"x": x})["y"]
    assert got.flags.c_contiguous and np.array_equal(got, want)


@pytest.mark.parametrize("subtract", [False, True])
@pytest.mark.parametrize("shape", [(5, 3, 2, 2), (5, 2, 1, 1)])
def test_add_in_blocks_of_samples_matches_formula(monkeypatch, subtract, shape):
    """Add over two stacks in blocks of samples (one sample a block; blocks of 3, the last one
    partial) against the formula of docs/arithmetic.md in Python integers."""
    from tony.ref import kernels

    monkeypatch.setattr(kernels, "_BLOCK", 7)
    rng = np.random.default_rng(3)
    a, b = rng.integers(-128, 128, size=shape), rng.integers(-128, 128, size=shape)
    tensors = {"a": Tensor("a", (1,) + shape[1:], INT8, 2.0**-3, zero_point=3),
               "b": Tensor("b", (1,) + shape[1:], INT8, 2.0**-5, zero_point=-2),
               "y": Tensor("y", (1,) + shape[1:], INT8, 2.0**-4)}
    rq = Requant(shift=1, lo=-128, hi=127, zero_point=1)
    op = ir.Add(("a", "b"), ("y",), shift_a=2, shift_b=0, mult_a=3, mult_b=1, requant=rq, subtract=subtract)
    g = ir.verify(ir.Graph("t", tensors, {}, (op,), ("a", "b"), ("y",)))
    sign = -1 if subtract else 1
    acc = [((int(x) - 3) * 3 << 2) + sign * (int(y) + 2) for x, y in zip(a.reshape(-1), b.reshape(-1))]
    want = [min(max(round(v / 2) + 1, -128), 127) for v in acc]  # round(): half to even, as the requant
    got = execute(g, {"a": a, "b": b})["y"]
    assert got.shape == shape and got.reshape(-1).tolist() == want
