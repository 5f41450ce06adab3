"""Small PyTorch networks that know their ONNX graph: layers, a training loop, the export.

Needs PyTorch (`tony[train]`); import this module only through `tony.models.torchnet.require()`
style call sites that turn a missing torch into one clear error. Each layer's `to_onnx(b, x)`
appends its nodes (opset 13) to a builder and returns its output's name, the way `tony.models.nn`
does for the numpy networks: the graph written is exactly the network trained (Keras-style
asymmetric 'same' padding as explicit pads, BatchNormalization with its running statistics,
Dropout left out).
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from .nn import OPSET, _Builder


class Conv(nn.Module):
    """Conv2d with explicit pads (top, left, bottom, right), groups, optional bias."""

    def __init__(self, cin, cout, k, stride=1, pads=(0, 0, 0, 0), groups=1, bias=True):
        super().__init__()
        k = (k, k) if isinstance(k, int) else tuple(k)
        s = (stride, stride) if isinstance(stride, int) else tuple(stride)
        self.conv = nn.Conv2d(cin, cout, k, s, 0, groups=groups, bias=bias)
        self.pads = tuple(pads)

    def forward(self, x):
        t, l, b, r = self.pads
        return self.conv(F.pad(x, (l, r, t, b)) if any(self.pads) else x)

    def to_onnx(self, b, x):
        c = self.conv
        name = b.name("conv")
        ins = [x, b.init(name + ".weight", c.weight.detach().numpy())]
        if c.bias is not None:
            ins.append(b.init(name + ".bias", c.bias.detach().numpy()))
        return b.node("Conv", ins, name, kernel_shape=list(c.kernel_size), strides=list(c.stride),
                      pads=list(self.pads), group=c.groups)


class BN(nn.BatchNorm2d):
    def to_onnx(self, b, x):
        name = b.name("bn")
        ins = [x] + [b.init(f"{name}.{k}", v.detach().numpy()) for k, v in
                     (("gamma", self.weight), ("beta", self.bias), ("mean", self.running_mean),
                      ("var", self.running_var))]
        return b.node("BatchNormalization", ins, name, epsilon=self.eps)


class Act(nn.Module):
    """ReLU, or ReLU6-style Clip(0, hi)."""

    def __init__(self, hi: float | None = None):
        super().__init__()
        self.hi = hi

    def forward(self, x):
        return F.relu(x) if self.hi is None else torch.clamp(x, 0.0, self.hi)

    def to_onnx(self, b, x):
        name = b.name("relu")
        if self.hi is None:
            return b.node("Relu", [x], name)
        return b.node("Clip", [x, b.init(name + ".min", np.float32(0)), b.init(name + ".max", np.float32(self.hi))],
                      name)


class AvgPool(nn.Module):
    """AveragePool with kernel = stride (windows that do not fit are dropped, as ONNX floors)."""

    def __init__(self, k):
        super().__init__()
        self.k = (k, k) if isinstance(k, int) else tuple(k)

    def forward(self, x):
        return F.avg_pool2d(x, self.k, self.k)

    def to_onnx(self, b, x):
        return b.node("AveragePool", [x], b.name("avgpool"), kernel_shape=list(self.k), strides=list(self.k))


class GlobalAvgPool(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3), keepdim=True)

    def to_onnx(self, b, x):
        return b.node("GlobalAveragePool", [x], b.name("gap"))


class Flatten(nn.Module):
    def forward(self, x):
        return x.reshape(x.shape[0], -1)

    def to_onnx(self, b, x):
        return b.node("Flatten", [x], b.name("flatten"), axis=1)


class Dense(nn.Linear):
    def to_onnx(self, b, x):
        name = b.name("fc")
        return b.node("Gemm", [x, b.init(name + ".weight", self.weight.detach().numpy()),
                               b.init(name + ".bias", self.bias.detach().numpy())], name, transB=1)


class Dropout(nn.Dropout):
    def to_onnx(self, b, x):  # inference: the identity
        return x


class Seq(nn.Sequential):
    def to_onnx(self, b, x):
        for layer in self:
            x = layer.to_onnx(b, x)
        return x


class Concat(nn.Module):
    """Branches on the same input, joined on the channel axis."""

    def __init__(self, *branches):
        super().__init__()
        self.branches = nn.ModuleList(branches)

    def forward(self, x):
        return torch.cat([br(x) for br in self.branches], dim=1)

    def to_onnx(self, b, x):
        return b.node("Concat", [br.to_onnx(b, x) for br in self.branches], b.name("concat"), axis=1)


def same_pads(in_hw, k, s) -> tuple[int, int, int, int]:
    from .tiny import same_pads as pads

    return pads(in_hw, k, s)


def to_onnx(net: Seq, in_shape: tuple[int, ...], n_out: int, name: str) -> onnx.ModelProto:
    """The float ONNX graph (opset 13) of a trained network in eval mode: input 'input', output 'logits'."""
    net.eval()
    b = _Builder()
    net.to_onnx(b, "input")
    b.nodes[-1].output[0] = "logits"
    g = helper.make_graph(b.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_out])], b.inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tony")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m


@dataclass(frozen=True)
class Fit:
    """How to train: AdamW with a cosine learning rate, the best epoch on the validation split kept."""
    epochs: int = 20
    lr: float = 3e-3
    batch: int = 64
    weight_decay: float = 1e-4
    seed: int = 0
    label_smoothing: float = 0.0
    threads: int = 1  # small convolutions: one thread is fastest, and two spin against other processes


def predict(net, x: np.ndarray, batch: int = 512) -> np.ndarray:
    net.eval()
    with torch.no_grad():
        return np.concatenate([net(torch.from_numpy(np.ascontiguousarray(x[s:s + batch]))).numpy()
                               for s in range(0, len(x), batch)])


def accuracy(net, x, y) -> float:
    return float((predict(net, x).argmax(1) == y).mean())


def fit(net: nn.Module, x, y, xval, yval, cfg: Fit = Fit(), *, desc: str = "training", progress: bool = True,
        augment=None):
    """Train `net` in place on (x, y); returns (net with the weights of its best validation epoch,
    that validation accuracy). `augment(batch, rng) -> batch` (numpy) runs on each training batch."""
    from tqdm import tqdm

    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    try:
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        steps = cfg.epochs * math.ceil(len(x) / cfg.batch)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.5 * (1 + math.cos(math.pi * min(k, steps) / steps)))
        yt = torch.from_numpy(np.asarray(y, np.int64))
        best, best_acc = copy.deepcopy(net.state_dict()), -1.0
        bar = tqdm(range(cfg.epochs), desc=desc, unit="epoch", disable=not progress, leave=False)
        for ep in bar:
            net.train()
            total = 0.0
            order = rng.permutation(len(x))
            for s in range(0, len(x), cfg.batch):
                bi = order[s:s + cfg.batch]
                xb = x[bi] if augment is None else augment(x[bi], rng)
                loss = F.cross_entropy(net(torch.from_numpy(np.ascontiguousarray(xb, np.float32))), yt[bi],
                                       label_smoothing=cfg.label_smoothing)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(bi)
            acc = accuracy(net, xval, yval)
            if acc > best_acc:
                best, best_acc = copy.deepcopy(net.state_dict()), acc
            bar.set_postfix(loss=f"{total / len(x):.4f}", val_acc=f"{acc:.4f}", best=f"{best_acc:.4f}")
        net.load_state_dict(best)
        net.eval()
        return net, best_acc
    finally:
        torch.set_num_threads(threads)
