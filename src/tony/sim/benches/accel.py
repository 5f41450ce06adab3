"""Whole-model bench of tony_accel: load the compiled memory image, start the controller, let the
RTL run free until done_o, and compare every output byte with the golden vectors. One run per
batch of samples; all runs in one simulator process.

Two memories, chosen by TONY_MEMORY:
- "hdl" (default; toplevel tony_sim_top): the memory is tony_sim_mem, in HDL, with the fixed read
  latency the cycle model assumes, and the issue cycles are traced in HDL. The image is loaded at
  time 0 ($readmemh, +tony_mem_image), each run's inputs through a small file
  (+tony_mem_load), the outputs and the issue trace come back through files at done
  (+tony_mem_dump, +tony_sim_results). tony_sim_top makes its own clock, in bursts of cycles per
  time step while a batch runs (its CLOCK parameter): Python wakes a few times per batch, never per
  cycle, and waits on busy_o, not on clock edges.
- "python" (toplevel tony_accel): the Python memory model of tony/sim/benches/memory.py on the
  accelerator's port, woken every cycle the DMA engine has a request in flight, and the issue
  cycles read at every change of pc_o.

Configured by environment variables set by `tony sim`: TONY_BUILD (the build folder),
TONY_GOLDEN (golden vectors), TONY_RESULT (JSON written here), TONY_PROGRESS (progress file),
TONY_MEMORY (hdl or python), TONY_SIM_FILES (folder of the load/dump files, hdl).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import Edge, FallingEdge, RisingEdge, Timer

from tony.sim.benches.common import CLOCK_PERIOD_NS, compare_run, finish_report, load_runs, reset, start_clock

MEMORY_FILES = {"load": "in_", "dump": "mem_dump.hex", "results": "results.txt"}
"""The files tony_sim_top reads and writes (in TONY_SIM_FILES): the inputs of run r in
in_<r>.hex (+tony_mem_load), the output regions after each run (+tony_mem_dump), the run
records with their issue cycles (+tony_sim_results); tony.sim.accel.simulate names them."""

CHUNKS = 20
"""The HDL bench starts the runs in about this many batches (the progress bar moves between them)."""


def _unpack(beats, info, cols, a_bits, mem_bits) -> np.ndarray:
    from tony.accel.layout import beats_to_words, unpack_act

    words = beats_to_words(beats, cols, a_bits, mem_bits)
    return unpack_act(words, info["n"], info["c"], info["h"], info["w"], cols, a_bits, info["signed"])


async def _reset_for(rst_n, cycles: int) -> None:
    """Hold tony_sim_top's reset for about `cycles` cycles of its own clock (at least cycles - 1:
    with CLOCK 2 one cycle per clock period while no batch runs)."""
    rst_n.value = 0
    await Timer(cycles * CLOCK_PERIOD_NS, unit="ns")
    rst_n.value = 1
    await Timer(CLOCK_PERIOD_NS, unit="ns")


async def _watch_pc(dut, log: list) -> None:
    """Record the cycle of each instruction issue, in order: pc_o changes at the edge that ends the
    issue cycle, when cycles_o becomes issue cycle + 1 (to pc + 1, or to 0 after a page's LOAD); a
    start sets pc_o to 0 with cycles_o 0, which is no issue."""
    while True:
        await Edge(dut.pc_o)
        cyc = int(dut.cycles_o.value)
        if cyc:
            log.append(cyc - 1)


async def _start_run(dut) -> None:
    await FallingEdge(dut.clk_i)
    dut.start_i.value = 1
    await FallingEdge(dut.clk_i)
    dut.start_i.value = 0
    if not int(dut.done_o.value):
        await RisingEdge(dut.done_o)


class PythonMemory:
    """The Python memory model on tony_accel's port; the issue cycles from every change of pc_o.
    Python runs every cycle the DMA engine has a request in flight."""

    def __init__(self, dut, m, image):
        dut.start_i.value = 0
        dut.mem_req_ready_i.value = 1
        self.dut, self.m, self.image = dut, m, image
        self.issues: list = []

    async def setup(self):
        from tony.sim.benches.memory import Memory

        self.mem = Memory(self.dut, [int(v) for v in self.image], latency=self.m["accel"]["mem_latency"])
        cocotb.start_soon(_watch_pc(self.dut, self.issues))

    async def runs(self, inputs: list[dict]):
        """Yield (cycles, issue cycles, output beats by address) for each run's inputs."""
        d = self.dut
        for run_inputs in inputs:
            for ext, beats in run_inputs.items():
                self.mem.mem[ext:ext + len(beats)] = [int(b) for b in beats]
            self.issues.clear()
            await _start_run(d)
            cycles = int(d.cycles_o.value)
            await FallingEdge(d.clk_i)
            outs = {o["ext"]: self.mem.mem[o["ext"]:o["ext"] + o["beats"]] for o in self.m["outputs"]}
            yield cycles, list(self.issues), outs

    def counts(self) -> dict:
        return {"memory_reads": self.mem.reads, "memory_writes": self.mem.writes}


class HdlMemory:
    """tony_sim_top: the memory (tony_sim_mem), the issue trace and the run sequencer in HDL; the
    inputs go in and the records come back through files, a batch of runs at a time."""

    def __init__(self, dut, m, image):
        self.dut, self.m = dut, m
        self.dir = Path(os.environ["TONY_SIM_FILES"])
        self.digits = m["accel"]["mem_bits"] // 4
        outs = m["outputs"]
        self.lo = min(o["ext"] for o in outs)
        self.hi = max(o["ext"] + o["beats"] for o in outs) - 1
        dut.go_i.value = 0
        dut.dump_lo_i.value = self.lo
        dut.dump_hi_i.value = self.hi

    async def setup(self):
        pass

    def _write_inputs(self, inputs: list[dict]) -> None:
        fmt = f"0{self.digits}x"
        for r, run_inputs in enumerate(inputs):
            text = "".join(f"@{ext:x}\n" + "\n".join(format(int(b), fmt) for b in beats) + "\n"
                           for ext, beats in run_inputs.items())
            (self.dir / f"{MEMORY_FILES['load']}{r}.hex").write_text(text)

    async def runs(self, inputs: list[dict]):
        d = self.dut
        self._write_inputs(inputs)
        n, per = len(inputs), self.hi - self.lo + 1
        step = max(1, -(-n // CHUNKS))
        res_f = open(self.dir / MEMORY_FILES["results"])
        dump_f = open(self.dir / MEMORY_FILES["dump"])
        try:
            for first in range(0, n, step):
                count = min(step, n - first)
                # tony_sim_top's own clock: a handshake on busy_o, no clock edges (with CLOCK 2 they
                # rise and fall within a time step)
                d.first_run_i.value, d.n_runs_i.value, d.go_i.value = first, count, 1
                await RisingEdge(d.busy_o)
                d.go_i.value = 0
                await FallingEdge(d.busy_o)
                for r in range(first, first + count):
                    head = res_f.readline().split()
                    assert head[:2] == ["run", str(r)], (r, head)
                    cycles, issues, illegal, oob = (int(v) for v in head[2:])
                    if oob:
                        raise AssertionError(f"run {r}: a memory access beyond the memory image (oob_o)")
                    issue = [int(res_f.readline(), 16) for _ in range(issues)]
                    words = [int(dump_f.readline(), 16) for _ in range(per)]
                    outs = {o["ext"]: words[o["ext"] - self.lo:o["ext"] - self.lo + o["beats"]]
                            for o in self.m["outputs"]}
                    yield cycles, issue, outs
        finally:
            res_f.close()
            dump_f.close()

    def counts(self) -> dict:
        return {}


@cocotb.test()
async def run_model(dut):
    build = Path(os.environ["TONY_BUILD"])
    golden = Path(os.environ["TONY_GOLDEN"])
    result_path = Path(os.environ["TONY_RESULT"])
    progress_path = os.environ.get("TONY_PROGRESS")
    m = json.loads((build / "manifest.json").read_text())
    acc = m["accel"]
    cols, a_bits, mem_bits = acc["cols"], acc["a_bits"], acc["mem_bits"]
    image = np.load(build / "mem" / "image.npy", allow_pickle=False).astype(np.uint64)
    batch = m["batch"]
    wants = {o["key"]: np.load(golden / f"{o['key']}.npy") for o in m["outputs"]}
    n_total = next(iter(wants.values())).shape[0]
    runs = load_runs(build, golden, n_total, batch)
    n_runs = len(runs)

    kind = os.environ.get("TONY_MEMORY", "hdl")
    if kind == "python":
        start_clock(dut.clk_i)
    dut.prog_addr_i.value = m["program"]["addr"]
    dut.prog_len_i.value = m["program"].get("boot", m["program"]["length"])   # the first page
    mem = (HdlMemory if kind == "hdl" else PythonMemory)(dut, m, image)
    if kind == "python":
        await reset(dut.clk_i, dut.rst_ni)
    else:  # tony_sim_top makes its own clock: no testbench code entered per edge
        await _reset_for(dut.rst_ni, 4)
    await mem.setup()

    report = {"runs": [], "mismatches": 0, "compared": 0, "first_mismatches": [], "samples": 0, "memory": kind}
    hw = {k: [] for k in wants}
    t0 = shown = time.perf_counter()
    cpu0 = time.process_time()
    inputs = [{inp["ext"]: runs[run][inp["offset"]:inp["offset"] + inp["beats"]] for inp in m["inputs"]}
              for run in range(n_runs)]
    run = -1
    async for cycles, issue, outs in mem.runs(inputs):
        run += 1
        lo, hi = run * batch, min((run + 1) * batch, n_total)
        for o in m["outputs"]:
            y = _unpack(outs[o["ext"]], o, cols, a_bits, mem_bits)
            y = y.reshape((batch,) + tuple(o["shape"][1:]))[:hi - lo]
            compare_run(report, hw, o["key"], run, lo, y, wants[o["key"]][lo:hi].reshape(y.shape))
        report["samples"] += hi - lo
        report["runs"].append({"cycles": cycles, "issue": issue})
        if progress_path and (time.perf_counter() - shown > 0.2 or run + 1 == n_runs):
            Path(progress_path).write_text(f"{run + 1} {n_runs} run\n")
            shown = time.perf_counter()
    report["sim_seconds"] = time.perf_counter() - t0
    report["sim_cpu_seconds"] = time.process_time() - cpu0  # the simulator runs in this process
    report.update(mem.counts())
    finish_report(dut, report, hw, result_path)
