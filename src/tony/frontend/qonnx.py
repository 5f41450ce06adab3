"""Rewrite QONNX `Quant` / `IntQuant` nodes into QuantizeLinear / DequantizeLinear.

QONNX (the exchange format of Brevitas, FINN and hls4ml; domain "qonnx.custom_op.general" or
"finn.custom_op.general") quantizes with one float -> float node (docs/qonnx-custom-ops/quant_op.md
in the qonnx repository):

  Quant(x, scale, zeropt, bitwidth; signed, narrow, rounding_mode)
    y_int = round(clamp(x / scale + zeropt, min_int, max_int));  y = (y_int - zeropt) * scale

  min_int = -2^(b-1) + narrow (signed) or 0;  max_int = 2^(b-1) - 1 (signed) or 2^b - 1 - narrow.

A pure ONNX -> ONNX pass, run before the QOperator rewrite and the lowering:

- Quant of a constant (weights, biases): evaluated here, exactly as the spec says, in float32 and
  with any of its rounding modes; the result becomes an integer initializer of the smallest ONNX
  integer type holding [min_int, max_int] (int2/uint2, int4/uint4, int8/uint8, int16/uint16,
  int32) read through DequantizeLinear (per-axis when scale or zero point vary along one axis).
- Quant of an activation: QuantizeLinear -> DequantizeLinear with that integer type. When
  [min_int, max_int] is narrower than the type (narrow range, 3, 5, 6, 7 bits...), a Clip to the
  real bounds (min_int - zeropt) * scale, (max_int - zeropt) * scale goes before the
  QuantizeLinear where the lowering fuses it into the producing Conv/Gemm/MatMul/Add, and else
  after a first QuantizeLinear -> DequantizeLinear pair (a second pair then requantizes it). Both
  give the integer clamp [min_int, max_int]: clamping and rounding commute for integer bounds.
  QuantizeLinear rounds half to even, which is QONNX's ROUND (QONNX rounds x / scale + zeropt,
  QuantizeLinear x / scale before adding the zero point: the same unless the zero point is odd,
  which is refused for ROUND); rounding_mode FLOOR is taken when
  the model is compiled with floor rounding (and the value is not a float graph input, which is
  quantized on the host with half-to-even). Other modes, per-axis activation scales, non-integer
  bit widths or zero points and signed 1-bit (bipolar) quantizers are refused with a message.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..errors import ModelError, UnsupportedError, node_where
from .rewrite import GraphRewriter
from ..ir.types import Rounding

QONNX_DOMAINS = ("qonnx.custom_op.general", "finn.custom_op.general")
QUANT_OPS = ("Quant", "IntQuant")
_FUSES_CLIP = ("Conv", "Gemm", "MatMul", "Add")  # the lowering fuses a following Clip into these

# the smallest ONNX integer type that holds a b-bit range: (max bits, signed) -> type
_CONTAINERS = [(2, True, TensorProto.INT2), (4, True, TensorProto.INT4), (8, True, TensorProto.INT8),
               (16, True, TensorProto.INT16), (32, True, TensorProto.INT32),
               (2, False, TensorProto.UINT2), (4, False, TensorProto.UINT4), (8, False, TensorProto.UINT8),
               (16, False, TensorProto.UINT16)]


def _round(mode: str):
    """numpy rounding function of a QONNX rounding_mode (the table in quant_op.md)."""
    return {
        "ROUND": np.round, "HALF_EVEN": np.round, "CEIL": np.ceil, "FLOOR": np.floor,
        "UP": lambda v: np.sign(v) * np.ceil(np.abs(v)), "DOWN": np.fix,
        "HALF_UP": lambda v: np.sign(v) * np.floor(np.abs(v) + 0.5),
        "HALF_DOWN": lambda v: np.sign(v) * np.ceil(np.abs(v) - 0.5),
    }[mode]


def int_range(bits: int, signed: bool, narrow: bool) -> tuple[int, int]:
    """(min_int, max_int) of the QONNX spec."""
    if signed:
        return -(1 << (bits - 1)) + int(narrow), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1 - int(narrow)


def _container(bits: int, signed: bool, where: str) -> int:
    for b, s, t in _CONTAINERS:
        if s == signed and bits <= b:
            return t
    raise UnsupportedError(f"{'signed' if signed else 'unsigned'} {bits}-bit quantization has no integer type "
                           "here (signed up to 32 bits, unsigned up to 16 bits)", where=where)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Rewriter(GraphRewriter):
    def __init__(self, model: onnx.ModelProto, rounding: Rounding):
        super().__init__(model)
        self.rounding = Rounding(rounding)
        self.inits = {i.name: numpy_helper.to_array(i) for i in self.g.initializer}
        self.producer = {o: n for n in self.g.node for o in n.output}
        self.consumers: dict[str, int] = {}
        for n in self.g.node:
            for i in n.input:
                self.consumers[i] = self.consumers.get(i, 0) + 1
        self.graph_inputs = {i.name for i in self.g.input} - set(self.inits)
        self.graph_outputs = {o.name for o in self.g.output}
        self.dropped: set[str] = set()

    def param(self, node, name: str, role: str) -> np.ndarray:
        if name not in self.inits:
            raise UnsupportedError(f"the {role} '{name}' is not a constant", where=node_where(node),
                                   hint="QONNX Quant scale, zero point and bit width must be initializers")
        return np.asarray(self.inits[name])

    def expand(self, node) -> list:
        where = node_where(node)
        if len(node.input) != 4 or not all(node.input):
            raise ModelError("Quant needs four inputs (x, scale, zeropt, bitwidth)", where=where)
        x, sname, zname, bname = node.input
        y = node.output[0]
        a = _attrs(node)
        signed, narrow = bool(a.get("signed", 1)), bool(a.get("narrow", 0))
        mode = a.get("rounding_mode", b"ROUND")
        mode = (mode.decode() if isinstance(mode, bytes) else mode).upper()
        if mode not in ("ROUND", "HALF_EVEN", "CEIL", "FLOOR", "UP", "DOWN", "HALF_UP", "HALF_DOWN"):
            raise UnsupportedError(f"rounding_mode {mode} is not a QONNX rounding mode", where=where)
        bw = self.param(node, bname, "bit width").astype(np.float64)
        if bw.size != 1 or bw.reshape(-1)[0] != np.rint(bw.reshape(-1)[0]) or bw.reshape(-1)[0] < 1:
            raise UnsupportedError(f"bit width {bw.reshape(-1).tolist()} is not one positive integer", where=where)
        bits = int(bw.reshape(-1)[0])
        if signed and bits < 2:
            raise UnsupportedError("signed 1-bit (bipolar) quantization is not supported", where=where,
                                   hint="use 2 or more bits, or an unsigned 1-bit quantizer")
        lo, hi = int_range(bits, signed, narrow)
        etype = _container(bits, signed, where)
        np_t = helper.tensor_dtype_to_np_dtype(etype)
        scale = self.param(node, sname, "scale").astype(np.float32)
        zpt = self.param(node, zname, "zero point").astype(np.float32)
        if not (np.all(scale > 0) and np.all(np.isfinite(scale))):
            raise UnsupportedError("the scale must be positive and finite", where=where)
        if np.any(zpt != np.rint(zpt)):
            raise UnsupportedError(f"zero point {zpt.reshape(-1)[:4].tolist()} is not an integer", where=where,
                                   hint="integer arithmetic needs integer zero points")
        cmin, cmax = (-(1 << (_bits(etype) - 1)), (1 << (_bits(etype) - 1)) - 1) if signed else (0, (1 << _bits(etype)) - 1)
        if np.any(zpt < cmin) or np.any(zpt > cmax):
            raise UnsupportedError(f"zero point {zpt.reshape(-1)[:4].tolist()} lies outside the "
                                   f"{onnx.TensorProto.DataType.Name(etype).lower()} range", where=where)
        # per-axis layout: scale and zero point broadcast against x along at most one axis
        axis, vec_s, vec_z = None, scale.reshape(-1), zpt.reshape(-1)
        if scale.size > 1 or zpt.size > 1:
            shape = np.broadcast_shapes(scale.shape, zpt.shape)
            axes = [i for i, d in enumerate(shape) if d > 1]
            if len(axes) != 1:
                raise UnsupportedError(f"scale/zero point shape {shape} varies along more than one axis",
                                       where=where, hint="per-tensor or per-channel quantization is supported")
            axis = axes[0] - len(shape)  # counted from the end, as numpy broadcasting aligns them
            n = shape[axes[0]]
            vec_s = np.broadcast_to(scale.reshape(scale.shape if scale.ndim == len(shape) else
                                                  (1,) * (len(shape) - scale.ndim) + scale.shape), shape)
            vec_s = np.moveaxis(vec_s, axes[0], 0).reshape(n, -1)[:, 0].copy()
            zb = zpt.reshape((1,) * (len(shape) - zpt.ndim) + zpt.shape)
            vec_z = np.moveaxis(np.broadcast_to(zb, shape), axes[0], 0).reshape(n, -1)[:, 0].copy()
        if x in self.inits:
            return self.fold(node, x, y, scale, zpt, lo, hi, mode, etype, np_t, axis, vec_s, vec_z)
        if axis is not None:
            raise UnsupportedError("per-channel quantization of an activation is not supported", where=where)
        want = {"ROUND": Rounding.HALF_EVEN, "HALF_EVEN": Rounding.HALF_EVEN, "FLOOR": Rounding.FLOOR}.get(mode)
        if x in self.graph_inputs:  # quantized on the host, half to even whatever the compile's rounding
            if want is not Rounding.HALF_EVEN:
                raise UnsupportedError(f"rounding_mode {mode} on the float input '{x}' is not supported (inputs are "
                                       "quantized on the host with half-to-even rounding)", where=where,
                                       hint="re-export the input quantizer with rounding_mode ROUND")
        elif want is not self.rounding:
            flag = {Rounding.HALF_EVEN: "half_even", Rounding.FLOOR: "floor"}.get(want)
            raise UnsupportedError(f"rounding_mode {mode} on an activation does not match the compile's "
                                   f"{self.rounding.value} rounding", where=where,
                                   hint=f"compile with --rounding {flag}" if flag
                                   else "re-export with rounding_mode ROUND (or FLOOR with --rounding floor)")
        if want is Rounding.HALF_EVEN and int(vec_z[0]) % 2:
            raise UnsupportedError(f"zero point {int(vec_z[0])} is odd: QONNX rounds half to even after adding it, "
                                   "the integer contract (and QuantizeLinear) before, which differ at exact ties",
                                   where=where, hint="use an even zero point, or rounding_mode FLOOR with --rounding floor")
        s = self.const(f"{y}_scale", np.array(vec_s[0], np.float32))
        z = self.const(f"{y}_zero_point", np.array(int(vec_z[0]), np_t), etype)
        pre = node.name or y
        if (lo, hi) == (cmin, cmax):
            return self.qdq(pre, x, y, s, z)
        lo_r = self.const(f"{y}_min", np.array((lo - vec_z[0]) * vec_s[0], np.float32))
        hi_r = self.const(f"{y}_max", np.array((hi - vec_z[0]) * vec_s[0], np.float32))
        prod = self.producer.get(x)
        if (prod is not None and prod.op_type in _FUSES_CLIP and prod.domain in ("", "ai.onnx")
                and self.consumers.get(x, 0) == 1 and x not in self.graph_outputs):
            xc = self.fresh(f"{x}_clipped")
            return [helper.make_node("Clip", [x, lo_r, hi_r], [xc], name=f"{pre}/clip")] + self.qdq(pre, xc, y, s, z)
        t, tc = self.fresh(f"{y}_{onnx.TensorProto.DataType.Name(etype).lower()}"), self.fresh(f"{y}_clipped")
        return (self.qdq(f"{pre}/container", x, t, s, z)
                + [helper.make_node("Clip", [t, lo_r, hi_r], [tc], name=f"{pre}/clip")]
                + self.qdq(pre, tc, y, s, z))

    def qdq(self, pre: str, x: str, y: str, s: str, z: str) -> list:
        q = self.fresh(f"{y}_quantized")
        return [helper.make_node("QuantizeLinear", [x, s, z], [q], name=f"{pre}/quantize"),
                helper.make_node("DequantizeLinear", [q, s, z], [y], name=pre)]

    def fold(self, node, x, y, scale, zpt, lo, hi, mode, etype, np_t, axis, vec_s, vec_z) -> list:
        """Quant of a constant: the spec's arithmetic in float32, any rounding mode."""
        w = self.inits[x].astype(np.float32)
        v = w / scale + zpt                                          # float32, as in the spec
        q = _round(mode)(np.clip(v, np.float32(lo), np.float32(hi))).astype(np.int64)
        qname = self.const(f"{y}_int", q, etype)
        pre = node.name or y
        if axis is None:
            s = self.const(f"{y}_scale", np.array(vec_s[0], np.float32))
            z = self.const(f"{y}_zero_point", np.array(int(vec_z[0])), etype)
            return [helper.make_node("DequantizeLinear", [qname, s, z], [y], name=pre)]
        s = self.const(f"{y}_scale", vec_s.astype(np.float32))
        z = self.const(f"{y}_zero_point", vec_z.astype(np.int64), etype)
        return [helper.make_node("DequantizeLinear", [qname, s, z], [y], name=pre, axis=int(axis % w.ndim))]

    def run(self) -> onnx.ModelProto:
        out = []
        for node in self.g.node:
            if node.op_type in QUANT_OPS and node.domain in QONNX_DOMAINS:
                out += self.expand(node)
            else:
                out.append(node)
        del self.g.node[:]
        self.g.node.extend(out)
        self.g.initializer.extend(self.new_inits)
        return self.m


def _bits(etype: int) -> int:
    return {TensorProto.INT2: 2, TensorProto.UINT2: 2, TensorProto.INT4: 4, TensorProto.UINT4: 4,
            TensorProto.INT8: 8, TensorProto.UINT8: 8, TensorProto.INT16: 16, TensorProto.UINT16: 16,
            TensorProto.INT32: 32}[etype]


def expand_qonnx(model: onnx.ModelProto, rounding: Rounding | str = Rounding.HALF_EVEN) -> onnx.ModelProto:
    """Model with every QONNX Quant/IntQuant node replaced by its QuantizeLinear/DequantizeLinear form,
    shapes re-inferred (inference stops at the custom nodes before the rewrite)."""
    if not any(n.op_type in QUANT_OPS and n.domain in QONNX_DOMAINS for n in model.graph.node):
        return model
    m = _Rewriter(model, Rounding(rounding)).run()
    del m.graph.value_info[:]
    try:
        return shape_inference.infer_shapes(m, strict_mode=True, data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"shape inference after the QONNX rewrite failed: {first}", where="model") from None
