"""Write a power-of-2 QDQ model from a float model and per-tensor thresholds.

Weights: int8 (or int4) per tensor, scale 2^ceil(log2 max|w|) / 2^(b-1). Biases: int32 at
scale_x * scale_w. Activations: uint8 after Relu/Clip(0, .), int8 elsewhere, scale from the
threshold. Scale-preserving ops (MaxPool, Reshape, Flatten) share their input's scale.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import UnsupportedError, node_where
from .calibrate import activations, check_calibration_data, pow2_scale, threshold_max

_MAC = {"Conv", "Gemm", "MatMul"}
_ACT = {"Relu", "Clip"}
_SAME_SCALE = {"MaxPool", "Reshape", "Flatten"}
_SUPPORTED = _MAC | _ACT | _SAME_SCALE | {"Add", "Concat", "AveragePool", "GlobalAveragePool"}


def _nonneg(node, inits) -> bool:
    """True when the activation's output is >= 0 (Relu, Clip with min >= 0)."""
    if node.op_type == "Relu":
        return True
    if node.op_type == "Clip" and len(node.input) > 1 and node.input[1] in inits:
        return float(numpy_helper.to_array(inits[node.input[1]])) >= 0
    return False


def quantization_points(model: onnx.ModelProto) -> list[tuple[str, bool, str | None]]:
    """(tensor, unsigned, shares_scale_with) for every activation tensor that gets a Q/DQ pair."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    points = []
    for inp in g.input:
        if inp.name not in inits:
            points.append((inp.name, False, None))
    unsigned: dict[str, bool] = {p[0]: False for p in points}
    for n in g.node:
        if n.op_type not in _SUPPORTED:
            raise UnsupportedError(f"operator {n.op_type} cannot be quantized yet", where=node_where(n))
        out = n.output[0]
        cons = consumers.get(out, [])
        fused = (n.op_type in _MAC | {"Add"} and len(cons) == 1 and cons[0].op_type in _ACT
                 and out not in {o.name for o in g.output})
        if fused:
            continue
        if n.op_type in _ACT:
            u = _nonneg(n, inits)
            points.append((out, u, None))
        elif n.op_type in _SAME_SCALE:
            u = unsigned.get(n.input[0], False)
            points.append((out, u, n.input[0]))
        else:
            u = n.op_type in {"Concat", "AveragePool", "GlobalAveragePool"} and all(
                unsigned.get(i, False) for i in n.input if i not in inits)
            points.append((out, u, None))
        unsigned[out] = points[-1][1]
    return points


def quantize_static(model: onnx.ModelProto, calib: np.ndarray, *, weight_bits: int = 8, act_bits: int = 8,
                    method: str = "max", thresholds: dict[str, float] | None = None) -> onnx.ModelProto:
    """Float model + ONE calibration batch -> pow2 QDQ model."""
    from ..frontend.passes import fold_batchnorm, fold_constants

    model = fold_batchnorm(fold_constants(model))
    g = model.graph
    inp = g.input[0]
    in_shape = tuple(d.dim_value for d in inp.type.tensor_type.shape.dim)
    calib = check_calibration_data(calib, in_shape)
    points = quantization_points(model)
    if thresholds is None:
        if method != "max":
            raise UnsupportedError(f"calibration method {method!r} is not available (use 'max')")
        vals = activations(model, calib, [p[0] for p in points])
        thresholds = {name: threshold_max(vals[name]) for name, _, _ in points}
    scales: dict[str, float] = {}
    for name, uns, share in points:
        if share is not None and share in scales:
            scales[name] = scales[share]
        else:
            scales[name] = pow2_scale(thresholds[name], act_bits, not uns)
    return write_qdq(model, points, scales, weight_bits=weight_bits, act_bits=act_bits)


def write_qdq(model: onnx.ModelProto, points, scales: dict[str, float], *, weight_bits: int = 8,
              act_bits: int = 8) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    outputs = {o.name for o in g.output}
    new_nodes, new_inits = [], []
    dq_name: dict[str, str] = {}
    unsigned = {p[0]: p[1] for p in points}

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
        new_nodes += qdq(t, [])
    for n in g.node:
        for k, i in enumerate(n.input):
            if i in dq_name:
                n.input[k] = dq_name[i]
        if n.op_type in _MAC:
            x = n.input[0]
            xs = scales[_source_point(x, dq_name)]
            w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            ws = pow2_scale(np.abs(w).max(), weight_bits, True)
            lim = 2 ** (weight_bits - 1)
            wq = np.clip(np.rint(w / np.float32(ws)), -lim, lim - 1).astype(np.int8)
            wname = n.input[1] + "_quant"
            new_inits.append(numpy_helper.from_array(wq, wname))
            wsn = scalar(wname + "_scale", ws, np.float32)
            wzn = scalar(wname + "_zp", 0, np.int8)
            new_nodes.append(helper.make_node("DequantizeLinear", [wname, wsn, wzn], [wname + "_dq"],
                                              name=wname + "_DQ"))
            n.input[1] = wname + "_dq"
            if len(n.input) > 2 and n.input[2]:
                b = numpy_helper.to_array(inits[n.input[2]]).astype(np.float64)
                bs = np.float32(xs) * np.float32(ws)
                bq = np.clip(np.rint(b / float(bs)), -2**31, 2**31 - 1).astype(np.int32)
                bname = n.input[2] + "_quant"
                new_inits.append(numpy_helper.from_array(bq, bname))
                bsn = scalar(bname + "_scale", bs, np.float32)
                bzn = scalar(bname + "_zp", 0, np.int32)
                new_nodes.append(helper.make_node("DequantizeLinear", [bname, bsn, bzn], [bname + "_dq"],
                                                  name=bname + "_DQ"))
                n.input[2] = bname + "_dq"
        new_nodes.append(n)
        if n.output[0] in point_names:
            new_nodes += qdq(n.output[0], [n])
    del g.node[:]
    g.node.extend(new_nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept + new_inits)
    del g.value_info[:]
    onnx.checker.check_model(m)
    return m


def _source_point(dq_output: str, dq_name: dict[str, str]) -> str:
    for t, d in dq_name.items():
        if d == dq_output:
            return t
    raise UnsupportedError(f"MAC input '{dq_output}' is not a quantized activation")
