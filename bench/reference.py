"""Reference throughput as a ratio to onnxruntime on the same QDQ model (same process, same inputs).

    python bench/reference.py [--batch 32] [--repeat 20] [--models resnet8,dscnn,...]

The headline is ResNet-8 (MLPerf Tiny image classification) at batch 32. Per model it prints the
samples/s of tony.ref.execute (one call on the whole stack) and of onnxruntime, the time ratio
ref/ORT (the target is <= 3x), and whether the outputs are equal (they must be, except where the
average pool's reciprocal multiply rounds differently from ONNX's division: DS-CNN and the
MobileNet; tests/test_tiny_models.py predicts those elements exactly).

onnxruntime runs the fair way: the models have a fixed batch of 1, so the bench rewrites the input
and output batch dimension to N and runs one session call on the whole stack ("batched"); a model
whose graph does not take that rewrite runs sample by sample ("per sample"). Default session
options (all graph optimizations: ORT fuses Q/DQ into its integer kernels).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

HEADLINE = "resnet8"
DEFAULT_MODELS = ["resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder", "digits-mlp", "digits-cnn",
                  "digits-mobilenet"]


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _ort_runner(path: Path, x: np.ndarray):
    """(run() -> outputs stacked [N, ...], mode) with onnxruntime on a batch-N copy of the model
    when possible, else sample by sample."""
    import onnx
    import onnxruntime as ort

    n = len(x)
    m = onnx.load(path)
    batched = m.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    if batched:
        for v in list(m.graph.input[:1]) + list(m.graph.output):
            v.type.tensor_type.shape.dim[0].dim_value = n
        del m.graph.value_info[:]
        try:
            sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
            name = sess.get_inputs()[0].name
            xb = x.reshape((n,) + x.shape[2:])
            y = sess.run(None, {name: xb})[0]
            batched = y.shape[0] == n
        except Exception:  # a graph that hard-codes the batch (Reshape to 1 x ...)
            batched = False
    if batched:
        return (lambda: sess.run(None, {name: xb})[0]), "batched"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return (lambda: np.stack([sess.run(None, {name: xi})[0] for xi in x])), "per sample"


def bench_model(path: Path, x: np.ndarray, repeat: int) -> dict:
    from tony.api import load_ir, normalize_inputs
    from tony.ref import execute

    g = load_ir(path)
    feeds, _ = normalize_inputs(g, x)
    run_ort, mode = _ort_runner(path, x)

    def run_ref():
        return execute(g, feeds)

    t_ref, t_ort = _best(run_ref, repeat), _best(run_ort, repeat)
    ref = run_ref()[g.outputs[0]].reshape(len(x), -1)
    got = run_ort().reshape(len(x), -1)
    return {"ref_sps": len(x) / t_ref, "ort_sps": len(x) / t_ort, "ratio": t_ref / t_ort, "ort_mode": mode,
            "differ": int((ref != got).sum()), "size": ref.size}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated example names")
    a = ap.parse_args()
    from tony.models import build_example

    print(f"batch {a.batch}, {os.cpu_count()} CPUs; time ratio = reference time / onnxruntime time (target <= 3x)")
    print(f"{'model':<18} {'tony.ref/s':>11} {'ORT/s':>9} {'ratio':>8}  {'ORT run':<11} outputs")
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            d = Path(tmp) / name
            kw = {"samples": a.batch} if name in ("resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder") else {}
            build_example(name, d, **kw)
            x = np.load(d / "inputs.npy")[: a.batch]
            r = bench_model(d / "model.onnx", x, a.repeat)
            out = "equal" if r["differ"] == 0 else f"{r['differ']} of {r['size']} differ"
            print(f"{name + (' *' if name == HEADLINE else ''):<18} {r['ref_sps']:>11,.0f} {r['ort_sps']:>9,.0f} "
                  f"{r['ratio']:>7.1f}x  {r['ort_mode']:<11} {out}", flush=True)
    print("* headline")


if __name__ == "__main__":
    main()
