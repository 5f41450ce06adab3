"""kws-transformer: a Keyword Transformer (KWT-1 style, arXiv 2104.00769) on the keyword-spotting
data set of tony.models.kws_data (input 1x1x49x10 MFCC, 12 classes).

The 49 MFCC frames are the tokens: each frame's 10 coefficients are projected linearly to d_model
(a MatMul in the graph, so the embedding runs on the accelerator's array), learned position
embeddings are added, then a pre-LayerNorm encoder (layers x [LN -> single-head self-attention ->
residual; LN -> Linear -> GELU -> Linear -> residual]) -> LN -> mean over the frames -> Linear ->
logits. Two choices differ from KWT-1 as published: the tokens are pooled by their mean (no class
token: that would need a Concat in front of the encoder) and the LayerNorms come before each
block (pre-LN, as in text-langid) rather than after.

Trained with PyTorch on the CPU by tony.models.torchnet.fit (AdamW, cosine learning rate,
SpecAugment-style masks, the best epoch on the validation split kept). The ONNX graph (opset 13,
LayerNorm decomposed, GELU as Erf) is written node by node with the patterns of tony.models.text.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import onnx
from onnx import TensorProto, helper

from ..errors import TonyError
from .kws_data import CLASSES, COEFFS, FRAMES, IN_SHAPE, KwsSpec, dataset


@dataclass(frozen=True)
class KwtConfig:
    """Model and training sizes of kws-transformer (the defaults are the bundled example)."""
    d_model: int = 64
    heads: int = 1
    ffn: int = 128
    layers: int = 2
    epochs: int = 16
    lr: float = 2e-3
    batch: int = 64
    eps: float = 1e-5
    seq_len: int = FRAMES   # tokens: one per MFCC frame (the name is what text.py's graph helpers read)
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


def _torch():
    try:
        import torch
    except ImportError:
        raise TonyError("the keyword-spotting models are trained with PyTorch", hint="pip install 'tony[train]'") \
            from None
    return torch


def make_kwt(cfg: KwtConfig, n_classes: int = len(CLASSES)):
    """The torch module: input [n, 1, 49, 10] MFCC, output [n, classes] logits."""
    torch = _torch()
    nn = torch.nn
    from .text import FloatOps

    ops = FloatOps()

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.d_model
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=cfg.eps), nn.LayerNorm(d, eps=cfg.eps)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(d, cfg.ffn), nn.Linear(cfg.ffn, d)

        def forward(self, x):
            n, t, d = x.shape
            h, dh = cfg.heads, cfg.head_dim
            y = self.ln1(x)
            q, k, v = (m(y).reshape(n, t, h, dh).transpose(1, 2) for m in (self.q, self.k, self.v))
            a = ((q @ k.transpose(2, 3)) / math.sqrt(dh)).softmax(dim=-1)
            x = x + self.o((a @ v).transpose(1, 2).reshape(n, t, d))
            return x + self.fc2(ops.gelu("", self.fc1(self.ln2(x))))

    class Kwt(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(COEFFS, cfg.d_model)
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_model) * 0.02)
            self.blocks = nn.ModuleList(Layer() for _ in range(cfg.layers))
            self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
            self.head = nn.Linear(cfg.d_model, n_classes)

        def forward(self, x):
            x = self.proj(x.reshape(len(x), cfg.seq_len, COEFFS)) + self.pos
            for blk in self.blocks:
                x = blk(x)
            return self.head(self.ln(x).mean(dim=1))

    return Kwt()


def kwt_onnx(model, cfg: KwtConfig) -> onnx.ModelProto:
    """Float ONNX graph (opset 13): `input` [1, 1, 49, 10] (as the kws examples) -> Reshape [1, 49, 10]
    -> MatMul (the frame projection) -> Add (its bias plus the position table) -> encoder -> `logits` [1, 12]."""
    from .text import _attention, _gelu, _Graph, _layernorm, _linear

    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    g = _Graph()
    x = g.op("Reshape", ["input", g.const("tokens_shape", [1, cfg.seq_len, COEFFS], np.int64)], "tokens")
    x = g.op("MatMul", [x, g.const("embed.weight", np.ascontiguousarray(sd["proj.weight"].T))], "embed.matmul")
    x = g.op("Add", [x, g.const("embed.bias_position", (sd["proj.bias"] + sd["pos"])[None])], "embed.add")
    for i in range(cfg.layers):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        y = _layernorm(g, x, p["ln1.weight"], p["ln1.bias"], cfg.eps, f"l{i}.ln1", 13)
        x = g.op("Add", [x, _attention(g, y, p, cfg, f"l{i}.attn")], f"l{i}.residual1")
        y = _layernorm(g, x, p["ln2.weight"], p["ln2.bias"], cfg.eps, f"l{i}.ln2", 13)
        y = _linear(g, _gelu(g, _linear(g, y, p["fc1.weight"], p["fc1.bias"], f"l{i}.fc1"), f"l{i}.gelu"),
                    p["fc2.weight"], p["fc2.bias"], f"l{i}.fc2")
        x = g.op("Add", [x, y], f"l{i}.residual2")
    x = _layernorm(g, x, sd["ln.weight"], sd["ln.bias"], cfg.eps, "final.ln", 13)
    x = g.op("ReduceMean", [x], "pool", axes=[1], keepdims=0)
    ins = [x, g.const("head.weight", sd["head.weight"]), g.const("head.bias", sd["head.bias"])]
    g.nodes.append(helper.make_node("Gemm", ins, ["logits"], name="head", transB=1))
    n_cls = sd["head.weight"].shape[0]
    graph = helper.make_graph(
        g.nodes, "kws_transformer", [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(IN_SHAPE))],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_cls])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tony")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def train_kwt(cfg: KwtConfig, data: dict, *, progress: bool = True):
    """(torch module in eval mode, test accuracy): torchnet.fit on one thread, the best validation
    epoch kept."""
    from . import torchnet as t
    from .kws import augment

    torch = _torch()
    torch.manual_seed(cfg.seed)
    net = make_kwt(cfg)
    fit = t.Fit(epochs=cfg.epochs, lr=cfg.lr, batch=cfg.batch, seed=cfg.seed, weight_decay=0.01)
    net, _ = t.fit(net, data["x_train"], data["y_train"], data["x_val"], data["y_val"], fit,
                   desc="kws-transformer: training", progress=progress, augment=augment)
    return net, t.accuracy(net, data["x_test"], data["y_test"])


def build_kwt(out_dir, *, spec: KwsSpec = KwsSpec(), calib_size: int = 256, method: str = "max",
              progress: bool = True, **overrides) -> dict:
    """Train, quantize (pow2 QDQ, one calibration batch, `method`, one pass: `tony quantize --method
    max --one-pass`, as text-langid: KL-J clips the residual stream and costs points, and the
    sequential pass takes minutes on this graph), and write the files of the kws
    examples: float.onnx, model.onnx, inputs.npy / labels.npy (the voice-disjoint test split,
    stacked 1x1x49x10), calib.npy (one seeded batch of training clips) and train.npz (x, y: training
    split; x_val, y_val: validation). `overrides` change KwtConfig fields (tests build tiny ones)."""
    from .kws import write_example

    cfg = replace(KwtConfig(), **overrides)
    d = dataset(spec, progress=progress)
    model, acc = train_kwt(cfg, d, progress=progress)
    return write_example(out_dir, kwt_onnx(model, cfg), acc, d, seed=cfg.seed, calib_size=calib_size,
                         method=method, sequential=False)
