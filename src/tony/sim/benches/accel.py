"""Whole-model bench of tony_accel: load the compiled memory image into a memory model on the
accelerator's port, start the controller, let the RTL run free until done_o, and compare every
output byte with the golden vectors. One run per batch of samples.

Configured by environment variables set by `tony sim`: TONY_BUILD (the build folder),
TONY_GOLDEN (golden vectors), TONY_RESULT (JSON written here), TONY_PROGRESS (progress file).
The bench never looks at the signals cycle by cycle: it awaits done_o, changes of pc_o (to time
each instruction's issue for the per-layer table), and the memory model wakes only while the
DMA engine has requests in flight.
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import Edge, FallingEdge, RisingEdge

from tony.sim.benches.common import load_runs, reset, start_clock
from tony.sim.benches.memory import Memory


def _unpack(beats, info, cols, a_bits, mem_bits) -> np.ndarray:
    from tony.accel.layout import beats_to_words, unpack_act

    words = beats_to_words(beats, cols, a_bits, mem_bits)
    return unpack_act(words, info["n"], info["c"], info["h"], info["w"], cols, a_bits, info["signed"])


async def _watch_pc(dut, log: list) -> None:
    """Record (pc, cycle) at each instruction issue: pc_o steps at the edge that ends the issue
    cycle, when cycles_o becomes issue cycle + 1."""
    while True:
        await Edge(dut.pc_o)
        pc = int(dut.pc_o.value)
        if pc:
            log.append((pc - 1, int(dut.cycles_o.value) - 1))


@cocotb.test()
async def run_model(dut):
    build = Path(os.environ["TONY_BUILD"])
    golden = Path(os.environ["TONY_GOLDEN"])
    result_path = Path(os.environ["TONY_RESULT"])
    progress_path = os.environ.get("TONY_PROGRESS")
    m = json.loads((build / "manifest.json").read_text())
    acc = m["accel"]
    cols, a_bits, mem_bits = acc["cols"], acc["a_bits"], acc["mem_bits"]
    image = [int(v) for v in np.load(build / "mem" / "image.npy", allow_pickle=False).astype(np.uint64)]
    batch = m["batch"]
    wants = {o["key"]: np.load(golden / f"{o['key']}.npy") for o in m["outputs"]}
    n_total = next(iter(wants.values())).shape[0]
    runs = load_runs(build, golden, n_total, batch)
    n_runs = len(runs)

    start_clock(dut.clk_i)
    dut.start_i.value = 0
    dut.prog_addr_i.value = m["program"]["addr"]
    dut.prog_len_i.value = m["program"]["length"]
    dut.mem_req_ready_i.value = 1
    await reset(dut.clk_i, dut.rst_ni)
    mem = Memory(dut, image, latency=acc["mem_latency"])
    issues: list = []
    cocotb.start_soon(_watch_pc(dut, issues))

    report = {"runs": [], "mismatches": 0, "compared": 0, "first_mismatches": [], "samples": 0}
    hw = {k: [] for k in wants}
    t0 = time.perf_counter()
    for run in range(n_runs):
        for inp in m["inputs"]:
            beats = runs[run][inp["offset"]:inp["offset"] + inp["beats"]]
            mem.mem[inp["ext"]:inp["ext"] + inp["beats"]] = [int(b) for b in beats]
        issues.clear()
        await FallingEdge(dut.clk_i)
        dut.start_i.value = 1
        await FallingEdge(dut.clk_i)
        dut.start_i.value = 0
        if not int(dut.done_o.value):
            await RisingEdge(dut.done_o)
        cycles = int(dut.cycles_o.value)
        await FallingEdge(dut.clk_i)
        lo, hi = run * batch, min((run + 1) * batch, n_total)
        for o in m["outputs"]:
            y = _unpack(mem.mem[o["ext"]:o["ext"] + o["beats"]], o, cols, a_bits, mem_bits)
            y = y.reshape((batch,) + tuple(o["shape"][1:]))[:hi - lo]
            want = wants[o["key"]][lo:hi].reshape(y.shape)
            hw[o["key"]].append(y)
            bad = np.argwhere(y != want)
            for idx in bad[: max(0, 10 - len(report["first_mismatches"]))]:
                report["first_mismatches"].append({"tensor": o["key"], "run": run,
                                                   "index": [int(lo + idx[0])] + [int(i) for i in idx[1:]],
                                                   "expected": int(want[tuple(idx)]), "got": int(y[tuple(idx)])})
            report["mismatches"] += int(len(bad))
            report["compared"] += int(y.size)
        report["samples"] += hi - lo
        report["runs"].append({"cycles": cycles, "issue": [c for _, c in sorted(issues)]})
        if progress_path:
            Path(progress_path).write_text(f"{run + 1} {n_runs} run\n")
    report["sim_seconds"] = time.perf_counter() - t0
    report["cycles"] = sum(r["cycles"] for r in report["runs"])
    report["memory_reads"], report["memory_writes"] = mem.reads, mem.writes
    for k, parts in hw.items():
        if parts:
            np.save(result_path.parent / f"hw_{k}.npy", np.concatenate(parts))
    result_path.write_text(json.dumps(report, indent=1) + "\n")
    if report["mismatches"]:
        dut._log.error("%d mismatching elements; first: %s", report["mismatches"], report["first_mismatches"][:3])
