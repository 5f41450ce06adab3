"""Resources, Fmax and cycles per row of the Softmax unit (tony_softmax) alone.

Each configuration is rendered (tony.rtl.render_to) and synthesized with Yosys from PyPI
(tony.synth.synthesize_module, the flow of `tony synth`); with --pnr it is also placed and routed
out of context on the target (nextpnr) for its Fmax. Cycles per row are those of a long block of
back-to-back rows of n (tony.rtl.softmax.row_period: max(n, DIV_CYCLES + 1)), and "latency" a row's
first element to its last result with the unit otherwise empty (row_latency); the unit bench
(testbench/test_softmax.py) holds the RTL to both exactly.

    .venv/bin/python bench/softmax.py                    # ECP5-85k, synthesis only (~1 min)
    .venv/bin/python bench/softmax.py --pnr              # and Fmax (a few minutes)
    .venv/bin/python bench/softmax.py --target xc7
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CONFIGS = {
    "int8 in, uint8 out, rows <= 64 (the encoder's attention)":
        {"MAX_N": 64, "IN_BITS": 8, "OUT_BITS": 8, "FRAC_BITS": 6, "TABLE_BITS": 15},
    "int8 in, uint8 out, rows <= 1024":
        {"MAX_N": 1024, "IN_BITS": 8, "OUT_BITS": 8, "FRAC_BITS": 6, "TABLE_BITS": 15},
    "int32 scores in, uint16 out, rows <= 256, F 8, P 20":
        {"MAX_N": 256, "IN_BITS": 32, "OUT_BITS": 16, "FRAC_BITS": 8, "TABLE_BITS": 20},
}
ROW_LENGTHS = (16, 64)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--target", default="ecp5-85k")
    ap.add_argument("--pnr", action="store_true", help="also place and route for Fmax")
    ap.add_argument("--work", type=Path, default=None, help="keep the synthesis folders here")
    a = ap.parse_args(argv)

    from tony.rtl import render_to
    from tony.rtl.softmax import row_latency, row_period
    from tony.synth import synthesize_module

    root = a.work or Path(tempfile.mkdtemp(prefix="tony-softmax-"))
    head = f"{'configuration':56} {'LUT4':>5} {'logic':>6} {'FF':>5} {'DSP':>4} {'BRAM':>5} {'LUTRAM':>7} {'Fmax':>6}  " + \
        "  ".join(f"cycles/row (latency) n={n}" for n in ROW_LENGTHS)
    print(f"tony_softmax on {a.target} (Yosys{', nextpnr' if a.pnr else ''}); 'logic' counts the LUT4s in carry cells")
    print(head)
    for k, (name, params) in enumerate(CONFIGS.items()):
        files = render_to(root / f"c{k}" / "rtl", "tony_softmax", **params)
        rep = synthesize_module(files, "tony_softmax", root / f"c{k}" / a.target, target=a.target, pnr=a.pnr)
        t = rep["total"]
        fmax = f"{rep['fmax_mhz']:.1f}" if rep.get("fmax_mhz") else "-"
        cyc = "  ".join(f"{row_period(n):>12,} ({row_latency(n):>4})" if n <= params["MAX_N"] else f"{'-':>19}"
                        for n in ROW_LENGTHS)
        print(f"{name:56} {t['lut']:>5} {t['logic_luts']:>6} {t['ff']:>5} {t['dsp']:>4} {t['bram']:>5} "
              f"{t['lutram']:>7} {fmax:>6}  {cyc}")
        for w in rep["warnings"]:
            print(f"    warning: {w}")
    print(f"(reports under {root})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
