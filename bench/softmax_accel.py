"""What the Softmax unit adds to the accelerator: tony_accel with and without it (SMX_N), synthesized.

Both builds are rendered (tony.rtl.render_to) with the same array and buffers and synthesized with
Yosys from PyPI (tony.synth.synthesize_module, the flow of `tony synth`, no place and route); the
difference is the unit (tony_softmax), its serializer and packer (tony_row_io) and the controller's
and the write port's few gates for SOFTMAX. An accelerator compiled for a model without a device
Softmax is rendered with SMX_N = 0 (docs/isa.md, 'Softmax').

    .venv/bin/python bench/softmax_accel.py                  # 4x4, ECP5-85k, rows up to 32 (a few minutes)
    .venv/bin/python bench/softmax_accel.py --array 8x8 --smx-n 64
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

KEYS = ("lut", "logic_luts", "ff", "carry", "dsp", "bram", "lutram")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ecp5-85k")
    ap.add_argument("--array", default="4x4", help="ROWSxCOLS")
    ap.add_argument("--smx-n", type=int, default=32, help="the Softmax unit's longest row (SMX_N)")
    ap.add_argument("--work", type=Path, default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)

    from tony.rtl import render_to
    from tony.synth import synthesize_module

    rows, cols = (int(v) for v in a.array.lower().split("x"))
    root = a.work or Path(tempfile.mkdtemp(prefix="tony-softmax-accel-"))
    totals, modules = {}, {}
    for smx in (0, a.smx_n):
        files = render_to(root / f"smx{smx}" / "rtl", "tony_accel", ROWS=rows, COLS=cols, SMX_N=smx)
        rep = synthesize_module(files, "tony_accel", root / f"smx{smx}" / a.target, target=a.target)
        totals[smx], modules[smx] = rep["total"], rep["modules"]
        for w in rep["warnings"]:
            print(f"    warning (SMX_N={smx}): {w}")
    print(f"tony_accel {a.array} on {a.target} (Yosys, no place and route); 'logic' counts the LUT4s in carry cells")
    print(f"{'build':24} " + " ".join(f"{k:>10}" for k in KEYS))
    for smx, t in totals.items():
        print(f"{'SMX_N = ' + str(smx):24} " + " ".join(f"{t.get(k, 0):>10,}" for k in KEYS))
    d = {k: totals[a.smx_n].get(k, 0) - totals[0].get(k, 0) for k in KEYS}
    print(f"{'added by the unit':24} " + " ".join(f"{d[k]:>+10,}" for k in KEYS))
    print("per module (each module's own cells, without the modules it instantiates), where they differ:")
    for name in sorted(set(modules[0]) | set(modules[a.smx_n])):
        m0, m1 = modules[0].get(name, {}).get("local", {}), modules[a.smx_n].get(name, {}).get("local", {})
        if any(m0.get(k, 0) != m1.get(k, 0) for k in KEYS):
            print(f"  {name:22} " + " ".join(f"{m0.get(k, 0):>8,} -> {m1.get(k, 0):<8,}" for k in ("lut", "ff", "dsp")))
    print(f"(reports under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
