"""Write a power-of-2 QDQ model from a float model and per-tensor thresholds.

Graph preparation: constants and BatchNormalization folded into the Conv before it; ReLU6 is a
Clip(0, 6) and becomes the output clamp of the op before it.

Weights: int8 (or int4 values) per tensor, scale 2^ceil(log2 t_w) / 2^(b-1) with t_w = max|w| unless
given. Biases: int32 at scale_x * scale_w. Activations: uint8 after Relu/Clip(0, .), int8 elsewhere,
scale from the threshold. Scale-preserving ops (MaxPool, Reshape, Flatten) share their input's
scale; the inputs of an Add, and the inputs and output of a Concat, share one threshold (one
exponent on hardware).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, UnsupportedError, node_where
from .calibrate import (ACT_METHODS, act_threshold, activations, check_calibration_data, pow2_scale,
                        threshold_max, weight_threshold)

_MAC = {"Conv", "Gemm", "MatMul"}
_ACT = {"Relu", "Clip"}
_SAME_SCALE = {"MaxPool", "Reshape", "Flatten", "Transpose", "Slice", "Split", "Pad", "Resize", "Gather",
               "Dropout", "Identity", "Squeeze", "Unsqueeze"}
# host ops (docs/arithmetic.md): their outputs get a Q/DQ pair of their own; float constants they
# read as data (not shapes, axes or parameters) are quantized like weights, per tensor
_OWN_SCALE = {"Mul", "Sub", "Sum", "Sigmoid", "Tanh", "HardSigmoid", "HardSwish", "LeakyRelu", "Elu",
              "BatchNormalization", "Softmax", "LRN", "ReduceMean"}
_NONNEG = {"Sigmoid", "HardSigmoid", "Softmax"}
_DATA_CONSTS = {"Mul", "Sub", "Add", "Sum"}
_SUPPORTED = _MAC | _ACT | _SAME_SCALE | _OWN_SCALE | {"Add", "Concat", "AveragePool", "GlobalAveragePool"}


class _Structure:
    """The transformer parts of a graph (by node name): LayerNorm and GELU groups
    (tony.frontend.patterns), whose interior nodes get no Q/DQ and whose constants stay float; the
    bias Add after a MatMul with a constant weight (quantized as the MatMul's int32 bias, no point
    between them); a Div by a scalar constant after a MatMul of two activations (folded into its
    rescale, no point between them)."""

    def __init__(self, model: onnx.ModelProto):
        from ..frontend.patterns import match

        g = model.graph
        inits = {i.name: i for i in g.initializer}
        cons = _consumers(g)
        outs = {o.name for o in g.output}
        self.groups = match(model)
        self.interior = {n.name for grp in self.groups for n in grp.nodes}
        self.group_out = {grp.y: grp for grp in self.groups}
        self.bias_add: dict[str, str] = {}    # Add node name -> MatMul node name
        self.scaled: dict[str, str] = {}      # MatMul node name -> Div node name
        for n in g.node:
            if n.op_type != "MatMul" or n.output[0] in outs or len(cons.get(n.output[0], [])) != 1:
                continue
            c = cons[n.output[0]][0]
            if c.name in self.interior:
                continue
            other = [i for i in c.input if i != n.output[0]]
            if len(other) != 1 or other[0] not in inits:
                continue
            arr = numpy_helper.to_array(inits[other[0]])
            if c.op_type == "Add" and n.input[1] in inits and arr.ndim == 1:
                self.bias_add[c.name] = n.name
            elif (c.op_type == "Div" and n.input[1] not in inits and arr.size == 1 and c.input[0] == n.output[0]
                  and float(arr.reshape(-1)[0]) > 0):
                self.scaled[n.name] = c.name

    @property
    def fused(self) -> set[str]:
        """MatMul nodes whose output gets no Q/DQ (the Add or Div after them does)."""
        return set(self.bias_add.values()) | set(self.scaled)


def _consumers(g) -> dict[str, list]:
    """Tensor name -> the nodes of graph `g` that read it, in node order."""
    cons: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            cons.setdefault(i, []).append(n)
    return cons


def _nonneg(node, inits) -> bool:
    """True when the activation's output is >= 0 (Relu, Clip with min >= 0)."""
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip" and len(node.input) > 1 and node.input[1] in inits:
        return float(numpy_helper.to_array(inits[node.input[1]])) >= 0
    return False


def prepare(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants and BatchNorm; check that every operator can be quantized."""
    from ..frontend.passes import fold_batchnorm, fold_constants

    qdq = next((n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")), None)
    if qdq is not None:   # onnxruntime's quantize_static output, or Tony's own: calibrating again means nothing
        raise UnsupportedError("the model is already quantized (it holds QuantizeLinear/DequantizeLinear); "
                               "`tony quantize` and threshold training take the float model", where=node_where(qdq),
                               hint="compile the quantized model as it is (`tony compile --requant multiplier` for "
                                    "scales other than powers of two), rewrite its scales with `tony quantize "
                                    "--snap-pow2`, or quantize its float original")
    model = _name_nodes(fold_batchnorm(fold_constants(model)))   # the pattern checks go by node name
    if not model.graph.node:
        raise UnsupportedError("the graph has no operators (its inputs are its outputs): there is nothing to "
                               "quantize", where="model")
    st = _Structure(model)
    divs = set(st.scaled.values())
    for n in model.graph.node:
        if n.name in st.interior or n.name in divs:
            continue
        if n.op_type == "Div":
            raise UnsupportedError("Div is quantized only as a division by a constant right after a MatMul (the "
                                   "attention scores) or inside a LayerNorm or GELU pattern", where=node_where(n))
        if n.op_type not in _SUPPORTED:
            hint = ("fold it into the Conv before it (only a BatchNormalization right after a Conv with "
                    "constant weights folds)" if n.op_type == "BatchNormalization" else None)
            raise UnsupportedError(f"operator {n.op_type} cannot be quantized yet", where=node_where(n), hint=hint)
    return model


def quantization_points(model: onnx.ModelProto) -> list[tuple[str, bool, str | None]]:
    """(tensor, unsigned, shares_scale_with) for every activation tensor that gets a Q/DQ pair,
    in topological order."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers = _consumers(g)
    points = []
    for inp in g.input:
        if inp.name not in inits:
            points.append((inp.name, False, None))
    unsigned: dict[str, bool] = {p[0]: False for p in points}
    st = _Structure(model)
    divs = set(st.scaled.values())
    for n in g.node:
        if n.name in st.interior:
            if n.output[0] in st.group_out:   # the group's output: an int8 point of its own
                points.append((n.output[0], False, None))
                unsigned[n.output[0]] = False
            continue
        if n.name in st.fused:
            continue
        if n.name in divs:
            points.append((n.output[0], False, None))
            unsigned[n.output[0]] = False
            continue
        if n.op_type not in _SUPPORTED:
            raise UnsupportedError(f"operator {n.op_type} cannot be quantized yet", where=node_where(n))
        if n.op_type == "Split":
            for o in n.output:
                points.append((o, unsigned.get(n.input[0], False), n.input[0]))
                unsigned[o] = points[-1][1]
            continue
        out = n.output[0]
        cons = consumers.get(out, [])
        fused = (n.op_type in _MAC | {"Add"} and len(cons) == 1 and cons[0].op_type in _ACT
                 and out not in {o.name for o in g.output})
        if fused:
            continue
        if n.op_type in _ACT:
            u = _nonneg(n, inits)
            points.append((out, u, None))
        elif n.op_type in _SAME_SCALE and n.input[0] in unsigned:
            u = unsigned.get(n.input[0], False)
            points.append((out, u, n.input[0]))
        elif n.op_type in _NONNEG:
            points.append((out, True, None))
        else:
            u = n.op_type in {"Concat", "AveragePool", "GlobalAveragePool"} and all(
                unsigned.get(i, False) for i in n.input if i not in inits)
            points.append((out, u, None))
        unsigned[out] = points[-1][1]
    return points


def shared_groups(model: onnx.ModelProto, points) -> dict[str, str]:
    """point -> representative of its threshold-sharing group (itself when alone).

    Same-scale ops join their input; both inputs of an Add join; all inputs of a Concat and its
    output join. The representative is the group's first point in topological order."""
    order = {p[0]: k for k, p in enumerate(points)}
    parent = {p[0]: p[0] for p in points}

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            first, second = (ra, rb) if order[ra] < order[rb] else (rb, ra)
            parent[second] = first

    for name, _, share in points:
        if share is not None and share in parent:
            union(name, share)
    for n in model.graph.node:
        ins = [i for i in n.input if i in parent]
        if n.op_type in ("Add", "Sum") and len(ins) == 2:
            union(ins[0], ins[1])
        elif n.op_type == "Concat" and ins:
            for i in ins[1:]:
                union(ins[0], i)
            if n.output[0] in parent:
                union(ins[0], n.output[0])
    return {p: find(p) for p in parent}


def mac_weight_bits(model: onnx.ModelProto, weight_bits: int, first_last_8bit: bool = False) -> dict[str, int]:
    """Weight bits per MAC node name: weight_bits, or 8 for the first and last MAC layers."""
    macs = [n.name for n in model.graph.node if n.op_type in _MAC]
    bits = {m: weight_bits for m in macs}
    if first_last_8bit and macs:
        bits[macs[0]] = bits[macs[-1]] = 8
    return bits


def _name_nodes(model: onnx.ModelProto) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    seen = set()
    for k, n in enumerate(m.graph.node):
        if not n.name or n.name in seen:
            n.name = f"{n.op_type.lower()}_{k}"
        seen.add(n.name)
    return m


def calibrate(model: onnx.ModelProto, calib: np.ndarray, *, weight_bits: int = 8, act_bits: int = 8,
              method: str = "max", weight_method: str = "max", first_last_8bit: bool = False,
              sequential: bool = True, progress: bool = False) -> tuple[dict[str, float], dict[str, float]]:
    """Activation thresholds (point -> t) and weight thresholds (weight initializer -> t) from one batch.

    The graph's input is calibrated by its maximum whatever `method` says: it is the data itself
    (e.g. MFCCs whose log-energy coefficient spans a range of its own), which KL-J would clip.
    With `sequential`, point k is calibrated on activations computed with the quantizers of
    points < k (and the weights feeding it) already in place, in topological order."""
    if method not in ACT_METHODS:
        raise UnsupportedError(f"calibration method {method!r} is unknown", hint="use one of " + ", ".join(ACT_METHODS))
    points = quantization_points(model)
    groups = shared_groups(model, points)
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    wbits = mac_weight_bits(model, weight_bits, first_last_8bit)
    wt = {n.input[1]: weight_threshold(inits[n.input[1]], weight_method, wbits[n.name])
          for n in model.graph.node if n.op_type in _MAC and n.input[1] in inits}
    signed = {p[0]: not p[1] for p in points}
    graph_inputs = {i.name for i in model.graph.input}
    softmax_out = {n.output[0] for n in model.graph.node if n.op_type == "Softmax"}
    share = {p[0]: p[2] for p in points}
    th: dict[str, float] = {}
    if not sequential:
        vals = activations(model, calib, [p[0] for p in points])
    from tqdm import tqdm

    for name, _, _ in tqdm(points, desc="calibrating", unit="tensor", disable=not progress, leave=False):
        if share[name] is not None and share[name] in th:
            th[name] = th[share[name]]
            continue
        if sequential:
            done = [p for p in points if p[0] in th]
            scales = _scales(done, th, groups, act_bits)
            partial = write_qdq(model, done, scales, weight_bits=weight_bits, act_bits=act_bits,
                                weight_thresholds=wt, first_last_8bit=first_last_8bit, partial=True)
            v = activations(partial, calib, [name])[name]
        else:
            v = vals[name]
        # the model's input is data, not an activation with a tail to cut: its whole range (max); a
        # Softmax's output is uint8 at 2^-8 whatever the batch shows (the integer Softmax's grid)
        if name in softmax_out:
            t = 1.0
        else:
            t = threshold_max(v) if name in graph_inputs else act_threshold(v, method, act_bits, signed[name])
        rep = groups[name]
        if rep != name and rep in th:  # share with the group: the widest threshold wins
            t = max(t, th[rep])
            for other in th:
                if groups[other] == rep:
                    th[other] = t
        th[name] = t
    return th, wt


def _scales(points, thresholds, groups, act_bits) -> dict[str, float]:
    group_t: dict[str, float] = {}
    for name, _, _ in points:
        r = groups.get(name, name)
        group_t[r] = max(group_t.get(r, 0.0), thresholds[name])
    return {name: pow2_scale(group_t[groups.get(name, name)], act_bits, not uns) for name, uns, _ in points}


def quantize_static(model: onnx.ModelProto, calib: np.ndarray, *, weight_bits: int = 8, act_bits: int = 8,
                    method: str = "max", thresholds: dict[str, float] | None = None,
                    weight_method: str = "max", weight_thresholds: dict[str, float] | None = None,
                    first_last_8bit: bool = False, sequential: bool = True, progress: bool = False) -> onnx.ModelProto:
    """Float model + ONE calibration batch -> pow2 QDQ model.

    method: activation calibrator (max, percentile, mse, kl-j); weight_method: max, 3sd or mse.
    `thresholds` / `weight_thresholds` (e.g. from training) skip calibration of those tensors."""
    if weight_bits not in (4, 8):
        raise InputError(f"weight bits must be 4 or 8, not {weight_bits}")
    if act_bits != 8:
        raise UnsupportedError(f"activation bits {act_bits} are not supported", hint="use 8")
    model = _name_nodes(prepare(model))
    g = model.graph
    inp = g.input[0]
    in_shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    points = quantization_points(model)
    if thresholds is None:
        calib = check_calibration_data(calib, in_shape)
        from ..budget import check_onnx

        check_onnx(model, len(calib), "calibrating the float model")
        thresholds, wt = calibrate(model, calib, weight_bits=weight_bits, act_bits=act_bits, method=method,
                                   weight_method=weight_method, first_last_8bit=first_last_8bit,
                                   sequential=sequential, progress=progress)
        weight_thresholds = weight_thresholds or wt
    missing = [p[0] for p in points if p[0] not in thresholds]
    if missing:
        raise InputError(f"no threshold for tensor(s) {', '.join(missing)}")
    scales = _scales(points, thresholds, shared_groups(model, points), act_bits)
    return write_qdq(model, points, scales, weight_bits=weight_bits, act_bits=act_bits,
                     weight_thresholds=weight_thresholds, first_last_8bit=first_last_8bit)


def write_qdq(model: onnx.ModelProto, points, scales: dict[str, float], *, weight_bits: int = 8,
              act_bits: int = 8, weight_thresholds: dict[str, float] | None = None,
              first_last_8bit: bool = False, partial: bool = False) -> onnx.ModelProto:
    """Insert Q/DQ pairs at `points` with `scales`, quantize weights and biases.

    With `partial`, MAC layers whose input is not (yet) quantized keep float weights (used by
    sequential calibration on a prefix of the points)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    new_nodes, new_inits = [], []
    dq_name: dict[str, str] = {}
    unsigned = {p[0]: p[1] for p in points}
    wbits = mac_weight_bits(m, weight_bits, first_last_8bit)
    weight_thresholds = weight_thresholds or {}
    st = _Structure(m)
    bias_of = {mm: add for add, mm in st.bias_add.items()}
    by_name = {n.name: n for n in g.node}

    def scalar(name, value, dtype):
        new_inits.append(numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def qdq(t, after_nodes):
        s = scales[t]
        zdt = np.uint8 if unsigned[t] else np.int8
        if act_bits != 8:
            raise UnsupportedError("activation bits other than 8 are not supported yet")
        src = t
        if t in outputs:  # keep the graph output's name on the final DequantizeLinear
            src = t + "_float"
            for n in after_nodes:
                for i, o in enumerate(n.output):
                    if o == t:
                        n.output[i] = src
        sn = scalar(t + "_scale", s, np.float32)
        zn = scalar(t + "_zp", 0, zdt)
        q, d = t + "_q", (t if t in outputs else t + "_dq")
        nodes = [helper.make_node("QuantizeLinear", [src, sn, zn], [q], name=t + "_Q"),
                 helper.make_node("DequantizeLinear", [q, sn, zn], [d], name=t + "_DQ")]
        dq_name[t] = d
        return nodes

    point_names = [p[0] for p in points]
    graph_inputs = [i.name for i in g.input if i.name not in inits]
    for t in graph_inputs:
        if t in scales:
            new_nodes += qdq(t, [])
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in dq_name:
                n.input[k] = dq_name[i]
        if n.name in st.interior or n.name in st.bias_add or n.name in st.scaled.values():
            pass   # float constants of a LayerNorm/GELU group or a Div; a MatMul's bias (below)
        elif n.op_type in _DATA_CONSTS or (n.op_type in _MAC and n.input[1] not in inits):
            for k, i in enumerate(n.input):
                if i in inits and inits[i].data_type == onnx.TensorProto.FLOAT:
                    c = numpy_helper.to_array(inits[i]).astype(np.float32)
                    cs = pow2_scale(float(np.abs(c).max()) or 1.0, 8, True)
                    cname = i + "_quant"
                    if cname not in {t.name for t in new_inits}:
                        new_inits.append(numpy_helper.from_array(
                            np.clip(np.rint(c / np.float32(cs)), -128, 127).astype(np.int8), cname))
                        new_nodes.append(helper.make_node("DequantizeLinear", [cname, scalar(cname + "_scale", cs,
                                                          np.float32), scalar(cname + "_zp", 0, np.int8)],
                                                          [cname + "_dq"], name=cname + "_DQ"))
                    n.input[k] = cname + "_dq"
        elif n.op_type in _MAC and not (partial and n.input[0] not in dq_name.values()):
            x = n.input[0]
            xs = scales[_source_point(x, dq_name, n)]
            if n.input[1] not in inits:
                raise UnsupportedError("the weight is not a constant", where=node_where(n))
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            bits = wbits.get(n.name, weight_bits)
            tw = weight_thresholds.get(n.input[1], float(np.abs(w).max()))
            ws = pow2_scale(tw, bits, True)
            lim = 2 ** (bits - 1)
            wq = np.clip(np.rint(w / np.float32(ws)), -lim, lim - 1).astype(np.int8)
            wname = n.input[1] + "_quant"
            new_inits.append(numpy_helper.from_array(wq, wname))
            wsn = scalar(wname + "_scale", ws, np.float32)
            wzn = scalar(wname + "_zp", 0, np.int8)
            new_nodes.append(helper.make_node("DequantizeLinear", [wname, wsn, wzn], [wname + "_dq"],
                                              name=wname + "_DQ"))
            n.input[1] = wname + "_dq"
            bias_at = (n, 2)
            if n.name in bias_of:   # MatMul -> Add(bias): the Add's constant is the int32 bias
                add = by_name[bias_of[n.name]]
                bias_at = (add, next(k for k, i in enumerate(add.input) if i in inits))
            bn, bk = bias_at
            if len(bn.input) > bk and bn.input[bk]:
                b = numpy_helper.to_array(inits[bn.input[bk]]).astype(np.float64)
                bs = np.float32(xs) * np.float32(ws)
                bq = np.clip(np.rint(b / float(bs)), -2**31, 2**31 - 1).astype(np.int32)
                bname = bn.input[bk] + "_quant"
                new_inits.append(numpy_helper.from_array(bq, bname))
                bsn = scalar(bname + "_scale", bs, np.float32)
                bzn = scalar(bname + "_zp", 0, np.int32)
                new_nodes.append(helper.make_node("DequantizeLinear", [bname, bsn, bzn], [bname + "_dq"],
                                                  name=bname + "_DQ"))
                bn.input[bk] = bname + "_dq"
        new_nodes.append(n)
        for o in n.output:
            if o in point_names:
                new_nodes += qdq(o, [n])
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    del g.value_info[:]
    if not partial:
        onnx.checker.check_model(m)
    return m


def _source_point(dq_output: str, dq_name: dict[str, str], node) -> str:
    for t, d in dq_name.items():
        if d == dq_output:
            return t
    raise UnsupportedError(f"input '{dq_output}' is not a quantized activation", where=node_where(node))
