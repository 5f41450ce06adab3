"""What the LayerNorm unit adds to the accelerator: tony_accel with and without it (LN_N), synthesized.

Both builds are rendered (tony.rtl.render_to) with the same array and buffers and synthesized with
Yosys from PyPI (tony.synth.synthesize_module, the flow of `tony synth`, no place and route); the
difference is the unit (tony_layernorm), its serializer and packer (tony_row_io), the DMA engine's
gamma/beta word and the controller's and the write port's few gates for NORM. An accelerator
compiled for a model without a device LayerNorm is rendered with LN_N = 0 (docs/isa.md, 'LayerNorm').

    .venv/bin/python bench/layernorm_accel.py                # 4x4, ECP5-85k, rows up to 64 (a few minutes)
    .venv/bin/python bench/layernorm_accel.py --array 8x8 --ln-n 256
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
    ap.add_argument("--ln-n", type=int, default=64, help="the LayerNorm unit's longest row (LN_N)")
    ap.add_argument("--work", type=Path, default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)

    from tony.rtl import render_to
    from tony.synth import synthesize_module

    rows, cols = (int(v) for v in a.array.lower().split("x"))
    root = a.work or Path(tempfile.mkdtemp(prefix="tony-layernorm-accel-"))
    totals, modules = {}, {}
    for n in (0, a.ln_n):
        files = render_to(root / f"ln{n}" / "rtl", "tony_accel", ROWS=rows, COLS=cols, LN_N=n)
        rep = synthesize_module(files, "tony_accel", root / f"ln{n}" / a.target, target=a.target)
        totals[n], modules[n] = rep["total"], rep["modules"]
        for w in rep["warnings"]:
            print(f"    warning (LN_N={n}): {w}")
    print(f"tony_accel {a.array} on {a.target} (Yosys, no place and route); 'logic' counts the LUT4s in carry cells")
    print(f"{'build':24} " + " ".join(f"{k:>10}" for k in KEYS))
    for n, t in totals.items():
        print(f"{'LN_N = ' + str(n):24} " + " ".join(f"{t.get(k, 0):>10,}" for k in KEYS))
    d = {k: totals[a.ln_n].get(k, 0) - totals[0].get(k, 0) for k in KEYS}
    print(f"{'added by the unit':24} " + " ".join(f"{d[k]:>+10,}" for k in KEYS))
    print("per module (each module's own cells, without the modules it instantiates), where they differ:")
    for name in sorted(set(modules[0]) | set(modules[a.ln_n])):
        m0, m1 = modules[0].get(name, {}).get("local", {}), modules[a.ln_n].get(name, {}).get("local", {})
        if any(m0.get(k, 0) != m1.get(k, 0) for k in KEYS):
            print(f"  {name:22} " + " ".join(f"{m0.get(k, 0):>8,} -> {m1.get(k, 0):<8,}" for k in ("lut", "ff", "dsp")))
    print(f"(reports under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
