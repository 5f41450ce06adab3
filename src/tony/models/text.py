"""text-langid: a small transformer encoder that names the language of 32 characters of text.

Data: the per-language word-frequency lists that the `wordfreq` wheel ships (no download). A
sample is words drawn by their frequency, joined by spaces and cut to `seq_len` characters;
tokens are characters (a vocabulary of about 60). Built once per configuration, seeded, and
cached under ~/.cache/tony/text-langid (or $TONY_CACHE_DIR).

Model (pre-LayerNorm encoder): embedding -> layers x [LN -> multi-head self-attention ->
residual; LN -> Linear -> GELU -> Linear -> residual] -> LN -> mean over the tokens -> Linear ->
logits. The embedding of position i is the sum of four table rows: the character, the hashed
character bigram and trigram ending at i (`ngram_ids`, fastText-style subword features), and the
position. The lookup is host-side: the ONNX graphs take the summed embeddings [1, seq_len,
d_model] (float); `host_embed` computes them from token ids and the tables of embedding.npz.

The ONNX graphs are written node by node from the trained weights (docs/transformer.md lists the
patterns): float.onnx at opset 13 with LayerNorm decomposed into ReduceMean/Sub/Pow/Add/Sqrt/Div
/Mul/Add, float17.onnx at opset 17 with LayerNormalization; both with GELU as Div/Erf/Add/Mul/Mul
and the heads split and merged with Reshape/Transpose.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import TonyError

LANGS = ("en", "de", "fr", "es", "it", "pt", "nl", "sv")
SPACE, UNKNOWN = 0, 1  # token ids; the characters follow in sorted order


@dataclass(frozen=True)
class TextConfig:
    """Data, model and training sizes of text-langid (the defaults are the bundled example)."""

    langs: tuple[str, ...] = LANGS
    n_words: int = 5000          # the most frequent words of each language (letters only)
    seq_len: int = 32            # characters per sample
    train_per_lang: int = 4000
    test_per_lang: int = 250
    ngram_buckets: int = 2048    # hashed bigram and trigram tables (rows each)
    d_model: int = 64
    heads: int = 4
    ffn: int = 128
    layers: int = 2
    epochs: int = 8
    batch: int = 128
    lr: float = 3e-3
    eps: float = 1e-5            # LayerNorm epsilon
    calib_size: int = 256
    seed: int = 0

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


# ----------------------------------------------------------------------------------------- data


def _wordfreq():
    try:
        import wordfreq
    except ImportError:  # pragma: no cover - dev extra
        raise TonyError("the text-langid example needs wordfreq", hint="pip install 'tony[dev]'") from None
    return wordfreq


def word_lists(langs, n_words: int) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per language: its n_words most frequent words made only of letters, and their
    probabilities (frequency, renormalized)."""
    wf = _wordfreq()
    out = {}
    for lang in langs:
        freq = wf.get_frequency_dict(lang, wordlist="small")
        words = [w for w in wf.top_n_list(lang, n_words, wordlist="small") if w.isalpha()]
        p = np.array([freq[w] for w in words], np.float64)
        out[lang] = (words, p / p.sum())
    return out


def vocabulary(lists) -> list[str]:
    """Token id -> character: space, unknown, then every character of the word lists, sorted."""
    chars = sorted({c for words, _ in lists.values() for w in words for c in w})
    return [" ", "\N{REPLACEMENT CHARACTER}"] + chars


def encode(text: str, vocab: list[str]) -> np.ndarray:
    index = {c: i for i, c in enumerate(vocab)}
    return np.array([index.get(c, UNKNOWN) for c in text], np.int64)


def _sample(words, p, n: int, seq_len: int, rng) -> list[str]:
    out = []
    for _ in range(n):
        text = ""
        while len(text) < seq_len:
            text += ("" if not text else " ") + words[rng.choice(len(words), p=p)]
        out.append(text[:seq_len])
    return out


def _cache_dir() -> Path:
    return Path(os.environ.get("TONY_CACHE_DIR") or Path.home() / ".cache" / "tony") / "text-langid"


def _data_key(cfg: TextConfig) -> str:
    from importlib.metadata import version

    fields = (cfg.langs, cfg.n_words, cfg.seq_len, cfg.train_per_lang, cfg.test_per_lang, cfg.seed,
              version("wordfreq"))
    return hashlib.sha256(repr(fields).encode()).hexdigest()[:16]


def text_data(cfg: TextConfig, *, progress: bool = True) -> dict:
    """{x_train, y_train, x_test, y_test (token ids [n, seq_len] / language index), vocab, langs}.
    Seeded; cached by configuration and wordfreq version."""
    from tqdm import tqdm

    path = _cache_dir() / f"{_data_key(cfg)}.npz"
    if path.is_file():
        z = np.load(path)
        return {k: z[k] for k in ("x_train", "y_train", "x_test", "y_test")} | {
            "vocab": [str(c) for c in z["vocab"]], "langs": list(cfg.langs)}
    lists = word_lists(cfg.langs, cfg.n_words)
    vocab = vocabulary(lists)
    rng = np.random.default_rng(cfg.seed)
    parts = {"train": ([], []), "test": ([], [])}
    for k, lang in enumerate(tqdm(cfg.langs, desc="text-langid data", unit="lang", disable=not progress)):
        words, p = lists[lang]
        for split, n in (("train", cfg.train_per_lang), ("test", cfg.test_per_lang)):
            texts = _sample(words, p, n, cfg.seq_len, rng)
            parts[split][0].extend(encode(t, vocab) for t in texts)
            parts[split][1].extend([k] * n)
    data = {}
    for split, (xs, ys) in parts.items():
        order = rng.permutation(len(xs))
        data[f"x_{split}"] = np.stack(xs)[order]
        data[f"y_{split}"] = np.array(ys, np.int64)[order]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, vocab=np.array(vocab), **data)
    os.replace(tmp, path)
    return data | {"vocab": vocab, "langs": list(cfg.langs)}


def decode(tokens, vocab: list[str]) -> str:
    return "".join(vocab[int(t)] for t in tokens)


HASH = 7919  # n-gram hash: h(a, b) = (a * HASH + b) mod buckets, sequences padded on the left by SPACE


def ngram_ids(tokens, buckets: int):
    """(bigram ids, trigram ids) of the character n-grams ending at each position, for int64 token
    arrays or tensors [n, seq_len]: ((t[i-1] * H + t[i]) mod B, ((t[i-2] * H + t[i-1]) * H + t[i]) mod B)."""
    def shifted(t, k):
        pad = t[:, :k] * 0 + SPACE
        return pad if k >= t.shape[1] else _cat(pad, t[:, :-k])

    p1, p2 = shifted(tokens, 1), shifted(tokens, 2)
    return (p1 * HASH + tokens) % buckets, ((p2 * HASH + p1) * HASH + tokens) % buckets


def _cat(a, b):
    if isinstance(a, np.ndarray):
        return np.concatenate([a, b], axis=1)
    return _torch().cat([a, b], dim=1)


def host_embed(tokens, tables) -> np.ndarray:
    """The host-side embedding in numpy from the tables of embedding.npz (token, bigram, trigram,
    position): [n, seq_len, d_model] float32."""
    tokens = np.asarray(tokens, np.int64)
    bi, tri = ngram_ids(tokens, len(tables["bigram"]))
    out = tables["token"][tokens] + tables["bigram"][bi] + tables["trigram"][tri] + tables["position"]
    return out.astype(np.float32)


# ---------------------------------------------------------------------------------------- model


def _torch():
    try:
        import torch
    except ImportError:  # pragma: no cover - train extra
        raise TonyError("the text-langid example trains with PyTorch", hint="pip install 'tony[train]'") from None
    return torch


class FloatOps:
    """The nonlinear functions of the encoder in float (what ONNX computes). `site` names the call
    (l0.ln1, l0.softmax, l0.gelu, ..., final.ln) so that substitutes can keep per-site scales."""

    def softmax(self, site: str, x):
        return x.softmax(dim=-1)

    def layernorm(self, site: str, x, weight, bias, eps: float):
        torch = _torch()
        return torch.nn.functional.layer_norm(x, x.shape[-1:], weight, bias, eps)

    def gelu(self, site: str, x):
        torch = _torch()
        return torch.nn.functional.gelu(x)


def make_encoder(cfg: TextConfig, vocab_size: int, n_classes: int):
    """The torch module (built lazily so that importing this file needs no torch)."""
    torch = _torch()
    nn = torch.nn

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            d = cfg.d_model
            self.ln1, self.ln2 = nn.LayerNorm(d, eps=cfg.eps), nn.LayerNorm(d, eps=cfg.eps)
            self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
            self.fc1, self.fc2 = nn.Linear(d, cfg.ffn), nn.Linear(cfg.ffn, d)

        def forward(self, x, ops, name):
            n, t, d = x.shape
            h, dh = cfg.heads, cfg.head_dim
            y = ops.layernorm(f"{name}.ln1", x, self.ln1.weight, self.ln1.bias, cfg.eps)
            q, k, v = (m(y).reshape(n, t, h, dh).transpose(1, 2) for m in (self.q, self.k, self.v))
            s = (q @ k.transpose(2, 3)) / math.sqrt(dh)
            a = (ops.softmax(f"{name}.softmax", s) @ v).transpose(1, 2).reshape(n, t, d)
            x = x + self.o(a)
            y = ops.layernorm(f"{name}.ln2", x, self.ln2.weight, self.ln2.bias, cfg.eps)
            return x + self.fc2(ops.gelu(f"{name}.gelu", self.fc1(y)))

    class Encoder(nn.Module):
        def __init__(self):
            super().__init__()
            self.tok = nn.Embedding(vocab_size, cfg.d_model)
            self.bigram = nn.Embedding(cfg.ngram_buckets, cfg.d_model)
            self.trigram = nn.Embedding(cfg.ngram_buckets, cfg.d_model)
            self.pos = nn.Parameter(torch.randn(cfg.seq_len, cfg.d_model) * 0.02)
            self.blocks = nn.ModuleList(Layer() for _ in range(cfg.layers))
            self.ln = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
            self.head = nn.Linear(cfg.d_model, n_classes)

        def embed(self, tokens):
            bi, tri = ngram_ids(tokens, cfg.ngram_buckets)
            return self.tok(tokens) + self.bigram(bi) + self.trigram(tri) + self.pos

        def forward_embedded(self, x, ops=None):
            ops = ops or FloatOps()
            for i, blk in enumerate(self.blocks):
                x = blk(x, ops, f"l{i}")
            x = ops.layernorm("final.ln", x, self.ln.weight, self.ln.bias, cfg.eps)
            return self.head(x.mean(dim=1))

        def forward(self, tokens, ops=None):
            return self.forward_embedded(self.embed(tokens), ops)

    return Encoder()


def train_encoder(cfg: TextConfig, data: dict, *, progress: bool = True):
    """Train with AdamW and a one-cycle schedule on ONE thread (this model is small enough that
    more threads only contend: measured 35 ms per step on one, over a second on two busy cores);
    returns (module in eval mode, test accuracy)."""
    torch = _torch()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg, data, progress)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: TextConfig, data: dict, progress: bool):
    from tqdm import tqdm

    torch = _torch()
    torch.manual_seed(cfg.seed)
    model = make_encoder(cfg, len(data["vocab"]), len(data["langs"]))
    xtr, ytr = torch.from_numpy(data["x_train"]), torch.from_numpy(data["y_train"])
    steps = cfg.epochs * math.ceil(len(xtr) / cfg.batch)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    bar = tqdm(total=steps, desc="text-langid train", unit="step", disable=not progress)
    model.train()
    for _ in range(cfg.epochs):
        for idx in torch.randperm(len(xtr), generator=gen).split(cfg.batch):
            loss = torch.nn.functional.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    model.eval()
    return model, accuracy(model, data["x_test"], data["y_test"])


def predict(model, tokens, ops=None, batch: int = 512) -> np.ndarray:
    """Logits [n, classes] of token ids [n, seq_len]."""
    torch = _torch()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(tokens[i:i + batch]), ops).numpy()
                               for i in range(0, len(tokens), batch)])


def accuracy(model, tokens, labels, ops=None) -> float:
    return float((predict(model, tokens, ops).argmax(1) == labels).mean())


def embed(model, tokens) -> np.ndarray:
    """The host-side part: token + position embeddings, [n, seq_len, d_model] float32."""
    torch = _torch()
    with torch.no_grad():
        return model.embed(torch.from_numpy(np.asarray(tokens, np.int64))).numpy().astype(np.float32)


# ----------------------------------------------------------------------------------------- ONNX


class _Graph:
    """Node-by-node ONNX builder with unique names."""

    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def const(self, name: str, arr, dtype=np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr, dtype), name))
        return name

    def op(self, op: str, ins: list[str], base: str, **attrs) -> str:
        self.k += 1
        out = f"{base}_{self.k}"
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out


def _layernorm(g: _Graph, x: str, w, b, eps: float, name: str, opset: int) -> str:
    gamma, beta = g.const(f"{name}.weight", w), g.const(f"{name}.bias", b)
    if opset >= 17:
        return g.op("LayerNormalization", [x, gamma, beta], name, axis=-1, epsilon=eps)
    mean = g.op("ReduceMean", [x], f"{name}.mean", axes=[-1])
    d = g.op("Sub", [x, mean], f"{name}.sub")
    var = g.op("ReduceMean", [g.op("Pow", [d, g.const(f"{name}.two", 2.0)], f"{name}.pow")], f"{name}.var", axes=[-1])
    std = g.op("Sqrt", [g.op("Add", [var, g.const(f"{name}.eps", eps)], f"{name}.add_eps")], f"{name}.sqrt")
    y = g.op("Div", [d, std], f"{name}.div")
    return g.op("Add", [g.op("Mul", [y, gamma], f"{name}.mul"), beta], f"{name}.add")


def _linear(g: _Graph, x: str, w, b, name: str) -> str:
    y = g.op("MatMul", [x, g.const(f"{name}.weight", np.ascontiguousarray(w.T))], f"{name}.matmul")
    return g.op("Add", [y, g.const(f"{name}.bias", b)], f"{name}.add")


def _gelu(g: _Graph, x: str, name: str) -> str:
    e = g.op("Erf", [g.op("Div", [x, g.const(f"{name}.sqrt2", math.sqrt(2.0))], f"{name}.div")], f"{name}.erf")
    y = g.op("Mul", [x, g.op("Add", [e, g.const(f"{name}.one", 1.0)], f"{name}.add")], f"{name}.mul")
    return g.op("Mul", [y, g.const(f"{name}.half", 0.5)], f"{name}.half_mul")


def _attention(g: _Graph, x: str, p: dict, cfg: TextConfig, name: str) -> str:
    t, h, dh = cfg.seq_len, cfg.heads, cfg.head_dim
    split = g.const(f"{name}.split_shape", [1, t, h, dh], np.int64)
    heads = {}
    for m, perm in (("q", [0, 2, 1, 3]), ("k", [0, 2, 3, 1]), ("v", [0, 2, 1, 3])):
        y = _linear(g, x, p[f"{m}.weight"], p[f"{m}.bias"], f"{name}.{m}")
        heads[m] = g.op("Transpose", [g.op("Reshape", [y, split], f"{name}.{m}.reshape")], f"{name}.{m}.transpose",
                        perm=perm)
    s = g.op("MatMul", [heads["q"], heads["k"]], f"{name}.scores")
    s = g.op("Div", [s, g.const(f"{name}.sqrt_dh", math.sqrt(dh))], f"{name}.scale")
    a = g.op("MatMul", [g.op("Softmax", [s], f"{name}.softmax", axis=-1), heads["v"]], f"{name}.context")
    a = g.op("Transpose", [a], f"{name}.merge.transpose", perm=[0, 2, 1, 3])
    a = g.op("Reshape", [a, g.const(f"{name}.merge_shape", [1, t, cfg.d_model], np.int64)], f"{name}.merge.reshape")
    return _linear(g, a, p["o.weight"], p["o.bias"], f"{name}.o")


def encoder_onnx(model, cfg: TextConfig, opset: int = 13) -> onnx.ModelProto:
    """Float ONNX graph of the trained encoder: input `embeddings` [1, seq_len, d_model], output
    `logits` [1, classes]."""
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    g = _Graph()
    x = "embeddings"
    for i in range(cfg.layers):
        p = {k[len(f"blocks.{i}."):]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}
        y = _layernorm(g, x, p["ln1.weight"], p["ln1.bias"], cfg.eps, f"l{i}.ln1", opset)
        x = g.op("Add", [x, _attention(g, y, p, cfg, f"l{i}.attn")], f"l{i}.residual1")
        y = _layernorm(g, x, p["ln2.weight"], p["ln2.bias"], cfg.eps, f"l{i}.ln2", opset)
        y = _linear(g, _gelu(g, _linear(g, y, p["fc1.weight"], p["fc1.bias"], f"l{i}.fc1"), f"l{i}.gelu"),
                    p["fc2.weight"], p["fc2.bias"], f"l{i}.fc2")
        x = g.op("Add", [x, y], f"l{i}.residual2")
    x = _layernorm(g, x, sd["ln.weight"], sd["ln.bias"], cfg.eps, "final.ln", opset)
    x = g.op("ReduceMean", [x], "pool", axes=[1], keepdims=0)
    ins = [x, g.const("head.weight", sd["head.weight"]), g.const("head.bias", sd["head.bias"])]
    g.nodes.append(helper.make_node("Gemm", ins, ["logits"], name="head", transB=1))
    n_cls = sd["head.weight"].shape[0]
    graph = helper.make_graph(
        g.nodes, "text_langid",
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, [1, cfg.seq_len, cfg.d_model])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_cls])], g.inits)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="tony")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


# ------------------------------------------------------------------------------------- building


def build_text_langid(out_dir, *, progress: bool = True, **overrides) -> dict:
    """Train text-langid and write float.onnx (opset 13), float17.onnx (opset 17), model.onnx
    (float.onnx quantized by `tony quantize --method max --one-pass`: int8, pow2), inputs.npy
    (test embeddings [n, 1, seq_len, d_model] float32), labels.npy, tokens.npy (test token ids),
    embedding.npz (token, bigram, trigram and position tables), calib.npy (embeddings of training samples),
    weights.npz (the torch state), vocab.json and accuracy.json (the configuration, float accuracy
    and accuracy with the integer nonlinear kernels substituted, and of model.onnx in the reference)."""
    from ..frontend.load import load_model
    from ..quant.qdq import quantize_static
    from .text_int import integer_accuracies

    cfg = replace(TextConfig(), **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data = text_data(cfg, progress=progress)
    model, acc = train_encoder(cfg, data, progress=progress)
    for opset, name in ((13, "float.onnx"), (17, "float17.onnx")):
        onnx.save(encoder_onnx(model, cfg, opset), out / name)
    calib = embed(model, data["x_train"][:cfg.calib_size])
    np.save(out / "inputs.npy", embed(model, data["x_test"])[:, None])
    np.save(out / "labels.npy", data["y_test"])
    np.save(out / "tokens.npy", data["x_test"])
    np.save(out / "calib.npy", calib[:, None])
    tables = {"token": model.tok.weight, "bigram": model.bigram.weight, "trigram": model.trigram.weight,
              "position": model.pos}
    np.savez(out / "embedding.npz", **{k: v.detach().numpy() for k, v in tables.items()})
    np.savez(out / "weights.npz", **{k: v.detach().numpy() for k, v in model.state_dict().items()})
    (out / "vocab.json").write_text(json.dumps({"vocab": data["vocab"], "langs": data["langs"]}, ensure_ascii=False))
    qm = quantize_static(load_model(out / "float.onnx"), calib[:, None], method="max", sequential=False)
    onnx.save(qm, out / "model.onnx")
    info = {"float_accuracy": acc, "dir": str(out), "config": asdict(cfg)}
    info["integer_kernels"] = integer_accuracies(model, cfg, data)
    info["int8_accuracy"] = int8_accuracy(out / "model.onnx", out)
    (out / "accuracy.json").write_text(json.dumps(info, indent=1))
    return info


def int8_accuracy(model_path, out_dir) -> float:
    """Test accuracy of a quantized text-langid graph in Tony's reference (the integers the
    accelerator computes) on the folder's inputs.npy and labels.npy."""
    from .. import run_reference
    from ..api import load_ir

    out = Path(out_dir)
    x, y = np.load(out / "inputs.npy"), np.load(out / "labels.npy")
    logits = np.asarray(run_reference(load_ir(model_path), x)[0]).reshape(len(x), -1)
    return float((logits.argmax(1) == y).mean())


def load_encoder(out_dir):
    """(torch module in eval mode, TextConfig, vocab, langs) of a build folder."""
    torch = _torch()
    out = Path(out_dir)
    info = json.loads((out / "accuracy.json").read_text())
    cfg = TextConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in info["config"].items()})
    voc = json.loads((out / "vocab.json").read_text())
    model = make_encoder(cfg, len(voc["vocab"]), len(voc["langs"]))
    with np.load(out / "weights.npz") as z:
        model.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
    return model.eval(), cfg, voc["vocab"], voc["langs"]
