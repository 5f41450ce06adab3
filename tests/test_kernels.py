"""Reference kernels against slow, obviously correct loop implementations (random shapes)."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

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
