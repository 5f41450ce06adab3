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


class _Net:
    """Builds the torch module for a prepared (folded, named) float model."""

    def __init__(self, model, points, groups, thresholds, weight_thresholds, weight_bits, act_bits, wbits, device):
        torch = _torch()
        from torch import nn

        self.torch, self.model = torch, model
        self.points = points
        self.unsigned = {p[0]: p[1] for p in points}
        self.groups, self.act_bits, self.wbits = groups, act_bits, wbits
        self.inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.module = nn.Module()
        self.params = nn.ParameterDict()
        self.log2t = nn.ParameterDict()
        self.key: dict[str, str] = {}
        self.macs = [n for n in model.graph.node if n.op_type in {"Conv", "Gemm", "MatMul"}]
        for n in self.macs:
            for i in n.input[1:]:
                if i and i not in self.key:
                    if i not in self.inits:
                        raise UnsupportedError("the weight is not a constant", where=node_where(n))
                    k = f"p{len(self.key)}"
                    self.key[i] = k
                    self.params[k] = nn.Parameter(torch.tensor(self.inits[i].astype(np.float32)))
            wk = "w_" + self.key[n.input[1]]
            self.log2t[wk] = nn.Parameter(torch.tensor(math.log2(max(weight_thresholds[n.input[1]], 2.0**-30)),
                                                       dtype=torch.float32))
        self.order: list[str] = []
        for name, _, _ in points:
            rep = groups[name]
            k = "a_" + self.key.setdefault(rep, f"t{len(self.key)}")
            if k not in self.log2t:
                self.log2t[k] = nn.Parameter(torch.tensor(math.log2(max(thresholds[rep], 2.0**-30)),
                                                          dtype=torch.float32))
                self.order.append(k)
        self.module.params, self.module.log2t = self.params, self.log2t
        self.module.to(device)
        # every threshold in the order the forward pass first uses it (inputs before outputs)
        self.topo: list[str] = []
        for key in self._use_order():
            if key not in self.topo:
                self.topo.append(key)
        self.device = device

    def _use_order(self):
        point_set = set(self.unsigned)
        g = self.model.graph
        if g.input[0].name in point_set:
            yield self.act_key(g.input[0].name)
        for n in g.node:
            for i in n.input[:1] if n.op_type in {"Conv", "Gemm", "MatMul"} else n.input:
                if i in point_set:
                    yield self.act_key(i)
            if n.op_type in {"Conv", "Gemm", "MatMul"}:
                yield "w_" + self.key[n.input[1]]
            if n.output[0] in point_set:
                yield self.act_key(n.output[0])

    def act_key(self, name):
        return "a_" + self.key[self.groups[name]]

    def scale(self, key, bits, signed):
        return self.torch.pow(2.0, self.torch.ceil(self.log2t[key].detach())) / 2.0 ** (bits - int(signed))

    def forward(self, x, quantize: bool = True):
        """The network's output; with quantize=False, the float network (no quantizer, float bias)."""
        torch = self.torch
        F = torch.nn.functional
        env: dict = {}
        point_set = set(self.unsigned)

        def put(name, v):
            if quantize and name in point_set:
                v = tqt_quantize(v, self.log2t[self.act_key(name)], self.act_bits, not self.unsigned[name])
            env[name] = v

        g = self.model.graph
        put(g.input[0].name, x)
        for n in g.node:
            a = _attrs(n)
            op = n.op_type
            ins = [env.get(i) for i in n.input]
            if op in {"Conv", "Gemm", "MatMul"}:
                wname = n.input[1]
                bits = self.wbits[n.name]
                w = self.params[self.key[wname]]
                if quantize:
                    w = tqt_quantize(w, self.log2t["w_" + self.key[wname]], bits, True)
                b = None
                if len(n.input) > 2 and n.input[2] and not quantize:
                    b = self.params[self.key[n.input[2]]]
                elif len(n.input) > 2 and n.input[2]:
                    sx = self.scale(self.act_key(n.input[0]), self.act_bits, not self.unsigned[n.input[0]])
                    sw = self.scale("w_" + self.key[wname], bits, True)
                    braw = self.params[self.key[n.input[2]]]
                    bs = (sx * sw).detach()
                    b = braw + (torch.round(braw / bs) * bs - braw).detach()
                if op == "Conv":
                    pads = list(a.get("pads", [0, 0, 0, 0]))
                    xin = ins[0]
                    if pads[0] != pads[2] or pads[1] != pads[3]:
                        xin, pads = F.pad(xin, (pads[1], pads[3], pads[0], pads[2])), [0, 0, 0, 0]
                    y = F.conv2d(xin, w, b, stride=tuple(a.get("strides", (1, 1))), padding=(pads[0], pads[1]),
                                 dilation=tuple(a.get("dilations", (1, 1))), groups=int(a.get("group", 1)))
                else:
                    wm = w.t() if a.get("transB", 0) else w
                    y = ins[0] @ wm
                    if b is not None:
                        y = y + b
            elif op == "Relu":
                y = F.relu(ins[0])
            elif op == "Clip":
                lo = float(self.inits[n.input[1]]) if len(n.input) > 1 and n.input[1] else -math.inf
                hi = float(self.inits[n.input[2]]) if len(n.input) > 2 and n.input[2] else math.inf
                y = torch.clamp(ins[0], lo, hi)
            elif op == "Add":
                y = ins[0] + ins[1]
            elif op == "Concat":
                y = torch.cat(ins, dim=a["axis"])
            elif op == "MaxPool":
                y = F.max_pool2d(ins[0], tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                 padding=tuple(a.get("pads", (0, 0, 0, 0))[:2]))
            elif op == "AveragePool":
                y = F.avg_pool2d(ins[0], tuple(a["kernel_shape"]), tuple(a.get("strides", a["kernel_shape"])),
                                 padding=tuple(a.get("pads", (0, 0, 0, 0))[:2]),
                                 count_include_pad=bool(a.get("count_include_pad", 0)))
            elif op == "GlobalAveragePool":
                y = ins[0].mean(dim=(2, 3), keepdim=True)
            elif op == "Flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif op == "Reshape":
                shape = [int(d) for d in self.inits[n.input[1]]]
                y = ins[0].reshape([ins[0].shape[0]] + shape[1:])
            else:
                raise UnsupportedError(f"operator {op} is not supported by threshold training", where=node_where(n))
            put(n.output[0], y)
        return env[g.output[0].name]


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
        return 2.0 ** int(math.ceil(float(net.log2t[k].detach().cpu())))
    thresholds = {p[0]: pow2(net.act_key(p[0])) for p in net.points}
    wthr = {w: pow2("w_" + k) for w, k in net.key.items() if "w_" + k in net.log2t}
    return quantize_static(m, None, weight_bits=weight_bits, act_bits=act_bits, thresholds=thresholds,
                           weight_thresholds=wthr, first_last_8bit=first_last_8bit)
