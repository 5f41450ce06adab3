"""Rewrite a quantized model's scales to powers of two, so that it runs in pow2 mode (shifts only).

Each scale s becomes 2^ceil(log2 s), the next power of two up: the new grid is coarser, but the
whole range the original scale could represent (qmin * s .. qmax * s) stays representable, so
nothing that fitted starts to saturate. Integer constants behind a DequantizeLinear (weights) are
requantized to the new scale (round half to even, saturated); a MAC bias gets the scale
input_scale * weight_scale of the snapped operands, as the integer contract requires.
"""
from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import numpy_helper

_MAC = {"Conv", "Gemm", "MatMul"}


def ceil_pow2(s: np.ndarray) -> np.ndarray:
    """Elementwise 2^ceil(log2 s) for positive s, exact (no float log rounding)."""
    s = np.asarray(s, np.float64)
    out = np.empty_like(s)
    for i, v in np.ndenumerate(s):
        m, e = math.frexp(float(v))            # v = m * 2^e, m in [0.5, 1)
        out[i] = math.ldexp(1.0, e - 1) if m == 0.5 else math.ldexp(1.0, e)
    return out


def snap_pow2(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """(model with power-of-two scales, number of scale values changed). Expects a QDQ model."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    arrays = {k: numpy_helper.to_array(v) for k, v in inits.items()}
    qdq = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 1]
    scale_names = {n.input[1] for n in qdq if n.input[1] in inits}
    old = {k: arrays[k].astype(np.float64) for k in scale_names}
    new = {k: ceil_pow2(v) for k, v in old.items()}
    changed = sum(int(np.sum(old[k] != new[k])) for k in scale_names)

    def set_init(name, arr):
        t = numpy_helper.from_array(np.asarray(arr).astype(arrays[name].dtype), name)
        inits[name].CopyFrom(t)

    def dq_params(node):
        zp = arrays[node.input[2]].astype(np.int64) if len(node.input) > 2 and node.input[2] in arrays else 0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        return zp, axis

    def bcast(v, ndim, axis):
        v = np.asarray(v)
        if v.size <= 1:
            return v.reshape(())
        shape = [1] * ndim
        shape[axis % ndim] = v.size
        return v.reshape(shape)

    # bias DQs: scale must become snapped(x scale) * snapped(w scale)
    bias_scale = {}
    for n in g.node:
        if n.op_type in _MAC and len(n.input) > 2 and n.input[2]:
            dx, dw, db = (producer.get(i) for i in n.input[:3])
            if all(d is not None and d.op_type == "DequantizeLinear" for d in (dx, dw, db)) \
                    and dx.input[1] in new and dw.input[1] in new:
                bias_scale[id(db)] = (new[dx.input[1]].reshape(-1) * new[dw.input[1]].reshape(-1))
    done = set()
    for n in g.node:
        if n.op_type != "DequantizeLinear" or n.input[0] not in arrays or n.input[0] in done:
            continue
        q = arrays[n.input[0]]
        if q.dtype.kind not in "iu":
            continue
        zp, axis = dq_params(n)
        s_old = old.get(n.input[1], arrays[n.input[1]].astype(np.float64))
        s_new = bias_scale.get(id(n), new.get(n.input[1]))
        if id(n) in bias_scale:
            s_new = s_new if s_new.size > 1 else s_new.reshape(np.shape(s_old))
            new[n.input[1]] = np.broadcast_to(s_new, np.shape(s_old)) if s_new.size == np.size(s_old) else s_new
            # a bias scale of its own (not shared), written below with the others
        real = (q.astype(np.float64) - bcast(zp, q.ndim, axis)) * bcast(s_old, q.ndim, axis)
        info = np.iinfo(q.dtype)
        q_new = np.clip(np.rint(real / bcast(new[n.input[1]], q.ndim, axis)) + bcast(zp, q.ndim, axis),
                        info.min, info.max)
        set_init(n.input[0], q_new)
        done.add(n.input[0])
    for k, v in new.items():
        set_init(k, np.reshape(v, np.shape(old[k])))
    return m, changed


def compare(original: onnx.ModelProto, snapped: onnx.ModelProto, x: np.ndarray, labels=None) -> dict:
    """Run both models in the reference (original: multiplier mode, snapped: pow2 mode) on the stack x.

    Returns the share of output elements that changed, the largest difference in LSBs of the original
    output scale, and the top-1 accuracies when labels are given."""
    from ..api import load_ir, normalize_inputs, restack
    from ..ref import execute

    res = {}
    outs = []
    for key, model, mode in (("original", original, "multiplier"), ("snapped", snapped, "pow2")):
        g = load_ir(model, requant=mode)
        feeds, stacked = normalize_inputs(g, x)
        outs.append(np.asarray(restack(g, execute(g, feeds), stacked)[0], np.float64))
        if key == "original":
            name = g.outputs[0]
            op = g.producer(name)
            src = g.tensors[op.inputs[0]] if op is not None and op.host and op.inputs[0] in g.tensors else g.tensors[name]
            lsb = src.scale if not src.dtype.is_float else 1.0
    a, b = outs
    diff = np.abs(a - b) / lsb
    res["changed"] = float(np.mean(a != b))
    res["max_lsb"] = float(diff.max(initial=0))
    res["mean_lsb"] = float(diff.mean())
    if labels is not None:
        y = np.asarray(labels).reshape(-1)
        n = len(y)
        res["acc_original"] = float(np.mean(a.reshape(n, -1).argmax(1) == y))
        res["acc_snapped"] = float(np.mean(b.reshape(n, -1).argmax(1) == y))
    return res
