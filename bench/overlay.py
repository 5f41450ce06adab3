"""Every bundled workload on every overlay preset (tony.hw.PRESETS), against the same array with
its buffers sized to the model (`tony compile --array RxC`, the baseline).

For each preset and workload: the program's length against the instruction memory (IMEM_WORDS),
the cycles of one batch-1 inference from the cycle model (which the RTL matches exactly,
tests/test_overlay.py), and their ratio to the baseline's cycles (the price of fixed buffers:
spills, row bands, weight loads without prefetch, bias reloads); or the one-line refusal.

    .venv/bin/python bench/overlay.py                 # every preset
    .venv/bin/python bench/overlay.py --preset ecp5-85k
"""
from __future__ import annotations

import argparse
import tempfile
from dataclasses import replace
from pathlib import Path

WORKLOADS = ["digits-mlp", "digits-cnn", "digits-mobilenet", "resnet8", "dscnn", "mobilenet-v1-025",
             "fc-autoencoder"]


def main() -> None:
    from tony.accel import model as am
    from tony.accel.compiler import compile_program
    from tony.api import load_ir
    from tony.errors import TonyError
    from tony.hw import PARTS, PRESETS, estimate
    from tony.models import build_example

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(PRESETS), action="append")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        graphs = {}
        for name in WORKLOADS:
            build_example(name, Path(tmp) / name)
            graphs[name] = load_ir(Path(tmp) / name / "model.onnx", requant="pow2")
        for key in a.preset or list(PRESETS):
            ov = PRESETS[key]
            c = ov.cfg
            est = estimate(c, PARTS[ov.part])
            print(f"\n{key}: {c.rows}x{c.cols}, ABUF {c.abuf_words}, WBUF {c.wbuf_words}, BBUF {c.bbuf_words}, "
                  f"IMEM {c.imem_words}, {c.mem_bits}-bit memory; estimate {est['bram']['used']}/"
                  f"{est['bram']['available']} {est['bram']['cell']}, {est['dsp']['used']}/{est['dsp']['available']} "
                  f"{est['dsp']['cell']}")
            print(f"  {'workload':18} {'instr':>6} {'/IMEM':>6} {'cycles':>10} {'baseline':>10} {'ratio':>6}")
            base_cfg = replace(c, abuf_words=0, wbuf_words=0, bbuf_words=0, imem_words=0)
            for name, g in graphs.items():
                base = am.cycles(compile_program(g, base_cfg)).total
                try:
                    prog = compile_program(g, c)
                except TonyError as e:
                    print(f"  {name:18} refused: {e}")
                    continue
                cyc = am.cycles(prog).total
                print(f"  {name:18} {len(prog.words):>6} {len(prog.words) / c.imem_words:>6.2f} {cyc:>10,} "
                      f"{base:>10,} {cyc / base:>6.2f}")


if __name__ == "__main__":
    main()
