"""Lower a quantized (QDQ) ONNX model to the integer IR.

Quantized tensors are those between a QuantizeLinear and its DequantizeLinear consumers. Each
float operator (Conv, Gemm, ...) reads integer tensors through DequantizeLinear, and its output
(after an optional fused Relu/Clip) is written by a QuantizeLinear: that becomes one IR op with
explicit integer rescaling (docs/arithmetic.md).
"""
from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import onnx
from onnx import numpy_helper

from .. import ir
from ..errors import UnsupportedError, node_where
from ..ir.layout import keep_pixels
from ..ir.tokens import matmuls_as_pixels, tokens_as_pixels
from ..ir.types import DType, Requant, Rounding
from .load import tensor_shapes
from .lower_nonlinear import NonlinearLowering
from .lower_ops import HostLowering
from .requant import rescale

_PENDING = object()  # output_of/out_tensor: the output of a 1-D op's 2-D form (lower_ops.lower_1d)

_ONNX_DTYPES = {
    onnx.TensorProto.INT8: ir.INT8, onnx.TensorProto.UINT8: ir.UINT8,
    onnx.TensorProto.INT16: ir.INT16, onnx.TensorProto.UINT16: DType(16, False),
    onnx.TensorProto.INT32: ir.INT32, onnx.TensorProto.INT4: ir.INT4,
    onnx.TensorProto.UINT4: DType(4, False),
    onnx.TensorProto.INT2: DType(2, True), onnx.TensorProto.UINT2: DType(2, False),
}
_ACTIVATIONS = {"Relu", "Clip"}
_FUSES_ACTIVATION = {"Conv", "Gemm", "MatMul", "Add"}
_PASS_THROUGH = {"Identity", "Dropout"}
SUPPORTED = sorted({"Conv", "Gemm", "MatMul", "Add", "Concat", "MaxPool", "AveragePool",
                    "GlobalAveragePool", "Relu", "Clip", "Flatten", "Reshape", "QuantizeLinear",
                    "DequantizeLinear", "Identity", "Dropout", "Mul", "Div", "Sub", "Sum", "Sigmoid", "Tanh",
                    "HardSigmoid", "HardSwish", "LeakyRelu", "Elu", "BatchNormalization", "Softmax", "LRN",
                    "Transpose", "Pad", "Slice", "Split", "Gather", "Resize", "ReduceMean", "Squeeze",
                    "Unsqueeze", "LayerNormalization", "Gelu"})
_ONE_D = {"Conv", "MaxPool", "AveragePool", "GlobalAveragePool"}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _scalar(arr) -> float | int:
    a = np.asarray(arr)
    return a.reshape(-1)[0].item() if a.size == 1 else a


class _Lowering(HostLowering, NonlinearLowering):
    def __init__(self, model: onnx.ModelProto, requant: str, rounding: Rounding):
        self.model = model
        self.mode = requant
        self.rounding = rounding
        g = model.graph
        self.inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        self.shapes = tensor_shapes(model)
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.graph_outputs = [o.name for o in g.output]
        self.tensors: dict[str, ir.Tensor] = {}
        self.constants: dict[str, np.ndarray] = {}
        self.ops: list[ir.Op] = []
        self.alias: dict[str, str] = {}          # float name (DQ output) -> int tensor name
        self.const_q: dict[str, tuple] = {}      # float name -> (int array, scale, zp, axis, dtype)
        self.done: set[int] = set()              # ids of nodes consumed by a fused pattern
        self.inputs: list[str] = []

    # ---- helpers -------------------------------------------------------------------------
    def qparams(self, node, blocked_ok: bool = False) -> tuple:
        """(scale, zero_point, dtype, axis) of a Quantize/DequantizeLinear node."""
        where = node_where(node)
        if node.input[1] not in self.inits:
            raise UnsupportedError("the scale is not a constant", where=where)
        scale = self.inits[node.input[1]].astype(np.float64)
        if not np.all(np.isfinite(scale) & (scale > 0)):
            raise UnsupportedError("the scale must be positive and finite", where=where)
        if len(node.input) > 2 and node.input[2]:
            if node.input[2] not in self.inits:
                raise UnsupportedError("the zero point is not a constant", where=where)
            zp_arr = self.inits[node.input[2]]
            zp_type = next(i.data_type for i in self.model.graph.initializer if i.name == node.input[2])
        else:
            zp_arr, zp_type = np.zeros((), np.int64), None
        a = _attrs(node)
        if zp_type is None:
            zp_type = a.get("output_dtype") or onnx.TensorProto.UINT8
        if zp_type not in _ONNX_DTYPES:
            raise UnsupportedError(f"quantized type {onnx.TensorProto.DataType.Name(zp_type)} is not supported "
                                   "(integer types of 2 to 32 bits are)", where=where)
        if "block_size" in a and a["block_size"] and not blocked_ok:
            raise UnsupportedError("blocked quantization is not supported for activations or this op", where=where)
        return scale, zp_arr.astype(np.int64), _ONNX_DTYPES[zp_type], a.get("axis", 1)

    def act(self, name: str, node) -> ir.Tensor:
        """The integer tensor behind float activation `name` (which must come from a DQ)."""
        if name in self.alias:
            return self.tensors[self.alias[name]]
        raise UnsupportedError(f"input '{name}' is not quantized (no DequantizeLinear feeds it)",
                               where=node_where(node),
                               hint="quantize the model first (`tony quantize`) or insert Q/DQ pairs around it")

    def const(self, name: str, node, role: str):
        if name in self.const_q:
            return self.const_q[name]
        raise UnsupportedError(f"{role} '{name}' is not a quantized constant (DequantizeLinear of an initializer)",
                               where=node_where(node))

    def add_tensor(self, t: ir.Tensor) -> str:
        self.tensors[t.name] = t
        return t.name

    def add_const(self, name, arr, dt, scale=1.0, zp=0) -> str:
        arr = np.asarray(arr, dtype=np.int64)
        self.constants[name] = arr
        self.tensors[name] = ir.Tensor(name, tuple(arr.shape), dt, float(scale), int(zp))
        return name

    def output_of(self, node, fuse_activation: bool):
        """Follow node's float output through an optional Relu/Clip to its QuantizeLinear.

        Returns (q_node or None, activation bounds (lo_real, hi_real) or None, float name)."""
        pend = getattr(self, "_pending_out", None)
        if pend is not None and node.output[0] == pend[0]:
            return _PENDING, pend[-1], node.output[0]
        out = node.output[0]
        act = None
        cons = self.consumers.get(out, [])
        if fuse_activation and len(cons) == 1 and cons[0].op_type in _ACTIVATIONS and out not in self.graph_outputs:
            a = cons[0]
            act = self.activation_bounds(a)
            self.done.add(id(a))
            out = a.output[0]
            cons = self.consumers.get(out, [])
        qs = [c for c in cons if c.op_type == "QuantizeLinear"]
        if not qs:
            return None, act, out
        q = qs[0]
        for other in qs[1:]:  # identical quantizers of the same value collapse into the first
            self.done.add(id(other))
            self.alias_int(other.output[0], q.output[0])
        self.done.add(id(q))
        return q, act, out

    def alias_int(self, name: str, target: str):
        self.int_alias[name] = target

    def activation_bounds(self, node) -> tuple[float, float]:
        if node.op_type == "Relu":
            return 0.0, math.inf
        a = _attrs(node)
        lo = a.get("min", -math.inf)
        hi = a.get("max", math.inf)
        if len(node.input) > 1 and node.input[1]:
            lo = float(_scalar(self.inits[node.input[1]])) if node.input[1] in self.inits else None
        if len(node.input) > 2 and node.input[2]:
            hi = float(_scalar(self.inits[node.input[2]])) if node.input[2] in self.inits else None
        if lo is None or hi is None:
            raise UnsupportedError("Clip bounds must be constants", where=node_where(node))
        return lo, hi

    def out_tensor(self, q, float_name: str, node) -> tuple[ir.Tensor, float, int, DType]:
        if q is _PENDING:
            _, name, shape, s, z, dt, _ = self._pending_out
            t = ir.Tensor(name, shape, dt, s, z)
            self.add_tensor(t)
            return t, s, z, dt
        if q is None:
            floats = [c for c in self.consumers.get(float_name, []) if c.op_type != "QuantizeLinear"]
            hint = "quantize the model (`tony quantize`) so that every layer output is quantized"
            if floats:   # a float chain the patterns do not know (tony.frontend.patterns)
                hint = (f"it feeds {floats[0].op_type} \"{floats[0].name}\" in float; a float chain runs only as one "
                        "of the LayerNorm or GELU patterns of docs/transformer.md (with or without Q/DQ pairs "
                        "inside), or " + hint)
            raise UnsupportedError(f"output '{float_name}' is not quantized (no QuantizeLinear follows it)",
                                   where=node_where(node), hint=hint)
        scale, zp, dt, _ = self.qparams(q)
        if scale.size != 1 or zp.size != 1:
            raise UnsupportedError("per-axis quantization of an activation is not supported", where=node_where(q))
        scale, zp = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
        t = ir.Tensor(q.output[0], self.shapes[float_name], dt, scale, zp)
        self.add_tensor(t)
        return t, scale, zp, dt

    def clamp_range(self, scale, zp, dt, act) -> tuple[int, int]:
        lo, hi = dt.min, dt.max
        if act is not None:
            alo, ahi = act
            if alo > -math.inf:
                lo = max(lo, int(np.rint(np.float32(alo) / np.float32(scale))) + zp)
            if ahi < math.inf:
                hi = min(hi, int(np.rint(np.float32(ahi) / np.float32(scale))) + zp)
        return lo, hi

    def requant(self, ratio, out_scale, zp, dt, act, where, what="output rescale") -> Requant:
        lo, hi = self.clamp_range(out_scale, zp, dt, act)
        if np.ndim(ratio) and np.size(ratio) > 1:
            pairs = [rescale(float(r), self.mode, where=where, what=what) for r in np.ravel(ratio)]
            mult = tuple(p[0] for p in pairs)
            shift = tuple(p[1] for p in pairs)
            if len(set(mult)) == 1 and len(set(shift)) == 1:
                mult, shift = mult[0], shift[0]
        else:
            mult, shift = rescale(float(np.ravel(ratio)[0]), self.mode, where=where, what=what)
        return Requant(shift=shift, lo=lo, hi=hi, mult=mult, rounding=self.rounding, zero_point=zp)

    # ---- per-node lowering -----------------------------------------------------------------
    def lower(self) -> ir.Graph:
        self.int_alias: dict[str, str] = {}
        self.bound_inputs: set[str] = set()
        self.find_groups()
        g = self.model.graph
        for inp in g.input:
            if inp.name in self.inits:
                continue
            et = inp.type.tensor_type.elem_type
            if et == onnx.TensorProto.FLOAT:
                dt = ir.FLOAT32
            elif et in _ONNX_DTYPES:
                dt = _ONNX_DTYPES[et]
            elif et == onnx.TensorProto.INT64:  # indices (Gather from a constant table)
                dt = DType(64, True)
            else:
                raise UnsupportedError(f"graph input '{inp.name}' has type {onnx.TensorProto.DataType.Name(et)}; "
                                       "float32 or an integer type is needed", where="model inputs")
            self.add_tensor(ir.Tensor(inp.name, self.shapes[inp.name], dt))
            self.inputs.append(inp.name)
        for node in g.node:
            if id(node) in self.done:
                continue
            grp = self.group_at.get(id(node))
            if grp is not None and grp.x in self.alias:   # a LayerNorm or GELU of a quantized input
                first = len(self.ops)
                self.lower_group(grp)
                self.ops[first:] = [op if op.op_type else replace(op, op_type=grp.kind) for op in self.ops[first:]]
                continue
            handler = getattr(self, "op_" + node.op_type, None)
            if node.domain not in ("", "ai.onnx") or handler is None:
                raise UnsupportedError(f"operator {node.op_type} is not supported",
                                       where=node_where(node),
                                       hint="supported operators: " + ", ".join(SUPPORTED))
            first = len(self.ops)
            try:
                if node.op_type in _ONE_D and node.input[0] in self.alias \
                        and len(self.tensors[self.alias[node.input[0]]].shape) == 3:
                    self.lower_1d(node, handler)
                else:
                    handler(node)
            except (KeyError, IndexError, ValueError, TypeError, ZeroDivisionError) as e:
                # a form of the op that no handler check foresaw: still one line naming the node
                raise UnsupportedError(f"this form of {node.op_type} is not supported ({type(e).__name__}: {e})",
                                       where=node_where(node)) from e
            self.ops[first:] = [op if op.op_type else replace(op, op_type=node.op_type) for op in self.ops[first:]]
        outputs = []
        for name in self.graph_outputs:
            name = self.int_alias.get(name, name)
            if name not in self.tensors:
                raise UnsupportedError(f"graph output '{name}' is not computed by a quantized path",
                                       where="model outputs")
            outputs.append(name)
        return ir.Graph(name=g.name or "model", tensors=self.tensors, constants=self.constants,
                        ops=tuple(self.ops), inputs=tuple(self.inputs), outputs=tuple(outputs),
                        meta={"requant": self.mode, "rounding": self.rounding.value})

    def op_QuantizeLinear(self, node):
        x = node.input[0]
        scale, zp, dt, axis = self.qparams(node, blocked_ok=True)
        if x in self.inits:  # quantized constant: fold
            self.qparams(node)  # refuses blocked quantization here
            w = self.inits[x].astype(np.float32)
            sc = scale.astype(np.float32)
            if sc.size > 1:
                shape = [1] * w.ndim
                shape[axis % w.ndim] = sc.size
                sc = sc.reshape(shape)
                zpb = zp.reshape(shape)
            else:
                zpb = zp.reshape(())
            q = np.clip(np.rint(w / sc) + zpb, dt.min, dt.max).astype(np.int64)
            self.inits[node.output[0]] = q
            self._qtypes = getattr(self, "_qtypes", {})
            self._qtypes[node.output[0]] = dt
            return
        if x in self.tensors and self.tensors[x].dtype.is_float:  # graph input
            if scale.size != 1 or zp.size != 1 or _attrs(node).get("block_size", 0):
                self.boundary_op(node, ir.Quantize, self.shapes[x], dt)
                return
            s, z = float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0])
            out = self.add_tensor(ir.Tensor(node.output[0], self.shapes[x], dt, s, z))
            self.ops.append(ir.Quantize((x,), (out,), origin=node.name, scale=s, zero_point=z, dtype=dt))
            return
        if x in self.alias:  # requantize an integer tensor (DQ -> Q with other params)
            src = self.tensors[self.alias[x]]
            t, s, z, dt = self.out_tensor(node, x, node)
            rq = self.requant(src.scale / s, s, z, dt, None, node_where(node))
            self.ops.append(ir.Clamp((src.name,), (t.name,), origin=node.name, requant=rq))
            return
        raise UnsupportedError(f"cannot tell where the float value '{x}' comes from", where=node_where(node))

    def op_DequantizeLinear(self, node):
        x = node.input[0]
        scale, zp, dt, axis = self.qparams(node, blocked_ok=True)
        if x in self.inits:
            self.qparams(node)  # refuses blocked quantization here
            arr = self.inits[x]
            dtq = getattr(self, "_qtypes", {}).get(x)
            if dtq is None:
                init = next((i for i in self.model.graph.initializer if i.name == x), None)
                dtq = _ONNX_DTYPES.get(init.data_type) if init is not None else None
            if dtq is None:
                raise UnsupportedError("dequantized constant has a non-integer type", where=node_where(node))
            self.const_q[node.output[0]] = (arr.astype(np.int64), scale, zp, axis, dtq)
            return
        if x in self.int_alias:
            x = self.int_alias[x]
        if x not in self.tensors:
            raise UnsupportedError(f"cannot tell where the quantized value '{x}' comes from", where=node_where(node))
        t = self.tensors[x]
        if scale.size != 1 or zp.size != 1 or _attrs(node).get("block_size", 0):
            self.boundary_op(node, ir.Dequantize, t.shape, None)
            return
        if x in self.inputs and x not in self.bound_inputs:  # integer graph input: its first DQ gives scale, zp
            self.bound_inputs.add(x)
            t = ir.Tensor(t.name, t.shape, t.dtype, float(scale.reshape(-1)[0]), int(zp.reshape(-1)[0]))
            self.tensors[x] = t
        if node.output[0] in self.graph_outputs:
            self.float32_scale(node)
        folded = x in self.score_fold   # scores whose divisor the Softmax applies (lower_nonlinear)
        if scale.size != 1 or (float(scale.reshape(-1)[0]) != t.scale and not folded) \
                or int(zp.reshape(-1)[0]) != t.zero_point:
            raise UnsupportedError("DequantizeLinear parameters differ from the QuantizeLinear that produced the value",
                                   where=node_where(node))
        self.alias[node.output[0]] = x
        if node.output[0] in self.graph_outputs:
            out = self.add_tensor(ir.Tensor(node.output[0], t.shape, ir.FLOAT32))
            self.ops.append(ir.Dequantize((x,), (out,), origin=node.name))

    def float32_scale(self, node):
        init = next((i for i in self.model.graph.initializer if i.name == node.input[1]), None)
        if init is not None and init.data_type != onnx.TensorProto.FLOAT:
            raise UnsupportedError(f"a {onnx.TensorProto.DataType.Name(init.data_type).lower()} scale makes "
                                   "DequantizeLinear return that float type; Tony's host boundary is float32",
                                   where=node_where(node), hint="store the output scale as float32")

    def boundary_op(self, node, op_type, shape, dt):
        """Per-axis or blocked Quantize/DequantizeLinear between a graph input and a graph output."""
        where = node_where(node)
        out = node.output[0]
        if self.consumers.get(out) or out not in self.graph_outputs:
            raise UnsupportedError("per-axis or blocked quantization is supported only at the graph boundary "
                                   "(a graph input quantized or dequantized straight to a graph output)", where=where,
                                   hint="quantize activations per tensor")
        scale, zp, qdt, axis = self.qparams(node, blocked_ok=True)
        block = int(_attrs(node).get("block_size", 0) or 0)
        zp = np.broadcast_to(zp, scale.shape)
        axis = axis % len(shape)
        if block:
            want = tuple(-(-d // block) if i == axis else d for i, d in enumerate(shape))
        else:
            want = (shape[axis],) if scale.ndim else ()
        if tuple(scale.shape) != want and not (not block and scale.size == shape[axis] and scale.ndim == 1):
            raise UnsupportedError(f"scale shape {tuple(scale.shape)} does not fit input shape {shape} "
                                   f"(axis {axis}, block_size {block})", where=where)
        layout = dict(axis=axis, block_size=block, param_shape=tuple(scale.shape),
                      scale=tuple(float(v) for v in scale.reshape(-1)),
                      zero_point=tuple(int(v) for v in zp.reshape(-1)))
        if op_type is ir.Quantize:
            t = self.add_tensor(ir.Tensor(out, shape, qdt))
            self.ops.append(ir.Quantize((node.input[0],), (t,), origin=node.name, dtype=qdt, **layout))
        else:
            self.float32_scale(node)
            src = self.int_alias.get(node.input[0], node.input[0])
            t = self.add_tensor(ir.Tensor(out, shape, ir.FLOAT32))
            self.ops.append(ir.Dequantize((src,), (t,), origin=node.name, **layout))

    # MAC ops ------------------------------------------------------------------------------
    def _bias(self, node, bname, acc_scale, nout):
        if not bname:
            return None
        b, bs, bzp, _, _ = self.const(bname, node, "bias")
        if np.any(bzp != 0):
            raise UnsupportedError("bias zero point must be 0", where=node_where(node))
        b = b.reshape(-1).astype(np.int64)
        ratio = np.broadcast_to(np.asarray(bs, np.float64).reshape(-1), (nout,)) / np.broadcast_to(
            np.asarray(acc_scale, np.float64).reshape(-1), (nout,))
        # the bias must sit on the accumulator grid: bias * ratio integral (ratio = 2^k, k >= 0, usually 1)
        near1 = np.abs(ratio - 1) < 2.0**-20
        ratio = np.where(near1, 1.0, ratio)
        vals = b * ratio
        if not np.all(vals == np.rint(vals)) or np.any(np.abs(vals) >= 2.0**62):
            raise UnsupportedError("bias scale is not a power-of-two multiple of input scale * weight scale",
                                   where=node_where(node), hint="requantize the bias at scale_x * scale_w")
        return np.rint(vals).astype(np.int64)

    def _mac(self, node, x, w_entry, bname, make_op, nout, w_arr, w_axis_scale, out_node=None):
        """out_node: the node whose output the op writes (a bias Add after a MatMul), else node."""
        wq, ws, wzp, _, wdt = w_entry
        where = node_where(node)
        acc_scale = x.scale * np.asarray(ws, np.float64).reshape(-1)
        bias = self._bias(node, bname, acc_scale, nout)
        q, act, fname = self.output_of(out_node or node, fuse_activation=True)
        t, s, z, dt = self.out_tensor(q, fname, node)
        ratio = np.broadcast_to(acc_scale, (nout,)) / s if acc_scale.size > 1 else acc_scale / s
        rq = self.requant(ratio, s, z, dt, act, where)
        wz = np.unique(np.asarray(wzp).reshape(-1))
        if wz.size > 1:  # per-channel weight zero points: fold them into the (reference-only) weights
            zcol = np.asarray(wzp, np.int64).reshape(-1)
            zcol = zcol.reshape((-1,) + (1,) * (w_arr.ndim - 1)) if w_arr.ndim == 4 else zcol
            w_arr = np.asarray(w_arr, np.int64) - zcol
            lo, hi = int(w_arr.min()), int(w_arr.max())
            bits = max(max(-lo - 1, hi, 0).bit_length() + 1, 2)
            wdt, wz = DType(bits, True), np.zeros(1, np.int64)
        wname = self.add_const(f"{t.name}.weight", w_arr, wdt, float(np.ravel(ws)[0]), int(wz[0]))
        ins = [x.name, wname]
        if bias is not None:
            ins.append(self.add_const(f"{t.name}.bias", bias, ir.INT32, float(np.ravel(acc_scale)[0])))
        self.ops.append(make_op(tuple(ins), (t.name,), rq))

    def op_Conv(self, node):
        x = self.act(node.input[0], node)
        w = self.const(node.input[1], node, "weight")
        a = _attrs(node)
        kh, kw = w[0].shape[2:]
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = tuple(a.get("pads", (0, 0, 0, 0)))
        auto = a.get("auto_pad", b"NOTSET")
        auto = auto.decode() if isinstance(auto, bytes) else auto
        if len(strides) != 2:
            raise UnsupportedError("only 2-D convolutions are supported", where=node_where(node))
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            pads = _same_pads(x.shape[2:], (kh, kw), strides, dil, auto == "SAME_UPPER")
        elif auto == "VALID":
            pads = (0, 0, 0, 0)
        group = int(a.get("group", 1))

        def make(ins, outs, rq):
            return ir.Conv(ins, outs, origin=node.name, strides=strides, pads=pads, dilations=dil,
                           group=group, requant=rq)
        bname = node.input[2] if len(node.input) > 2 else ""
        self._mac(node, x, w, bname, make, w[0].shape[0], w[0], 0)

    def op_Gemm(self, node):
        a = _attrs(node)
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise UnsupportedError("Gemm with transA or alpha/beta != 1 is not supported", where=node_where(node))
        x = self.act(node.input[0], node)
        w = self.const(node.input[1], node, "weight")
        wa = w[0].T if a.get("transB", 0) else w[0]
        if a.get("transB", 0) and np.asarray(w[1]).size > 1 and w[3] not in (0, -2):
            raise UnsupportedError("per-axis weight scale on the wrong axis", where=node_where(node))

        def make(ins, outs, rq):
            return ir.Dense(ins, outs, origin=node.name, requant=rq)
        bname = node.input[2] if len(node.input) > 2 else ""
        self._mac(node, x, w, bname, make, wa.shape[1], wa, 1)

    def op_MatMul(self, node):
        if node.input[1] in self.alias:
            return self.matmul2(node)
        x = self.act(node.input[0], node)
        w = self.const(node.input[1], node, "weight")
        ok2 = len(x.shape) >= 2 and w[0].ndim == 2
        ok3 = len(x.shape) >= 3 and w[0].ndim == 3 and x.shape[-3] == w[0].shape[0]
        if not (ok2 or ok3):
            raise UnsupportedError("MatMul is supported for an activation [..., N, K] times a constant [K, M] "
                                   "or a batched [..., B, N, K] times [B, K, M]", where=node_where(node))

        def make(ins, outs, rq):
            return ir.Dense(ins, outs, origin=node.name, requant=rq)
        bias = self.bias_add(node) if w[0].ndim == 2 else None
        if bias is not None:
            self.done.add(id(bias[0]))
        self._mac(node, x, w, bias[1] if bias else "", make, w[0].shape[-1], w[0], 1,
                  out_node=bias[0] if bias else None)

    # element-wise and structural ops --------------------------------------------------------
    def op_Add(self, node, subtract: bool = False):
        a_t = self.operand(node.input[0], node)
        b_t = self.operand(node.input[1], node)
        if self.channel_offset(node, a_t, b_t, subtract):
            return
        try:
            np.broadcast_shapes(a_t.shape, b_t.shape)
        except ValueError:
            raise UnsupportedError(f"shapes {a_t.shape} and {b_t.shape} do not broadcast",
                                   where=node_where(node)) from None
        where = node_where(node)
        q, act, fname = self.output_of(node, fuse_activation=True)
        t, s, z, dt = self.out_tensor(q, fname, node)
        ea, eb = a_t.exp, b_t.exp
        if ea is not None and eb is not None:
            e = min(ea, eb)
            sa, sb, ma, mb = ea - e, eb - e, 1, 1
            rq = self.requant(2.0**e / s, s, z, dt, act, where)
        else:
            if self.mode == "pow2":
                rescale(a_t.scale / s if ea is None else b_t.scale / s, "pow2", where=where, what="Add input")
            big = max(a_t.scale, b_t.scale) / s
            shift = 30 - math.frexp(big)[1]
            ma, mb = round(a_t.scale / s * 2.0**shift), round(b_t.scale / s * 2.0**shift)
            sa = sb = 0
            lo, hi = self.clamp_range(s, z, dt, act)
            rq = Requant(shift=shift, lo=lo, hi=hi, rounding=self.rounding, zero_point=z)
        self.ops.append(ir.Add((a_t.name, b_t.name), (t.name,), origin=node.name, shift_a=sa, shift_b=sb,
                               mult_a=ma, mult_b=mb, requant=rq, subtract=subtract))

    def op_Concat(self, node):
        xs = [self.act(i, node) for i in node.input]
        axis = _attrs(node)["axis"]
        axis = axis % len(xs[0].shape)
        q, _, fname = self.output_of(node, fuse_activation=False)
        t, s, z, dt = self.out_tensor(q, fname, node)
        rqs = tuple(self.requant(x.scale / s, s, z, dt, None, node_where(node), "Concat input rescale") for x in xs)
        self.ops.append(ir.Concat(tuple(x.name for x in xs), (t.name,), origin=node.name, axis=axis, requants=rqs))

    def _scale_preserving(self, node, x: ir.Tensor, make_op):
        """Emit an op whose output keeps x's scale, requantizing to a following Q if it differs."""
        q, _, fname = self.output_of(node, fuse_activation=False)
        if q is None:
            t = self.add_tensor(ir.Tensor(fname, self.shapes[fname], x.dtype, x.scale, x.zero_point))
            self.alias[fname] = t
            self.ops.append(make_op((x.name,), (t,), None))
            return
        t, s, z, dt = self.out_tensor(q, fname, node)
        if s == x.scale and z == x.zero_point and dt == x.dtype:
            self.ops.append(make_op((x.name,), (t.name,), None))
        else:
            rq = self.requant(x.scale / s, s, z, dt, None, node_where(node))
            self.ops.append(make_op((x.name,), (t.name,), rq))

    def op_MaxPool(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        k = tuple(a["kernel_shape"])
        if len(k) != 2 or len(node.output) > 1:
            raise UnsupportedError("only 2-D MaxPool without indices is supported", where=node_where(node))
        strides = tuple(a.get("strides", (1, 1)))
        dil = tuple(a.get("dilations", (1, 1)))
        pads = _pool_pads(node, a, x.shape, k, strides, dil)

        def make(ins, outs, rq):
            if rq is None and isinstance(outs[0], str):
                return ir.MaxPool(ins, outs, origin=node.name, kernel=k, strides=strides, pads=pads, dilations=dil)
            return ir.MaxPool(ins, outs, origin=node.name, kernel=k, strides=strides, pads=pads, dilations=dil,
                              requant=rq)
        self._scale_preserving(node, x, make)

    def _avgpool(self, node, x, k, strides, pads, exclude_pad=False):
        where = node_where(node)
        q, _, fname = self.output_of(node, fuse_activation=False)
        t, s, z, dt = self.out_tensor(q, fname, node)
        area = k[0] * k[1]
        rq = self.mean_requant(area, x.scale / s, s, z, dt, where, "average-pool rescale")
        partial = ()
        if exclude_pad and any(pads):
            counts = _window_counts(x.shape[2:], k, strides, pads)
            partial = tuple((c,) + self.exact_ratio(x.scale / s, c) for c in sorted(counts))
        self.ops.append(ir.AvgPool((x.name,), (t.name,), origin=node.name, kernel=k, strides=strides,
                                   pads=pads, requant=rq, partial=partial))

    def op_AveragePool(self, node):
        x = self.act(node.input[0], node)
        a = _attrs(node)
        k = tuple(a["kernel_shape"])
        strides = tuple(a.get("strides", (1, 1)))
        pads = _pool_pads(node, a, x.shape, k, strides, (1, 1))
        self._avgpool(node, x, k, strides, pads, exclude_pad=not a.get("count_include_pad", 0))

    def op_GlobalAveragePool(self, node):
        x = self.act(node.input[0], node)
        self._avgpool(node, x, tuple(x.shape[2:]), (1, 1), (0, 0, 0, 0))

    def op_Relu(self, node):
        self._activation(node)

    def op_Clip(self, node):
        self._activation(node)

    def _activation(self, node):
        x = self.act(node.input[0], node)
        bounds = self.activation_bounds(node)
        q, _, fname = self.output_of(node, fuse_activation=False)
        t, s, z, dt = self.out_tensor(q, fname, node)
        rq = self.requant(x.scale / s, s, z, dt, bounds, node_where(node))
        self.ops.append(ir.Clamp((x.name,), (t.name,), origin=node.name, requant=rq))

    def _reshape(self, node):
        x = self.act(node.input[0], node)
        shape = self.shapes.get(node.output[0])
        if shape is None or min(shape, default=1) < 0:
            raise UnsupportedError("output shape could not be inferred", where=node_where(node))
        if not shape or shape[0] != x.shape[0]:
            raise UnsupportedError(f"the reshape {list(x.shape)} -> {list(shape)} changes axis 0, which holds the batch "
                                   "(samples are stacked there)", where=node_where(node),
                                   hint="keep the batch axis first")
        self.structural(node, x, lambda i, o: ir.Reshape(i, o, origin=node.name, shape=tuple(shape)))

    op_Flatten = _reshape
    op_Reshape = _reshape
    op_Squeeze = _reshape
    op_Unsqueeze = _reshape

    def _ungrouped(self, node):
        raise UnsupportedError(f"{node.op_type} is supported as part of a LayerNorm or GELU (or only on a quantized "
                               "input)", where=node_where(node),
                               hint="quantize the model with `tony quantize`; docs/transformer.md lists the patterns")

    op_LayerNormalization = op_Gelu = _ungrouped

    def op_Identity(self, node):
        if node.input[0] in self.alias:
            self.alias[node.output[0]] = self.alias[node.input[0]]
        elif node.input[0] in self.const_q:
            self.const_q[node.output[0]] = self.const_q[node.input[0]]
        elif node.input[0] in self.inits:
            self.inits[node.output[0]] = self.inits[node.input[0]]
        else:
            raise UnsupportedError("Identity of an unquantized value", where=node_where(node))

    op_Dropout = op_Identity


def _window_counts(hw, k, strides, pads) -> set[int]:
    """The numbers of real (not padding) pixels under the pooling windows."""
    counts = []
    for i in range(2):
        n = (hw[i] + pads[i] + pads[i + 2] - k[i]) // strides[i] + 1
        lo = np.arange(n) * strides[i] - pads[i]
        counts.append(np.minimum(lo + k[i], hw[i]) - np.maximum(lo, 0))
    return {int(v) for v in np.multiply.outer(counts[0], counts[1]).reshape(-1)}


def _same_pads(in_hw, k, strides, dil, upper):
    pads = [0, 0, 0, 0]
    for i in range(2):
        out = -(-in_hw[i] // strides[i])
        total = max(0, (out - 1) * strides[i] + (k[i] - 1) * dil[i] + 1 - in_hw[i])
        small, big = total // 2, total - total // 2
        pads[i], pads[i + 2] = (small, big) if upper else (big, small)
    return tuple(pads)


def _pool_pads(node, a, shape, k, strides, dil):
    pads = list(a.get("pads", (0, 0, 0, 0)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        pads = list(_same_pads(shape[2:], k, strides, dil, auto == "SAME_UPPER"))
    if a.get("ceil_mode", 0):
        # extend the bottom/right padding so that floor division yields the ceil-mode size
        for i in range(2):
            span = shape[2 + i] + pads[i] + pads[i + 2] - dil[i] * (k[i] - 1) - 1
            if span % strides[i]:
                if node.op_type == "AveragePool":
                    raise UnsupportedError("AveragePool with ceil_mode=1 and partial windows is not supported",
                                           where=node_where(node))
                pads[i + 2] += strides[i] - span % strides[i]
    return tuple(int(p) for p in pads)


def lower(model: onnx.ModelProto, *, requant: str = "auto", rounding: Rounding = Rounding.HALF_EVEN) -> ir.Graph:
    """QDQ ONNX model (checked, shapes inferred) -> verified integer IR."""
    g = _Lowering(model, requant, Rounding(rounding)).lower()
    return ir.verify(keep_pixels(matmuls_as_pixels(tokens_as_pixels(ir.verify(g)))))
