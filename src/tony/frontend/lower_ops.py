"""Lowering handlers for the ops beyond the accelerator's core set (docs/arithmetic.md; which of them
run on the host is docs/partition.md's placement): element-wise Mul/Sub, tables (Sigmoid,
HardSwish, Tanh, unfolded BatchNormalization; HardSigmoid too unless a depthwise Conv equals its
table; a table of activations runs on the device as a lookup), float islands (Softmax, LRN), the structural ops (Transpose, Pad, Slice,
Split, Gather, Resize), ReduceMean, MatMul of two activations, and 1-D Conv/pools as 2-D with
H = 1. Mixed into tony.frontend.lower's _Lowering: one `op_<OnnxType>` handler per ONNX op.
"""
from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx

from .. import ir
from ..errors import UnsupportedError, node_where
from ..ir.types import Requant
from .requant import rescale


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _s(v):
    return v.decode() if isinstance(v, bytes) else v


def _hard_sigmoid(x, alpha, beta):
    return np.clip(alpha * x + beta, np.float32(0), np.float32(1))


def _f32(v):
    return np.float32(v)


# f(x) for the tables (x: the dequantized float32 inputs): the piecewise-linear functions in
# float32 as ONNX defines them (and onnxruntime computes them); the transcendental ones in float64
TABLE_FUNCTIONS = {
    "Sigmoid": lambda x, a: 1.0 / (1.0 + np.exp(-x.astype(np.float64))),
    "Tanh": lambda x, a: np.tanh(x.astype(np.float64)),
    "HardSigmoid": lambda x, a: _hard_sigmoid(x, _f32(a.get("alpha", 0.2)), _f32(a.get("beta", 0.5))),
    "HardSwish": lambda x, a: x * _hard_sigmoid(x, _f32(1.0 / 6.0), _f32(0.5)),
    "LeakyRelu": lambda x, a: np.where(x < 0, _f32(a.get("alpha", 0.01)) * x, x),
    "Elu": lambda x, a: np.where(x < 0, a.get("alpha", 1.0) * (np.exp(x.astype(np.float64)) - 1.0), x),
}


def quantize_exact(f: np.ndarray, scale: float, zp: int, dt: ir.DType) -> np.ndarray:
    """round_half_even(f / scale) + zp, saturated, computed in float64 (a table's entries)."""
    q = np.rint(np.asarray(f, np.float64) / float(scale)) + zp
    return np.clip(q, dt.min, dt.max).astype(np.int64)


def table_inputs(dt: ir.DType, scale: float, zp: int) -> tuple[np.ndarray, np.ndarray]:
    """Every integer of `dt` and its dequantized float32 value."""
    q = np.arange(dt.min, dt.max + 1, dtype=np.int64)
    return q, (q - zp).astype(np.float32) * np.float32(scale)


def fit_affine(d: np.ndarray, tab: np.ndarray, slope: float, offset: float, lo: int, hi: int, zp: int,
               rounding) -> tuple[int, int, int, int] | None:
    """(w, b, mult, shift) with clamp(round_shift((d * w + b) * mult, shift) + zp, lo, hi) == tab
    for every input d (the input integers less their zero point), for a table that is
    round(slope * d + offset) + zp clamped; None when no candidate is exact. Candidates: every int8
    weight w of the slope's sign (the offset lands nearer the grid slope / w for some), b the offset
    on that grid (rounded, and its neighbours), mult and shift the 31-bit factoring of slope / w (and
    its neighbours); each is checked on every input."""
    from ..ref.arith import requantize
    from .requant import MULT_BITS

    sign = 1 if slope > 0 else -1
    for k in range(1, 128):
        w = sign * k
        r = slope / w
        m, ex = math.frexp(r)
        mult0, shift = round(m * (1 << MULT_BITS)), MULT_BITS - ex
        b0 = offset / r
        if not (abs(b0) < 2**30 and math.isfinite(b0)):
            return None
        if k > 1 and abs(b0 - round(b0)) * r > 2.0**-8:
            continue    # the offset falls between grid points: not exact near a tie
        for b in (round(b0), math.floor(b0), math.ceil(b0)):
            for mult in (mult0, mult0 - 1, mult0 + 1):
                if not 0 < mult < 1 << 32:
                    continue
                rq = ir.Requant(shift=shift, lo=lo, hi=hi, mult=mult, rounding=rounding, zero_point=zp)
                if np.array_equal(requantize(d * w + b, rq), tab):
                    return w, b, mult, shift
    return None


def nearest_index(n_in: int, n_out: int, scale: float, mode: str, nearest: str, roi=None) -> tuple[int, ...]:
    """ONNX Resize (mode nearest): the source index of every output index along one axis, from
    exact fractions."""
    sc = Fraction(scale) if scale else Fraction(n_out, n_in)
    idx = []
    for o in range(n_out):
        if mode == "asymmetric":
            x = Fraction(o) / sc
        elif mode == "half_pixel":
            x = (Fraction(o) + Fraction(1, 2)) / sc - Fraction(1, 2)
        elif mode == "pytorch_half_pixel":
            x = (Fraction(o) + Fraction(1, 2)) / sc - Fraction(1, 2) if n_out > 1 else Fraction(0)
        elif mode == "align_corners":
            x = Fraction(o * (n_in - 1), n_out - 1) if n_out > 1 else Fraction(0)
        elif mode == "tf_half_pixel_for_nn":
            x = (Fraction(o) + Fraction(1, 2)) / sc
        else:
            raise ValueError(mode)
        if nearest == "floor":
            i = math.floor(x)
        elif nearest == "ceil":
            i = math.ceil(x)
        elif nearest == "round_prefer_ceil":
            i = math.floor(x + Fraction(1, 2))
        else:  # round_prefer_floor (default)
            i = math.ceil(x - Fraction(1, 2))
        idx.append(min(max(i, 0), n_in - 1))
    return tuple(idx)


class HostLowering:
    """op_* handlers for the host ops; `self` is tony.frontend.lower._Lowering."""

    # ---- helpers ----------------------------------------------------------------------------------
    def const_int(self, name, node, what):
        """An integer initializer (shape, axes, pads, ...) as a Python list."""
        if name not in self.inits:
            raise UnsupportedError(f"{what} must be a constant", where=node_where(node))
        return [int(v) for v in np.asarray(self.inits[name]).reshape(-1)]

    def operand(self, name, node):
        """An activation, or a per-tensor quantized constant (added to the graph's constants)."""
        if name in self.alias:
            return self.tensors[self.alias[name]]
        if name in self.const_q:
            arr, scale, zp, _, dt = self.const_q[name]
            if np.size(scale) != 1 or np.size(zp) != 1:
                raise UnsupportedError(f"constant '{name}' is quantized per axis; per tensor is needed here",
                                       where=node_where(node))
            cname = f"{name}.q"
            if cname not in self.tensors:
                self.add_const(cname, arr, dt, float(np.ravel(scale)[0]), int(np.ravel(zp)[0]))
            return self.tensors[cname]
        return self.act(name, node)

    def quantized_out(self, node, act=False, index=0):
        q, bounds, fname = self.output_of(node, fuse_activation=act) if index == 0 else self._output_k(node, index)
        return (*self.out_tensor(q, fname, node), bounds)

    def _output_k(self, node, k):
        out = node.output[k]
        qs = [c for c in self.consumers.get(out, []) if c.op_type == "QuantizeLinear"]
        if not qs:
            return None, None, out
        for other in qs[1:]:
            self.done.add(id(other))
            self.alias_int(other.output[0], qs[0].output[0])
        self.done.add(id(qs[0]))
        return qs[0], None, out

    def structural(self, node, x: ir.Tensor, make, index=0):
        """An op that moves integers without changing them: its output keeps x's scale; a
        following Quantize with other parameters becomes a Clamp after it."""
        fname = node.output[index]
        q, _, _ = self.output_of(node, fuse_activation=False) if index == 0 else self._output_k(node, index)
        shape = self.shapes.get(fname)
        if shape is None:
            raise UnsupportedError("output shape could not be inferred", where=node_where(node))
        if q is None:
            t = self.add_tensor(ir.Tensor(fname, shape, x.dtype, x.scale, x.zero_point))
            self.alias[fname] = t
            self.ops.append(make((x.name,), (t,)))
            return
        scale, zp, dt, _ = self.qparams(q)
        s, z = float(np.ravel(scale)[0]), int(np.ravel(zp)[0])
        if s == x.scale and z == x.zero_point and dt == x.dtype:
            t = self.add_tensor(ir.Tensor(q.output[0], shape, dt, s, z))
            self.ops.append(make((x.name,), (t,)))
            return
        mid = self.add_tensor(ir.Tensor(f"{q.output[0]}.moved", shape, x.dtype, x.scale, x.zero_point))
        self.ops.append(make((x.name,), (mid,)))
        t, s, z, dt = self.out_tensor(q, fname, node)
        rq = self.requant(x.scale / s, s, z, dt, None, node_where(node))
        self.ops.append(ir.Clamp((mid,), (t.name,), origin=node.name, requant=rq))

    def no_batch_axis(self, node, axes, rank):
        axes = [a % rank for a in axes]
        if 0 in axes:
            raise UnsupportedError("the op works along axis 0, which holds the batch (samples are stacked there)",
                                   where=node_where(node))
        return axes

    # ---- element-wise -------------------------------------------------------------------------
    def channel_const(self, x: ir.Tensor, c: ir.Tensor):
        """The integers of constant `c` per channel of activation x [N, C, H, W] when c broadcasts
        over x along the channels only (a scalar, [C, 1, 1], [1, C, 1, 1]); else None."""
        if len(x.shape) != 4 or c.name not in self.constants or x.name in self.constants:
            return None
        arr = self.constants[c.name]
        if arr.ndim > 4:
            return None
        a4 = arr.reshape((1,) * (4 - arr.ndim) + arr.shape)
        if a4.shape[0] != 1 or a4.shape[2:] != (1, 1) or a4.shape[1] not in (1, x.shape[1]):
            return None
        return np.broadcast_to(a4.reshape(-1), (x.shape[1],)).astype(np.int64)

    def depthwise(self, node, x: ir.Tensor, w: np.ndarray, wt: ir.Tensor, bias, rq, out: str):
        """A per-channel product (and offset) as a 1x1 depthwise Conv: the same integers (acc =
        (x - x_zp) * (w - w_zp) + bias, then the same requant), and an op the accelerator runs."""
        c = x.shape[1]
        wname = self.add_const(f"{out}.weight", w.reshape(c, 1, 1, 1), wt.dtype, wt.scale, wt.zero_point)
        ins = [x.name, wname]
        if bias is not None:
            ins.append(self.add_const(f"{out}.bias", bias, ir.INT32))
        self.ops.append(ir.Conv(tuple(ins), (out,), origin=node.name, group=c, requant=rq))

    def _drop_unused_const(self, t: ir.Tensor):
        if t.name.endswith(".q") and t.name in self.constants:
            self.constants.pop(t.name)
            self.tensors.pop(t.name)

    def op_Mul(self, node):
        a, b = self.operand(node.input[0], node), self.operand(node.input[1], node)
        for x, c in ((a, b), (b, a)):
            vec = self.channel_const(x, c)
            if vec is not None and self.shapes.get(node.output[0]) == x.shape:
                t, s, z, dt, bounds = self.quantized_out(node, act=True)
                rq = self.requant(x.scale * c.scale / s, s, z, dt, bounds, node_where(node), "Mul rescale")
                self.depthwise(node, x, vec, c, None, rq, t.name)
                self._drop_unused_const(c)
                return
        t, s, z, dt, bounds = self.quantized_out(node, act=True)
        rq = self.requant(a.scale * b.scale / s, s, z, dt, bounds, node_where(node), "Mul rescale")
        self.ops.append(ir.Mul((a.name, b.name), (t.name,), origin=node.name, requant=rq))

    def op_Div(self, node):
        """An activation divided by a positive scalar constant (float, or quantized as
        onnxruntime's quantize_static leaves the attention scores' 1/sqrt(d_head) when a Q/DQ pair
        sits between the MatMul and the Div): a requantization by x_scale / (c * y_scale)."""
        x = self.act(node.input[0], node)
        name = node.input[1]
        if name in self.const_q:
            arr, scale, zp, _, _ = self.const_q[name]
            c = (np.asarray(arr, np.float64) - np.asarray(zp, np.float64)) * np.asarray(scale, np.float64)
        elif name in self.inits:
            c = np.asarray(self.inits[name], np.float64)
        else:
            c = None
        if c is None or c.size != 1 or not float(c.reshape(-1)[0]) > 0:
            raise UnsupportedError("Div is supported for an activation divided by a positive scalar constant",
                                   where=node_where(node))
        t, s, z, dt, bounds = self.quantized_out(node)
        rq = self.requant(x.scale / (float(c.reshape(-1)[0]) * s), s, z, dt, bounds, node_where(node), "Div rescale")
        self.ops.append(ir.Clamp((x.name,), (t.name,), origin=node.name, requant=rq))

    def op_Sub(self, node):
        self.op_Add(node, subtract=True)

    def channel_offset(self, node, a: ir.Tensor, b: ir.Tensor, subtract: bool) -> bool:
        """Add (or Sub) of a per-channel constant to a 4-D activation in pow2 mode as a 1x1
        depthwise Conv: weight 2^sa, bias (c - c_zp) << sb (negated for x - c): the Add's integers.
        Returns False when it does not apply."""
        for x, c, sign in ((a, b, -1 if subtract else 1), (b, a, None if subtract else 1)):
            vec = self.channel_const(x, c) if sign is not None else None
            if vec is None or x.exp is None or c.exp is None or self.shapes.get(node.output[0]) != x.shape:
                continue
            e = min(x.exp, c.exp)
            sx, sc = x.exp - e, c.exp - e
            bias = sign * ((vec - c.zero_point) << sc)
            if sx > 6 or np.abs(bias).max(initial=0) >= 2**31:
                continue
            t, s, z, dt, bounds = self.quantized_out(node, act=True)
            rq = self.requant(2.0**e / s, s, z, dt, bounds, node_where(node))
            w = np.full(x.shape[1], 1 << sx, np.int64)
            self.depthwise(node, x, w, ir.Tensor("w", (1,), ir.INT8, 2.0**-sx), bias, rq, t.name)
            self._drop_unused_const(c)
            return True
        return False

    def op_Sum(self, node):
        if len(node.input) != 2:
            raise UnsupportedError(f"Sum of {len(node.input)} inputs; two are supported", where=node_where(node),
                                   hint="write it as a chain of Add")
        self.op_Add(node)

    def table_op(self, node, f, channel_axis=None):
        """y = table[x]: f(x_float64) -> float64 (per channel: f(x, c))."""
        x = self.act(node.input[0], node)
        if x.dtype.bits > 16:
            raise UnsupportedError(f"input is {x.dtype}; a table needs at most 16 bits", where=node_where(node))
        t, s, z, dt, _ = self.quantized_out(node)
        _, xf = table_inputs(x.dtype, x.scale, x.zero_point)
        if channel_axis is None:
            tab = quantize_exact(f(xf), s, z, dt)
        else:
            tab = np.stack([quantize_exact(f(xf, c), s, z, dt) for c in range(x.shape[channel_axis])])
        cname = self.add_const(f"{t.name}.table", tab, dt, s, z)
        self.ops.append(ir.Table((x.name, cname), (t.name,), origin=node.name, function=node.op_type,
                                 channel_axis=channel_axis))

    def _table(self, node):
        a = _attrs(node)
        fn = TABLE_FUNCTIONS[node.op_type]
        if node.op_type == "HardSigmoid" and self.affine_table(node, lambda x: fn(x, a),
                                                               float(a.get("alpha", 0.2)), float(a.get("beta", 0.5))):
            return
        self.table_op(node, lambda x: fn(x, a))

    def affine_table(self, node, f, alpha: float, beta: float) -> bool:
        """HardSigmoid, clamp(alpha * x + beta, 0, 1), as a 1x1 depthwise Conv when one equals its
        table for every input integer (docs/arithmetic.md, 'HardSigmoid on the array'): weight
        w, bias b, one multiplier and shift, the clamp at the table's ends. Returns False
        (the op stays a table) when the activation is not [N, C, H, W] or no such Conv is exact."""
        x = self.act(node.input[0], node)
        if len(x.shape) != 4 or x.dtype.bits > 16 or alpha == 0:
            return False
        t, s, z, dt, _ = self.quantized_out(node)
        q, xf = table_inputs(x.dtype, x.scale, x.zero_point)
        tab = quantize_exact(f(xf), s, z, dt)
        lo, hi = int(tab.min()), int(tab.max())
        found = fit_affine(q - x.zero_point, tab, alpha * x.scale / s, beta / s, lo, hi, z, self.rounding)
        if found is None:
            return False
        w, bias, mult, shift = found
        rq = ir.Requant(shift=shift, lo=lo, hi=hi, mult=mult, rounding=self.rounding, zero_point=z)
        c = x.shape[1]
        wname = self.add_const(f"{t.name}.weight", np.full((c, 1, 1, 1), w), ir.INT8, 1.0)
        bname = self.add_const(f"{t.name}.bias", np.full(c, bias), ir.INT32)
        self.ops.append(ir.Conv((x.name, wname, bname), (t.name,), origin=node.name, op_type=node.op_type,
                                group=c, requant=rq))
        return True

    op_Sigmoid = op_Tanh = op_HardSigmoid = op_HardSwish = op_LeakyRelu = op_Elu = _table

    def op_BatchNormalization(self, node):
        """Unfolded (not after a Conv): one table per channel, y = f_c(x) exactly."""
        if len(node.output) > 1 and any(node.output[1:]):
            raise UnsupportedError("BatchNormalization in training mode", where=node_where(node))
        self.act(node.input[0], node)  # the input must be a quantized activation
        p = []
        for name in node.input[1:5]:
            if name not in self.inits:
                raise UnsupportedError("BatchNormalization parameters must be constants", where=node_where(node))
            p.append(np.asarray(self.inits[name], np.float64).reshape(-1))
        gamma, beta, mean, var = (v.astype(np.float32) for v in p)
        eps = np.float32(_attrs(node).get("epsilon", 1e-5))
        # float32 in onnxruntime's order: 1/sqrt(var + eps) * scale, bias - mean * that, x * a + b
        a = (np.float32(1) / np.sqrt(var + eps)) * gamma
        b = beta - mean * a
        self.table_op(node, lambda xf, c: xf * a[c] + b[c], channel_axis=1)

    def float_island(self, node, params):
        x = self.act(node.input[0], node)
        q, _, fname = self.output_of(node, fuse_activation=False)
        if q is None:
            if fname not in self.graph_outputs:
                raise UnsupportedError(f"output '{fname}' is not quantized and is not a graph output",
                                       where=node_where(node), hint="quantize the model (`tony quantize`)")
            t = self.tensors[self.add_tensor(ir.Tensor(fname, self.shapes[fname], ir.FLOAT32))]
        else:
            t, _, _, _ = self.out_tensor(q, fname, node)
        self.ops.append(ir.FloatIsland((x.name,), (t.name,), origin=node.name, function=node.op_type,
                                       params=tuple(params)))

    def op_Softmax(self, node):
        x = self.act(node.input[0], node)
        rank = len(x.shape)
        opset = next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 13)
        axis = _attrs(node).get("axis", -1 if opset >= 13 else 1) % rank
        if opset < 13 and axis != rank - 1:
            raise UnsupportedError("Softmax before opset 13 flattens from its axis; only the last axis is supported",
                                   where=node_where(node), hint="upgrade the model to opset 13")
        self.no_batch_axis(node, [axis], rank)
        if not self.integer_softmax(node, x, axis):
            self.float_island(node, [("axis", axis)])

    def op_LRN(self, node):
        a = _attrs(node)
        if "size" not in a:
            raise UnsupportedError("LRN needs its size attribute", where=node_where(node))
        self.float_island(node, [("size", int(a["size"])), ("alpha", float(a.get("alpha", 1e-4))),
                                 ("beta", float(a.get("beta", 0.75))), ("bias", float(a.get("bias", 1.0)))])

    # ---- structural -----------------------------------------------------------------------------
    def op_Transpose(self, node):
        x = self.act(node.input[0], node)
        perm = tuple(int(p) for p in _attrs(node).get("perm", range(len(x.shape))[::-1]))
        if perm[0] != 0:
            raise UnsupportedError(f"Transpose {list(perm)} moves the batch axis", where=node_where(node))
        self.structural(node, x, lambda i, o: ir.Transpose(i, o, origin=node.name, perm=perm))

    def op_Pad(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        rank = len(x.shape)
        if len(node.input) > 1 and node.input[1]:
            pads = self.const_int(node.input[1], node, "pads")
        else:
            pads = [int(v) for v in a.get("pads", [0] * 2 * rank)]
        if len(node.input) > 3 and node.input[3]:
            axes = [v % rank for v in self.const_int(node.input[3], node, "axes")]
            full = [0] * 2 * rank
            for k, ax in enumerate(axes):
                full[ax], full[ax + rank] = pads[k], pads[k + len(axes)]
            pads = full
        if pads[0] or pads[rank] or min(pads) < 0:
            raise UnsupportedError("Pad of the batch axis or with negative pads is not supported",
                                   where=node_where(node))
        mode = _s(a.get("mode", "constant"))
        value = 0.0
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] in self.inits:
                value = float(np.ravel(self.inits[node.input[2]])[0])
            elif node.input[2] in self.const_q:
                arr, sc, zp, _, _ = self.const_q[node.input[2]]
                value = float((np.ravel(arr)[0] - np.ravel(zp)[0]) * np.ravel(sc)[0])
            else:
                raise UnsupportedError("the pad value must be a constant", where=node_where(node))
        q = int(np.rint(np.float32(value) / np.float32(x.scale))) + x.zero_point
        if mode == "constant" and not (x.dtype.min <= q <= x.dtype.max):
            raise UnsupportedError(f"pad value {value} is outside the input's range", where=node_where(node))
        self.structural(node, x, lambda i, o: ir.Pad(i, o, origin=node.name, pads=tuple(pads), mode=mode, value=q))

    def _slices(self, node, x, starts, ends, axes, steps):
        rank = len(x.shape)
        axes = self.no_batch_axis(node, axes, rank)
        out = []
        for ax, st, en, sp in zip(axes, starts, ends, steps):
            dim = x.shape[ax]
            if sp == 0:
                raise UnsupportedError("Slice step 0", where=node_where(node))
            st = st + dim if st < 0 else st
            en = en + dim if en < 0 else en
            if sp > 0:
                st, en = min(max(st, 0), dim), min(max(en, 0), dim)
            else:
                st, en = min(max(st, 0), dim - 1), min(max(en, -1), dim - 1)
            out.append((st, None if en < 0 else en, sp))
        return tuple(axes), tuple(out)

    def op_Slice(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        if len(node.input) > 1:
            starts = self.const_int(node.input[1], node, "starts")
            ends = self.const_int(node.input[2], node, "ends")
            axes = self.const_int(node.input[3], node, "axes") if len(node.input) > 3 and node.input[3] \
                else list(range(len(starts)))
            steps = self.const_int(node.input[4], node, "steps") if len(node.input) > 4 and node.input[4] \
                else [1] * len(starts)
        else:
            starts, ends = list(a["starts"]), list(a["ends"])
            axes = list(a.get("axes", range(len(starts))))
            steps = [1] * len(starts)
        axes, sl = self._slices(node, x, starts, ends, axes, steps)
        self.structural(node, x, lambda i, o: ir.Slice(i, o, origin=node.name, axes=axes, slices=sl))

    def op_Split(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        rank = len(x.shape)
        axis = self.no_batch_axis(node, [a.get("axis", 0)], rank)[0]
        n = len(node.output)
        if len(node.input) > 1 and node.input[1]:
            sizes = self.const_int(node.input[1], node, "split")
        elif "split" in a:
            sizes = list(a["split"])
        else:
            dim = x.shape[axis]
            k = -(-dim // a.get("num_outputs", n))
            sizes = [min(k, dim - i * k) for i in range(n)]
        off = 0
        for k, size in enumerate(sizes):
            sl = ((off, off + size, 1),)
            self.structural(node, x, lambda i, o, sl=sl: ir.Slice(i, o, origin=node.name, axes=(axis,), slices=sl),
                            index=k)
            off += size

    def op_Gather(self, node):
        a = _attrs(node)
        data, idx = node.input[0], node.input[1]
        if idx in self.inits and data in self.alias:
            x = self.tensors[self.alias[data]]
            axis = self.no_batch_axis(node, [a.get("axis", 0)], len(x.shape))[0]
            ind = np.asarray(self.inits[idx], np.int64)
            ind = np.where(ind < 0, ind + x.shape[axis], ind)
            self.structural(node, x, lambda i, o: ir.Take(i, o, origin=node.name, axis=axis,
                                                          indices=tuple(int(v) for v in ind.reshape(-1)),
                                                          index_shape=tuple(ind.shape)))
            return
        if data in self.const_q and idx in self.tensors and not self.tensors[idx].dtype.is_float:
            tab = self.operand(data, node)
            axis = a.get("axis", 0) % len(tab.shape)
            fname = node.output[0]
            q, _, _ = self.output_of(node, fuse_activation=False)
            shape = self.shapes.get(fname)
            if q is None:
                out = self.add_tensor(ir.Tensor(fname, shape, tab.dtype, tab.scale, tab.zero_point))
                self.alias[fname] = out
            else:
                out, s, z, dt = self.out_tensor(q, fname, node)
                if (s, z, dt) != (tab.scale, tab.zero_point, tab.dtype):
                    raise UnsupportedError("the Quantize after a table lookup must keep the table's parameters",
                                           where=node_where(node))
                out = out.name
            self.ops.append(ir.Take((tab.name, idx), (out,), origin=node.name, axis=axis, table_input=True))
            return
        raise UnsupportedError("Gather is supported on an activation with constant indices, or from a quantized "
                               "constant table with integer indices", where=node_where(node))

    def op_Resize(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        if _s(a.get("mode", "nearest")) != "nearest":
            raise UnsupportedError(f"Resize mode {_s(a['mode'])}; nearest is supported", where=node_where(node))
        out_shape = self.shapes.get(node.output[0])
        if out_shape is None or any(d <= 0 for d in out_shape):
            raise UnsupportedError("output shape could not be inferred", where=node_where(node))
        if tuple(out_shape[:2]) != tuple(x.shape[:2]):
            raise UnsupportedError("Resize of the batch or channel axis", where=node_where(node))
        scales = None
        if len(node.input) > 2 and node.input[2] and node.input[2] in self.inits \
                and np.size(self.inits[node.input[2]]):
            scales = [float(v) for v in np.ravel(self.inits[node.input[2]])]
            if "axes" in a:  # scales of the listed axes only (opset 18)
                full = [1.0] * len(x.shape)
                for k, ax in enumerate(a["axes"]):
                    full[ax % len(x.shape)] = scales[k]
                scales = full
        mode = _s(a.get("coordinate_transformation_mode", "half_pixel"))
        nearest = _s(a.get("nearest_mode", "round_prefer_floor"))
        if mode not in ("asymmetric", "half_pixel", "pytorch_half_pixel", "align_corners", "tf_half_pixel_for_nn"):
            raise UnsupportedError(f"coordinate_transformation_mode {mode} is not supported", where=node_where(node))
        if nearest not in ("floor", "ceil", "round_prefer_ceil", "round_prefer_floor"):
            raise UnsupportedError(f"nearest_mode {nearest} is not supported", where=node_where(node))
        index = tuple(nearest_index(x.shape[d], out_shape[d], scales[d] if scales else 0.0, mode, nearest)
                      for d in range(2, len(x.shape)))
        self.structural(node, x, lambda i, o: ir.Resize(i, o, origin=node.name, index=index))

    # ---- reductions and products ---------------------------------------------------------------
    def mean_requant(self, count, ratio, s, z, dt, where, what="mean rescale") -> Requant:
        """sum -> mean at the output scale: a shift when count is a power of two, else the reciprocal
        multiplier R = round(2^k / count) in [128, 255] (docs/arithmetic.md, 'Pooling')."""
        if count & (count - 1) == 0:
            return self.requant(ratio / count, s, z, dt, None, where, what)
        kk = math.ceil(math.log2(count)) + 7
        r = round(2.0**kk / count)
        if r > 255:
            kk -= 1
            r = round(2.0**kk / count)
        m, sh = rescale(ratio, self.mode, where=where, what=what)
        if m != 1:
            r, kk = rescale(ratio / count, self.mode, where=where, what=what)
        else:
            kk = kk + sh
        lo, hi = self.clamp_range(s, z, dt, None)
        return Requant(shift=kk, lo=lo, hi=hi, mult=r, rounding=self.rounding, zero_point=z)

    def op_ReduceMean(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        rank = len(x.shape)
        if len(node.input) > 1 and node.input[1]:
            axes = self.const_int(node.input[1], node, "axes")
        else:
            axes = list(a.get("axes", range(rank)))
        if not axes and a.get("noop_with_empty_axes", 0):
            axes = []
        axes = tuple(sorted(self.no_batch_axis(node, axes, rank)))
        t, s, z, dt, _ = self.quantized_out(node)
        count = math.prod(x.shape[i] for i in axes)
        lo, hi = self.clamp_range(s, z, dt, None)
        rq = Requant(shift=0, lo=lo, hi=hi, rounding=self.rounding, zero_point=z)
        num, den = self.exact_ratio(x.scale / s, count)
        self.ops.append(ir.ReduceMean((x.name,), (t.name,), origin=node.name, axes=axes,
                                      keepdims=bool(a.get("keepdims", 1)), requant=rq, num=num, den=den))

    @staticmethod
    def exact_ratio(ratio: float, count: int) -> tuple[int, int]:
        """ratio / count as an exact fraction (num, den) of the float64 ratio."""
        f = Fraction(ratio) / count
        return f.numerator, f.denominator

    def matmul2(self, node):
        """MatMul of two activations; a Div by a constant after it (the attention scores' 1/sqrt(d))
        folds into its rescale."""
        a, b = self.act(node.input[0], node), self.act(node.input[1], node)
        scaled = self.scaled_scores(node)
        div = 1.0
        if scaled is not None:
            self.done.add(id(scaled[0]))
            div = scaled[1]
        t, s, z, dt, bounds = self.quantized_out(scaled[0] if scaled else node, act=True)
        if len(b.shape) < 2 or len(a.shape) < 2 or len(b.shape) > len(a.shape):
            raise UnsupportedError("MatMul of two activations needs both at least 2-D (the batch axis first)",
                                   where=node_where(node))
        fold = self.score_fold_exp(t, a, b, div) if scaled else None
        if fold is not None:   # scores at 2^e / div: the pow2 part here, 1/div in the Softmax's multiplier
            s2 = 2.0**fold
            rq = self.requant(a.scale * b.scale / s2, s2, z, dt, bounds, node_where(node), "MatMul rescale")
            self.tensors[t.name] = replace(t, scale=s2 / div)
            self.score_fold[t.name] = (fold, div)
        else:
            rq = self.requant(a.scale * b.scale / div / s, s, z, dt, bounds, node_where(node), "MatMul rescale")
        self.ops.append(ir.MatMul((a.name, b.name), (t.name,), origin=node.name, requant=rq))

    # ---- 1-D Conv and pools: 2-D with H = 1 ---------------------------------------------------------
    def as_2d(self, node, x: ir.Tensor) -> ir.Tensor:
        """[N, C, L] -> a [N, C, 1, L] view (a Reshape op)."""
        name = f"{x.name}.2d"
        if name not in self.tensors:
            self.add_tensor(ir.Tensor(name, (x.shape[0], x.shape[1], 1, x.shape[2]), x.dtype, x.scale, x.zero_point))
            self.ops.append(ir.Reshape((x.name,), (name,), origin=node.name,
                                       shape=(x.shape[0], x.shape[1], 1, x.shape[2])))
        return self.tensors[name]

    def lower_1d(self, node, op2d) -> None:
        """Run the 2-D handler `op2d` on a node rewritten to 2-D, then view its output as 1-D."""
        x = self.act(node.input[0], node)
        x2 = self.as_2d(node, x)
        a = _attrs(node)
        n2 = onnx.helper.make_node(node.op_type, [f"{node.input[0]}.2d.float"] + list(node.input[1:]),
                                   [f"{node.output[0]}.2d.float"], name=node.name)
        for k, v in a.items():
            if k in ("kernel_shape", "strides", "dilations"):
                v = [1] + list(v)
            elif k == "pads":
                v = [0, v[0], 0, v[1]]
            n2.attribute.append(onnx.helper.make_attribute(k, v))
        self.alias[n2.input[0]] = x2.name
        out_shape = self.shapes[node.output[0]]
        self.shapes[n2.output[0]] = (out_shape[0], out_shape[1], 1, out_shape[2])
        if len(node.input) > 1 and node.input[1] in self.const_q:
            w = self.const_q[node.input[1]]
            self.const_q[n2.input[1]] = (w[0][:, :, None, :],) + tuple(w[1:])
        q, act, fname = self.output_of(node, fuse_activation=node.op_type == "Conv")
        y, s, z, dt = self.out_tensor(q, fname, node)
        shape4 = (out_shape[0], out_shape[1], 1, out_shape[2])
        self._pending_out = (n2.output[0], f"{y.name}.2d", shape4, s, z, dt, act)
        try:
            op2d(n2)
        finally:
            self._pending_out = None
        self.ops.append(ir.Reshape((f"{y.name}.2d",), (y.name,), origin=node.name, shape=tuple(out_shape)))
