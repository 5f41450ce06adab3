"""FPGA resources of the accelerator per PE, against the hardware goals and against NNgen.

For each array size and target, the digits CNN is compiled (tony compile, buffers sized to the
model) and synthesized with Yosys from PyPI (tony synth, synthesis only). Printed per PE: LUTs of
the array (PE module plus its share of the skew registers; on ECP5 with the two LUT4s inside every
CCU2C carry cell), FFs and DSPs, with ratios against the goals (<= 1 DSP per PE, <= 60 LUTs per PE
outside the buffers). With --pnr the 8x8 build is placed and routed on ecp5-85k for Fmax (goal
>= 100 MHz): nextpnr's static placer, timing-driven, then router1 for congestion alone (tony synth
--placer static --untimed-route; 10 to 25 minutes on 2 cores; docs/synthesis.md) and the microseconds per inference of each workload at that Fmax
(cycles from the cycle model, which the RTL matches exactly; tests/test_accel_sim.py).

The 8x8 xc7 row is set against NNgen 1.3.4's 64-MAC MLP design under the same command
(Yosys synth_xilinx): 11,899 LUT, 27,363 FF, 80 DSP48E1, 0 BRAM.

    .venv/bin/python bench/synth.py                     # 4x4 and 8x8 on ecp5-85k and xc7 (~15 min on 2 cores)
    .venv/bin/python bench/synth.py --arrays 4x4        # the quick one
    .venv/bin/python bench/synth.py --big --pnr         # also 16x16, and Fmax at 8x8 (an hour or more)
    .venv/bin/python bench/synth.py --reuse             # reuse synth reports already in --work
    .venv/bin/python bench/synth.py --arrays --targets --pnr --seeds 1 2 3 4 --jobs 2   # Fmax over 4 placements
    .venv/bin/python bench/synth.py --arrays --targets --pnr --seeds 1 2 3 4 --jobs 2 --pnr-minutes 40
                                                        # ... giving up on a seed router1 cannot finish
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

GOAL_DSP_PER_PE = 1.0
GOAL_LUT_PER_PE = 60.0
GOAL_FMAX_MHZ = 100.0
NNGEN = {"name": "NNgen 1.3.4 64-MAC MLP", "macs": 64, "lut": 11899, "ff": 27363, "dsp": 80, "bram": 0}
WORKLOADS = ["digits-mlp", "digits-cnn", "digits-mobilenet", "resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder"]


def example(name: str, root: Path) -> Path:
    from tony.models import build_example

    d = root / "models" / name
    if not (d / "model.onnx").exists():
        build_example(name, d)
    return d


def build(model: Path, rows: int, cols: int, root: Path) -> Path:
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model

    out = root / f"{model.name}_{rows}x{cols}"
    if not (out / "manifest.json").exists():
        compile_model(model / "model.onnx", out, config=AccelConfig(rows, cols), samples=1)
    return out


def synth(out: Path, target: str, pnr: bool, reuse: bool, quiet: bool, placer: str | None = None,
          router: str | None = None, untimed_route: bool = False, seed: int | None = None,
          timeout: float | None = None) -> dict:
    from tony.synth import synthesize

    cached = out / "synth" / target / "synth_report.json"
    if reuse and cached.exists():
        rep = json.loads(cached.read_text())
        if not pnr or (rep.get("fmax_mhz") and rep["pnr"].get("seed", 1) == (1 if seed is None else seed)):
            return rep
    return synthesize(out, target=target, pnr=pnr, progress=not quiet, placer=placer, router=router,
                      untimed_route=untimed_route, seed=seed, timeout=timeout)


def place_seeds(out: Path, a) -> dict[int, dict]:
    """The 8x8 build placed and routed on ecp5-85k once per seed in a.seeds (seed 1 in the build
    folder itself, every other seed in a copy of it, `a.jobs` at once): {seed: synth report}, or
    {seed: {"error": why}} for a seed whose place and route failed or ran past --pnr-minutes (a
    placement router1 cannot finish: the other seeds are still reported)."""
    import shutil
    from concurrent.futures import ProcessPoolExecutor

    folders = {}
    for s in dict.fromkeys(a.seeds):
        d = out if s == 1 else out.with_name(f"{out.name}_seed{s}")
        if d != out and not (d / "manifest.json").exists():
            shutil.rmtree(d, ignore_errors=True)
            shutil.copytree(out, d, ignore=shutil.ignore_patterns("synth", "sim"))
        folders[s] = d
    args = dict(target="ecp5-85k", pnr=True, reuse=a.reuse, quiet=a.quiet or a.jobs > 1, placer=a.placer,
                router=a.router, untimed_route=not a.timed_route,
                timeout=a.pnr_minutes * 60 if a.pnr_minutes else None)
    with ProcessPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        futs = {s: pool.submit(_place, d, seed=s, **args) for s, d in folders.items()}
        return {s: f.result() for s, f in futs.items()}


def _place(out: Path, **args) -> dict:
    """synth() for one seed in a worker: a failure comes back as {"error": its line} (the error is
    not sent across processes, whose unpickling it may not survive)."""
    from tony.synth import SynthError

    try:
        return synth(out, **args)
    except SynthError as e:
        return {"error": str(e).splitlines()[0], "fmax_mhz": None}


def cycles(model: Path, rows: int, cols: int) -> int:
    from tony.accel import model as accel_model
    from tony.accel.compiler import compile_program
    from tony.accel.program import AccelConfig
    from tony.api import load_ir

    g = load_ir(model / "model.onnx", requant="pow2")
    return accel_model.cycles(compile_program(g, AccelConfig(rows, cols), batch=1)).total


def _r(v: float, goal: float) -> str:
    return f"{v / goal:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arrays", nargs="*", default=["4x4", "8x8"])
    ap.add_argument("--big", action="store_true", help="add 16x16 (long)")
    ap.add_argument("--targets", nargs="*", default=["ecp5-85k", "xc7"])
    ap.add_argument("--pnr", action="store_true", help="place and route 8x8 on ecp5-85k for Fmax (long)")
    ap.add_argument("--placer", default="static", help="with --pnr: nextpnr's placer (static: the 8x8's best placement)")
    ap.add_argument("--router", default="router1", help="with --pnr: nextpnr's router")
    ap.add_argument("--timed-route", action="store_true",
                    help="with --pnr: route timing-driven too (it does not finish the 8x8; docs/synthesis.md)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[1],
                    help="with --pnr: nextpnr placement seeds, one place and route each (a copy of the build per "
                         "seed); the best is the Fmax the µs per inference use, the spread is printed")
    ap.add_argument("--jobs", type=int, default=1, help="with --pnr: seeds placed and routed at once (one core each)")
    ap.add_argument("--pnr-minutes", type=float, default=None,
                    help="with --pnr: give up on a seed after this many minutes per tool run (router1 may not "
                         "finish a congested placement); the other seeds are still reported")
    ap.add_argument("--model", default="digits-cnn", help="the workload the arrays are compiled for")
    ap.add_argument("--workloads", nargs="*", default=WORKLOADS, help="µs per inference of these at the Fmax")
    ap.add_argument("--work", default="build/bench_synth", help="build folders and reports (kept)")
    ap.add_argument("--reuse", action="store_true", help="reuse synth reports found in --work")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("-q", "--quiet", action="store_true")
    a = ap.parse_args(argv)
    arrays = list(a.arrays) + (["16x16"] if a.big and "16x16" not in a.arrays else [])
    root = Path(a.work)
    root.mkdir(parents=True, exist_ok=True)
    model = example(a.model, root)

    rows = []
    t0 = time.monotonic()
    for arr in arrays:
        r, c = (int(v) for v in arr.split("x"))
        out = build(model, r, c, root)
        for target in a.targets:
            rep = synth(out, target, False, a.reuse, a.quiet)
            pp = rep["per_pe"]
            rows.append({"array": arr, "target": target, "pes": pp["pes"], "pe": pp.get("pe_module"),
                         "per_pe": pp["array"], "total": {k: rep["total"][k] for k in
                                                          ("lut", "logic_luts", "ff", "carry", "dsp", "bram",
                                                           "bram_bits", "lutram")},
                         "warnings": len(rep["warnings"]), "synth_s": rep["elapsed_s"]["synth"],
                         "goals_failed": [g for g, v in rep["goals"].items() if not v["ok"]]})

    print(f"\nTony accelerator ({a.model}, buffers sized to it), Yosys synthesis without flattening; "
          "per PE = the array module with its PEs, / PEs")
    hdr = (f"{'target':9} {'array':6} {'LUT/PE':>7} {'/60':>5} {'FF/PE':>6} {'DSP/PE':>6} {'/1':>5} "
           f"{'LUT':>7} {'LUT+cy':>7} {'FF':>7} {'carry':>6} {'DSP':>4} {'BRAM':>5} {'LUTRAM':>6} "
           f"{'warn':>4} {'synth s':>7}")
    print(hdr)
    print("-" * len(hdr))
    for x in rows:
        p, t = x["per_pe"], x["total"]
        print(f"{x['target']:9} {x['array']:6} {p['logic_luts']:7.1f} {_r(p['logic_luts'], GOAL_LUT_PER_PE):>5} "
              f"{p['ff']:6.1f} {p['dsp']:6.2f} {_r(p['dsp'], GOAL_DSP_PER_PE):>5} {t['lut']:7,} {t['logic_luts']:7,} "
              f"{t['ff']:7,} {t['carry']:6,} {t['dsp']:4} {t['bram']:5} {t['lutram']:6} {x['warnings']:4} "
              f"{x['synth_s']:7.0f}")
    print("ratios: /60 = LUTs per PE against the goal of 60 (<= 1.00 meets it); /1 = DSPs per PE against 1")

    x8 = next((x for x in rows if x["array"] == "8x8" and x["target"] == "xc7"), None)
    if x8:
        t = x8["total"]
        print(f"\nagainst {NNGEN['name']} (Yosys synth_xilinx; both 64 MACs): Tony 8x8 / NNgen")
        for k, name in (("lut", "LUT"), ("ff", "FF"), ("dsp", "DSP48E1"), ("bram", "BRAM")):
            ratio = f"{t[k] / NNGEN[k]:.2f}" if NNGEN[k] else ("-" if t[k] == 0 else "inf")
            print(f"  {name:8} {t[k]:8,} / {NNGEN[k]:8,} = {ratio}")

    if a.pnr:
        out = build(model, 8, 8, root)
        reps = place_seeds(out, a)
        how = f"{a.placer}, {a.router}" + ("" if a.timed_route else " untimed")
        print(f"\nFmax 8x8 on ecp5-85k (nextpnr {how}, speed 6), goal {GOAL_FMAX_MHZ:g} MHz")
        print(f"{'seed':>4} {'MHz':>6} {'/goal':>6} {'late':>5}  critical path")
        for s, rep in sorted(reps.items()):
            if not rep["fmax_mhz"]:
                print(f"{s:4} {'-':>6} {'-':>6} {'-':>5}  no Fmax: {rep.get('error', 'nextpnr reported none')}")
                continue
            cp = rep["pnr"]["critical_path"] or {}
            late = sum(((rep["pnr"].get("late_endpoints") or {}).get("by_unit") or {}).values())
            print(f"{s:4} {rep['fmax_mhz']:6.1f} {rep['fmax_mhz'] / GOAL_FMAX_MHZ:6.2f} {late:>5}  "
                  f"{cp.get('delay_ns', 0):.2f} ns {cp.get('from')} -> {cp.get('to')}")
        done = {s: r for s, r in reps.items() if r["fmax_mhz"]}
        if not done:
            print("no seed was placed and routed")
            return 1
        best = max(done, key=lambda s: done[s]["fmax_mhz"])
        fmax = done[best]["fmax_mhz"]
        if len(reps) > 1:
            f = [r["fmax_mhz"] for r in done.values()]
            print(f"best seed {best}: {fmax:.1f} MHz; median {statistics.median(f):.1f}, worst {min(f):.1f} of "
                  f"{len(done)} routed (late = register inputs later than the goal's period)")
        print(f"{'workload':18} {'cycles':>9} {'µs/inference':>13} {'inferences/s':>13}   (at {fmax:.1f} MHz)")
        for w in a.workloads:
            cyc = cycles(example(w, root), 8, 8)
            print(f"{w:18} {cyc:9,} {cyc / fmax:13.1f} {fmax * 1e6 / cyc:13,.0f}")
        for s, rep in sorted(reps.items()):
            rows.append({"array": "8x8", "target": "ecp5-85k", "seed": s, "fmax_mhz": rep["fmax_mhz"],
                         "critical_path": (rep.get("pnr") or {}).get("critical_path"), "error": rep.get("error")})
    print(f"\n({time.monotonic() - t0:.0f} s; reports in {root}/*/synth/*/synth_report.json)")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
