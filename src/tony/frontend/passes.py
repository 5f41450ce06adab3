"""Pure graph-to-graph passes on ONNX models: constant folding and BatchNorm folding."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

# Q/DQ stay: the lowering reads scales and integer weights from them.
_KEEP = {"QuantizeLinear", "DequantizeLinear"}


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    return m


def _evaluator(model: onnx.ModelProto):
    """onnx's reference evaluator of `model` (imported when a node is folded: not every model has one)."""
    from onnx.reference import ReferenceEvaluator

    return ReferenceEvaluator(model)


def fold_constants(model: onnx.ModelProto) -> onnx.ModelProto:
    """Evaluate every node whose inputs are all constants (Constant nodes included) and replace it
    by initializers. Quantize/DequantizeLinear are kept."""
    m = _copy(model)
    g = m.graph
    consts = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    keep, new_inits = [], []
    for node in g.node:
        if node.op_type == "Constant":
            ev = _evaluator(helper.make_model(
                helper.make_graph([node], "c", [], [helper.make_tensor_value_info(node.output[0], 0, None)]),
                opset_imports=m.opset_import))
            val = ev.run(None, {})[0]
        elif node.op_type not in _KEEP and node.input and all((not i) or i in consts for i in node.input) \
                and node.domain in ("", "ai.onnx"):
            ins = [helper.make_tensor_value_info(i, 0, None) for i in node.input if i]
            outs = [helper.make_tensor_value_info(o, 0, None) for o in node.output]
            ev = _evaluator(helper.make_model(helper.make_graph([node], "c", ins, outs),
                                              opset_imports=m.opset_import))
            vals = ev.run(None, {i: consts[i] for i in node.input if i})
            for o, v in zip(node.output[1:], vals[1:]):
                consts[o] = np.asarray(v)
                new_inits.append(numpy_helper.from_array(np.asarray(v), o))
            val = vals[0]
        else:
            keep.append(node)
            continue
        consts[node.output[0]] = np.asarray(val)
        new_inits.append(numpy_helper.from_array(np.asarray(val), node.output[0]))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new_inits)
    return m


def fold_batchnorm(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold BatchNormalization into the preceding Conv/Gemm when the weights are float constants
    and the Conv output has no other consumer: w' = w * g/sqrt(v+eps), b' = (b-mu) g/sqrt(v+eps) + beta.
    A Gemm folds when transA = 0 and alpha = beta = 1 (the scale goes along W's output axis: 0 with
    transB, 1 without)."""
    m = _copy(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producers = {o: n for n in g.node for o in n.output}
    uses: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            uses[i] = uses.get(i, 0) + 1
    for o in g.output:
        uses[o.name] = uses.get(o.name, 0) + 1
    drop = set()
    for bn in g.node:
        if bn.op_type != "BatchNormalization" or len(bn.output) != 1:
            continue
        conv = producers.get(bn.input[0])
        if conv is None or conv.op_type not in ("Conv", "Gemm") or uses.get(bn.input[0], 0) != 1:
            continue
        if conv.input[1] not in inits or not all(i in inits for i in bn.input[1:5]):
            continue
        out_axis = 0
        if conv.op_type == "Gemm":  # y = x @ W (+ C): the output channels are W's columns, or rows with transB
            ga = {a.name: helper.get_attribute_value(a) for a in conv.attribute}
            if ga.get("transA", 0) or ga.get("alpha", 1.0) != 1.0 or ga.get("beta", 1.0) != 1.0:
                continue
            if len(conv.input) > 2 and conv.input[2] and (
                    conv.input[2] not in inits or numpy_helper.to_array(inits[conv.input[2]]).ndim != 1):
                continue
            out_axis = 0 if ga.get("transB", 0) else 1
        eps = next((a.f for a in bn.attribute if a.name == "epsilon"), 1e-5)
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        w = numpy_helper.to_array(inits[conv.input[1]]).astype(np.float64)
        b = (numpy_helper.to_array(inits[conv.input[2]]).astype(np.float64)
             if len(conv.input) > 2 and conv.input[2] else np.zeros(w.shape[out_axis]))
        k = gamma / np.sqrt(var + eps)
        kshape = [1] * w.ndim
        kshape[out_axis] = -1
        w2 = (w * k.reshape(kshape)).astype(np.float32)
        b2 = ((b - mean) * k + beta).astype(np.float32)
        wname, bname = conv.input[1] + "_bnfold", conv.output[0] + "_bias_bnfold"
        g.initializer.extend([numpy_helper.from_array(w2, wname), numpy_helper.from_array(b2, bname)])
        conv.input[1] = wname
        if len(conv.input) > 2:
            conv.input[2] = bname
        else:
            conv.input.append(bname)
        conv.output[0] = bn.output[0]
        drop.add(id(bn))
    nodes = [n for n in g.node if id(n) not in drop]
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    keep_inits = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(keep_inits)
    return m


def to_networkx(model: onnx.ModelProto):
    """The model as a networkx DiGraph: one vertex per node (its index), an edge per value passed."""
    import networkx as nx

    g = nx.DiGraph()
    producer = {}
    for i, n in enumerate(model.graph.node):
        g.add_node(i, op_type=n.op_type, name=n.name)
        for o in n.output:
            producer[o] = i
    for i, n in enumerate(model.graph.node):
        for v in n.input:
            if v in producer:
                g.add_edge(producer[v], i, value=v)
    return g


def toposort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Nodes in a topological order (stable: ties keep file order, the order networkx's
    lexicographical_topological_sort gives on to_networkx). Cycles are a ModelError."""
    import heapq

    from ..errors import ModelError

    nodes = model.graph.node
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    succ: list[set] = [set() for _ in nodes]
    for i, n in enumerate(nodes):
        for v in n.input:
            if v in producer:
                succ[producer[v]].add(i)
    indeg = [0] * len(nodes)
    for s_ in succ:
        for j in s_:
            indeg[j] += 1
    ready = [i for i, d in enumerate(indeg) if d == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for j in succ[i]:
            indeg[j] -= 1
            if indeg[j] == 0:
                heapq.heappush(ready, j)
    if len(order) < len(nodes):
        raise ModelError("the graph has a cycle")
    m = _copy(model)
    nodes = [model.graph.node[i] for i in order]
    del m.graph.node[:]
    m.graph.node.extend(nodes)
    return m
