"""Differential fuzzing: random valid quantized ONNX graphs through every engine.

`python -m tony.tools.fuzz -n 1000 --seed 1 --engines ref,ort,model,hls,rtl` (or `make fuzz N=1000`)
generates graph i from seed + i and runs it through

* ref    Tony's reference (tony.ref.execute): the golden values; a valid graph must load or be
         refused with a TonyError, never another exception;
* ort    onnxruntime's unoptimized Q/DQ path (ORT_DISABLE_ALL), where the contract says it is exact:
         power-of-two scales and no average pool over a window whose area is not a power of two
         (docs/arithmetic.md); other graphs skip it;
* model  the accelerator compiler and its cycle model's functional execution (tony.accel.model.run)
         on a random array size, batch, memory width and activation-buffer depth: bit-exact with the
         reference, or refused with a TonyError;
* hls    the HLS C++ through g++ (csim on the golden vectors and run_csim on the same inputs);
* rtl    the Verilog on Verilator (compile_accel + tony.sim.accel.simulate): bit-exact, and the
         measured cycles equal to the cycle model's prediction.

With the rtl engine each graph runs on one of a few fixed accelerators (`OVERLAYS`, rendered as
`tony hw` overlays and compiled for with compile_accel(..., hw=...)) instead of a random one: every
graph compiled for an overlay has the same Verilog, so Verilator builds each overlay once and every
later graph reuses that build (tony.sim.runner's design cache). `--overlays` chooses (default:
overlays with rtl, random accelerators without).

A graph is described by the sequence of choices its generator made (`Chooser`); the same generator
runs under a seeded numpy generator (`RngChooser`), under hypothesis (`HypothesisChooser`, which
shrinks by itself), or replaying a list of choices (`ReplayChooser`). A failure is shrunk by
editing that list (`shrink`) and kept as `tests/regressions/<name>.onnx` with its inputs and the
engines' settings (`save_regression`); tests/test_fuzz.py replays every file there.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ENGINES = ("ref", "ort", "model", "hls", "rtl")
OPSET = 21  # int4 weights need DequantizeLinear of opset 21


def _overlays() -> dict:
    """The fixed accelerators of RTL fuzzing: odd and square arrays, both memory widths, and
    activation buffers small enough that the graphs spill and run in row bands. Every buffer is
    fixed (the weight, bias and instruction memories hold every graph the generator makes)."""
    from ..accel.program import AccelConfig
    from ..hw import Overlay

    out = {}
    for rows, cols, mem_bits, abuf in ((1, 1, 32, 256), (2, 2, 32, 64), (2, 3, 64, 64), (3, 5, 32, 128),
                                       (5, 2, 64, 256), (4, 4, 64, 1024), (8, 8, 32, 64), (8, 8, 64, 2048)):
        name = f"fuzz-{rows}x{cols}-m{mem_bits}-a{abuf}"
        out[name] = Overlay(name, AccelConfig(rows, cols, mem_bits=mem_bits, abuf_words=abuf, wbuf_words=1024,
                                              bbuf_words=64, imem_words=1024))
    return out


OVERLAYS = _overlays()


# ---- choices ------------------------------------------------------------------------------------

class RngChooser:
    """Draws from a seeded numpy generator and records every choice as an offset from its minimum."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)
        self.log: list[int] = []

    def int(self, lo: int, hi: int) -> int:
        v = int(self.rng.integers(lo, hi + 1))
        self.log.append(v - lo)
        return v

    def bool(self, p: float = 0.5) -> bool:
        v = int(self.rng.random() < p)
        self.log.append(v)
        return bool(v)

    def choice(self, seq):
        return seq[self.int(0, len(seq) - 1)]


class ReplayChooser(RngChooser):
    """Replays recorded offsets (clipped to each choice's range; the minimum once they run out)."""

    def __init__(self, offsets):
        self.offsets, self.i, self.log = list(offsets), 0, []

    def _next(self, span: int) -> int:
        v = min(self.offsets[self.i], span) if self.i < len(self.offsets) else 0
        self.i += 1
        self.log.append(v)
        return v

    def int(self, lo: int, hi: int) -> int:
        return lo + self._next(hi - lo)

    def bool(self, p: float = 0.5) -> bool:
        return bool(self._next(1))


class HypothesisChooser(RngChooser):
    """Draws through hypothesis' `data` (so hypothesis shrinks a failing graph by itself)."""

    def __init__(self, data):
        self.data, self.log = data, []

    def int(self, lo: int, hi: int) -> int:
        from hypothesis import strategies as st

        v = self.data.draw(st.integers(lo, hi))
        self.log.append(v - lo)
        return v

    def bool(self, p: float = 0.5) -> bool:
        from hypothesis import strategies as st

        v = self.data.draw(st.booleans())
        self.log.append(int(v))
        return v


# ---- graph generation ---------------------------------------------------------------------------

@dataclass
class Act:
    """A quantized activation: `name` is the float output of its DequantizeLinear."""
    name: str
    q: str
    shape: tuple
    scale: float
    zp: int
    dt: str  # "int8" | "uint8"


@dataclass
class Case:
    model: onnx.ModelProto
    x: np.ndarray                 # float inputs, [samples, 1, ...]
    pow2: bool
    ort_exact: bool
    rows: int
    cols: int
    batch: int
    mem_bits: int
    abuf_words: int
    desc: list = field(default_factory=list)
    choices: list = field(default_factory=list)
    overlay: str | None = None    # a key of OVERLAYS: the accelerator is that fixed one

    @property
    def requant(self) -> str:
        return "pow2" if self.pow2 else "auto"

    def summary(self) -> str:
        hw = f"overlay {self.overlay}" if self.overlay else \
            f"{self.rows}x{self.cols} mem {self.mem_bits} abuf {self.abuf_words or 'auto'}"
        return (f"{'pow2' if self.pow2 else 'multiplier'} {hw} batch {self.batch} x{tuple(self.x.shape)}: "
                + "; ".join(self.desc))


_QT = {"int8": (TensorProto.INT8, -128, 127), "uint8": (TensorProto.UINT8, 0, 255)}


class _Builder:
    def __init__(self, c: RngChooser):
        self.c = c
        self.rng = np.random.default_rng(c.int(0, 2**31 - 1))   # the data (weights, inputs): one choice
        self.pow2 = not c.bool(0.35)
        self.hw = not c.bool(0.2)          # hardware-friendly: zero points 0
        self.nodes, self.inits, self.n = [], [], 0
        self.ort_exact = self.pow2
        self.desc: list[str] = []
        self.extra_outputs: list[str] = []

    # names and constants
    def fresh(self, base: str) -> str:
        self.n += 1
        return f"{base}{self.n}"

    def init(self, arr, base: str, dtype=None) -> str:
        name = self.fresh(base)
        if dtype == TensorProto.INT4:
            t = helper.make_tensor(name, TensorProto.INT4, arr.shape, np.asarray(arr, np.int8).reshape(-1).tolist())
        else:
            t = numpy_helper.from_array(np.asarray(arr), name)
        self.inits.append(t)
        return name

    def node(self, op, ins, outs, **attrs):
        self.nodes.append(helper.make_node(op, ins, outs, name=self.fresh(op.lower() + "_"), **attrs))

    # scales
    def scale(self, typical: float = 1.0) -> float:
        """An activation scale near typical/40 (in range for int8 values), pow2 or not."""
        e = math.floor(math.log2(max(typical, 1e-30) / 40)) + self.c.int(-1, 1)
        e = int(np.clip(e, -20, 4))
        if self.pow2:
            return float(2.0**e)
        return float(np.float32(2.0**e * (1 + self.c.int(1, 999) / 1000)))

    def qtype(self, relu: bool = False) -> tuple[str, int]:
        dt = "uint8" if (relu and self.c.bool(0.7)) or self.c.bool(0.2) else "int8"
        zp = 0
        if not self.hw and self.c.bool(0.5):
            zp = self.c.int(-3, 3) if dt == "int8" else self.c.choice([1, 3, 128])
        return dt, zp

    def qdq(self, fname: str, shape, scale: float, dt: str, zp: int) -> Act:
        qt = _QT[dt][0]
        s = self.init(np.array(scale, np.float32), "s")
        z = self.init(np.array(zp, np.int8 if dt == "int8" else np.uint8), "z")
        q = self.fresh("q")
        d = self.fresh("a")
        self.node("QuantizeLinear", [fname, s, z], [q])
        self.node("DequantizeLinear", [q, s, z], [d])
        assert qt
        return Act(d, q, tuple(shape), scale, zp, dt)

    def activation(self, fname: str, scale_out: float) -> tuple[str, bool]:
        """An optional Relu / Clip after a float op; returns (float name, clamps at 0)."""
        k = self.c.int(0, 3) if self.c.bool(0.5) else 0
        if k == 0:
            return fname, False
        out = self.fresh("f")
        if k == 1:
            self.node("Relu", [fname], [out])
            self.desc.append("relu")
            return out, True
        lo = 0.0 if k == 2 else -float(self.c.int(1, 64)) * scale_out * (1 if self.c.bool() else 0.7)
        hi = 6.0 if k == 2 else float(self.c.int(1, 100)) * scale_out * (1 if self.c.bool() else 1.3)
        self.node("Clip", [fname, self.init(np.array(lo, np.float32), "lo"), self.init(np.array(hi, np.float32), "hi")],
                  [out])
        self.desc.append(f"clip({lo:g},{hi:g})")
        return out, lo >= 0

    # weights
    def weights(self, shape, nout: int, axis: int):
        """(DQ name, scale array or scalar, typical |w|) of a constant weight of `shape`."""
        c = self.c
        bits = 4 if c.bool(0.2) else 8
        w = self.rng.integers(-(1 << (bits - 1)), 1 << (bits - 1), size=shape)
        if w.size > 1 and c.bool(0.3):
            w.reshape(-1)[self.rng.integers(0, w.size)] = -(1 << (bits - 1))   # the extreme value
        base = 2.0 ** c.int(-9, -3)
        per_channel = c.bool(0.5)          # per-channel scales run on the hardware too (docs/isa.md)
        if per_channel:
            if self.pow2:
                ws = base * 2.0 ** self.rng.integers(-1, 2, size=nout)
            else:
                ws = base * (1 + self.rng.integers(1, 999, size=nout) / 1000)
            ws = ws.astype(np.float32)
        else:
            ws = np.array(base if self.pow2 else base * (1 + c.int(1, 999) / 1000), np.float32)
        dt = TensorProto.INT4 if bits == 4 else TensorProto.INT8
        wq = self.init(w.astype(np.int8), "w", dtype=dt)
        s = self.init(ws, "ws")
        z = self.init(np.zeros(ws.shape, np.int8), "wz", dtype=dt)
        d = self.fresh("wd")
        attrs = {"axis": axis} if ws.ndim else {}
        self.node("DequantizeLinear", [wq, s, z], [d], **attrs)
        self.desc[-1] += f" w{'int4' if bits == 4 else 'int8'}{' per-channel' if per_channel else ''}"
        return d, ws, (1 << (bits - 1)) / 2

    def bias(self, x: Act, ws, nout: int):
        if not self.c.bool(0.7):
            return None
        b = self.rng.integers(-3000, 3001, size=nout).astype(np.int32)
        bs = (np.float32(x.scale) * ws.astype(np.float32)).astype(np.float32)
        bs = np.broadcast_to(bs, (nout,)).copy() if ws.ndim else np.array(bs, np.float32)
        d = self.fresh("bd")
        attrs = {"axis": 0} if bs.ndim else {}
        self.node("DequantizeLinear", [self.init(b, "b"), self.init(bs, "bs"), self.init(np.zeros(bs.shape, np.int32), "bz")],
                  [d], **attrs)
        return d

    def requant_out(self, fname: str, shape, typical: float, act: bool = True) -> Act:
        """QuantizeLinear (after a Relu/Clip where `act`: the ops that fuse one) and DequantizeLinear."""
        s = self.scale(typical)
        fname, relu = self.activation(fname, s) if act else (fname, False)
        dt, zp = self.qtype(relu)
        return self.qdq(fname, shape, s, dt, zp)

    # ops on [1, C, H, W]
    def conv(self, x: Act, keep_shape: bool = False) -> Act:
        c = self.c
        _, C, H, W = x.shape
        kind = c.int(0, 2)
        if kind == 1:
            group, M = C, C * (1 if keep_shape else c.int(1, 2))
        elif kind == 2 and C > 1:
            divs = [d for d in range(2, C + 1) if C % d == 0]
            group = c.choice(divs)
            M = C if keep_shape else group * c.int(1, 3)
        else:
            group, M = 1, (C if keep_shape else c.int(1, 8))
        if keep_shape and M != C:
            M = C
        if keep_shape:
            k = c.choice([1, 3])
            kh = kw = k
            st, dil, pads = (1, 1), (1, 1), [k // 2] * 4
        else:
            kh, kw = c.int(1, 3), c.int(1, 3)
            st = (c.int(1, 2), c.int(1, 2))
            dil = (c.int(1, 2), c.int(1, 2)) if c.bool(0.2) else (1, 1)
            pads = [c.int(0, 2) for _ in range(4)] if c.bool(0.6) else [0] * 4
        if H + pads[0] + pads[2] < dil[0] * (kh - 1) + 1:
            kh, dil = 1, (1, dil[1])
        if W + pads[1] + pads[3] < dil[1] * (kw - 1) + 1:
            kw, dil = 1, (dil[0], 1)
        oh = (H + pads[0] + pads[2] - dil[0] * (kh - 1) - 1) // st[0] + 1
        ow = (W + pads[1] + pads[3] - dil[1] * (kw - 1) - 1) // st[1] + 1
        self.desc.append(f"conv {C}->{M} g{group} k{kh}x{kw} s{st} d{dil} p{tuple(pads)}")
        w, ws, wtyp = self.weights((M, C // group, kh, kw), M, 0)
        b = self.bias(x, ws, M)
        y = self.fresh("f")
        self.node("Conv", [x.name, w] + ([b] if b else []), [y], kernel_shape=[kh, kw], strides=list(st),
                  dilations=list(dil), pads=pads, group=group)
        K = (C // group) * kh * kw
        return self.requant_out(y, (1, M, oh, ow), x.scale * float(np.max(ws)) * math.sqrt(K) * 40 * wtyp)

    def dense(self, x: Act) -> Act:
        c = self.c
        K = x.shape[1]
        M = c.int(1, 12)
        gemm = c.bool(0.6)
        trans = gemm and c.bool(0.5)
        self.desc.append(f"{'gemm' + (' transB' if trans else '') if gemm else 'matmul'} {K}->{M}")
        w, ws, wtyp = self.weights((M, K) if trans else (K, M), M, 0 if trans else 1)
        b = self.bias(x, ws, M) if gemm else None
        y = self.fresh("f")
        if gemm:
            self.node("Gemm", [x.name, w] + ([b] if b else []), [y], transB=int(trans))
        else:
            self.node("MatMul", [x.name, w], [y])
        return self.requant_out(y, (1, M), x.scale * float(np.max(ws)) * math.sqrt(K) * 40 * wtyp)

    def pool(self, x: Act) -> Act:
        c = self.c
        _, C, H, W = x.shape
        kind = c.int(0, 2)
        if kind == 2:
            self.desc.append(f"globalavgpool {H}x{W}")
            y = self.fresh("f")
            self.node("GlobalAveragePool", [x.name], [y])
            if (H * W) & (H * W - 1):
                self.ort_exact = False
            return self.requant_out(y, (1, C, 1, 1), x.scale * 40, act=False) if c.bool(0.5) else \
                self.qdq(y, (1, C, 1, 1), x.scale, x.dt, x.zp)
        kh, kw = c.int(1, min(3, H)), c.int(1, min(3, W))
        st = (c.int(1, 2), c.int(1, 2))
        pads = [c.int(0, kh - 1), c.int(0, kw - 1), c.int(0, kh - 1), c.int(0, kw - 1)] if c.bool(0.4) else [0] * 4
        oh = (H + pads[0] + pads[2] - kh) // st[0] + 1
        ow = (W + pads[1] + pads[3] - kw) // st[1] + 1
        y = self.fresh("f")
        if kind == 0:
            self.desc.append(f"maxpool k{kh}x{kw} s{st} p{tuple(pads)}")
            self.node("MaxPool", [x.name], [y], kernel_shape=[kh, kw], strides=list(st), pads=pads)
        else:
            self.desc.append(f"avgpool k{kh}x{kw} s{st} p{tuple(pads)}")
            self.node("AveragePool", [x.name], [y], kernel_shape=[kh, kw], strides=list(st), pads=pads,
                      count_include_pad=1)
            if (kh * kw) & (kh * kw - 1):
                self.ort_exact = False
        if c.bool(0.6):   # keep the scale: no requantization
            return self.qdq(y, (1, C, oh, ow), x.scale, x.dt, x.zp)
        return self.requant_out(y, (1, C, oh, ow), x.scale * 40, act=False)

    def relu(self, x: Act) -> Act:
        self.desc.append("standalone activation")
        y = self.fresh("f")
        self.node("Relu", [x.name], [y])
        s = x.scale if self.c.bool() else self.scale(x.scale * 40)
        dt, zp = self.qtype(True)
        return self.qdq(y, x.shape, s, dt, zp)

    def residual(self, x: Act) -> Act:
        a = self.conv(x, keep_shape=True)
        b = x if self.c.bool(0.6) else self.conv(x, keep_shape=True)
        self.desc.append("add")
        y = self.fresh("f")
        self.node("Add", [a.name, b.name], [y])
        return self.requant_out(y, x.shape, max(a.scale, b.scale) * 60)

    def concat(self, x: Act) -> Act:
        c = self.c
        parts = [x]
        for _ in range(c.int(1, 2)):
            if c.bool(0.5):
                parts.append(self.conv(x, keep_shape=True))
            else:
                y = self.fresh("f")
                self.desc.append("maxpool k3 s1 p1")
                self.node("MaxPool", [x.name], [y], kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
                parts.append(self.qdq(y, x.shape, x.scale, x.dt, x.zp))
        if c.bool(0.5):
            parts = parts[::-1]
        self.desc.append(f"concat of {len(parts)}")
        y = self.fresh("f")
        self.node("Concat", [p.name for p in parts], [y], axis=1)
        C = sum(p.shape[1] for p in parts)
        shape = (1, C) + x.shape[2:]
        if c.bool(0.6):  # one shared scale (what calibration gives)
            return self.qdq(y, shape, parts[0].scale, parts[0].dt, parts[0].zp)
        return self.requant_out(y, shape, max(p.scale for p in parts) * 40, act=False)

    def flatten(self, x: Act) -> Act:
        y = self.fresh("f")
        n = math.prod(x.shape[1:])
        if self.c.bool():
            self.desc.append("flatten")
            self.node("Flatten", [x.name], [y], axis=1)
        else:
            self.desc.append("reshape")
            self.node("Reshape", [x.name, self.init(np.array([1, -1], np.int64), "shape")], [y])
        return self.qdq(y, (1, n), x.scale, x.dt, x.zp) if self.c.bool(0.3) else \
            Act(y, x.q, (1, n), x.scale, x.zp, x.dt)


def generate(c: RngChooser, overlays=()) -> Case:
    """One random valid QDQ graph, its float inputs and the engines' settings, from choices `c`;
    with `overlays` (keys of OVERLAYS) the accelerator is one of them, drawn by the last choice (so
    the graph is the one the same seed gives without)."""
    b = _Builder(c)
    dense_only = c.bool(0.15)
    if dense_only:
        shape = (1, c.int(1, 40))
    else:
        shape = (1, c.int(1, 6), c.int(1, 9), c.int(1, 9))
    s_in = b.scale(40 * 2.0 ** c.int(-4, 2))
    dt, zp = b.qtype(relu=c.bool(0.2))
    x = b.qdq("input", shape, s_in, dt, zp)
    for _ in range(c.int(1, 4)):
        if len(x.shape) == 4:
            kind = c.int(0, 5)
            if kind == 0 or kind == 5:
                x = b.conv(x)
            elif kind == 1:
                x = b.pool(x)
            elif kind == 2:
                x = b.residual(x)
            elif kind == 3:
                x = b.concat(x)
            else:
                x = b.relu(x)
        else:
            x = b.dense(x) if c.bool(0.8) else b.relu(x)
        if len(x.shape) == 4 and c.bool(0.1):   # an intermediate tensor is also a graph output
            out = b.fresh("out")
            qs = next(n for n in b.nodes if n.op_type == "QuantizeLinear" and n.output[0] == x.q)
            b.node("DequantizeLinear", [x.q, qs.input[1], qs.input[2]], [out])
            b.extra_outputs.append((out, x.shape))
    if len(x.shape) == 4 and c.bool(0.6):
        x = b.flatten(x)
        if c.bool(0.8):
            x = b.dense(x)
    if not any(n.op_type == "DequantizeLinear" and n.output[0] == x.name for n in b.nodes):
        x = b.qdq(x.name, x.shape, x.scale, x.dt, x.zp)   # the graph output is a DequantizeLinear's
    ins = [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(shape))]
    outs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shp))
            for name, shp in [(x.name, x.shape)] + b.extra_outputs]
    g = helper.make_graph(b.nodes, "fuzz", ins, outs, b.inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 10

    samples = c.int(1, 4)
    q = b.rng.integers(-140, 141 if dt == "int8" else 270, size=(samples,) + shape) - (0 if dt == "int8" else 5)
    frac = b.rng.choice([0.0, 0.5, 0.25, -0.5], size=q.shape)   # exact ties for QuantizeLinear's rounding
    xf = ((q - zp + frac) * s_in).astype(np.float32)
    cols = c.int(1, 8)
    rows = c.int(1, 8)
    batch = c.int(1, 3)
    mem_bits = c.choice([64, 32])
    abuf = c.choice([0, 0, 0, 16, 64, 256])
    overlay = c.choice(list(overlays)) if overlays else None
    case = Case(model, xf, b.pow2, b.ort_exact, rows, cols, batch, mem_bits, abuf, b.desc, list(c.log))
    return on_overlay(case, overlay) if overlay else case


def on_overlay(case: Case, name: str) -> Case:
    """`case` on the fixed accelerator OVERLAYS[name]."""
    cfg = OVERLAYS[name].cfg
    return replace(case, rows=cfg.rows, cols=cfg.cols, mem_bits=cfg.mem_bits, abuf_words=cfg.abuf_words,
                   overlay=name)


def case_from_seed(seed: int, overlays=()) -> Case:
    return generate(RngChooser(seed), overlays)


_OVERLAY_FOLDERS: dict = {}


def overlay_folder(name: str):
    """OVERLAYS[name] rendered by `tony hw` (once per process, in a temporary folder) and read back
    with its checks, as `tony compile --hw` reads it."""
    import atexit

    from ..hw import open_overlay, render_overlay

    if name not in _OVERLAY_FOLDERS:
        tmp = Path(tempfile.mkdtemp(prefix="tony-fuzz-hw-"))
        atexit.register(shutil.rmtree, tmp, True)
        render_overlay(OVERLAYS[name], tmp / name)
        _OVERLAY_FOLDERS[name] = open_overlay(tmp / name)
    return _OVERLAY_FOLDERS[name]


# ---- running the engines ------------------------------------------------------------------------

@dataclass
class Outcome:
    status: dict = field(default_factory=dict)   # engine -> "ok" | "refused: ..." | "skipped: ..."
    failures: list = field(default_factory=list)  # (engine, kind, message)
    seconds: dict = field(default_factory=dict)  # engine -> wall seconds it took

    def signature(self) -> set:
        return {(e, k) for e, k, _ in self.failures}


def _fail(out: Outcome, engine: str, kind: str, msg: str):
    out.failures.append((engine, kind, msg))
    out.status[engine] = f"FAIL {kind}: {msg}"


def _exc(e: BaseException) -> str:
    tb = traceback.extract_tb(e.__traceback__)
    where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
    return f"{type(e).__name__}: {e}{where}".replace("\n", " ")[:400]


def _config(case: Case):
    from ..accel.program import AccelConfig

    if case.overlay:
        return OVERLAYS[case.overlay].cfg
    return AccelConfig(case.rows, case.cols, mem_bits=case.mem_bits, abuf_words=case.abuf_words)


def run_case(case: Case, engines=("ref", "ort", "model"), workdir: Path | None = None) -> Outcome:
    """Run `case` through `engines`; every engine is compared with the reference."""
    from ..api import load_ir, normalize_inputs, restack
    from ..errors import TonyError
    from ..ref import execute

    out = Outcome()
    t0 = time.perf_counter()
    try:
        g = load_ir(case.model, requant=case.requant)
        feeds, stacked = normalize_inputs(g, case.x)
        env = execute(g, feeds, keep_all=True)
        ref_out = restack(g, env, stacked)
    except TonyError as e:
        out.status["ref"] = f"refused: {e}"
        # the generator makes only graphs within the contract; a refusal of one is a defect
        _fail(out, "ref", "refused", str(e))
        return out
    except Exception as e:  # noqa: BLE001 - any other exception is a defect
        _fail(out, "ref", "crash", _exc(e))
        return out
    out.status["ref"] = "ok"
    out.seconds["ref"] = time.perf_counter() - t0

    def timed(engine, run, *args):
        t = time.perf_counter()
        run(*args)
        out.seconds[engine] = time.perf_counter() - t

    if "ort" in engines:
        if not case.ort_exact:
            out.status["ort"] = "skipped: not exact by contract (non-pow2 scale or average-pool area)"
        else:
            timed("ort", _run_ort, case, ref_out, out)
    if "model" in engines:
        timed("model", _run_model, case, g, env, out)
    if "hls" in engines:
        timed("hls", _run_backend, case, g, feeds, env, out, "hls", workdir)
    if "rtl" in engines:
        timed("rtl", _run_backend, case, g, feeds, env, out, "rtl", workdir)
    return out


def _run_ort(case: Case, ref_out, out: Outcome):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    try:
        sess = ort.InferenceSession(case.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        res = [sess.run(None, {"input": xi}) for xi in case.x]
    except Exception as e:  # noqa: BLE001 - the generator's graph must run in onnxruntime
        _fail(out, "ort", "error", _exc(e))
        return
    for k, want in enumerate(ref_out):
        got = np.stack([r[k] for r in res]).reshape(want.shape)
        if got.dtype != want.dtype or not np.array_equal(got, want):
            bad = int((got != want).sum()) if got.shape == want.shape else -1
            _fail(out, "ort", "mismatch", f"output {k}: {bad} of {want.size} values differ from the reference")
            return
    out.status["ort"] = "ok"


def _run_model(case: Case, g, env, out: Outcome):
    from ..accel import model as am
    from ..accel.compiler import compile_program
    from ..accel.layout import input_beats, read_outputs
    from ..errors import TonyError
    from ..ir import bounds

    cfg = _config(case)
    try:
        bounds.check_overflow(g, cfg.acc_bits)
        prog = compile_program(g, cfg, batch=case.batch)
    except TonyError as e:
        out.status["model"] = f"refused: {e}"
        return
    except Exception as e:  # noqa: BLE001
        _fail(out, "model", "crash", _exc(e))
        return
    try:
        am.cycles(prog)
        n = case.x.shape[0]
        compared = 0
        for s in range(0, n, case.batch):
            feeds = {}
            for name in prog.inputs:
                v = env[name][s:s + case.batch]
                if v.shape[0] < case.batch:
                    v = np.concatenate([v, np.zeros((case.batch - v.shape[0],) + v.shape[1:], v.dtype)])
                feeds[name] = v
            ext = am.run(prog, input_beats(prog, feeds))
            for name, y in read_outputs(prog, ext).items():
                want = env[name][s:s + case.batch]
                if not np.array_equal(y[:want.shape[0]], want):
                    _fail(out, "model", "mismatch",
                          f"{name} run {s // case.batch}: {int((y[:want.shape[0]] != want).sum())} values differ")
                    return
                compared += want.size
        if not compared:
            _fail(out, "model", "mismatch", "no device output compared")
            return
    except Exception as e:  # noqa: BLE001
        _fail(out, "model", "crash", _exc(e))
        return
    out.status["model"] = "ok"


def _run_backend(case: Case, g, feeds, env, out: Outcome, engine: str, workdir):
    from ..errors import TonyError

    tmp = Path(tempfile.mkdtemp(prefix=f"fuzz_{engine}_", dir=workdir))
    d = tmp / "build"
    try:
        try:
            if engine == "hls":
                from ..hls.backend import HlsConfig, compile_hls

                compile_hls(g, d, config=HlsConfig(rows=case.rows, cols=case.cols), feeds=feeds, source=case.model)
            else:
                from ..compiler import compile_accel

                hw = overlay_folder(case.overlay) if case.overlay else None
                compile_accel(g, d, _config(case), feeds, batch=case.batch, source=case.model, hw=hw)
        except TonyError as e:
            out.status[engine] = f"refused: {e}"
            return
        if engine == "hls":
            from ..hls.backend import csim, run_csim

            rep = csim(d)
            if not rep["bit_exact"]:
                _fail(out, engine, "mismatch", f"csim: {rep['mismatches']} mismatches {rep['first_mismatches'][:2]}")
                return
            got = run_csim(d, feeds, graph=g)
            for name, y in zip(g.outputs, got):
                if not np.array_equal(np.asarray(y).reshape(env[name].shape), env[name]):
                    _fail(out, engine, "mismatch", f"run_csim output {name} differs from the reference")
                    return
        else:
            from ..sim.accel import simulate

            rep = simulate(d, progress=False)
            if not rep["bit_exact"]:
                _fail(out, engine, "mismatch", f"{rep['mismatches']} mismatches {rep['first_mismatches'][:2]}")
                return
            if not rep["cycles_match"]:
                _fail(out, engine, "cycles", f"measured {rep['cycles_per_run']} predicted {rep['predicted_cycles']}")
                return
        out.status[engine] = "ok"
    except Exception as e:  # noqa: BLE001
        _fail(out, engine, "crash", _exc(e))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ---- shrinking and regression files -------------------------------------------------------------

def shrink(choices: list, fails, budget: int = 400, log=None, overlays=()) -> list:
    """Greedy shrinking of a choice list: the shortest, smallest list for which `fails(case)` still
    holds (delete runs of choices, set each to its minimum, halve, decrement)."""
    best = generate(ReplayChooser(choices), overlays).choices
    tried = 0

    def better(cand) -> list | None:
        """The candidate's own choice list if it is smaller than the best (shortlex) and still fails."""
        nonlocal tried
        try:
            case = generate(ReplayChooser(cand), overlays)
        except Exception:  # noqa: BLE001 - an invalid shrink
            return None
        if (len(case.choices), case.choices) >= (len(best), best):
            return None
        tried += 1
        return case.choices if fails(case) else None

    improved = True
    while improved and tried < budget:
        improved = False
        for size in (8, 4, 2, 1):
            i = len(best) - size
            while i >= 0 and tried < budget:
                got = better(best[:i] + best[i + size:])
                if got is not None:
                    best, improved = got, True
                i -= size
        i = 0
        while i < len(best) and tried < budget:
            for v in (0, best[i] // 2, best[i] - 1):
                if i < len(best) and 0 <= v < best[i]:
                    got = better(best[:i] + [v] + best[i + 1:])
                    if got is not None:
                        best, improved = got, True
                        break
            i += 1
        if log:
            log(f"shrink: {len(best)} choices after {tried} tries")
    return best


def save_regression(case: Case, folder: Path, name: str, engines, note: str) -> Path:
    """`name`.onnx, `name`.npy (inputs) and `name`.json (engines, array, batch, what failed)."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(case.model, folder / f"{name}.onnx")
    np.save(folder / f"{name}.npy", case.x)
    meta = {"engines": list(engines), "pow2": case.pow2, "ort_exact": case.ort_exact, "rows": case.rows,
            "cols": case.cols, "batch": case.batch, "mem_bits": case.mem_bits, "abuf_words": case.abuf_words,
            "overlay": case.overlay, "graph": case.desc, "failure": note, "choices": case.choices}
    (folder / f"{name}.json").write_text(json.dumps(meta, indent=1) + "\n")
    return folder / f"{name}.onnx"


def open_defects(folder) -> dict:
    """failure message -> regression name, for the kept failures whose defect is still open."""
    out = {}
    for f in sorted(Path(folder).glob("*.json")) if folder else []:
        meta = json.loads(f.read_text())
        if meta.get("open_defect"):
            out[meta["failure"]] = f.stem
    return out


def load_regression(path: Path) -> tuple[Case, list]:
    path = Path(path)
    meta = json.loads(path.with_suffix(".json").read_text())
    case = Case(onnx.load(str(path)), np.load(path.with_suffix(".npy")), meta["pow2"], meta["ort_exact"],
                meta["rows"], meta["cols"], meta["batch"], meta["mem_bits"], meta["abuf_words"], meta["graph"],
                overlay=meta.get("overlay"))
    return case, meta["engines"]


# ---- the command --------------------------------------------------------------------------------

def fuzz(n: int, seed: int, engines, *, regressions: Path | None = None, log=print, stop_after: int = 5,
         workdir: Path | None = None, overlays=()) -> dict:
    """Run graphs seed .. seed+n-1 (each on one of `overlays` if given); returns counts and seconds
    per engine and the failures (shrunk, saved)."""
    counts = {e: {"ok": 0, "refused": 0, "skipped": 0, "failed": 0} for e in engines}
    seconds = {e: 0.0 for e in engines}
    per_overlay: dict[str, dict] = {}
    refusals: dict[str, int] = {}
    failures, known = [], open_defects(regressions)
    t0 = time.perf_counter()
    for i in range(n):
        s = seed + i
        case = case_from_seed(s, overlays)
        res = run_case(case, engines, workdir)
        for e, t in res.seconds.items():
            seconds[e] += t
        if case.overlay:
            ov = per_overlay.setdefault(case.overlay, {"graphs": 0, "rtl ok": 0, "rtl seconds": 0.0})
            ov["graphs"] += 1
            ov["rtl ok"] += res.status.get("rtl") == "ok"
            ov["rtl seconds"] += res.seconds.get("rtl", 0.0)
        for e in engines:
            st = res.status.get(e, "skipped: the reference failed")
            key = "ok" if st == "ok" else st.split(":")[0].split()[0].lower()
            key = {"fail": "failed"}.get(key, key)
            counts[e][key] = counts[e].get(key, 0) + 1
            if key == "refused":
                reason = st.split(": ", 1)[1]
                reason = reason.split(": ", 1)[-1][:70]
                refusals[f"{e}: {reason}"] = refusals.get(f"{e}: {reason}", 0) + 1
        if res.failures and all(m in known for _, _, m in res.failures):
            log(f"seed {s}: known open defect {known[res.failures[0][2]]}")
            counts.setdefault("known", {}).setdefault(known[res.failures[0][2]], 0)
            counts["known"][known[res.failures[0][2]]] += 1
        elif res.failures:
            log(f"seed {s}: FAIL {res.failures} ({case.summary()})")
            sig = res.signature()
            small = shrink(case.choices, lambda c: sig <= run_case(c, [e for e, _ in sig], workdir).signature(),
                           log=log, overlays=overlays)
            mini = generate(ReplayChooser(small), overlays)
            name = f"seed{s}_" + "_".join(f"{e}-{k}" for e, k in sorted(sig))
            path = None
            if regressions is not None:
                path = save_regression(mini, regressions, name, sorted({e for e, _ in sig} | {"ref"}),
                                       "; ".join(m for _, _, m in res.failures))
            log(f"  shrunk to {len(mini.model.graph.node)} nodes: {mini.summary()}" + (f" -> {path}" if path else ""))
            failures.append({"seed": s, "failures": res.failures, "shrunk": mini.summary(), "file": str(path)})
            if len(failures) >= stop_after:
                log(f"stopping after {len(failures)} failures")
                break
        if (i + 1) % 100 == 0:
            log(f"{i + 1} graphs in {time.perf_counter() - t0:.0f} s: {counts}")
    return {"graphs": i + 1 if n else 0, "seed": seed, "counts": counts, "refusals": refusals, "failures": failures,
            "seconds": time.perf_counter() - t0, "engine_seconds": seconds, "overlays": per_overlay}


def _version() -> str:
    """Tony's version and, in a git checkout, its commit (what a documented run ran on)."""
    import subprocess

    from .. import __version__

    try:
        head = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=Path(__file__).parent,
                              capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=Path(__file__).parent,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return __version__
    if head.returncode:
        return __version__
    return f"{__version__}, commit {head.stdout.strip()}{' with local changes' if dirty.stdout.strip() else ''}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tony.tools.fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("-n", type=int, default=100, help="graphs (default 100)")
    p.add_argument("--seed", type=int, default=1, help="graph i uses seed + i (default 1)")
    p.add_argument("--engines", default="ref,ort,model", help=f"comma-separated, of {','.join(ENGINES)}")
    p.add_argument("--regressions", default="tests/regressions", help="where shrunk failures are kept")
    p.add_argument("--overlays", default="auto", metavar="auto|all|none|NAME,...",
                   help="run each graph on one of these fixed accelerators (" + ", ".join(OVERLAYS) + "); auto "
                        "(default): all of them when rtl is among the engines (one Verilator build each), "
                        "else a random accelerator per graph")
    p.add_argument("--show", type=int, default=None, metavar="SEED", help="print one graph's description and exit")
    a = p.parse_args(argv)
    engines = [e for e in a.engines.split(",") if e]
    if a.overlays == "auto":
        overlays = list(OVERLAYS) if "rtl" in engines else []
    elif a.overlays in ("all", "none"):
        overlays = list(OVERLAYS) if a.overlays == "all" else []
    else:
        overlays = [o for o in a.overlays.split(",") if o]
        unknown = [o for o in overlays if o not in OVERLAYS]
        if unknown or not overlays:
            print(f"fuzz: error: --overlays {a.overlays!r}: choose auto, all, none or names from "
                  f"{','.join(OVERLAYS)}", file=sys.stderr)
            return 2
    if a.show is not None:
        case = case_from_seed(a.show, overlays)
        print(case.summary())
        print(onnx.helper.printable_graph(case.model.graph))
        return 0
    bad = [e for e in engines if e not in ENGINES]
    if bad or a.n < 0:
        print(f"fuzz: error: unknown engine(s) {bad}; choose from {','.join(ENGINES)}", file=sys.stderr)
        return 2
    if "ref" not in engines:
        engines.insert(0, "ref")
    print(f"fuzz: {a.n} graphs, seed {a.seed}, engines {','.join(engines)}, "
          + (f"overlays {','.join(overlays)}" if overlays else "a random accelerator per graph")
          + f" (tony {_version()})")
    rep = fuzz(a.n, a.seed, engines, regressions=Path(a.regressions), overlays=overlays)
    for e, c in rep["counts"].items():
        t = rep["engine_seconds"].get(e)
        per = f"; {t / max(c.get('ok', 0) + c.get('failed', 0), 1):.2f} s per graph run" if t else ""
        print(f"  {e:6s} " + ", ".join(f"{k} {v}" for k, v in c.items()) + per)
    for name, ov in rep["overlays"].items() if "rtl" in engines else ():
        print(f"  {name}: {ov['graphs']} graphs, rtl ok {ov['rtl ok']}, "
              f"rtl {ov['rtl seconds'] / max(ov['rtl ok'], 1):.2f} s per graph run")
    for r, k in sorted(rep["refusals"].items(), key=lambda t: -t[1])[:12]:
        print(f"    refused {k:5d}x {r}")
    print(f"{rep['graphs']} graphs in {rep['seconds']:.0f} s, {len(rep['failures'])} failing")
    return 1 if rep["failures"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
