"""MAC utilization of the accelerator per workload and array size, against its limits.

For each workload (the digits nets and the MLPerf Tiny models, seeded and built here) and each
array size, the cycle model gives the cycles of one batch-1 inference; the tests hold the model
to the RTL's cycle count exactly (tests/test_accel_sim.py), and this script checks that again on
Verilator for the runs named by --sim, where it also measures simulation speed. Printed as
ratios: utilization = MACs / (cycles x ROWS x COLS) against the limit 1.0, and against each
layer's bound (1.0, or lower where the dataflow or the memory bandwidth caps it; see
docs/architecture.md).

    .venv/bin/python bench/utilization.py                      # model: every workload, 8x8 and 16x16
    .venv/bin/python bench/utilization.py --sim resnet8:8x8    # also simulate this one on Verilator
    .venv/bin/python bench/utilization.py --layers             # per-layer tables
    .venv/bin/python bench/utilization.py --what-if            # limits of the schedule, and changes not made

--what-if prints, per run, what no schedule of the same instructions can beat (the array streaming
every CONV, the vector unit's instructions, the memory port's beats: program, input and spills,
weights, biases) and the cycle model's total for the same program with one change each that the
compiler alone cannot make: depthwise CONVs at period max(kh*kw, ROWS/2) (a second post-processing
lane draining two rows per cycle), every weight LOAD as if prefetched long before (one word), the
activation LOADs a quarter of their words (an input packed four pixels to a word), and all three.
They are estimates on the program as compiled, not programs that run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

WORKLOADS = ["digits-cnn", "digits-mobilenet", "resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder"]


def build(name: str, root: Path) -> Path:
    from tony.models import build_example

    d = root / name
    if not (d / "model.onnx").exists():
        build_example(name, d)
    return d


def what_if(prog) -> str:
    """The limits and the what-if totals of --what-if for one program (see the module docstring)."""
    from tony.accel import isa
    from tony.accel import model as accel_model

    c = prog.cfg
    ins = accel_model.decode_program(prog)
    stream = sum(2 + c.rows + -(-d["npix"] // c.rows) * d["period"] for d in ins if d["op"] == isa.CONV)
    vector = sum(d["npix"] * d["klen"] + 17 for d in ins if d["op"] in (isa.POOL, isa.EWISE))
    beats = {b: 0 for b in (isa.B_IMEM, isa.B_ACT, isa.B_WGT, isa.B_BIAS, isa.B_TAB)}
    beats[isa.B_IMEM] = prog.boot_words * c.instr_beats
    for d in ins:
        if d["op"] in (isa.LOAD, isa.STORE):
            beats[d["buf"]] += d["nwords"] * c.buf_beats(d["buf"])

    def total(*changes) -> int:
        out = []
        for d in ins:
            d = dict(d)
            for ch in changes:
                ch(d)
            out.append(d)
        return accel_model.schedule(out, c, prog.boot_words).total

    def dw(d):
        if d["op"] == isa.CONV and d["flags"] & isa.F_DEPTHWISE:
            d["period"] = max(d["klen"], c.rows // 2)

    def wgt(d):
        if d["op"] == isa.LOAD and d["buf"] == isa.B_WGT:
            d["nwords"] = 1

    def act(d):
        if d["op"] == isa.LOAD and d["buf"] == isa.B_ACT:
            d["nwords"] = -(-d["nwords"] // 4)
    macs = sum(L.macs for L in prog.layers)
    util = [macs / (n * c.rows * c.cols) for n in (total(dw), total(wgt), total(act), total(dw, wgt, act))]
    return (f"    limits: CONV streaming {stream:,d} + vector {vector:,d} cycles; memory beats {sum(beats.values()):,d} "
            f"(program {beats[isa.B_IMEM]:,d}, activations {beats[isa.B_ACT]:,d}, weights {beats[isa.B_WGT]:,d}, "
            f"biases {beats[isa.B_BIAS]:,d}, tables {beats[isa.B_TAB]:,d})\n"
            f"    what if: depthwise period max(kh*kw, ROWS/2) {util[0]:.3f}; weights prefetched {util[1]:.3f}; "
            f"activation loads / 4 {util[2]:.3f}; all three {util[3]:.3f}")


def model_row(d: Path, rows: int, cols: int):
    from tony.api import load_ir
    from tony.accel import model as accel_model
    from tony.accel.compiler import compile_program
    from tony.accel.program import AccelConfig

    g = load_ir(d / "model.onnx", requant="pow2")
    prog = compile_program(g, AccelConfig(rows, cols), batch=1)
    t = accel_model.cycles(prog)
    return t.total, accel_model.layer_table(prog, t), prog


def simulate(d: Path, rows: int, cols: int, work: Path) -> dict:
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.sim.accel import simulate as sim

    out = work / f"{d.name}_{rows}x{cols}"
    compile_model(d / "model.onnx", out, config=AccelConfig(rows, cols), inputs=np.load(d / "inputs.npy")[:1])
    return sim(out, progress=False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="*", default=WORKLOADS)
    ap.add_argument("--arrays", nargs="*", default=["8x8", "16x16"])
    ap.add_argument("--sim", nargs="*", default=["resnet8:8x8"], metavar="NAME:RxC",
                    help="also simulate these on Verilator (default resnet8:8x8); 'all' for every run")
    ap.add_argument("--layers", action="store_true", help="print the per-layer table of every run")
    ap.add_argument("--what-if", action="store_true", help="print each run's limits and the what-if totals "
                    "(module docstring)")
    ap.add_argument("--cache", default=None, help="folder for the built workloads (default: a temporary one)")
    a = ap.parse_args(argv)
    root = Path(a.cache) if a.cache else Path(tempfile.mkdtemp(prefix="tony-util-"))
    root.mkdir(parents=True, exist_ok=True)
    print(f"{'workload':18s} {'array':>6s} {'MACs':>11s} {'cycles':>9s} {'util/limit':>10s} {'util/bound':>10s}  "
          "simulated (cycles equal? speed)")
    for name in a.workloads:
        d = build(name, root)
        for arr in a.arrays:
            r, c = map(int, arr.split("x"))
            total, table, prog = model_row(d, r, c)
            macs = sum(l["macs"] for l in table)
            util = macs / (total * r * c)
            # the whole-model bound: cycles if every layer ran at its own bound, idle phases at zero
            ideal = sum(l["macs"] / (r * c * l["bound"]) for l in table if l["macs"])
            bound = macs / (r * c * ideal) if ideal else 1.0
            simtxt = ""
            if "all" in a.sim or f"{name}:{arr}" in a.sim:
                t0 = time.perf_counter()
                rep = simulate(d, r, c, root)
                wall = time.perf_counter() - t0
                ok = rep["cycles"] == total and rep["bit_exact"]
                simtxt = (f"{'yes' if ok else 'NO'}, bit-exact={rep['bit_exact']}, "
                          f"{rep['cycles_per_second']:,.0f} cycles/s, {wall:.1f} s with the build")
            print(f"{name:18s} {arr:>6s} {macs:11,d} {total:9,d} {util:10.3f} {util / bound:10.3f}  {simtxt}")
            if a.what_if:
                print(what_if(prog))
            if a.layers:
                for l in table:
                    if l["predicted"]:
                        u = l["utilization"]
                        b = l.get("bound")
                        print(f"    {l['name'][:22]:22s} {l['op']:8s} {l['predicted']:9,d} cycles  "
                              f"util {u if u is not None else 0:.3f}  bound {b if b is not None else 1:.3f}"
                              f"  {l.get('bound_why', '')}")
    print("util/limit: MAC utilization against 100%; util/bound: against the whole-model bound, every layer at its "
          "own bound (1.0 = no cycle lost beyond what the dataflow and the memory port impose)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
