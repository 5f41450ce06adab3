"""What a nonlinear unit adds to the accelerator: tony_accel with and without it, synthesized.

    .venv/bin/python bench/unit_accel.py softmax            # 4x4, ECP5-85k, rows up to 32 (a few minutes)
    .venv/bin/python bench/unit_accel.py layernorm          # 4x4, ECP5-85k, rows up to 64
    .venv/bin/python bench/unit_accel.py softmax --array 8x8 --n 64

Both builds are rendered (tony.rtl.render_to) with the same array and buffers and synthesized with
Yosys from PyPI (tony.synth.synthesize_module, the flow of `tony synth`, no place and route); the
difference is the unit and what serves it:
- softmax (SMX_N): tony_softmax, its serializer and packer (tony_row_io) and the controller's and
  the write port's few gates for SOFTMAX (docs/isa.md, 'Softmax');
- layernorm (LN_N): tony_layernorm, its tony_row_io, the DMA engine's gamma/beta word and the
  controller's and the write port's few gates for NORM (docs/isa.md, 'LayerNorm').
An accelerator compiled for a model without such an op on the device is rendered without the unit
(SMX_N = 0, LN_N = 0).
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

KEYS = ("lut", "logic_luts", "ff", "carry", "dsp", "bram", "lutram")
UNITS = {"softmax": ("SMX_N", 32), "layernorm": ("LN_N", 64)}
"""unit -> (the tony_accel parameter that sizes it, its default longest row here)"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unit", choices=sorted(UNITS))
    ap.add_argument("--target", default="ecp5-85k")
    ap.add_argument("--array", default="4x4", help="ROWSxCOLS")
    ap.add_argument("--n", type=int, default=None, help="the unit's longest row (default: softmax 32, layernorm 64)")
    ap.add_argument("--work", type=Path, default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)

    from tony.rtl import render_to
    from tony.synth import synthesize_module

    param, default_n = UNITS[a.unit]
    size = a.n if a.n is not None else default_n
    rows, cols = (int(v) for v in a.array.lower().split("x"))
    root = a.work or Path(tempfile.mkdtemp(prefix=f"tony-{a.unit}-accel-"))
    totals, modules = {}, {}
    for n in (0, size):
        files = render_to(root / f"{a.unit}{n}" / "rtl", "tony_accel", ROWS=rows, COLS=cols, **{param: n})
        rep = synthesize_module(files, "tony_accel", root / f"{a.unit}{n}" / a.target, target=a.target)
        totals[n], modules[n] = rep["total"], rep["modules"]
        for w in rep["warnings"]:
            print(f"    warning ({param}={n}): {w}")
    print(f"tony_accel {a.array} on {a.target} (Yosys, no place and route); 'logic' counts the LUT4s in carry cells")
    print(f"{'build':24} " + " ".join(f"{k:>10}" for k in KEYS))
    for n, t in totals.items():
        print(f"{f'{param} = {n}':24} " + " ".join(f"{t.get(k, 0):>10,}" for k in KEYS))
    d = {k: totals[size].get(k, 0) - totals[0].get(k, 0) for k in KEYS}
    print(f"{'added by the unit':24} " + " ".join(f"{d[k]:>+10,}" for k in KEYS))
    print("per module (each module's own cells, without the modules it instantiates), where they differ:")
    for name in sorted(set(modules[0]) | set(modules[size])):
        m0, m1 = modules[0].get(name, {}).get("local", {}), modules[size].get(name, {}).get("local", {})
        if any(m0.get(k, 0) != m1.get(k, 0) for k in KEYS):
            print(f"  {name:22} " + " ".join(f"{m0.get(k, 0):>8,} -> {m1.get(k, 0):<8,}" for k in ("lut", "ff", "dsp")))
    print(f"(reports under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
