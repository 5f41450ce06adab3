"""Accuracy of text-langid in float, with Tony's integer Softmax / LayerNorm / GELU substituted
(tony.models.text_int), and quantized whole by `tony quantize` (PTQ int8, and TQT threshold
training with `--train-data`; run in the reference, whose integers the accelerator computes bit for
bit): writes the section '## Text: language identification' of docs/accuracy.md (everything from
that heading to the end of the file), with the build and training times.

    python bench/text_accuracy.py [--out docs/accuracy.md] [--build build/accuracy/text-langid] [--reuse]
                                  [--tqt-epochs 3]

--reuse takes the build folder as it is when it holds accuracy.json (no training of the float
model; threshold training still runs). train.npz (the TQT training data: the embeddings of the
first TQT_PER_LANG training samples of each language, from the cached data set) is written into the
build folder when absent.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from tony.frontend.load import load_model
from tony.models import build_example
from tony.models.text import int8_accuracy
from tony.quant.qdq import quantize_static

HEADING = "## Text: language identification (text-langid)"


def ort_accuracy(path, x, y) -> float:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"embeddings": xi})[0] for xi in x])
    return float((out.argmax(1) == y).mean())


PTQ = (("max", False, "float.onnx"), ("max", True, "float.onnx"), ("kl-j", True, "float.onnx"),
       ("max", False, "float17.onnx"))


def ptq_rows(d: Path) -> list[tuple[str, float]]:
    """Accuracy of the encoder quantized by tony.quant (one calibration batch: calib.npy, pow2) and
    run whole in the reference: integer LayerNorm, Softmax, GELU table, int8 everywhere."""
    rows = []
    calib = np.load(d / "calib.npy")
    for method, sequential, src in PTQ:
        q = quantize_static(load_model(d / src), calib, method=method, sequential=sequential)
        path = d / f"ptq_{method}_{'seq' if sequential else 'one'}_{src}"
        import onnx

        onnx.save(q, path)
        how = "sequential" if sequential else "--one-pass"
        rows.append((f"PTQ int8, `tony quantize --method {method}` ({how}), {src}", int8_accuracy(path, d)))
    return rows


TQT_PER_LANG = 1000   # training samples per language for threshold training (of the 4000 the float model saw)
TQT = ("max", "kl-j")   # calibration that the thresholds start from


def train_npz(d: Path) -> Path:
    """train.npz for `tony quantize --train-data`: x (embeddings [n, 1, seq_len, d_model]) and y."""
    path = d / "train.npz"
    if not path.is_file():
        from tony.models import text

        model, cfg, *_ = text.load_encoder(d)
        data = text.text_data(cfg, progress=False)
        y = data["y_train"]
        idx = np.sort(np.concatenate([np.flatnonzero(y == c)[:TQT_PER_LANG] for c in np.unique(y)]))
        np.savez(path, x=text.embed(model, data["x_train"][idx])[:, None], y=y[idx].astype(np.int64))
    return path


def lsb_from_ort(path, d: Path, n: int = 200) -> float:
    """max |reference - onnxruntime| on the QDQ graph over the first n test inputs, in output LSB
    (onnxruntime computes LayerNorm, Softmax and GELU in float, the reference with the integer kernels)."""
    from tony import run_reference
    from tony.api import load_ir

    x = np.load(d / "inputs.npy")[:n]
    g = load_ir(path)
    ref = np.asarray(run_reference(g, x)[0]).reshape(len(x), -1)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    got = np.concatenate([sess.run(None, {"embeddings": xi})[0] for xi in x]).reshape(len(x), -1)
    return float(np.abs(ref - got).max() / g.tensors[g.producer(g.outputs[0]).inputs[0]].scale)


def tqt_rows(d: Path, epochs: int) -> list[tuple]:
    """(quantizer, accuracy, seconds, command) of `tony quantize --train-data` for each start."""
    rows = []
    data = train_npz(d)
    for method in TQT:
        out = d / f"tqt_{method}_e{epochs}.onnx"
        args = ["quantize", str(d / "float.onnx"), "--calib", str(d / "calib.npy"), "--method", method,
                "--train-data", str(data), "--epochs", str(epochs), "-q", "-o", str(out)]
        t = time.time()
        subprocess.run([sys.executable, "-m", "tony.cli", *args], check=True)
        dt = time.time() - t
        acc = int8_accuracy(out, d)
        print(f"TQT {method} {epochs} epochs: {acc:.4f} in {dt:.0f} s", flush=True)
        rows.append((f"TQT int8, {method} start, {epochs} epochs", acc, dt, "tony " + " ".join(args), out))
    return rows


def section(d: Path, info: dict, seconds: float | None, tqt_epochs: int = 3) -> list[str]:
    cfg = info["config"]
    x, y = np.load(d / "inputs.npy"), np.load(d / "labels.npy")
    f = info["float_accuracy"]
    rows = [("float (torch)", f), ("float.onnx, opset 13 (onnxruntime)", ort_accuracy(d / "float.onnx", x, y)),
            ("float17.onnx, opset 17 (onnxruntime)", ort_accuracy(d / "float17.onnx", x, y))]
    rows += [(f"integer {k}" if k in ("softmax", "layernorm", "gelu") else k, v)
             for k, v in info["integer_kernels"].items()]
    rows += ptq_rows(d)
    lines = [HEADING, "",
             f"{len(cfg['langs'])} languages ({', '.join(cfg['langs'])}); test split of {len(y)} samples of "
             f"{cfg['seq_len']} characters, words drawn by frequency from the {cfg['n_words']} most frequent words of "
             "each language in the `wordfreq` wheel. Embedding (host-side): character + hashed character bigram "
             f"and trigram ({cfg['ngram_buckets']} buckets each) + position. Encoder: "
             f"{cfg['layers']} layers, d = {cfg['d_model']}, {cfg['heads']} heads, FFN {cfg['ffn']}, mean pool; "
             f"{cfg['epochs']} epochs on {cfg['train_per_lang']} samples per language (CPU, one thread). "
             "Integer rows: the float encoder with Tony's integer kernels (docs/transformer.md) at every "
             "site of that kind, int8 inputs at pow2 scales from one calibration batch of "
             f"{cfg['calib_size']} training samples, Softmax output uint8 at 2^-8, LayerNorm and GELU "
             "output int8; everything else stays float. 'int8 sites, float functions' quantizes the same "
             "inputs and outputs around the float functions (the cost of the int8 grids alone). PTQ rows: "
             "the whole graph quantized by `tony quantize` (int8 weights and activations, pow2 scales, one "
             f"calibration batch of {cfg['calib_size']} training samples, int32 biases) and run in Tony's "
             "reference, which `tony sim` holds the accelerator to bit for bit (docs/transformer.md); the "
             "first is the example's model.onnx.",
             (f"Built by `tony example text-langid -o {d}` in {seconds:.0f} s on 2 cores; " if seconds else
              f"Built by `tony example text-langid -o {d}` (an existing build); ") +
             "generated by `python bench/text_accuracy.py` (part of `make accuracy`; `--reuse` takes an "
             "existing build).", "",
             "| nonlinear functions | accuracy | vs float |", "|---|---|---|"]
    lines += [f"| {name} | {100 * a:.2f} | {100 * (a - f):+.2f} |" for name, a in rows]
    if not tqt_epochs:
        return lines
    tqt = tqt_rows(d, tqt_epochs)
    n_train = len(np.load(d / "train.npz")["y"])
    lsb = {"PTQ max (model.onnx)": lsb_from_ort(d / "model.onnx", d)}
    lsb.update({name.split(",")[1].strip(): lsb_from_ort(out, d) for name, *_, out in tqt})
    lines += ["", "TQT rows: `tony quantize --train-data` (the schedule of the table at the top of this page) "
              "on the embeddings of "
              f"{n_train} training samples ({TQT_PER_LANG} per language, 15% of them held out for validation; "
              "never the test split), thresholds warm-started from one-batch calibration (max or KL-J for "
              "activations, least-squared-error power of 2 for weights) and trained with the weights; the "
              "Softmax output stays uint8 at 2^-8; the LayerNorm and GELU functions train in float and run "
              "as the integer kernels in the reference. Time: the whole command (calibration, training, "
              "export) on one CPU thread, while other jobs shared the machine. The reference against "
              "onnxruntime on the same QDQ graph (float LayerNorm, Softmax and GELU), first 200 test "
              "samples, in output LSB: " + ", ".join(f"{k} {v:.0f}" for k, v in lsb.items()) + ".", "",
              "| quantizer | accuracy | vs float | time (s) | command |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {100 * a:.2f} | {100 * (a - f):+.2f} | {dt:.0f} | `{cmd}` |" for name, a, dt, cmd, _ in tqt]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/accuracy.md")
    ap.add_argument("--build", default="build/accuracy/text-langid")
    ap.add_argument("--reuse", action="store_true", help="use the build folder's accuracy.json (no training)")
    ap.add_argument("--tqt-epochs", type=int, default=3, help="threshold-training epochs (0: no TQT rows)")
    a = ap.parse_args(argv)
    d = Path(a.build)
    if a.reuse and (d / "accuracy.json").is_file():
        info, seconds = json.loads((d / "accuracy.json").read_text()), None
    else:
        t = time.time()
        info = build_example("text-langid", d)
        seconds = time.time() - t
    lines = section(d, info, seconds, a.tqt_epochs)
    out = Path(a.out)
    old = out.read_text() if out.is_file() else ""
    head = old.split(HEADING)[0].rstrip("\n")
    out.write_text((head + "\n\n" if head else "") + "\n".join(lines) + "\n")
    print(json.dumps(info["integer_kernels"]), f"float {info['float_accuracy']:.4f}",
          f"{seconds:.0f} s" if seconds else "reused")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
