"""Reference throughput as a ratio to onnxruntime on the same QDQ model (same process, same inputs).

    python bench/reference.py [--batch 32] [--repeat 20]

Prints, per model: samples/s of tony.ref.execute and of onnxruntime, the ratio, and whether the
outputs are equal (they must be: the reference is exact and ORT matches it on pow2 models).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def _best(fn, repeat: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def bench_model(path: Path, x: np.ndarray, repeat: int) -> dict:
    import onnxruntime as ort

    from tony.api import load_ir, normalize_inputs
    from tony.ref import execute

    g = load_ir(path)
    feeds, _ = normalize_inputs(g, x)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    xs = [xi for xi in x]  # the models have a fixed batch of 1: ORT runs sample by sample

    def run_ort():
        return [sess.run(None, {name: xi})[0] for xi in xs]

    def run_ref():
        return execute(g, feeds)

    t_ref, t_ort = _best(run_ref, repeat), _best(run_ort, repeat)
    ref = run_ref()[g.outputs[0]].reshape(len(x), -1)
    got = np.stack(run_ort()).reshape(len(x), -1)
    return {"ref_sps": len(x) / t_ref, "ort_sps": len(x) / t_ort, "equal": bool(np.array_equal(ref, got))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=20)
    a = ap.parse_args()
    from tony.models import EXAMPLES, build_example

    print(f"{'model':<18} {'tony.ref/s':>12} {'onnxruntime/s':>14} {'ratio ref/ORT':>14}  outputs")
    with tempfile.TemporaryDirectory() as tmp:
        for name in EXAMPLES:
            d = Path(tmp) / name
            build_example(name, d)
            x = np.load(d / "inputs.npy")[: a.batch]
            r = bench_model(d / "model.onnx", x, a.repeat)
            print(f"{name:<18} {r['ref_sps']:>12,.0f} {r['ort_sps']:>14,.0f} {r['ref_sps'] / r['ort_sps']:>13.2f}x  "
                  f"{'equal' if r['equal'] else 'DIFFERENT'}")


if __name__ == "__main__":
    main()
