"""TQT/ALT threshold training (Jain et al., "Trained Quantization Thresholds", as in Graffitist).

Needs PyTorch (the optional extra `tony[train]`). The float ONNX model (BatchNorm already folded,
so BatchNorm statistics are frozen) becomes a torch module with a fake quantizer at every
quantization point of the pow2 QDQ model and on every weight. Each quantizer has a trainable
log2 threshold l; its scale is

    s = 2^ceil(l) / 2^(b - signed)       (ceil with a straight-through gradient)

and its gradients are those of the paper:

    dq/dl = s ln2 (round(x/s) - x/s)   inside [n, p],   s ln2 n  below,   s ln2 p  above
    dq/dx = 1 inside, 0 outside (straight-through estimator)

Training follows the paper's recipe (see `Schedule`): thresholds warm-start from calibration
(KL-J for activations, the least-squared-error power of 2 for weights) and train alone for a first
epoch; then weights retrain jointly at a small learning rate; both learning rates decay (cosine);
the thresholds freeze one by one, in the order the network uses them, over the second quarter of
the run, and the weights adapt to them for the second half; BatchNorm is folded first, so its
statistics are frozen. The last epoch is kept unless an earlier one (or the calibrated start) has
a validation loss lower beyond the noise, on a validation split carved from the training data,
never the test split. The result is written back as a pow2 QDQ model by `write_qdq`.

The same applies to transformer encoders (docs/transformer.md): the MatMuls of two activations
(Q.K^T, P.V) compute on their inputs' quantization points and have no weight of their own; a
MatMul's bias Add trains its bias on the int32 grid sx * sw; the LayerNorm and GELU groups train
as the float functions between their int8 points (the exported model runs them as the integer
kernels); a Softmax's output stays at its fixed threshold 1.0 (uint8 at 2^-8), untrained.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import helper, numpy_helper

from ..errors import InputError, TonyError, UnsupportedError, node_where


def _torch():
    try:
        import torch
    except ImportError:
        raise TonyError("threshold training needs PyTorch", hint="pip install 'tony[train]'") from None
    return torch


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


def _quantizer_fn():
    torch = _torch()

    class TQTQuantize(torch.autograd.Function):
        """q = s * clamp(round(x / s), n, p) with s = 2^ceil(l) / 2^(b - signed); TQT gradients."""

        @staticmethod
        def forward(ctx, x, log2t, bits: int, signed: bool):
            n, p = qrange(bits, signed)
            s = torch.pow(2.0, torch.ceil(log2t)) / 2.0 ** (bits - int(signed))
            xs = x / s
            r = torch.round(xs)  # half to even, as QuantizeLinear
            q = torch.clamp(r, n, p) * s
            ctx.save_for_backward(xs, r, s)
            ctx.n, ctx.p = n, p
            return q

        @staticmethod
        def backward(ctx, g):
            xs, r, s = ctx.saved_tensors
            n, p = ctx.n, ctx.p
            below, above = r < n, r > p
            inside = ~(below | above)
            d_l = torch.where(inside, r - xs, torch.where(below, torch.full_like(xs, n), torch.full_like(xs, p)))
            g_l = (g * d_l).sum() * s * math.log(2.0)
            return g * inside.to(g.dtype), g_l.reshape(s.shape), None, None

    return TQTQuantize


def tqt_quantize(x, log2t, bits: int, signed: bool):
    """Fake-quantize x with the trainable log2 threshold `log2t` (a 0-d tensor)."""
    return _quantizer_fn().apply(x, log2t, bits, signed)


def _attrs(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _ints(v) -> list[int]:
    return [int(d) for d in np.ravel(v)]


class _Net:
    """Builds the torch module for a prepared (folded, named) float model.

    Every tensor carries the batch on axis 0, where the ONNX graph has a batch of 1: an op is
    computed as ONNX defines it on one sample (shape (1,) + the rest) and batched along axis 0, so
    an op that would mix the samples (one that reduces, splits, concatenates, transposes or reshapes
    across axis 0) is refused. Quantizers sit exactly where `quantization_points` puts Q/DQ pairs;
    the LayerNorm and GELU groups of `_Structure` are computed whole in float (no point inside, as
    in the exported model); a MatMul's bias Add adds the bias on the sx * sw grid as Gemm's bias;
    the constants that `write_qdq` quantizes as data (of Mul, Sub, Add, Sum) are int8 on their own
    fixed pow2 grid; a Softmax's output keeps its fixed threshold 1.0 (uint8 at 2^-8, not trained)."""

    def __init__(self, model, points, groups, thresholds, weight_thresholds, weight_bits, act_bits, wbits, device):
        torch = _torch()
        from torch import nn

        from .calibrate import pow2_scale
        from .qdq import _DATA_CONSTS, _MAC, _Structure

        self.torch, self.model = torch, model
        self.points = points
        self.unsigned = {p[0]: p[1] for p in points}
        self.groups, self.act_bits, self.wbits = groups, act_bits, wbits
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.attrs = {n.name: _attrs(n) for n in model.graph.node}
        st = _Structure(model)
        self.group_end = {grp.y: grp for grp in st.groups}   # a group is computed whole at its output
        self.interior = st.interior
        self.bias_add = dict(st.bias_add)                    # Add node -> its MatMul node
        self.scaled_divs = set(st.scaled.values())
        by_name = self.by_name = {n.name: n for n in model.graph.node}
        self.module = nn.Module()
        self.params = nn.ParameterDict()
        self.log2t = nn.ParameterDict()
        self.key: dict[str, str] = {}

        def param(name):
            if name not in self.key:
                k = f"p{len(self.key)}"
                self.key[name] = k
                self.params[k] = nn.Parameter(torch.tensor(self.inits[name].astype(np.float32)))

        self.macs = [n for n in model.graph.node if n.op_type in _MAC]
        for n in self.macs:
            if n.op_type == "MatMul" and n.input[1] not in self.inits:
                continue   # two activations (attention scores, context): no weight, its inputs are points
            for i in n.input[1:]:
                if i:
                    if i not in self.inits:
                        raise UnsupportedError("the weight is not a constant", where=node_where(n))
                    param(i)
            wk = "w_" + self.key[n.input[1]]
            self.log2t[wk] = nn.Parameter(torch.tensor(math.log2(max(weight_thresholds[n.input[1]], 2.0**-30)),
                                                       dtype=torch.float32))
        for add in self.bias_add:   # MatMul -> Add(bias): the Add's constant is the MAC's bias
            param(next(i for i in by_name[add].input if i in self.inits))
        # data constants (written int8 per tensor at the pow2 scale of their largest magnitude)
        self.qconst: dict[str, np.ndarray] = {}
        for n in model.graph.node:
            if n.name in self.interior or n.name in self.bias_add or n.name in self.scaled_divs:
                continue
            if n.op_type in _DATA_CONSTS or (n.op_type in _MAC and n.input[1] not in self.inits):
                for i in n.input:
                    if i in self.inits and self.inits[i].dtype == np.float32 and i not in self.qconst:
                        c = self.inits[i]
                        cs = np.float32(pow2_scale(float(np.abs(c).max()) or 1.0, 8, True))
                        self.qconst[i] = (np.clip(np.rint(c / cs), -128, 127) * cs).astype(np.float32)
        softmax_out = {n.output[0] for n in model.graph.node if n.op_type == "Softmax"}
        fixed_reps = {groups[o] for o in softmax_out if o in groups}
        self.fixed: dict = {}   # act key -> log2 threshold that stays (a Softmax's output grid)
        self.order: list[str] = []
        for name, _, _ in points:
            rep = groups[name]
            k = "a_" + self.key.setdefault(rep, f"t{len(self.key)}")
            if k in self.log2t or k in self.fixed:
                continue
            l0 = torch.tensor(math.log2(max(thresholds[rep], 2.0**-30)), dtype=torch.float32)
            if rep in fixed_reps:
                self.fixed[k] = l0.to(device)
            else:
                self.log2t[k] = nn.Parameter(l0)
                self.order.append(k)
        self.consts = {k: torch.tensor(v.astype(np.float32) if v.dtype == np.float64 else v, device=device)
                       for k, v in self.inits.items() if v.dtype.kind == "f"}
        self.qconsts = {k: torch.tensor(v, device=device) for k, v in self.qconst.items()}
        self.module.params, self.module.log2t = self.params, self.log2t
        self.module.to(device)
        # every trained threshold in the order the forward pass first uses it (inputs before outputs)
        self.topo: list[str] = []
        for key in self._use_order():
            if key in self.log2t and key not in self.topo:
                self.topo.append(key)
        self.device = device

    def _use_order(self):
        point_set = set(self.unsigned)
        g = self.model.graph
        if g.input[0].name in point_set:
            yield self.act_key(g.input[0].name)
        for n in g.node:
            for i in n.input:
                if i in point_set:
                    yield self.act_key(i)
                elif i in self.key and "w_" + self.key[i] in self.log2t:
                    yield "w_" + self.key[i]
            for o in n.output:
                if o in point_set:
                    yield self.act_key(o)

    def act_key(self, name):
        return "a_" + self.key[self.groups[name]]

    def l2(self, key):
        """The log2 threshold of `key`: trained, or fixed (a Softmax's output)."""
        return self.fixed[key] if key in self.fixed else self.log2t[key]

    def scale(self, key, bits, signed):
        return self.torch.pow(2.0, self.torch.ceil(self.l2(key).detach())) / 2.0 ** (bits - int(signed))

    def const(self, name):
        """An integer or float constant as a numpy array (shapes, axes, pads, indices)."""
        return self.inits.get(name) if name else None

    def _bias(self, mac, bname, quantize):
        """The bias of MAC node `mac`, rounded to its int32 grid sx * sw (straight-through)."""
        braw = self.params[self.key[bname]]
        if not quantize:
            return braw
        sx = self.scale(self.act_key(mac.input[0]), self.act_bits, not self.unsigned[mac.input[0]])
        sw = self.scale("w_" + self.key[mac.input[1]], self.wbits[mac.name], True)
        bs = (sx * sw).detach()
        return braw + (self.torch.round(braw / bs) * bs - braw).detach()

    def forward(self, x, quantize: bool = True):
        """The network's output; with quantize=False, the float network (no quantizer, float bias)."""
        env: dict = {}
        point_set = set(self.unsigned)

        def put(name, v):
            if quantize and name in point_set:
                key = self.act_key(name)
                v = tqt_quantize(v, self.l2(key), self.act_bits, not self.unsigned[name])
            env[name] = v

        g = self.model.graph
        put(g.input[0].name, x)
        for n in g.node:
            if n.name in self.interior:
                grp = self.group_end.get(n.output[0])
                if grp is not None:   # the whole LayerNorm / GELU in float, from the group's input
                    put(grp.y, _group(self.torch, grp, env[grp.x]))
                continue

            def arg(i, node=n):
                if i in env:
                    return env[i]
                if i in self.key and self.key[i] in self.params:
                    return self.params[self.key[i]]
                if quantize and i in self.qconsts:
                    return self.qconsts[i]
                if i in self.consts:
                    return self.consts[i]
                raise UnsupportedError(f"input '{i}' is neither an activation nor a float constant; threshold "
                                       "training cannot compute this operator", where=node_where(node))
            if n.name in self.bias_add:   # MatMul -> Add(bias)
                mm = self.by_name[self.bias_add[n.name]]
                bname = next(i for i in n.input if i in self.inits)
                y = env[mm.output[0]] + self._bias(mm, bname, quantize)
            elif n.name in self.scaled_divs:
                y = env[n.input[0]] / self.consts[n.input[1]]
            else:
                fn = _OPS.get(n.op_type)
                if fn is None:
                    raise UnsupportedError(f"operator {n.op_type} is not supported by threshold training",
                                           where=node_where(n))
                y = fn(self, n, self.attrs[n.name], arg, quantize)
            if isinstance(y, (list, tuple)):
                for o, v in zip(n.output, y):
                    put(o, v)
            else:
                put(n.output[0], y)
        return env[g.output[0].name]


def _group(torch, grp, x):
    """A LayerNorm or GELU group of tony.frontend.patterns, in float."""
    F = torch.nn.functional
    p = grp.params
    if grp.kind == "gelu":
        return F.gelu(x, approximate="tanh" if p.get("approximate") == "tanh" else "none")
    n = x.shape[-1]
    w = None if p.get("gamma") is None else torch.tensor(np.asarray(p["gamma"], np.float32), device=x.device)
    b = None if p.get("beta") is None else torch.tensor(np.asarray(p["beta"], np.float32), device=x.device)
    return F.layer_norm(x, (n,), w, b, float(p["eps"]))


# ---- the operators, computed as ONNX defines them on one sample and batched along axis 0 --------

def _sample_shape(x) -> list[int]:
    return [1] + list(x.shape[1:])


def _axis(node, axis: int, rank: int, what: str = "axis") -> int:
    """`axis` normalized to [0, rank); refused when it is the batch axis 0."""
    a = axis + rank if axis < 0 else axis
    if not 0 <= a < rank:
        raise UnsupportedError(f"{what} {axis} is out of range for rank {rank}", where=node_where(node))
    if a == 0:
        raise UnsupportedError(f"{node.op_type} over axis 0 mixes the samples of a training batch (axis 0 is the "
                               "batch); threshold training cannot compute it", where=node_where(node))
    return a


def _batched_reshape(node, x, out: list[int]):
    if not out or out[0] != 1:
        raise UnsupportedError(f"{node.op_type} to shape {out} moves the batch axis (axis 0 of size 1); threshold "
                               "training cannot compute it", where=node_where(node))
    return x.reshape([x.shape[0]] + list(out[1:]))


def _onnx_reshape_shape(node, src: list[int], shape: list[int], allowzero: int) -> list[int]:
    out = [src[k] if d == 0 and not allowzero and k < len(src) else d for k, d in enumerate(shape)]
    if out.count(-1) > 1:
        raise UnsupportedError("Reshape with more than one -1", where=node_where(node))
    if -1 in out:
        known = int(np.prod([d for d in out if d != -1]))
        out[out.index(-1)] = int(np.prod(src)) // max(known, 1)
    return out


def _input_list(net, node, a, k, attr):
    """Integer list from input k (newer opsets) or attribute `attr` (older); None when absent."""
    if len(node.input) > k and node.input[k]:
        c = net.const(node.input[k])
        if c is None:
            raise UnsupportedError(f"input {k} ('{node.input[k]}') must be a constant for threshold training",
                                   where=node_where(node))
        return _ints(c)
    return list(a[attr]) if attr in a else None


def _mac(net, n, a, arg, quantize):
    torch = net.torch
    F = torch.nn.functional
    if n.op_type == "MatMul" and n.input[1] not in net.inits:   # two activations: both already at their points
        return torch.matmul(arg(n.input[0]), arg(n.input[1]))
    wname = n.input[1]
    w = net.params[net.key[wname]]
    if quantize:
        w = tqt_quantize(w, net.log2t["w_" + net.key[wname]], net.wbits[n.name], True)
    b = net._bias(n, n.input[2], quantize) if len(n.input) > 2 and n.input[2] else None
    x = arg(n.input[0])
    if n.op_type == "Conv":
        if w.dim() != 4:
            raise UnsupportedError("threshold training computes 2-D Conv only", where=node_where(n))
        pads = list(a.get("pads", [0, 0, 0, 0]))
        if pads[0] != pads[2] or pads[1] != pads[3]:
            x, pads = F.pad(x, (pads[1], pads[3], pads[0], pads[2])), [0, 0, 0, 0]
        return F.conv2d(x, w, b, stride=tuple(a.get("strides", (1, 1))), padding=(pads[0], pads[1]),
                        dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)))
    if n.op_type == "Gemm":
        if a.get("transA", 0) or a.get("alpha", 1.0) != 1.0 or a.get("beta", 1.0) != 1.0:
            raise UnsupportedError("Gemm with transA, alpha or beta other than the defaults cannot be trained",
                                   where=node_where(n))
        if a.get("transB", 0):
            w = w.t()
    y = x @ w
    return y if b is None else y + b


def _clip(net, n, a, arg, quantize):
    lo = float(net.const(n.input[1])) if len(n.input) > 1 and n.input[1] else a.get("min", -math.inf)
    hi = float(net.const(n.input[2])) if len(n.input) > 2 and n.input[2] else a.get("max", math.inf)
    return net.torch.clamp(arg(n.input[0]), lo, hi)


def _pool(net, n, a, arg, quantize):
    F = net.torch.nn.functional
    k = tuple(a["kernel_shape"])
    if len(k) != 2:
        raise UnsupportedError("threshold training computes 2-D pooling only", where=node_where(n))
    args = (arg(n.input[0]), k, tuple(a.get("strides", k)), tuple(a.get("pads", (0, 0, 0, 0))[:2]))
    if n.op_type == "MaxPool":
        return F.max_pool2d(*args)
    return F.avg_pool2d(*args, count_include_pad=bool(a.get("count_include_pad", 0)))


def _reshape(net, n, a, arg, quantize):
    x = arg(n.input[0])
    shape = net.const(n.input[1])
    if shape is None:
        raise UnsupportedError("Reshape to a computed shape cannot be trained (the shape must be a constant)",
                               where=node_where(n))
    return _batched_reshape(n, x, _onnx_reshape_shape(n, _sample_shape(x), _ints(shape), a.get("allowzero", 0)))


def _flatten(net, n, a, arg, quantize):
    x = arg(n.input[0])
    s = _sample_shape(x)
    ax = a.get("axis", 1)
    ax = ax + len(s) if ax < 0 else ax
    return _batched_reshape(n, x, [int(np.prod(s[:ax])), int(np.prod(s[ax:]))])


def _transpose(net, n, a, arg, quantize):
    x = arg(n.input[0])
    perm = list(a.get("perm", range(x.dim() - 1, -1, -1)))
    if perm[0] != 0:
        raise UnsupportedError(f"Transpose {perm} moves the batch axis 0; threshold training cannot compute it",
                               where=node_where(n))
    return x.permute(*perm)


def _softmax(net, n, a, arg, quantize):
    x = arg(n.input[0])
    if net.opset >= 13:
        return x.softmax(dim=_axis(n, a.get("axis", -1), x.dim()))
    ax = _axis(n, a.get("axis", 1), x.dim())   # opset < 13: over the flattened axes from `axis` on
    return x.reshape(list(x.shape[:ax]) + [-1]).softmax(dim=-1).reshape(x.shape)


def _reduce_mean(net, n, a, arg, quantize):
    x = arg(n.input[0])
    axes = _input_list(net, n, a, 1, "axes")
    if not axes:
        if a.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    axes = sorted({_axis(n, d, x.dim(), "axes entry") for d in axes})
    return x.mean(dim=axes, keepdim=bool(a.get("keepdims", 1)))


def _concat(net, n, a, arg, quantize):
    ins = [arg(i) for i in n.input]
    if any(i not in net.unsigned for i in n.input):
        raise UnsupportedError("Concat of a constant cannot be trained (every input must be an activation)",
                               where=node_where(n))
    return net.torch.cat(ins, dim=_axis(n, a["axis"], ins[0].dim()))


def _split(net, n, a, arg, quantize):
    x = arg(n.input[0])
    ax = _axis(n, a.get("axis", 0), x.dim())
    sizes = _input_list(net, n, a, 1, "split")
    if not sizes:
        parts = a.get("num_outputs", len(n.output))
        size = -(-x.shape[ax] // parts)
        sizes = [min(size, x.shape[ax] - k * size) for k in range(parts)]
    return list(net.torch.split(x, sizes, dim=ax))


def _squeeze(net, n, a, arg, quantize):
    x = arg(n.input[0])
    axes = _input_list(net, n, a, 1, "axes")
    s = _sample_shape(x)
    axes = [k for k, d in enumerate(s) if d == 1] if not axes else [d + len(s) if d < 0 else d for d in axes]
    if 0 in axes:
        raise UnsupportedError("Squeeze of axis 0 removes the batch axis; threshold training cannot compute it",
                               where=node_where(n))
    out = [d for k, d in enumerate(s) if k not in axes]
    return x.reshape([x.shape[0]] + out[1:])


def _unsqueeze(net, n, a, arg, quantize):
    x = arg(n.input[0])
    axes = _input_list(net, n, a, 1, "axes") or []
    rank = x.dim() + len(axes)
    axes = sorted(d + rank if d < 0 else d for d in axes)
    if 0 in axes:
        raise UnsupportedError("Unsqueeze at axis 0 moves the batch axis; threshold training cannot compute it",
                               where=node_where(n))
    for d in axes:
        x = x.unsqueeze(d)
    return x


def _gather(net, n, a, arg, quantize):
    x = arg(n.input[0])
    idx = net.const(n.input[1])
    if idx is None:
        raise UnsupportedError("Gather with computed indices cannot be trained (the indices must be a constant)",
                               where=node_where(n))
    ax = _axis(n, a.get("axis", 0), x.dim())
    idx = np.asarray(idx, np.int64)
    flat = net.torch.tensor(np.where(idx < 0, idx + x.shape[ax], idx).reshape(-1), device=x.device)
    y = x.index_select(ax, flat)
    return y.reshape(list(x.shape[:ax]) + list(idx.shape) + list(x.shape[ax + 1:]))


def _slice(net, n, a, arg, quantize):
    x = arg(n.input[0])
    starts = _input_list(net, n, a, 1, "starts")
    ends = _input_list(net, n, a, 2, "ends")
    axes = _input_list(net, n, a, 3, "axes") or list(range(len(starts)))
    steps = _input_list(net, n, a, 4, "steps") or [1] * len(starts)
    index = [slice(None)] * x.dim()
    for s, e, ax, st in zip(starts, ends, axes, steps):
        ax = ax + x.dim() if ax < 0 else ax
        if st <= 0:
            raise UnsupportedError("Slice with a step below 1 cannot be trained", where=node_where(n))
        if ax == 0:
            if s == 0 and st == 1 and e >= 1:   # the whole batch axis
                continue
            raise UnsupportedError("Slice of the batch axis 0; threshold training cannot compute it",
                                   where=node_where(n))
        index[ax] = slice(s, e, st)
    return x[tuple(index)]


def _pad(net, n, a, arg, quantize):
    x = arg(n.input[0])
    mode = a.get("mode", b"constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    pads = _input_list(net, n, a, 1, "pads")
    if mode != "constant" or (len(n.input) > 3 and n.input[3]) or pads is None:
        raise UnsupportedError(f"Pad (mode {mode}, or with axes or computed pads) cannot be trained; constant "
                               "padding of given constant pads can", where=node_where(n))
    r = x.dim()
    if pads[0] or pads[r]:
        raise UnsupportedError("Pad of the batch axis 0; threshold training cannot compute it", where=node_where(n))
    value = float(np.ravel(net.const(n.input[2]))[0]) if len(n.input) > 2 and n.input[2] else a.get("value", 0.0)
    tp = []
    for k in range(r - 1, 0, -1):
        tp += [pads[k], pads[k + r]]
    return net.torch.nn.functional.pad(x, tp, value=value)


def _unary(f):
    return lambda net, n, a, arg, quantize: f(net.torch, a, arg(n.input[0]))


def _refused(why):
    def f(net, n, a, arg, quantize):
        raise UnsupportedError(f"operator {n.op_type} is not supported by threshold training ({why})",
                               where=node_where(n))
    return f


_OPS = {
    "Conv": _mac, "Gemm": _mac, "MatMul": _mac,
    "Relu": _unary(lambda t, a, x: t.relu(x)),
    "Clip": _clip,
    "Add": lambda net, n, a, arg, q: arg(n.input[0]) + arg(n.input[1]),
    "Sub": lambda net, n, a, arg, q: arg(n.input[0]) - arg(n.input[1]),
    "Mul": lambda net, n, a, arg, q: arg(n.input[0]) * arg(n.input[1]),
    "Sum": lambda net, n, a, arg, q: sum(arg(i) for i in n.input),
    "Sigmoid": _unary(lambda t, a, x: t.sigmoid(x)),
    "Tanh": _unary(lambda t, a, x: t.tanh(x)),
    "HardSigmoid": _unary(lambda t, a, x: t.clamp(a.get("alpha", 0.2) * x + a.get("beta", 0.5), 0, 1)),
    "HardSwish": _unary(lambda t, a, x: t.nn.functional.hardswish(x)),
    "LeakyRelu": _unary(lambda t, a, x: t.nn.functional.leaky_relu(x, a.get("alpha", 0.01))),
    "Elu": _unary(lambda t, a, x: t.nn.functional.elu(x, a.get("alpha", 1.0))),
    "Identity": _unary(lambda t, a, x: x),
    "Dropout": lambda net, n, a, arg, q: [arg(n.input[0])] + ([] if len(n.output) < 2 else [None]),
    "Softmax": _softmax,
    "ReduceMean": _reduce_mean,
    "Concat": _concat,
    "Split": _split,
    "MaxPool": _pool, "AveragePool": _pool,
    "GlobalAveragePool": _unary(lambda t, a, x: x.mean(dim=tuple(range(2, x.dim())), keepdim=True)),
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Squeeze": _squeeze,
    "Unsqueeze": _unsqueeze,
    "Gather": _gather,
    "Slice": _slice,
    "Pad": _pad,
    "Resize": _refused("no interpolation modes in training yet"),
    "LRN": _refused("no local response normalization in training yet"),
}


@dataclass(frozen=True)
class Schedule:
    """How thresholds and weights are trained (TQT, Jain et al. section 4 / Graffitist).

    Adam on both, a cosine decay of both learning rates to 0 over the run; the first
    `warmup_epochs` train the thresholds alone (the weights keep their float values while the
    thresholds settle from calibration); weights then retrain jointly at a tenth of the
    thresholds' learning rate (theirs acts in the log domain). BatchNorm is folded before training
    (its statistics frozen). The loss: cross-entropy with the labels plus (`distill`) the KL
    divergence from the float network's outputs to the quantized network's, so that the quantized
    network learns to answer as the float one does, not only as the labels say.

    Freezing (`freeze` = (a, b), fractions of the run): a power-of-2 threshold whose best value lies
    between two powers of 2 settles on the boundary and flips the scale by 2x back and forth to the
    end of training (seen on 4-bit depthwise weights, each flip costing several points of accuracy);
    so between a and b the thresholds freeze one by one, the network's input first and each layer's
    weights before its output, and from b on the weights adapt to fixed scales.

    The epoch kept: after every epoch, and before the first, the fake-quantized network is scored
    on the validation split (the training objective, per sample). Training aims at its end, so the
    last epoch is kept unless the epoch with the lowest validation loss beats it by more than
    `significance` standard errors of the paired per-sample difference: picking the lowest of a
    few near-equal noisy scores selects noise, and when the float model was trained on the whole
    training set, a split carved from it is data the float network has learned by heart (its
    accuracy there is 100%, the calibrated start ties it), which says little about unseen data."""
    epochs: int = 10
    batch: int = 64
    lr_thresholds: float = 1e-2
    lr_weights: float = 1e-3
    warmup_epochs: int = 1
    val_fraction: float = 0.15
    distill: float = 1.0  # weight of KL(float network || quantized network) added to the loss; 0: off
    freeze: tuple[float, float] | None = (0.25, 0.5)  # thresholds freeze one by one over this part of the run
    significance: float = 2.0  # an earlier epoch replaces the last only if better by this many standard errors


def _check_labels(x, y, model) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise InputError(f"training labels must be {len(x)} integers (one per input), got shape {y.shape} {y.dtype}")
    out_dim = model.graph.output[0].type.tensor_type.shape.dim
    n_cls = out_dim[-1].dim_value if out_dim else 0
    if n_cls and (y.min() < 0 or y.max() >= n_cls):
        raise InputError(f"training labels must lie in [0, {n_cls - 1}] (the model has {n_cls} outputs)")
    return y


def split_validation(x, y, fraction: float, seed: int):
    """(x_train, y_train, x_val, y_val): a seeded, class-stratified `fraction` of (x, y) held out."""
    rng = np.random.default_rng(seed)
    val = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        val.extend(idx[:int(round(fraction * len(idx)))])
    mask = np.zeros(len(y), bool)
    mask[np.asarray(val, int)] = True
    if mask.all() or not mask.any():
        raise InputError(f"too little training data ({len(y)} samples) to hold out a validation split")
    return x[~mask], y[~mask], x[mask], y[mask]


def train_thresholds(model: onnx.ModelProto, calib: np.ndarray, x: np.ndarray, y: np.ndarray, *,
                     epochs: int = 10, weight_bits: int = 8, act_bits: int = 8, method: str = "kl-j",
                     weight_method: str = "mse", first_last_8bit: bool = False, val: tuple | None = None,
                     schedule: Schedule | None = None, seed: int = 0, device: str | None = None,
                     progress: bool = False, log=None) -> onnx.ModelProto:
    """Float model + one calibration batch + labelled training data -> trained pow2 QDQ model.

    Thresholds start from calibration (`method` for activations, `weight_method` for weights).
    `val` = (x_val, y_val) scores the epochs; without it, `schedule.val_fraction` of (x, y) is held
    out (stratified, seeded) and the rest trains."""
    torch = _torch()
    from .calibrate import check_calibration_data
    from .qdq import _name_nodes, prepare

    sched = replace(schedule or Schedule(), epochs=epochs)
    if epochs < 1:
        raise InputError("--epochs must be at least 1")
    model = _name_nodes(prepare(model))
    in_shape = tuple(d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim)
    calib = check_calibration_data(calib, in_shape)
    x = check_calibration_data(x, in_shape, "training data")
    y = _check_labels(x, y, model)
    if val is None:
        x, y, xv, yv = split_validation(x, y, sched.val_fraction, seed)
    else:
        xv = check_calibration_data(val[0], in_shape, "validation data")
        yv = _check_labels(xv, val[1], model)
    torch.manual_seed(seed)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    threads = torch.get_num_threads()
    if device == "cpu":  # small tensors: one thread is fastest and does not fight other processes
        torch.set_num_threads(1)
    try:
        net = _start(model, calib, weight_bits=weight_bits, act_bits=act_bits, method=method,
                     weight_method=weight_method, first_last_8bit=first_last_8bit, device=device,
                     progress=progress)
        _train(net, (x, y), (xv, yv), in_shape, sched, seed, progress, log)
        return export(net, model, weight_bits, act_bits, first_last_8bit)
    finally:
        torch.set_num_threads(threads)


def _start(model, calib, *, weight_bits, act_bits, method, weight_method, first_last_8bit, device,
           progress=False) -> "_Net":
    """The fake-quantized network with thresholds from one-batch calibration."""
    from .qdq import calibrate, mac_weight_bits, quantization_points, shared_groups

    th, wt = calibrate(model, calib, weight_bits=weight_bits, act_bits=act_bits, method=method,
                       weight_method=weight_method, first_last_8bit=first_last_8bit, progress=progress)
    points = quantization_points(model)
    groups = shared_groups(model, points)
    wbits = mac_weight_bits(model, weight_bits, first_last_8bit)
    return _Net(model, points, groups, th, wt, weight_bits, act_bits, wbits, device)


def _score(net: "_Net", xt, yt, teacher=None, distill: float = 0.0, batch: int = 512):
    """(accuracy, mean loss, per-sample losses) of the fake-quantized network; the loss is the
    training objective: cross-entropy, plus `distill` x KL from the float network's outputs
    `teacher` (log-softmax) when given."""
    torch = net.torch
    F = torch.nn.functional
    correct, losses = 0, []
    with torch.no_grad():
        for s in range(0, len(xt), batch):
            out = net.forward(xt[s:s + batch]).reshape(len(xt[s:s + batch]), -1)
            correct += int((out.argmax(1) == yt[s:s + batch]).sum())
            loss = F.cross_entropy(out, yt[s:s + batch], reduction="none")
            if teacher is not None and distill:
                loss = loss + distill * F.kl_div(torch.log_softmax(out, 1), teacher[s:s + batch], log_target=True,
                                                 reduction="none").sum(1)
            losses.append(loss.double().cpu())
    losses = torch.cat(losses).numpy()
    return correct / len(xt), float(losses.mean()), losses


def significantly_lower(a: np.ndarray, b: np.ndarray, z: float) -> bool:
    """Is the mean of per-sample losses `a` lower than that of `b` (the same samples) by more than
    z standard errors of the paired difference?"""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    se = d.std(ddof=1) / math.sqrt(len(d)) if len(d) > 1 else 0.0
    return bool(d.mean() < -z * se) if se > 0 else bool(d.mean() < 0)


def _teacher(net: "_Net", xt, batch: int = 512):
    """log-softmax of the float network (the weights before any training) on the training data."""
    torch = net.torch
    with torch.no_grad():
        return torch.cat([torch.log_softmax(net.forward(xt[s:s + batch], quantize=False).reshape(
            len(xt[s:s + batch]), -1), 1) for s in range(0, len(xt), batch)])


def _state(net: "_Net") -> dict:
    return {k: v.detach().clone() for k, v in net.module.state_dict().items()}


def _train(net: "_Net", train, val, in_shape, sched: Schedule, seed: int, progress: bool, log) -> None:
    """Train `net` in place; leaves it with the state of the epoch kept (see the end)."""
    torch = net.torch
    from tqdm import tqdm

    def tensors(x, y):
        return (torch.tensor(x.reshape((-1,) + in_shape[1:]), device=net.device),
                torch.tensor(y.astype(np.int64), device=net.device))
    (xt, yt), (xv, yv) = tensors(*train), tensors(*val)
    teacher = _teacher(net, xt) if sched.distill else None
    teacher_v = _teacher(net, xv) if sched.distill else None
    opt = torch.optim.Adam([{"params": list(net.log2t.values()), "lr": sched.lr_thresholds},
                            {"params": list(net.params.values()), "lr": sched.lr_weights}])
    steps = -(-len(xt) // sched.batch)
    total = sched.epochs * steps
    lr_at = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    rng = np.random.default_rng(seed)

    def score():
        return _score(net, xv, yv, teacher_v, sched.distill)
    acc, vloss, per = score()
    best = (_state(net), 0, acc, vloss, per)  # the lowest validation loss so far
    if log:
        log(f"calibrated start: validation accuracy {acc:.4f}, loss {vloss:.4f}")
    bar = tqdm(range(sched.epochs), desc="threshold training", unit="epoch", disable=not progress, leave=False)
    frozen = 0
    for ep in bar:
        warm = ep < sched.warmup_epochs and sched.epochs > sched.warmup_epochs
        for p in net.params.values():
            p.requires_grad_(not warm)
        run_loss = 0.0
        idx = torch.tensor(rng.permutation(len(xt)), device=net.device)
        for k, s in enumerate(range(0, len(xt), sched.batch)):
            if sched.freeze:  # thresholds freeze one by one, inputs first, then the weights adapt to them
                a, b = sched.freeze
                frac = ((ep * steps + k) / total - a) / max(b - a, 1e-9)
                while frozen < len(net.topo) and frac >= (frozen + 1) / len(net.topo):
                    net.log2t[net.topo[frozen]].requires_grad_(False)
                    frozen += 1
            bi = idx[s:s + sched.batch]
            out = net.forward(xt[bi]).reshape(len(bi), -1)
            loss = torch.nn.functional.cross_entropy(out, yt[bi])
            if teacher is not None:  # and match the float network's output distribution
                loss = loss + sched.distill * torch.nn.functional.kl_div(
                    torch.log_softmax(out, 1), teacher[bi], log_target=True, reduction="batchmean")
            opt.zero_grad()
            loss.backward()
            opt.step()
            lr_at.step()
            run_loss += float(loss.detach()) * len(bi)
        acc, vloss, per = score()
        if vloss < best[3]:
            best = (_state(net), ep + 1, acc, vloss, per)
        bar.set_postfix(loss=f"{run_loss / len(xt):.4f}", val_acc=f"{acc:.4f}", best=best[1])
        if log:
            note = " (thresholds only)" if warm else (f" ({frozen}/{len(net.topo)} thresholds frozen)" if frozen else "")
            log(f"epoch {ep + 1}/{sched.epochs}: loss {run_loss / len(xt):.4f}, validation accuracy {acc:.4f} "
                f"loss {vloss:.4f}" + note)
    # The end of the schedule (thresholds frozen, learning rates decayed) is what training aims at;
    # an earlier epoch (or the calibrated start) replaces it only when its validation loss is lower
    # beyond the noise of a finite validation split.
    kept = (sched.epochs, acc, vloss)
    if best[1] != sched.epochs and significantly_lower(best[4], per, sched.significance):
        net.module.load_state_dict(best[0])
        kept = best[1:4]
    if log:
        why = "" if kept[0] == sched.epochs else f", lower than the last epoch's {vloss:.4f} by more than " \
                                                 f"{sched.significance:g} standard errors"
        log(f"kept epoch {kept[0]} (validation accuracy {kept[1]:.4f}, loss {kept[2]:.4f}{why})")


def export(net: _Net, model: onnx.ModelProto, weight_bits: int, act_bits: int, first_last_8bit: bool):
    """Trained weights and thresholds -> pow2 QDQ model (via quantize_static / write_qdq)."""
    from .qdq import quantize_static

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for init in m.graph.initializer:
        if init.name in net.key and net.key[init.name] in net.params:
            init.CopyFrom(numpy_helper.from_array(net.params[net.key[init.name]].detach().cpu().numpy()
                                                  .astype(np.float32), init.name))

    def pow2(k):  # 2^ceil(l) exactly: the scale the training forward used
        return 2.0 ** int(math.ceil(float(net.l2(k).detach().cpu())))
    thresholds = {p[0]: pow2(net.act_key(p[0])) for p in net.points}
    wthr = {w: pow2("w_" + k) for w, k in net.key.items() if "w_" + k in net.log2t}
    return quantize_static(m, None, weight_bits=weight_bits, act_bits=act_bits, thresholds=thresholds,
                           weight_thresholds=wthr, first_last_8bit=first_last_8bit)
