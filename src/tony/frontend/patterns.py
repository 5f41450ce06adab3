"""The float subgraphs of transformer encoders that become one integer op (docs/transformer.md).

`match(model)` finds, in a float or QDQ ONNX graph, the node groups that exporters write for
LayerNorm and GELU:

- LayerNorm, opset 13 (torch.onnx.export decomposes it): ReduceMean(x, axes=[-1]) -> Sub(x, mean)
  -> Pow(2) -> ReduceMean(axes=[-1]) -> Add(eps) -> Sqrt -> Div(Sub, Sqrt) -> [Mul(gamma)] -> [Add(beta)],
  with eps, gamma and beta constants;
- LayerNormalization (opset 17) over the last axis;
- GELU as Div(x, sqrt 2) (or Mul(x, 1/sqrt 2)) -> Erf -> Add(1) and the product of x, that sum and
  0.5 in any order of the two Muls; Gelu (opset 20), either `approximate` mode.

The nodes between the group's input and its output are float and read no other activation. The
quantizer puts Q/DQ pairs around a group and never inside it (tony.quant.qdq); the lowering turns a
group that reads a dequantized tensor and ends in a QuantizeLinear into one IR op
(tony.frontend.lower). Both see the same groups because both call this function.
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
        return self.consts.get(name)

    def scalar(self, name) -> float | None:
        c = self.consts.get(name)
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
    mean = rm.output[0]
    sub = g.only_consumer(mean, "Sub")
    if sub is None or list(sub.input) != [x, mean]:
        return None
    d = sub.output[0]
    cons = g.consumers.get(d, [])
    if len(cons) != 2 or d in g.outputs:
        return None
    pow_ = next((c for c in cons if c.op_type == "Pow"), None)
    div = next((c for c in cons if c.op_type == "Div"), None)
    if pow_ is None or div is None or pow_.input[0] != d or g.scalar(pow_.input[1]) != 2.0 or div.input[0] != d:
        return None
    rm2 = g.only_consumer(pow_.output[0], "ReduceMean")
    if rm2 is None or not _last_axis(g, rm2, rank):
        return None
    add = g.only_consumer(rm2.output[0], "Add")
    if add is None:
        return None
    eps = g.scalar(g.other(add, rm2.output[0]) or "")
    if eps is None or eps < 0:
        return None
    sq = g.only_consumer(add.output[0], "Sqrt")
    if sq is None or g.only_consumer(sq.output[0], "Div") is not div or div.input[1] != sq.output[0]:
        return None
    nodes = [rm, sub, pow_, rm2, add, sq, div]
    y = div.output[0]
    n = shapes.get(x, (None,))[-1]
    affine = {}
    for key, op in (("gamma", "Mul"), ("beta", "Add")):   # the learned scale, then the bias
        nd = g.only_consumer(y, op)
        c = g.const(g.other(nd, y) or "") if nd is not None else None
        affine[key] = None
        if c is not None and c.size in (1, n):
            affine[key] = np.broadcast_to(np.asarray(c, np.float64).reshape(-1), (n,))
            nodes.append(nd)
            y = nd.output[0]
    return Group("layernorm", tuple(nodes), x, y, {"eps": eps, **affine, "n": n})


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
    pre = g.producer.get(erf.input[0])
    if pre is None or pre.op_type not in ("Div", "Mul") or g.only_consumer(pre.output[0]) is not erf:
        return None
    x = pre.input[0]
    c = g.scalar(pre.input[1])
    if pre.op_type == "Mul" and c is None:   # Mul(1/sqrt2, x)
        x, c = pre.input[1], g.scalar(pre.input[0])
    want = _SQRT2 if pre.op_type == "Div" else 1.0 / _SQRT2
    if c is None or abs(c - want) > 1e-6 * want:
        return None
    add = g.only_consumer(erf.output[0], "Add")
    if add is None or g.scalar(g.other(add, erf.output[0]) or "") != 1.0:
        return None
    s = add.output[0]
    m1 = g.only_consumer(s, "Mul")
    if m1 is None:
        return None
    o = g.other(m1, s)
    nodes = [pre, erf, add, m1]
    if o == x:                                   # (x * (1 + erf)) * 0.5
        m2 = g.only_consumer(m1.output[0], "Mul")
        if m2 is None or g.scalar(g.other(m2, m1.output[0]) or "") != 0.5:
            return None
        nodes.append(m2)
    elif o is not None and g.scalar(o) == 0.5:   # x * ((1 + erf) * 0.5)
        m2 = g.only_consumer(m1.output[0], "Mul")
        if m2 is None or g.other(m2, m1.output[0]) != x:
            return None
        nodes.append(m2)
    else:                                        # (x * 0.5) * (1 + erf)
        half = g.producer.get(o or "")
        if half is None or half.op_type != "Mul" or g.only_consumer(half.output[0]) is not m1 \
                or g.other(half, x) is None or g.scalar(g.other(half, x)) != 0.5:
            return None
        nodes.insert(0, half)
        m2 = m1
    return Group("gelu", tuple(sorted(nodes, key=lambda n: g.order[id(n)])), x, m2.output[0],
                 {"approximate": "none"})


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
    return [Group(grp.kind, tuple(sorted(grp.nodes, key=lambda n: g.order[id(n)])), grp.x, grp.y, grp.params)
            for grp in groups]
