"""Rewrite ONNX QOperator nodes into the DequantizeLinear -> float op -> QuantizeLinear pattern.

A pure ONNX -> ONNX pass, run after shape inference and before `lower`, so that models quantized
in the QOperator format (onnxruntime's quantizer, PyTorch exports) take the same lowering path as
QDQ models and get the same integer arithmetic (docs/arithmetic.md, 'Requantization'):

  QLinearConv(x, xs, xz, w, ws, wz, ys, yz, B)  ->  Q(Conv(DQ(x), DQ(w), DQ(B, xs*ws)), ys, yz)
  QLinearMatMul(a, as, az, b, bs, bz, ys, yz)   ->  Q(MatMul(DQ(a), DQ(b)), ys, yz)
  ConvInteger(x, w, xz, wz)                     ->  Q(Conv(DQ(x, 1, xz), DQ(w, 1, wz)), 1, int32 0)
  MatMulInteger(a, b, az, bz)                   ->  Q(MatMul(DQ(a, 1, az), DQ(b, 1, bz)), 1, int32 0)
  QGemm(a, as, az, b, bs, bz, C, ys, yz)         ->  Q(Gemm(DQ(a), DQ(b), DQ(C, as*bs)), ys, yz)
                                                    (com.microsoft; a QGemm without ys is refused)
  QLinearAdd(a, as, az, b, bs, bz, ys, yz)       ->  Q(Add(DQ(a), DQ(b)), ys, yz)          (com.microsoft)
  QLinearConcat(ys, yz, x0, s0, z0, x1, ...)     ->  Q(Concat(DQ(x0), DQ(x1), ...), ys, yz) (com.microsoft)
  QLinearAveragePool / QLinearGlobalAveragePool  ->  Q(AveragePool(DQ(x)), ys, yz)        (com.microsoft,
                                                    NCHW only: channels_last=1 is refused)

ConvInteger/MatMulInteger have no output scale: their int32 result is the accumulator itself, which
the lowering expresses as a requantization with multiplier 1, shift 0 and the int32 range as clamp.
The quantizing node keeps the QOperator node's output name, so consumers and graph outputs are
untouched; every new float value gets the shape of that output.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper, shape_inference

from ..errors import UnsupportedError, node_where
from .rewrite import GraphRewriter

QOPERATORS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger")
MS_QOPERATORS = ("QGemm", "QLinearAdd", "QLinearConcat", "QLinearAveragePool",
                 "QLinearGlobalAveragePool")  # com.microsoft, as written by onnxruntime's quantizer


def _elem_types(g: onnx.GraphProto) -> dict[str, int]:
    types = {i.name: i.data_type for i in g.initializer}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        types.setdefault(vi.name, vi.type.tensor_type.elem_type)
    return types


class _Rewriter(GraphRewriter):
    def __init__(self, model: onnx.ModelProto):
        super().__init__(model)
        self.types = _elem_types(self.g)
        self.inits = {i.name: i for i in self.g.initializer}
        self.vinfo = {vi.name: vi for vi in list(self.g.input) + list(self.g.value_info) + list(self.g.output)}
        for i in self.g.initializer:
            self.vinfo.setdefault(i.name, helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)))
        self.new_vinfo: list[onnx.ValueInfoProto] = []

    def float_value(self, base: str, like: str) -> str:
        """A new float32 value with the shape of the value `like`."""
        name = self.fresh(base)
        vi = onnx.ValueInfoProto()
        if like in self.vinfo:
            vi.CopyFrom(self.vinfo[like])
        vi.name = name
        vi.type.tensor_type.elem_type = TensorProto.FLOAT
        self.new_vinfo.append(vi)
        return name

    def zero_point(self, node, name: str, data: str) -> str:
        """The given zero point, or an explicit 0 of the data's integer type when it is absent."""
        if name:
            return name
        t = self.types.get(data)
        if not t:
            raise UnsupportedError(f"the type of '{data}' is unknown", where=node_where(node))
        return self.const(f"{data}_zero_point", np.zeros((), helper.tensor_dtype_to_np_dtype(t)))

    def dq(self, node, x: str, scale: str, zp: str, axis: int | None = None) -> tuple[list, str]:
        y = self.float_value(f"{x}_dequantized", x)
        kw = {} if axis is None else {"axis": axis}
        return [helper.make_node("DequantizeLinear", [x, scale, zp], [y], name=f"{node.name or y}/dq_{x}", **kw)], y

    def scale_array(self, node, name: str, role: str) -> np.ndarray:
        if name not in self.inits:
            raise UnsupportedError(f"{role} '{name}' is not a constant", where=node_where(node),
                                   hint="QOperator scales and zero points must be initializers")
        return numpy_helper.to_array(self.inits[name])

    def expand_elementwise(self, node) -> list:
        """com.microsoft QLinearAdd / QLinearConcat / QLinearAveragePool / QLinearGlobalAveragePool:
        every quantized input through a DequantizeLinear, the float op, a QuantizeLinear."""
        op, y = node.op_type, node.output[0]
        pre = node.name or y
        attrs = [a for a in node.attribute]
        ins = list(node.input)
        if op == "QLinearConcat":  # (y_scale, y_zp, then (x, x_scale, x_zp) per input)
            ys, yz = ins[0], ins[1]
            triples = [tuple(ins[i:i + 3]) for i in range(2, len(ins), 3)]
        elif op == "QLinearAdd":
            ins += [""] * (8 - len(ins))
            triples = [tuple(ins[0:3]), tuple(ins[3:6])]
            ys, yz = ins[6], ins[7]
        else:  # pools: X, x_scale, x_zp, y_scale, y_zp
            ins += [""] * (5 - len(ins))
            triples = [tuple(ins[0:3])]
            ys, yz = ins[3], ins[4]
            if any(a.name == "channels_last" and a.i for a in attrs):
                raise UnsupportedError(f"{op} with channels_last=1 is not supported", where=node_where(node),
                                       hint="export the model in NCHW layout")
            attrs = [a for a in attrs if a.name != "channels_last"]
        if any(len(t) != 3 or not t[0] or not t[1] for t in triples) or not ys:
            raise UnsupportedError(f"{op} lacks a scale", where=node_where(node))
        nodes, floats = [], []
        for x, xs, xz in triples:
            n, xf = self.dq(node, x, xs, self.zero_point(node, xz, x))
            nodes += n
            floats.append(xf)
        yz = yz or self.zero_point(node, "", triples[0][0])
        yf = self.float_value(f"{y}_float", y)
        float_op = op[len("QLinear"):]
        nodes.append(helper.make_node(float_op, floats, [yf], name=f"{pre}/{float_op.lower()}"))
        if float_op != "Add":
            nodes[-1].attribute.extend(attrs)
        nodes.append(helper.make_node("QuantizeLinear", [yf, ys, yz], [y], name=pre))
        return nodes

    def expand(self, node) -> list:
        op = node.op_type
        if op in ("QLinearAdd", "QLinearConcat", "QLinearAveragePool", "QLinearGlobalAveragePool"):
            return self.expand_elementwise(node)
        y = node.output[0]
        attrs = [a for a in node.attribute]
        pre = node.name or y
        if op == "QGemm":
            ins = list(node.input) + [""] * 9
            x, xs, xz, w, ws, wz, bias, ys, yz = ins[:9]
            if not ys:
                raise UnsupportedError("QGemm with a float output (no y_scale) is not supported",
                                       where=node_where(node), hint="quantize the Gemm output")
            trans_b = next((a.i for a in attrs if a.name == "transB"), 0)
        if op in ("QLinearConv", "QLinearMatMul", "QGemm"):
            if op != "QGemm":
                x, xs, xz, w, ws, wz, ys, yz = (list(node.input) + [""] * 9)[:8]
                bias = node.input[8] if len(node.input) > 8 else ""
            xz, wz = self.zero_point(node, xz, x), self.zero_point(node, wz, w)
            yz = self.zero_point(node, yz, x) if not yz else yz
            nodes, xf = self.dq(node, x, xs, xz)
            w_axis = None
            if self.scale_array(node, ws, "weight scale").size > 1 or np.size(
                    numpy_helper.to_array(self.inits[wz]) if wz in self.inits else 0) > 1:
                w_axis = 0 if op == "QLinearConv" or (op == "QGemm" and trans_b) else -1
            n2, wf = self.dq(node, w, ws, wz, w_axis)
            nodes += n2
            ins = [xf, wf]
            if bias:
                s = (self.scale_array(node, xs, "input scale").astype(np.float32)
                     * self.scale_array(node, ws, "weight scale").astype(np.float32)).reshape(-1)
                bs = self.const(f"{bias}_scale", s if s.size > 1 else s.reshape(()))
                bz = self.const(f"{bias}_zero_point", np.zeros(s.shape if s.size > 1 else (), np.int32))
                n3, bf = self.dq(node, bias, bs, bz, 0 if s.size > 1 else None)
                nodes += n3
                ins.append(bf)
            yf = self.float_value(f"{y}_float", y)
            float_op = {"QLinearConv": "Conv", "QLinearMatMul": "MatMul", "QGemm": "Gemm"}[op]
            nodes.append(helper.make_node(float_op, ins, [yf], name=f"{pre}/{float_op.lower()}"))
            if float_op != "MatMul":
                nodes[-1].attribute.extend(attrs)
            nodes.append(helper.make_node("QuantizeLinear", [yf, ys, yz], [y], name=pre))
            return nodes
        # ConvInteger / MatMulInteger: exact int32 accumulator
        x, w, xz, wz = (list(node.input) + [""] * 4)[:4]
        one = self.const(f"{pre}_unit_scale", np.array(1.0, np.float32))
        xz, wz = self.zero_point(node, xz, x), self.zero_point(node, wz, w)
        nodes, xf = self.dq(node, x, one, xz)
        w_axis = None
        if wz in self.inits and numpy_helper.to_array(self.inits[wz]).size > 1:
            w_axis = 0 if op == "ConvInteger" else -1
        n2, wf = self.dq(node, w, one, wz, w_axis)
        nodes += n2
        yf = self.float_value(f"{y}_float", y)
        float_op = "Conv" if op == "ConvInteger" else "MatMul"
        nodes.append(helper.make_node(float_op, [xf, wf], [yf], name=f"{pre}/{float_op.lower()}"))
        if float_op == "Conv":
            nodes[-1].attribute.extend(attrs)
        acc_zp = self.const(f"{pre}_acc_zero_point", np.array(0, np.int32))
        nodes.append(helper.make_node("QuantizeLinear", [yf, one, acc_zp], [y], name=pre))
        return nodes

    def run(self) -> onnx.ModelProto:
        out = []
        for node in self.g.node:
            if (node.op_type in QOPERATORS and node.domain in ("", "ai.onnx")) or (
                    node.op_type in MS_QOPERATORS and node.domain == "com.microsoft"):
                out += self.expand(node)
            else:
                out.append(node)
        del self.g.node[:]
        self.g.node.extend(out)
        self.g.initializer.extend(self.new_inits)
        self.g.value_info.extend(self.new_vinfo)
        return self.m


_SCALE_PRESERVING = ("MaxPool", "Flatten", "Reshape")


def _requantize_chains(m: onnx.ModelProto) -> onnx.ModelProto:
    """Two patterns onnxruntime's QOperator output leaves around the rewritten nodes:

    - MaxPool/Flatten/Reshape run directly on an integer value (onnxruntime pools int8 natively):
      wrapped as DQ -> op -> Q with that value's own scale and zero point (exact: max and reshape
      commute with the monotone dequantization);
    - a float Relu whose output reaches a QuantizeLinear only through MaxPool/Flatten/Reshape:
      that quantizer's copy is inserted right after the Relu (exact: Q is monotone, so it commutes
      with max and reshape), so the Relu becomes a requantization and the chain keeps one scale.
    """
    g = m.graph
    qparams = {n.output[0]: (n.input[1], n.input[2] if len(n.input) > 2 else "")
               for n in g.node if n.op_type == "QuantizeLinear"}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    outputs = {o.name for o in g.output}
    names = {v for n in g.node for v in list(n.input) + list(n.output)} | {i.name for i in g.initializer}

    def fresh(base):
        name, k = base, 0
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.add(name)
        return name
    out = []
    for node in g.node:
        if node.op_type in _SCALE_PRESERVING and node.domain in ("", "ai.onnx") and node.input[0] in qparams:
            s, z = qparams[node.input[0]]
            xf, yf = fresh(f"{node.input[0]}_dequantized"), fresh(f"{node.output[0]}_float")
            pre = node.name or node.output[0]
            new = onnx.NodeProto()
            new.CopyFrom(node)
            new.input[0], new.output[0] = xf, yf
            out += [helper.make_node("DequantizeLinear", [node.input[0], s, z], [xf], name=f"{pre}/dq"), new,
                    helper.make_node("QuantizeLinear", [yf, s, z], [node.output[0]], name=pre)]
            qparams[node.output[0]] = (s, z)
            continue
        out.append(node)
        if node.op_type == "Relu" and node.domain in ("", "ai.onnx") and node.output[0] not in outputs:
            v, q = node.output[0], None
            while len(consumers.get(v, [])) == 1 and v not in outputs:
                c = consumers[v][0]
                if c.op_type == "QuantizeLinear":
                    q = c
                    break
                if c.op_type not in _SCALE_PRESERVING:
                    break
                v = c.output[0]
            if q is not None and v != node.output[0]:
                y = node.output[0]
                yq, yd = fresh(f"{y}_quantized"), fresh(f"{y}_requantized")
                out += [helper.make_node("QuantizeLinear", [y, *q.input[1:]], [yq], name=f"{node.name or y}/q"),
                        helper.make_node("DequantizeLinear", [yq, *q.input[1:]], [yd], name=f"{node.name or y}/dq")]
                for c in consumers[y]:
                    for k, i in enumerate(c.input):
                        if i == y:
                            c.input[k] = yd
    del g.node[:]
    g.node.extend(out)
    return m


def expand_qoperators(model: onnx.ModelProto) -> onnx.ModelProto:
    """Model with every QOperator node (QOPERATORS) replaced by its DQ -> op -> Q form.

    Expects a model after shape inference (the new values take their shapes from the outputs)."""
    if not any(n.op_type in QOPERATORS + MS_QOPERATORS for n in model.graph.node):
        return model
    m = _requantize_chains(_Rewriter(model).run())
    try:  # fill shapes that inference could not give the (non-standard) QOperator nodes
        return shape_inference.infer_shapes(m, strict_mode=False, data_prop=True)
    except Exception:  # inference is best effort here; the lowering reports what stays unknown
        return m
