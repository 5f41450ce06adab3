"""The LayerNorm unit (tony_layernorm) alone: FPGA resources from Yosys and cycles per row.

For each configuration the unit is rendered and synthesized by itself with the YoWASP Yosys from
PyPI (tony.synth.synthesize_module, the same script and resource accounting as `tony synth`);
printed: LUT4s (with the two inside every CCU2C carry cell), FFs, MULT18X18D, DP16KD, and the unit's
cycles per row (tony.rtl.layernorm_unit, which the unit bench holds the RTL to) for typical row
lengths, against the floor of one element in and one out per cycle (2 n). With --pnr the unit is
placed and routed on the ECP5-85k (nextpnr, out of context) for its Fmax.

    .venv/bin/python bench/layernorm_unit.py                  # default unit and N_MAX=64 on ecp5-85k
    .venv/bin/python bench/layernorm_unit.py --pnr            # plus Fmax (minutes)
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

CONFIGS = {"defaults (N_MAX=1024)": {}, "N_MAX=64": {"N_MAX": 64}}
ROW_LENGTHS = (16, 64, 192, 768)


def main(argv=None) -> int:
    from tony.rtl import render_to
    from tony.rtl.layernorm_unit import cycles_per_row, latency
    from tony.synth import synthesize_module

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="ecp5-85k")
    ap.add_argument("--pnr", action="store_true", help="place and route for Fmax")
    ap.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = ap.parse_args(argv)

    print("| n | cycles per row | latency (last in -> last out) | cycles / (2 n) |")
    print("|---|---|---|---|")
    for n in ROW_LENGTHS:
        c = cycles_per_row(n)
        print(f"| {n} | {c:,} | {latency(n):,} | {c / (2 * n):.2f} |")
    print()
    work = args.work or Path(tempfile.mkdtemp(prefix="tony_layernorm_synth_"))
    print(f"| unit ({args.target}) | LUT4 (logic) | FF | MULT18X18D | block RAM | the two tony_ppu (logic LUT, FF, DSP) "
          + ("| Fmax MHz " if args.pnr else "") + "|")
    print("|---|---|---|---|---|---|" + ("---|" if args.pnr else ""))
    for label, params in CONFIGS.items():
        run = work / label.split()[0]
        files = render_to(run / "rtl", "tony_layernorm", **params)
        rep = synthesize_module(files, "tony_layernorm", run / args.target, target=args.target, pnr=args.pnr)
        t = rep["total"]
        ppu = rep["modules"].get("tony_ppu", {}).get("with_submodules", {})
        line = (f"| {label} | {t['logic_luts']:,} | {t['ff']:,} | {t['dsp']} | {t['bram']} | "
                f"{ppu.get('logic_luts', 0):,}, {ppu.get('ff', 0):,}, {ppu.get('dsp', 0)} |")
        if args.pnr:
            line += f" {rep['fmax_mhz'] or '-'} |"
        print(line)
        for w in rep["warnings"]:
            print(f"  warning: {w}")
    print(f"\n(runs in {work})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
