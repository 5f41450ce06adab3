"""Fingerprints of the accelerator compiler's output, to hold a refactoring to identical output.

For every bundled workload at several array sizes and activation-buffer limits (spilling, row
bands), compile the program and print one hash per run of: the encoded instruction words, the
external-memory image, the buffer sizes, the layer table, the input/output regions and the
cycle model's issue cycles and total. Compare two runs with diff (the output does not depend
on PYTHONHASHSEED: where spilling must choose between tensors needed equally late, it takes the
first by name).

    PYTHONHASHSEED=0 .venv/bin/python bench/accel_fingerprint.py [--cache DIR] > before.txt
"""
from __future__ import annotations

import argparse
import hashlib
import tempfile
from dataclasses import asdict
from pathlib import Path

WORKLOADS = ["digits-mlp", "digits-cnn", "digits-mobilenet", "resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder"]
ARRAYS = [(8, 8, {}), (4, 4, {}), (5, 3, {}), (16, 16, {}), (8, 8, {"mem_bits": 32})]
EXTRA = [("digits-cnn", (4, 4, {"abuf_words": 128})), ("digits-cnn", (8, 8, {"abuf_words": 64})),
         ("resnet8", (8, 8, {"abuf_words": 1024})), ("resnet8", (8, 8, {"abuf_words": 2048})),
         ("resnet8", (8, 8, {"abuf_words": 4096})), ("resnet8", (8, 8, {"abuf_words": 6144})),
         ("dscnn", (4, 4, {"abuf_words": 2048})), ("digits-mobilenet", (4, 4, {"abuf_words": 256}))]


def fingerprint(g, cfg, batch) -> str:
    from tony.accel import model as accel_model
    from tony.accel.compiler import compile_program
    from tony.errors import UnsupportedError

    try:
        prog = compile_program(g, cfg, batch=batch)
    except UnsupportedError as e:
        return "refused: " + hashlib.sha256(str(e).encode()).hexdigest()[:16]
    t = accel_model.cycles(prog)
    h = hashlib.sha256()
    for part in (prog.words, prog.image, asdict(prog.cfg), prog.prog_addr, prog.batch, t.issue, t.total,
                 [(L.name, L.op, L.first, L.last, L.macs, L.bound, L.bound_why, sorted(L.info.items()))
                  for L in prog.layers],
                 {k: (v["ext"], v["beats"], vars(v["stored"])) for k, v in prog.inputs.items()},
                 {k: (v["ext"], v["beats"], v["signed"], v["shape"], vars(v["stored"]))
                  for k, v in prog.outputs.items()}):
        h.update(repr(part).encode())
    return f"{h.hexdigest()[:16]} {t.total} cycles"


def concat_graphs() -> dict:
    """Concat cases: tests/test_ort_quantized.py's CNN (zero-copy at a shared scale), the same with a
    rescaled input (an EWISE copy), and a graph input concatenated with a tensor used twice."""
    import sys
    from dataclasses import replace

    import numpy as np

    from tony.api import load_ir
    from tony.quant.qdq import quantize_static

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_ort_quantized import concat_cnn, concat_input_cnn

    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    g = load_ir(quantize_static(concat_cnn(), x), requant="pow2")
    ops = list(g.ops)
    k = next(i for i, op in enumerate(ops) if op.kind == "concat")
    rq0, rq1 = ops[k].requants
    ops[k] = replace(ops[k], requants=(replace(rq0, shift=1), rq1))
    m, x2 = concat_input_cnn()
    return {"concat-cnn": g, "concat-cnn-rescaled": replace(g, ops=tuple(ops)),
            "concat-input": load_ir(quantize_static(m, x2), requant="pow2")}


def main(argv=None) -> int:
    from tony.accel.program import AccelConfig
    from tony.api import load_ir
    from tony.models import build_example

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cache", type=Path, default=None, help="folder for the built workloads (kept)")
    ap.add_argument("--workloads", nargs="*", default=WORKLOADS)
    a = ap.parse_args(argv)
    root = a.cache or Path(tempfile.mkdtemp())
    runs = [(w, arr) for w in a.workloads for arr in ARRAYS] + [x for x in EXTRA if x[0] in a.workloads]
    graphs = {}
    for name, (r, c, kw) in runs:
        if name not in graphs:
            d = root / name
            if not (d / "model.onnx").exists():
                build_example(name, d)
            graphs[name] = load_ir(d / "model.onnx", requant="pow2")
        for batch in (1, 2):
            cfg = AccelConfig(r, c, **kw)
            print(f"{name} {r}x{c} {kw} batch={batch}: {fingerprint(graphs[name], cfg, batch)}", flush=True)
    for name, g in concat_graphs().items():
        for r, c, kw in ((8, 8, {}), (4, 4, {}), (2, 4, {}), (2, 2, {}), (4, 4, {"abuf_words": 128}),
                         (4, 4, {"abuf_words": 256}), (2, 2, {"abuf_words": 192}), (4, 4, {"abuf_words": 384}),
                         (4, 4, {"abuf_words": 448}), (4, 4, {"abuf_words": 512}), (4, 4, {"abuf_words": 96})):
            for batch in (1, 2):
                cfg = AccelConfig(r, c, **kw)
                print(f"{name} {r}x{c} {kw} batch={batch}: {fingerprint(g, cfg, batch)}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
