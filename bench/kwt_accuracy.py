"""Accuracy of kws-transformer (tony.models.kwt) on the keyword-spotting test split: float
(onnxruntime) against PTQ int8 (`tony quantize --method max|kl-j --one-pass`) and TQT int8
(`tony quantize --train-data --epochs 3` from the max and the KL-J starts), the quantized models
run in Tony's reference (whose integers the accelerator computes bit for bit); optionally (--rtl)
model.onnx through `tony compile --array 8x8 --samples 2` and `tony sim` (Verilator). Writes the
section '## Keyword spotting: kws-transformer' of docs/accuracy.md (replacing it, or placing it
before the text-langid section, which bench/text_accuracy.py writes to the end of the file).

    python bench/kwt_accuracy.py [--out docs/accuracy.md] [--build build/accuracy/kws-transformer]
                                 [--reuse] [--tqt-epochs 3] [--rtl]

--reuse takes the build folder as it is when it holds float.onnx, model.onnx, calib.npy, train.npz
and the test split (the example is seeded: a rebuild writes the same files).
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

import tony
from tony.api import load_ir
from tony.models import build_example

HEADING = "## Keyword spotting: kws-transformer"
BEFORE = "## Text: language identification"
FILES = ("float.onnx", "model.onnx", "calib.npy", "train.npz", "inputs.npy", "labels.npy")


def _ort(path, x) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: xi})[0] for xi in x]).reshape(len(x), -1)


def ref_accuracy(path, x, y) -> float:
    out = np.asarray(tony.run_reference(load_ir(path), x)[0]).reshape(len(x), -1)
    return float((out.argmax(1) == y).mean())


def lsb_from_ort(path, x) -> float:
    """max |reference - onnxruntime| on the same QDQ graph, in output LSB (onnxruntime computes
    LayerNorm, Softmax and GELU in float, the reference with the integer kernels)."""
    g = load_ir(path)
    ref = np.asarray(tony.run_reference(g, x)[0]).reshape(len(x), -1)
    return float(np.abs(ref - _ort(path, x)).max() / g.tensors[g.producer(g.outputs[0]).inputs[0]].scale)


def tony_cmd(*args) -> float:
    """Run `tony ARGS` (seconds)."""
    t = time.time()
    subprocess.run([sys.executable, "-m", "tony.cli", *map(str, args)], check=True)
    return time.time() - t


def quant_rows(d: Path, x, y, tqt_epochs: int) -> list[tuple]:
    """(quantizer, accuracy, seconds, command, path) for PTQ max / KL-J and TQT from each start."""
    rows = []
    for method in ("max", "kl-j"):
        out = d / f"ptq-{method}.onnx"
        args = ["quantize", d / "float.onnx", "--calib", d / "calib.npy", "--method", method, "--one-pass", "-q",
                "-o", out]
        dt = tony_cmd(*args)
        rows.append((f"PTQ int8, {method}, one pass", ref_accuracy(out, x, y), dt, args, out))
    for method in ("max", "kl-j") if tqt_epochs else ():
        out = d / f"tqt-{method}-e{tqt_epochs}.onnx"
        args = ["quantize", d / "float.onnx", "--calib", d / "calib.npy", "--method", method, "--train-data",
                d / "train.npz", "--epochs", tqt_epochs, "-q", "-o", out]
        dt = tony_cmd(*args)
        rows.append((f"TQT int8, {method} start, {tqt_epochs} epochs", ref_accuracy(out, x, y), dt, args, out))
        print(f"{rows[-1][0]}: {rows[-1][1]:.4f} in {dt:.0f} s", flush=True)
    return rows


def rtl(d: Path) -> dict:
    """model.onnx through `tony compile --array 8x8 --samples 2` and `tony sim`."""
    b = d / "rtl-8x8"
    tony_cmd("compile", d / "model.onnx", "-o", b, "--array", "8x8", "--samples", "2")
    tony_cmd("sim", b)
    rep = json.loads((b / "sim_report.json").read_text())
    man = json.loads((b / "manifest.json").read_text())
    return {"bit_exact": rep["bit_exact"], "cycles": rep["cycles_per_run"][0], "predicted": man["predicted_cycles"],
            "cycles_match": rep["cycles_match"], "mac_share": man["placement"]["device_mac_share"],
            "device_macs": man["placement"]["device_macs"],
            "segments": sum(1 for s in man["segments"] if s.get("build")),
            "utilization": rep["utilization"], "build": str(b)}


def section(d: Path, seconds: float | None, tqt_epochs: int, hw: dict | None) -> list[str]:
    x, y = np.load(d / "inputs.npy"), np.load(d / "labels.npy")
    f = float((_ort(d / "float.onnx", x).argmax(1) == y).mean())
    n_train = len(np.load(d / "train.npz")["y"])
    rows = quant_rows(d, x, y, tqt_epochs)
    model_acc = ref_accuracy(d / "model.onnx", x, y)
    lsb = lsb_from_ort(d / "model.onnx", x[:200])
    cmd = f"tony example kws-transformer -o {d}"
    lines = [HEADING, "",
             "`kws-transformer` (tony.models.kwt): a Keyword Transformer in the KWT-1 style (arXiv 2104.00769) on the "
             "keyword-spotting set above: the 49 MFCC frames are the tokens, each frame's 10 coefficients "
             "projected to d = 64 by a MatMul in the graph (it runs on the array as a 1x1 convolution), learned "
             "position embeddings, 2 pre-LayerNorm layers with 1 head and an MLP of 128 (GELU), mean pooling (no "
             "class token), Dense 12. Trained 16 epochs on the CPU (one thread, SpecAugment-style masks, the best "
             f"validation epoch kept); {len(y)} test clips of unseen voices. Float: onnxruntime on float.onnx. "
             "Quantized: the reference (integer LayerNorm, Softmax and GELU table, int8 everywhere, pow2 scales, "
             "one calibration batch of 256 training clips). model.onnx is the PTQ max one-pass model "
             f"({100 * model_acc:.2f}% in the reference; against onnxruntime on the same QDQ graph, first 200 "
             f"test clips: {lsb:.0f} output LSB at most). TQT: `tony quantize --train-data` on the {n_train} "
             "clips of the training split, the validation voices (x_val) for the epoch choice. Time: the whole "
             "command on one CPU thread while other jobs shared the 2 cores.",
             (f"Built by `{cmd}` in {seconds:.0f} s; " if seconds else f"Built by `{cmd}` (an existing build); ") +
             "generated by `python bench/kwt_accuracy.py` (`--reuse` takes an existing build, `--rtl` adds the "
             "Verilator check).", "",
             "| quantizer | accuracy | vs float | time (s) | command |", "|---|---|---|---|---|",
             f"| float | {100 * f:.2f} | +0.00 | {f'{seconds:.0f}' if seconds else 'reused'} | `{cmd}` |"]
    lines += [f"| {name} | {100 * a:.2f} | {100 * (a - f):+.2f} | {dt:.0f} | `tony {' '.join(map(str, args))}` |"
              for name, a, dt, args, _ in rows]
    if hw:
        lines += ["", f"On the accelerator (`tony compile {d}/model.onnx -o {hw['build']} --array 8x8 --samples 2`, "
                  f"`tony sim {hw['build']}`, Verilator): {'bit-exact' if hw['bit_exact'] else 'NOT bit-exact'}, "
                  f"{hw['cycles']:,} cycles per inference "
                  f"({'equal to' if hw['cycles_match'] else 'NOT equal to'} the predicted {hw['predicted']:,}); "
                  f"{hw['segments']} device segments; {100 * hw['mac_share']:.1f}% of the MACs per sample "
                  f"({hw['device_macs']:,}) on the array"
                  f"{'' if hw['mac_share'] >= 1 else ', the rest on the host (`tony compile` names each host op)'}; "
                  f"MAC utilization of the 64 PEs over the whole run, DMA included: "
                  f"{100 * hw['utilization']:.1f}%."]
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/accuracy.md")
    ap.add_argument("--build", default="build/accuracy/kws-transformer")
    ap.add_argument("--reuse", action="store_true", help="use the build folder's files (no training)")
    ap.add_argument("--tqt-epochs", type=int, default=3, help="threshold-training epochs (0: no TQT rows)")
    ap.add_argument("--rtl", action="store_true", help="compile model.onnx for 8x8 and simulate it on Verilator")
    a = ap.parse_args(argv)
    d = Path(a.build)
    seconds = None
    if not (a.reuse and all((d / f).is_file() for f in FILES)):
        t = time.time()
        build_example("kws-transformer", d)
        seconds = time.time() - t
    hw = rtl(d) if a.rtl else None
    lines = section(d, seconds, a.tqt_epochs, hw)
    out = Path(a.out)
    old = out.read_text() if out.is_file() else ""
    if HEADING in old:
        head, rest = old.split(HEADING, 1)
        tail = rest[rest.index("\n## "):] if "\n## " in rest else ""
        text = head + "\n".join(lines) + "\n" + tail
    elif BEFORE in old:
        head, rest = old.split(BEFORE, 1)
        text = head + "\n".join(lines) + "\n\n" + BEFORE + rest
    else:
        text = old.rstrip("\n") + "\n\n" + "\n".join(lines) + "\n"
    out.write_text(text)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
