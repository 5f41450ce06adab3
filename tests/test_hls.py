"""HLS back end: the generated C++ (g++ -Wall -Wextra -Werror) against the bit-exact reference.

Golden values come from the reference (tony.ref.execute); the C++ runs both as the C-simulation
testbench (tb.cpp on the golden hex files) and through the shared library (run_csim, predict).
Each build compiles once per module: the randomized single-op cases share one graph of
independent branches.
"""
import ctypes
import math
import os
import shutil

import numpy as np
import pytest

import tony
from tony import ir
from tony.build import Build
from tony.hls import backend as hls
from tony.errors import InputError, OverflowRisk
from tony.ir import INT8, INT32, UINT8, Requant, Rounding, Tensor
from tony.ref import execute

pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None, reason="needs g++")

MODES = [Rounding.HALF_EVEN, Rounding.HALF_UP, Rounding.FLOOR]


# ---- random single-op branches ------------------------------------------------------------------

class _G:
    """Collects independent branches (one op each, own inputs and output) into one IR graph."""

    def __init__(self, rng):
        self.rng, self.tensors, self.consts, self.ops, self.ins, self.outs = rng, {}, {}, [], [], []
        self.kinds: list[str] = []

    def act(self, shape, dt=None, zp=None):
        r = self.rng
        dt = dt or (INT8 if r.random() < 0.5 else UINT8)
        if zp is None:
            zp = int(r.integers(-3, 4)) if dt.signed and r.random() < 0.5 else (int(r.integers(0, 5)) if r.random() < 0.3 else 0)
        name = f"x{len(self.tensors)}"
        self.tensors[name] = Tensor(name, (1,) + tuple(shape), dt, zero_point=zp)
        self.ins.append(name)
        return name

    def out(self, shape, dt, zp=0):
        name = f"y{len(self.tensors)}"
        self.tensors[name] = Tensor(name, (1,) + tuple(shape), dt, zero_point=zp)
        self.outs.append(name)
        return name

    def const(self, arr, dt, zp=0):
        name = f"c{len(self.tensors)}"
        self.tensors[name] = Tensor(name, arr.shape, dt, zero_point=zp)
        self.consts[name] = np.asarray(arr, np.int64)
        return name

    def requant(self, acc_max, mode, out_dt, per_channel=0, zp=0, allow_left=False):
        """A requant whose output uses the range: pow2 or multiplier, per tensor or per channel."""
        r = self.rng
        bits = max(int(acc_max).bit_length(), 1)

        def one():
            if r.random() < 0.4:                       # multiplier mode
                mult = int(r.integers(1 << 14, 1 << 31))
                return mult, bits + mult.bit_length() - out_dt.bits + int(r.integers(-1, 3))
            lo_s = -2 if allow_left else 0
            return 1, int(np.clip(bits - out_dt.bits + int(r.integers(-1, 3)), lo_s, 62))

        pairs = [one() for _ in range(per_channel or 1)]
        mult = tuple(p[0] for p in pairs) if per_channel else pairs[0][0]
        shift = tuple(p[1] for p in pairs) if per_channel else pairs[0][1]
        lo, hi = out_dt.min, out_dt.max
        if r.random() < 0.3:
            lo = max(lo, zp)                           # fused ReLU
        return Requant(shift=shift, lo=lo, hi=hi, mult=mult, rounding=mode, zero_point=zp)

    def conv(self, mode):
        r = self.rng
        group = int(r.choice([1, 2, 3]))
        cg, mg = int(r.integers(1, 4)), int(r.integers(1, 4))
        if r.random() < 0.35:
            cg, mg = 1, 1                              # depthwise
        c, m = cg * group, mg * group
        kh, kw = int(r.integers(1, 4)), int(r.integers(1, 4))
        st, dil = tuple(int(v) for v in r.integers(1, 3, 2)), tuple(int(v) for v in r.integers(1, 3, 2))
        pads = tuple(int(v) for v in r.integers(0, 3, 4))
        h = max(int(r.integers(3, 8)), dil[0] * (kh - 1) + 1)
        w = max(int(r.integers(3, 8)), dil[1] * (kw - 1) + 1)
        oh = (h + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // st[0] + 1
        ow = (w + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // st[1] + 1
        x = self.act((c, h, w))
        wzp = int(r.integers(-2, 3)) if r.random() < 0.3 else 0
        wt = r.integers(-128, 128, size=(m, cg, kh, kw))
        ins = [x, self.const(wt, INT8, wzp)]
        if r.random() < 0.8:
            ins.append(self.const(r.integers(-3000, 3000, size=(m,)), INT32))
        odt = INT8 if r.random() < 0.5 else UINT8
        ozp = int(r.integers(-4, 5)) if odt.signed and r.random() < 0.3 else 0
        rq = self.requant(255 * 130 * cg * kh * kw // 4, mode, odt, per_channel=m if r.random() < 0.3 else 0, zp=ozp)
        y = self.out((m, oh, ow), odt, ozp)
        self.ops.append(ir.Conv(tuple(ins), (y,), origin=f"conv{len(self.ops)}", strides=st, pads=pads,
                                dilations=dil, group=group, requant=rq))
        self.kinds.append(f"conv g{group} k{kh}x{kw} s{st} d{dil} p{pads} {mode.value}")

    def dense(self, mode):
        r = self.rng
        k, m = int(r.integers(1, 41)), int(r.integers(1, 13))
        x = self.act((k,))
        ins = [x, self.const(r.integers(-128, 128, size=(k, m)), INT8, int(r.integers(-2, 3)) if r.random() < 0.3 else 0)]
        if r.random() < 0.7:
            ins.append(self.const(r.integers(-3000, 3000, size=(m,)), INT32))
        odt = INT8 if r.random() < 0.5 else UINT8
        rq = self.requant(255 * 130 * k // 4, mode, odt, per_channel=m if r.random() < 0.3 else 0)
        self.ops.append(ir.Dense(tuple(ins), (self.out((m,), odt),), origin=f"dense{len(self.ops)}", requant=rq))
        self.kinds.append(f"dense {k}x{m} {mode.value}")

    def _pool_geo(self, dilated):
        r = self.rng
        c, h, w = int(r.integers(1, 4)), int(r.integers(2, 8)), int(r.integers(2, 8))
        k = (int(r.integers(1, min(3, h) + 1)), int(r.integers(1, min(3, w) + 1)))
        s = tuple(int(v) for v in r.integers(1, 3, 2))
        d = tuple(int(v) for v in r.integers(1, 3, 2)) if dilated else (1, 1)
        if (k[0] - 1) * d[0] + 1 > h or (k[1] - 1) * d[1] + 1 > w:
            d = (1, 1)
        pads = tuple(int(r.integers(0, min(k))) for _ in range(4))
        oh = (h + pads[0] + pads[2] - d[0] * (k[0] - 1) - 1) // s[0] + 1
        ow = (w + pads[1] + pads[3] - d[1] * (k[1] - 1) - 1) // s[1] + 1
        return c, h, w, k, s, d, pads, oh, ow

    def maxpool(self, mode):
        c, h, w, k, s, d, pads, oh, ow = self._pool_geo(True)
        x = self.act((c, h, w))
        xt = self.tensors[x]
        rq = self.requant(300, mode, INT8, allow_left=True) if self.rng.random() < 0.4 else None
        y = self.out((c, oh, ow), INT8 if rq else xt.dtype, 0 if rq else xt.zero_point)
        self.ops.append(ir.MaxPool((x,), (y,), origin=f"maxpool{len(self.ops)}", kernel=k, strides=s, pads=pads,
                                   dilations=d, requant=rq))
        self.kinds.append(f"maxpool k{k} s{s} d{d} p{pads}")

    def avgpool(self, mode):
        c, h, w, k, s, _, pads, oh, ow = self._pool_geo(False)
        x = self.act((c, h, w))
        area = k[0] * k[1]
        kk = 8 + area.bit_length()
        odt = self.tensors[x].dtype
        rq = Requant(shift=kk, lo=odt.min, hi=odt.max, mult=round(2**kk / area), rounding=mode)
        self.ops.append(ir.AvgPool((x,), (self.out((c, oh, ow), odt),), origin=f"avgpool{len(self.ops)}",
                                   kernel=k, strides=s, pads=pads, requant=rq))
        self.kinds.append(f"avgpool k{k} s{s} p{pads} {mode.value}")

    def add(self, mode):
        r = self.rng
        shape = tuple(int(v) for v in r.integers(1, 5, 3))
        a, b = self.act(shape), self.act(shape)
        odt = INT8 if r.random() < 0.5 else UINT8
        if r.random() < 0.5:
            sa, sb, ma, mb = int(r.integers(0, 4)), int(r.integers(0, 4)), 1, 1
            rq = Requant(shift=int(r.integers(0, 4)), lo=odt.min, hi=odt.max, rounding=mode)
        else:
            sa = sb = 0
            ma, mb = int(r.integers(1 << 20, 1 << 30)), int(r.integers(1 << 20, 1 << 30))
            rq = Requant(shift=30, lo=odt.min, hi=odt.max, rounding=mode)
        self.ops.append(ir.Add((a, b), (self.out(shape, odt),), origin=f"add{len(self.ops)}", shift_a=sa,
                               shift_b=sb, mult_a=ma, mult_b=mb, requant=rq))
        self.kinds.append(f"add {mode.value}")

    def concat(self, mode):
        r = self.rng
        axis = int(r.integers(1, 4))
        base = [int(v) for v in r.integers(1, 4, 3)]
        xs, total = [], 0
        for _ in range(int(r.integers(2, 4))):
            shp = list(base)
            shp[axis - 1] = int(r.integers(1, 4))
            total += shp[axis - 1]
            xs.append(self.act(tuple(shp)))
        oshape = list(base)
        oshape[axis - 1] = total
        rqs = tuple(self.requant(300, mode, INT8, allow_left=True) for _ in xs)
        self.ops.append(ir.Concat(tuple(xs), (self.out(tuple(oshape), INT8),), origin=f"concat{len(self.ops)}",
                                  axis=axis, requants=rqs))
        self.kinds.append(f"concat axis {axis} {mode.value}")

    def clamp(self, mode):
        shape = tuple(int(v) for v in self.rng.integers(1, 6, 2))
        x = self.act(shape)
        odt = UINT8 if self.rng.random() < 0.5 else INT8
        rq = self.requant(300, mode, odt, allow_left=True)
        self.ops.append(ir.Clamp((x,), (self.out(shape, odt),), origin=f"clamp{len(self.ops)}", requant=rq))
        self.kinds.append(f"clamp {mode.value}")

    def reshape(self, mode):
        shape = tuple(int(v) for v in self.rng.integers(1, 5, 3))
        x = self.act(shape)
        t = self.tensors[x]
        y = self.out((math.prod(shape),), t.dtype, t.zero_point)
        self.ops.append(ir.Reshape((x,), (y,), origin=f"reshape{len(self.ops)}", shape=(1, math.prod(shape))))
        self.kinds.append("reshape")

    def graph(self) -> ir.Graph:
        return ir.verify(ir.Graph("random ops", tensors=self.tensors, constants=self.consts, ops=tuple(self.ops),
                                  inputs=tuple(self.ins), outputs=tuple(self.outs)))


def random_graph(seed: int, per_kind: int = 3) -> tuple[ir.Graph, dict, list[str]]:
    rng = np.random.default_rng(seed)
    b = _G(rng)
    builders = [b.conv, b.conv, b.dense, b.maxpool, b.avgpool, b.add, b.concat, b.clamp, b.reshape]
    for i in range(per_kind):
        for j, fn in enumerate(builders):
            fn(MODES[(i + j) % 3])
    g = b.graph()
    feeds = {}
    for name in g.inputs:
        t = g.tensors[name]
        x = rng.integers(t.dtype.min, t.dtype.max + 1, size=(6,) + t.shape[1:])
        x[0] = t.dtype.min      # the extremes of every input
        x[1] = t.dtype.max
        feeds[name] = x
    return g, feeds, b.kinds


def _assert_equal_per_output(g, got: dict, want: dict, kinds, seed):
    bad = [f"{name} ({kind})" for name, kind in zip(g.outputs, kinds) if not np.array_equal(got[name], want[name])]
    assert not bad, f"seed={seed}: C++ differs from the reference on {bad}"


@pytest.fixture(scope="module")
def random_build(tmp_path_factory):
    seed = int(os.environ.get("TONY_SEED", "0")) or 20240607
    print(f"seed={seed}")
    g, feeds, kinds = random_graph(seed)
    d = tmp_path_factory.mktemp("hls_random") / "build"
    hls.compile_hls(g, d, feeds=feeds, config=hls.HlsConfig(rows=3, cols=2, weights="axi"))
    return d, g, feeds, kinds, seed


def test_random_ops_csim_testbench_bit_exact(random_build):
    d, g, feeds, kinds, seed = random_build
    rep = hls.csim(d)
    assert rep["bit_exact"], f"seed={seed}: {rep['first_mismatches']}"
    assert rep["compared"] == 6 * sum(math.prod(g.tensors[o].shape[1:]) for o in g.outputs)
    assert (d / hls.REPORT).is_file()


def test_random_ops_run_csim_equals_reference(random_build):
    d, g, feeds, kinds, seed = random_build
    got = dict(zip(g.outputs, hls.run_csim(d, feeds, graph=g)))
    _assert_equal_per_output(g, got, execute(g, feeds), kinds, seed)
    # fresh inputs, not the compiled golden ones
    rng = np.random.default_rng(seed + 1)
    feeds2 = {n: rng.integers(g.tensors[n].dtype.min, g.tensors[n].dtype.max + 1, size=(3,) + g.tensors[n].shape[1:])
              for n in g.inputs}
    got = dict(zip(g.outputs, hls.run_csim(d, feeds2, graph=g)))
    _assert_equal_per_output(g, got, execute(g, feeds2), kinds, seed)


def test_random_ops_cover_every_device_op_and_rounding_mode(random_build):
    d, g, *_ = random_build
    kinds = {type(op) for op in g.ops}
    assert kinds == {ir.Conv, ir.Dense, ir.MaxPool, ir.AvgPool, ir.Add, ir.Concat, ir.Clamp, ir.Reshape}
    modes = {rq.rounding for op in g.ops for rq in (op.requants if isinstance(op, ir.Concat) else [getattr(op, "requant", None)]) if rq}
    assert modes == set(MODES)
    assert any(isinstance(op, ir.Conv) and op.group > 1 and op.group == g.tensors[op.inputs[0]].shape[1]
               for op in g.ops), "no depthwise conv drawn"
    assert any(getattr(op, "requant", None) is not None and not op.requant.is_pow2 for op in g.ops)


def test_testbench_reports_a_corrupted_golden_value(random_build, tmp_path):
    d, g, *_ = random_build
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    out = Build.open(bad).manifest["device_outputs"][0]
    lines = (bad / out["golden"]).read_text().splitlines()
    i = next(k for k, ln in enumerate(lines) if not ln.startswith("//"))
    lines[i] = format((int(lines[i], 16) + 1) & 0xFF, "02x")
    (bad / out["golden"]).write_text("\n".join(lines) + "\n")
    rep = hls.csim(bad, rebuild=False)
    assert not rep["bit_exact"] and rep["mismatches"] == 1
    assert rep["first_mismatches"][0].startswith("MISMATCH sample 0")


# ---- the bundled digits MLP through the CLI ------------------------------------------------------

@pytest.fixture(scope="module")
def mlp_build(tmp_path_factory):
    from tony.models import build_example

    d = tmp_path_factory.mktemp("hls_mlp")
    build_example("digits-mlp", d / "ex")
    return d


def test_digits_mlp_cli_compile_and_csim_bit_exact(mlp_build, tony_cli):
    r = tony_cli("compile", "--backend", "hls", mlp_build / "ex" / "model.onnx", "-o", mlp_build / "b",
                 "--inputs", mlp_build / "ex" / "inputs.npy", "--array", "8x4")
    assert r.returncode == 0, r.stderr
    for f in ("model.cpp", "model.h", "weights.h", "tb.cpp", "capi.cpp", "Makefile", "run_hls.tcl",
              "tony_types.h", "tony_kernels.h", "tony_host.h"):
        assert (mlp_build / "b" / f).is_file(), f
    r = tony_cli("csim", mlp_build / "b")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = Build.open(mlp_build / "b").manifest
    import json

    csim_rep = json.loads((mlp_build / "b" / hls.REPORT).read_text())
    n = np.load(mlp_build / "ex" / "inputs.npy").shape[0]
    assert csim_rep["bit_exact"] and csim_rep["samples"] == n == rep["samples"]
    assert "PASS, bit-exact" in r.stdout


@pytest.fixture(scope="module")
def mlp_model(mlp_build):
    return tony.compile(mlp_build / "ex" / "model.onnx", backend="hls", output_dir=mlp_build / "py", array="2x3")


def test_digits_mlp_predict_equals_reference(mlp_build, mlp_model):
    x = np.load(mlp_build / "ex" / "inputs.npy")
    model = mlp_build / "ex" / "model.onnx"
    m = mlp_model
    want = tony.run_reference(model, x)
    got = m.predict(x)
    assert got[0].dtype == want[0].dtype and np.array_equal(got[0], want[0])
    assert np.array_equal(m.predict(x[5])[0], tony.run_reference(model, x[5])[0])


def test_digits_mlp_host_helpers_match_reference(mlp_model):
    """tony_quantize_* / tony_dequantize_* of model.h against the reference's Quantize/Dequantize."""
    from tony.ref import arith

    m = mlp_model
    g = m.graph
    q = next(op for op in g.ops if isinstance(op, ir.Quantize))
    dq = next(op for op in g.ops if isinstance(op, ir.Dequantize))
    rng = np.random.default_rng(7)
    x = np.concatenate([rng.normal(0, 4, 500), np.arange(-300, 300) * np.float32(q.scale) / 2,
                        [1e30, -1e30, 0.0]]).astype(np.float32)
    out = np.zeros(x.size, np.int64)
    dll = m._lib.dll
    assert dll.tony_quantize_input(0, x.ctypes.data_as(ctypes.c_void_p), out.ctypes.data_as(ctypes.c_void_p),
                                   x.size) == 0
    assert np.array_equal(out, arith.quantize(x, q.scale, q.zero_point, q.dtype))
    t = g.tensors[dq.inputs[0]]
    qv = np.arange(t.dtype.min, t.dtype.max + 1, dtype=np.int64)
    f = np.zeros(qv.size, np.float32)
    assert dll.tony_dequantize_output(0, qv.ctypes.data_as(ctypes.c_void_p), f.ctypes.data_as(ctypes.c_void_p),
                                      qv.size) == 0
    assert np.array_equal(f, arith.dequantize(qv, t.scale, t.zero_point))


# ---- a small CNN quantized here: conv, depthwise, residual Add, pools, concat, dense ------------

def small_cnn_onnx(seed: int):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def init(name, *shape, s=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * s).astype(np.float32), name)

    inits = [init("w1", 4, 1, 3, 3), init("b1", 4, s=0.1), init("w2", 4, 1, 3, 3), init("b2", 4, s=0.1),
             init("w3", 4, 4, 1, 1), init("b3", 4, s=0.1), init("w4", 4, 4, 3, 3), init("b4", 4, s=0.1),
             init("wf", 8, 10), init("bf", 10, s=0.1)]
    N = helper.make_node
    nodes = [
        N("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], name="stem"), N("Relu", ["c1"], ["r1"]),
        N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=4, name="dw"), N("Relu", ["c2"], ["r2"]),
        N("Conv", ["r2", "w3", "b3"], ["c3"], name="pw"),
        N("Add", ["c3", "r1"], ["a1"], name="residual"), N("Relu", ["a1"], ["r3"]),
        N("MaxPool", ["r3"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
        N("Conv", ["p1", "w4", "b4"], ["c4"], strides=[2, 2], pads=[1, 1, 1, 1], dilations=[1, 1], name="down"),
        N("Relu", ["c4"], ["r4"]),
        N("AveragePool", ["r4"], ["ap"], kernel_shape=[2, 2], strides=[2, 2], name="avg"),
        N("GlobalAveragePool", ["r4"], ["gp"], name="gap"),
        N("Concat", ["ap", "gp"], ["cat"], axis=1, name="cat"),
        N("Flatten", ["cat"], ["f"], axis=1), N("Gemm", ["f", "wf", "bf"], ["y"], name="fc"),
    ]
    g = helper.make_graph(nodes, "small cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    return onnx.helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    from tony.quant.qdq import quantize_static

    seed = 3
    print(f"seed={seed}")
    fm = small_cnn_onnx(seed)
    rng = np.random.default_rng(seed)
    calib = rng.uniform(0, 1, size=(32, 1, 1, 8, 8)).astype(np.float32)
    qm = quantize_static(fm, calib)
    x = rng.uniform(0, 1, size=(12, 1, 1, 8, 8)).astype(np.float32)
    d = tmp_path_factory.mktemp("hls_cnn")
    return qm, x, d


def test_small_cnn_csim_and_predict_bit_exact(cnn):
    qm, x, d = cnn
    m = tony.compile(qm, backend="hls", output_dir=d / "b", requant="pow2", samples=8)
    kinds = {l["op"] for l in m.manifest["layers"]}
    assert {"conv", "add", "maxpool", "avgpool", "concat", "dense", "reshape"} <= kinds
    rep = m.csim()
    assert rep["bit_exact"] and rep["samples"] == 8
    want = tony.run_reference(qm, x)
    got = m.predict(x)
    assert np.array_equal(got[0], want[0])
    assert not m.manifest["dataflow"], "the residual Add reads a tensor twice: no DATAFLOW"


# ---- models bundled by the project (trained here; slow) -----------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet"])
def test_bundled_digits_models_csim_bit_exact(name, tmp_path):
    from tony.models import EXAMPLES, build_example

    if name not in EXAMPLES:
        pytest.skip(f"example {name} is not bundled")
    build_example(name, tmp_path / "ex")
    x = np.load(tmp_path / "ex" / "inputs.npy")[:50]
    m = tony.compile(tmp_path / "ex" / "model.onnx", backend="hls", output_dir=tmp_path / "b", requant="pow2")
    assert m.csim()["bit_exact"]
    want = tony.run_reference(tmp_path / "ex" / "model.onnx", x)
    assert all(np.array_equal(a, b) for a, b in zip(m.predict(x), want))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13, 14])
def test_random_ops_sweep(seed, tmp_path):
    print(f"seed={seed}")
    g, feeds, kinds = random_graph(seed, per_kind=6)
    rows, cols = (int(v) for v in np.random.default_rng(seed).integers(1, 9, 2))
    hls.compile_hls(g, tmp_path / "b", feeds=feeds, config=hls.HlsConfig(rows=rows, cols=cols))
    assert hls.csim(tmp_path / "b")["bit_exact"], f"seed={seed}"
    got = dict(zip(g.outputs, hls.run_csim(tmp_path / "b", feeds, graph=g)))
    _assert_equal_per_output(g, got, execute(g, feeds), kinds, seed)


# ---- errors and hygiene (no g++) -----------------------------------------------------------------

def _tiny_dense(name="t", k=4, m=3, wval=1):
    tensors = {"x": Tensor("x", (1, k), INT8), "w": Tensor("w", (k, m), INT8), "y": Tensor("y", (1, m), INT8)}
    return ir.verify(ir.Graph(name, tensors, {"w": np.full((k, m), wval, np.int64)},
                              (ir.Dense(("x", "w"), ("y",), origin='fc"; touch PWNED #', requant=Requant(2, -128, 127)),),
                              ("x",), ("y",)))


def _feeds(g, n):
    from tony.golden import default_inputs

    return default_inputs(g, n, 0)


def test_hostile_model_and_node_names_never_reach_generated_files(tmp_path):
    g = _tiny_dense(name='evil */ "; $(touch PWNED) \n#include <x>')
    hls.compile_hls(g, tmp_path / "b", feeds=_feeds(g, 2))
    for f in (tmp_path / "b").iterdir():
        if f.suffix in (".cpp", ".h", ".tcl", "") and f.is_file():
            text = f.read_text()
            for raw in ("$(touch", "touch PWNED", "*/ \"", "#include <x>", 'fc";'):
                assert raw not in text, f"{f.name} holds {raw!r}"


def test_refuses_to_overwrite_a_foreign_folder(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a Tony build"):
        hls.compile_hls(_tiny_dense(), tmp_path / "b", feeds=_feeds(_tiny_dense(), 1))
    assert (tmp_path / "b" / "notes.txt").read_text() == "mine"


def test_accumulator_overflow_is_refused(tmp_path):
    g = _tiny_dense(k=200, m=2, wval=127)
    with pytest.raises(OverflowRisk):
        hls.compile_hls(g, tmp_path / "b", feeds=_feeds(g, 1), config=hls.HlsConfig(acc_bits=16))
    assert not (tmp_path / "b").exists()


def test_csim_on_a_folder_without_hls_build_is_one_line_error(tmp_path, tony_cli):
    r = tony_cli("csim", tmp_path)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1 and "manifest.json" in r.stderr
