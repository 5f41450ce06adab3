"""The float subgraphs of transformer encoders that become one integer op (docs/transformer.md).

`match(model)` finds, in a float or QDQ ONNX graph, the node groups that exporters write for
LayerNorm and GELU:

- LayerNorm, opset 13 (torch.onnx.export decomposes it): ReduceMean(x, axes=[-1]) -> Sub(x, mean)
  -> Pow(2) -> ReduceMean(axes=[-1]) -> Add(eps) -> Sqrt -> Div(Sub, Sqrt) -> [Mul(gamma)] -> [Add(beta)],
  with eps, gamma and beta constants;
- LayerNormalization (opset 17) over the last axis;
- GELU as Div(x, sqrt 2) (or Mul(x, 1/sqrt 2)) -> Erf -> Add(1) and the product of x, that sum and
  0.5 in any order of the two Muls; Gelu (opset 20), either `approximate` mode.

The nodes between the group's input and its output read no other activation. Tony's quantizer
puts Q/DQ pairs around a group and never inside it (tony.quant.qdq); onnxruntime's quantize_static
also puts them inside (after the variance, eps Add, Div, Mul gamma and Add beta of a LayerNorm;
after the Erf, the Add 1 and the Muls of a GELU) and quantizes the constants (eps, gamma, beta, 1,
0.5) through DequantizeLinear. The matcher steps over such interior QuantizeLinear ->
DequantizeLinear pairs and reads such constants as their dequantized values: the pairs become nodes
of the group and `Group.interior` lists the values they quantize. The lowering turns a group that
reads a dequantized tensor and ends in a QuantizeLinear into one IR op (tony.frontend.lower;
docs/transformer.md, 'onnxruntime QDQ encoders', says what the interior points change). Both
see the same groups because both call this function.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class Group:
    kind: str                     # "layernorm" or "gelu"
    nodes: tuple                  # the ONNX nodes of the group, in graph order
    x: str                        # the input activation
    y: str                        # the output
    params: dict = field(default_factory=dict)   # layernorm: eps, gamma, beta (float arrays); gelu: approximate
    interior: tuple = ()          # the values quantized inside the group (QuantizeLinear inputs), in graph order

    @property
    def first(self):
        return self.nodes[0]


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class _Graph:
    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
        for n in g.node:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.producer = {o: n for n in g.node for o in n.output}
        self.consumers: dict[str, list] = {}
        for n in g.node:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)
        self.outputs = {o.name for o in g.output}
        self.order = {id(n): k for k, n in enumerate(g.node)}

    def const(self, name):
        """A constant's float value: an initializer, or the DequantizeLinear of a quantized constant
        (an integer initializer, or QuantizeLinear of a float one: onnxruntime quantizes a
        LayerNorm's eps, gamma and beta and a GELU's 1 and 0.5 so), as (q - zero point) * scale."""
        if name in self.consts:
            return self.consts[name]
        dq = self.producer.get(name)
        if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
            return None
        q = self._quantized_const(dq.input[0])
        scale = self.consts.get(dq.input[1])
        zp = self.consts.get(dq.input[2]) if len(dq.input) > 2 and dq.input[2] else np.zeros((), np.int64)
        if q is None or scale is None or zp is None or scale.size != 1 or zp.size != 1:
            return None
        return (q.astype(np.int64) - int(zp.reshape(-1)[0])).astype(np.float32) * np.float32(scale.reshape(-1)[0])

    def _quantized_const(self, name):
        """The integers of a quantized constant: an integer initializer or QuantizeLinear of a float one."""
        c = self.consts.get(name)
        if c is not None:
            return c if np.issubdtype(c.dtype, np.integer) else None
        q = self.producer.get(name)
        if q is None or q.op_type != "QuantizeLinear" or len(q.input) < 2:
            return None
        x, scale = self.consts.get(q.input[0]), self.consts.get(q.input[1])
        zp = self.consts.get(q.input[2]) if len(q.input) > 2 and q.input[2] else np.zeros((), np.uint8)
        if x is None or scale is None or zp is None or scale.size != 1 or zp.size != 1:
            return None
        info = np.iinfo(zp.dtype)
        v = np.rint(x.astype(np.float32) / np.float32(scale.reshape(-1)[0])) + int(zp.reshape(-1)[0])
        return np.clip(v, info.min, info.max).astype(np.int64)

    def hop(self, name) -> tuple[str, tuple]:
        """Step over an interior QuantizeLinear -> DequantizeLinear pair after `name`: (the DQ's
        output, (Q, DQ)) when `name`'s only reader is a QuantizeLinear read only by one
        DequantizeLinear, none of them a graph output; else (name, ())."""
        q = self.only_consumer(name, "QuantizeLinear")
        dq = self.only_consumer(q.output[0], "DequantizeLinear") if q is not None else None
        if dq is None or dq.output[0] in self.outputs:
            return name, ()
        return dq.output[0], (q, dq)

    def follow(self, name, op_type, hops: list) -> tuple:
        """The only reader of `name` (an `op_type` node), possibly after an interior Q/DQ pair,
        whose nodes are appended to `hops`: (node or None, the value that node reads)."""
        name, pair = self.hop(name)
        hops.extend(pair)
        return self.only_consumer(name, op_type), name

    def back(self, name) -> tuple:
        """The node that computes `name`, possibly before an interior Q/DQ pair (the inverse of hop):
        (node or None, the pair's nodes)."""
        dq = self.producer.get(name)
        if dq is not None and dq.op_type == "DequantizeLinear":
            q = self.producer.get(dq.input[0])
            if q is not None and q.op_type == "QuantizeLinear" and q.input[0] in self.producer \
                    and self.hop(q.input[0])[0] == name:
                return self.producer[q.input[0]], (q, dq)
        return self.producer.get(name), ()

    def scalar(self, name) -> float | None:
        c = self.const(name)
        if c is None or c.size != 1:
            return None
        return float(np.asarray(c, np.float64).reshape(-1)[0])

    def only_consumer(self, name, op_type=None):
        """The single consumer of an interior value (None if several, none, or a graph output)."""
        cons = self.consumers.get(name, [])
        if len(cons) != 1 or name in self.outputs:
            return None
        if op_type is not None and cons[0].op_type not in (op_type if isinstance(op_type, tuple) else (op_type,)):
            return None
        return cons[0]

    def other(self, node, name):
        """The input of a two-input node that is not `name` (None when both are)."""
        ins = list(node.input)
        if len(ins) != 2 or ins.count(name) != 1:
            return None
        return ins[1] if ins[0] == name else ins[0]


def _last_axis(g: _Graph, node, rank: int | None) -> bool:
    """ReduceMean over the last axis only, keeping dims."""
    a = _attrs(node)
    axes = a.get("axes")
    if axes is None and len(node.input) > 1 and node.input[1]:
        c = g.const(node.input[1])
        axes = None if c is None else [int(v) for v in np.ravel(c)]
    if axes is None or len(axes) != 1 or not a.get("keepdims", 1):
        return False
    return axes[0] == -1 or (rank is not None and axes[0] == rank - 1)


def _layernorm13(g: _Graph, rm, shapes) -> Group | None:
    x = rm.input[0]
    rank = len(shapes[x]) if x in shapes else None
    if not _last_axis(g, rm, rank):
        return None
    hops = []                      # the interior Q/DQ pairs stepped over
    sub, mean = g.follow(rm.output[0], "Sub", hops)
    if sub is None or list(sub.input) != [x, mean]:
        return None
    d, pair = g.hop(sub.output[0])
    hops.extend(pair)
    cons = g.consumers.get(d, [])
    if len(cons) != 2 or d in g.outputs:
        return None
    pow_ = next((c for c in cons if c.op_type == "Pow"), None)
    div = next((c for c in cons if c.op_type == "Div"), None)
    if pow_ is None or div is None or pow_.input[0] != d or g.scalar(pow_.input[1]) != 2.0 or div.input[0] != d:
        return None
    rm2, _ = g.follow(pow_.output[0], "ReduceMean", hops)
    if rm2 is None or not _last_axis(g, rm2, rank):
        return None
    add, var = g.follow(rm2.output[0], "Add", hops)
    if add is None:
        return None
    eps = g.scalar(g.other(add, var) or "")
    if eps is None or eps < 0:
        return None
    sq, _ = g.follow(add.output[0], "Sqrt", hops)
    if sq is None:
        return None
    div2, root = g.follow(sq.output[0], "Div", hops)
    if div2 is not div or div.input[1] != root:
        return None
    nodes = [rm, sub, pow_, rm2, add, sq, div]
    y = div.output[0]
    n = shapes.get(x, (None,))[-1]
    affine = {}
    for key, op in (("gamma", "Mul"), ("beta", "Add")):   # the learned scale, then the bias
        yq, pair = g.hop(y)
        if pair and not hops:   # a chain quantized only around it: this pair is its output, not inside it
            yq, pair = y, ()
        nd = g.only_consumer(yq, op)
        c = g.const(g.other(nd, yq) or "") if nd is not None else None
        affine[key] = None
        if c is not None and c.size in (1, n):
            affine[key] = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (n,))
            nodes.append(nd)
            hops.extend(pair)
            y = nd.output[0]
    return Group("layernorm", tuple(nodes + hops), x, y, {"eps": eps, **affine, "n": n},
                 interior=_interior(hops))


def _interior(hops) -> tuple:
    """The values that the interior QuantizeLinear nodes among `hops` quantize."""
    return tuple(n.input[0] for n in hops if n.op_type == "QuantizeLinear")


def _layernorm17(g: _Graph, node, shapes) -> Group | None:
    x = node.input[0]
    a = _attrs(node)
    rank = len(shapes[x]) if x in shapes else None
    axis = a.get("axis", -1)
    if len(node.output) > 1 and any(node.output[1:]) or rank is None or axis % rank != rank - 1:
        return None
    n = shapes[x][-1]
    gamma = g.const(node.input[1])
    beta = g.const(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(n)
    if gamma is None or beta is None:
        return None
    return Group("layernorm", (node,), x, node.output[0],
                 {"eps": float(a.get("epsilon", 1e-5)), "n": n,
                  "gamma": np.broadcast_to(np.asarray(gamma, np.float64).reshape(-1), (n,)),
                  "beta": np.broadcast_to(np.asarray(beta, np.float64).reshape(-1), (n,))})


def _gelu_erf(g: _Graph, erf) -> Group | None:
    hops = []                      # the interior Q/DQ pairs stepped over
    pre, pair = g.back(erf.input[0])
    hops.extend(pair)
    if pre is None or pre.op_type not in ("Div", "Mul") or g.follow(pre.output[0], "Erf", [])[0] is not erf:
        return None
    x = pre.input[0]
    c = g.scalar(pre.input[1])
    if pre.op_type == "Mul" and c is None:   # Mul(1/sqrt2, x)
        x, c = pre.input[1], g.scalar(pre.input[0])
    want = _SQRT2 if pre.op_type == "Div" else 1.0 / _SQRT2
    if c is None or abs(c - want) > 1e-6 * want:
        return None
    add, e = g.follow(erf.output[0], "Add", hops)
    if add is None or not _near(g.scalar(g.other(add, e) or ""), 1.0):
        return None
    m1, s = g.follow(add.output[0], "Mul", hops)
    if m1 is None:
        return None
    o = g.other(m1, s)
    nodes = [pre, erf, add, m1]
    if o == x:                                   # (x * (1 + erf)) * 0.5
        m2, p = g.follow(m1.output[0], "Mul", hops)
        if m2 is None or not _near(g.scalar(g.other(m2, p) or ""), 0.5):
            return None
        nodes.append(m2)
    elif o is not None and _near(g.scalar(o), 0.5):   # x * ((1 + erf) * 0.5)
        m2, p = g.follow(m1.output[0], "Mul", hops)
        if m2 is None or g.other(m2, p) != x:
            return None
        nodes.append(m2)
    else:                                        # (x * 0.5) * (1 + erf)
        half, pair = g.back(o or "")
        if half is None or half.op_type != "Mul" or g.follow(half.output[0], "Mul", [])[0] is not m1 \
                or g.other(half, x) is None or not _near(g.scalar(g.other(half, x)), 0.5):
            return None
        hops.extend(pair)
        nodes.insert(0, half)
        m2 = m1
    return Group("gelu", tuple(sorted(nodes + hops, key=lambda n: g.order[id(n)])), x, m2.output[0],
                 {"approximate": "none"}, interior=_interior(hops))


def _near(v: float | None, want: float) -> bool:
    """A constant equal to `want` up to the rounding of a quantized constant (onnxruntime stores 1
    as 255 * float32(1/255))."""
    return v is not None and abs(v - want) <= 1e-6 * abs(want)


def _gelu20(g: _Graph, node) -> Group | None:
    appr = _attrs(node).get("approximate", "none")
    appr = appr.decode() if isinstance(appr, bytes) else appr
    return Group("gelu", (node,), node.input[0], node.output[0], {"approximate": appr})


def match(model: onnx.ModelProto, shapes: dict | None = None) -> list[Group]:
    """Every LayerNorm and GELU group of the graph, in the graph order of their first node."""
    from .load import tensor_shapes

    g = _Graph(model)
    if shapes is None:
        from onnx import shape_inference
        shapes = tensor_shapes(shape_inference.infer_shapes(model))
    groups, used = [], set()
    for node in model.graph.node:
        if id(node) in used or node.domain not in ("", "ai.onnx"):
            continue
        grp = None
        if node.op_type == "ReduceMean":
            grp = _layernorm13(g, node, shapes)
        elif node.op_type == "LayerNormalization":
            grp = _layernorm17(g, node, shapes)
        elif node.op_type == "Erf":
            grp = _gelu_erf(g, node)
        elif node.op_type == "Gelu":
            grp = _gelu20(g, node)
        if grp is not None and not any(id(n) in used for n in grp.nodes):
            groups.append(grp)
            used.update(id(n) for n in grp.nodes)
    groups.sort(key=lambda grp: min(g.order[id(n)] for n in grp.nodes))
    return [Group(grp.kind, tuple(sorted(grp.nodes, key=lambda n: g.order[id(n)])), grp.x, grp.y, grp.params,
                  grp.interior) for grp in groups]
