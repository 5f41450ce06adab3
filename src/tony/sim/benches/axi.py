"""Whole-model bench of tony_axi_top: the accelerator as an SoC block.

A host (cocotbext-axi AxiLiteMaster on s_axil_*) programs the registers exactly as a driver on
a board does (tony.board.bringup.REGISTERS): BASE, PROG_ADDR, PROG_LEN, IER, CTRL.START, then
waits for the interrupt, reads STATUS and CYCLES and clears ISR. Memory is an AxiRam on m_axi_*
holding the compiled image at a non-zero base address. With TONY_AXI_STALL = p, every AXI and
AXI-Lite channel idles / back-pressures in a random fraction p of the cycles.

Tests: `run_model` (used by `tony sim --axi-stall`) runs every batch of the build, compares
every output element with the golden vectors and writes the memory after each run to
OUT/sim/hw_memory.bin (a whole-memory dump for `tony compare --memory`); the others check robustness: a bus error
response stops the run cleanly and the next run is exact, CTRL.ABORT and a reset in the middle
of a run recover. Configured by environment: TONY_BUILD, TONY_GOLDEN, TONY_RESULT,
TONY_PROGRESS (optional), TONY_AXI_STALL (default 0).
"""
from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import ClockCycles, Edge, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiLiteBus, AxiLiteMaster, AxiRam

from tony.sim.benches.common import compare_run, finish_report, load_runs, log_seed, reset, start_clock

BASE = 0x0004_0000  # byte address of beat 0 in the bench's memory


def _stall(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class Host:
    """AXI-Lite host + AXI RAM around tony_axi_top, with the build's manifest and image."""

    def __init__(self, dut, build: Path, golden: Path, stall: float, rng: random.Random):
        from tony.board.bringup import REGISTERS

        self.dut = dut
        self.m = json.loads((build / "manifest.json").read_text())
        a = self.m["accel"]
        self.cols, self.a_bits, self.mem_bits = a["cols"], a["a_bits"], a["mem_bits"]
        self.mb = self.mem_bits // 8
        self.image = [int(v) for v in np.load(build / "mem" / "image.npy", allow_pickle=False).astype(np.uint64)]
        self.wants = {o["key"]: np.load(golden / f"{o['key']}.npy") for o in self.m["outputs"]}
        self.n_total = next(iter(self.wants.values())).shape[0]
        self.batch = self.m["batch"]
        self.runs = load_runs(build, golden, self.n_total, self.batch)
        self.n_runs = len(self.runs)
        self.reg = {r.name: r.offset for r in REGISTERS}
        size = 1 << (BASE + len(self.image) * self.mb).bit_length()
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk_i, dut.rst_ni, reset_active_level=False, size=size)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni,
                                  reset_active_level=False)
        if stall > 0:
            w, r = self.ram.write_if, self.ram.read_if
            lw, lr = self.axil.write_if, self.axil.read_if
            for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel,
                       lw.aw_channel, lw.w_channel, lw.b_channel, lr.ar_channel, lr.r_channel):
                ch.set_pause_generator(_stall(rng, stall))
        self.ram.write(BASE, b"".join(int(v).to_bytes(self.mb, "little") for v in self.image))
        self.issues: list = []
        self.ar = [0, 0]  # read bursts, read beats on the AXI bus (since the last start)
        cocotb.start_soon(self._watch_ar())
        try:
            self.pc = dut.u_accel.pc_o
            cocotb.start_soon(self._watch_pc())
        except AttributeError:
            self.pc = None

    async def _watch_ar(self):
        d = self.dut
        while True:
            await RisingEdge(d.clk_i)
            await ReadOnly()
            if int(d.m_axi_arvalid.value) and int(d.m_axi_arready.value):
                self.ar[0] += 1
                self.ar[1] += int(d.m_axi_arlen.value) + 1

    async def _watch_pc(self):
        """The issue cycles in order, as benches/accel.py's _watch_pc: pc_o changes at the edge that
        ends an issue cycle (to pc + 1, or to 0 after a page's LOAD); a start sets it to 0 with
        cycles_o 0, which is no issue."""
        cyc = self.dut.u_accel.cycles_o
        while True:
            await Edge(self.pc)
            c = int(cyc.value)
            if c:
                self.issues.append(c - 1)

    async def wr(self, name: str, value: int) -> None:
        await self.axil.write_dword(self.reg[name], value)

    async def rd(self, name: str) -> int:
        return await self.axil.read_dword(self.reg[name])

    async def configure(self) -> None:
        from tony.board.bringup import REG_ID

        assert await self.rd("ID") == REG_ID, "not a Tony register block"
        boot = self.m["program"].get("boot", self.m["program"]["length"])   # the first page
        assert await self.rd("IMEM_WORDS") >= boot
        await self.wr("BASE_LO", BASE & 0xFFFFFFFF)
        await self.wr("BASE_HI", BASE >> 32)
        await self.wr("PROG_ADDR", self.m["program"]["addr"])
        await self.wr("PROG_LEN", boot)
        await self.wr("IER", 3)

    def load_inputs(self, run: int) -> None:
        for inp in self.m["inputs"]:
            beats = self.runs[run][inp["offset"]:inp["offset"] + inp["beats"]]
            self.ram.write(BASE + inp["ext"] * self.mb, b"".join(int(b).to_bytes(self.mb, "little") for b in beats))
        for o in self.m["outputs"]:  # stale outputs must not pass
            self.ram.write(BASE + o["ext"] * self.mb, bytes(o["beats"] * self.mb))

    async def start(self) -> None:
        self.issues.clear()
        self.ar = [0, 0]
        await self.wr("CTRL", 1)

    async def wait_irq(self, limit: int = 50_000_000) -> dict:
        from tony.board.bringup import decode_status

        if not int(self.dut.irq_o.value):
            await cocotb.triggers.with_timeout(RisingEdge(self.dut.irq_o), limit * 10, "ns")
        st = decode_status(await self.rd("STATUS"))
        st["cycles"] = await self.rd("CYCLES")
        st["core_cycles"] = int(self.dut.u_accel.cycles_o.value)  # the core's own counter, for the test
        await self.wr("ISR", 3)
        return st

    def outputs(self, run: int):
        from tony.accel.layout import beats_to_words, unpack_act

        lo, hi = run * self.batch, min((run + 1) * self.batch, self.n_total)
        for o in self.m["outputs"]:
            raw = self.ram.read(BASE + o["ext"] * self.mb, o["beats"] * self.mb)
            beats = [int.from_bytes(raw[i * self.mb:(i + 1) * self.mb], "little") for i in range(o["beats"])]
            words = beats_to_words(beats, self.cols, self.a_bits, self.mem_bits)
            y = unpack_act(words, o["n"], o["c"], o["h"], o["w"], self.cols, self.a_bits, o["signed"])
            y = y.reshape((self.batch,) + tuple(o["shape"][1:]))[:hi - lo]
            yield o["key"], y, self.wants[o["key"]][lo:hi].reshape(y.shape), lo

    def mismatches(self, run: int) -> int:
        return sum(int(np.count_nonzero(y != want)) for _, y, want, _ in self.outputs(run))

    async def run_exact(self, run: int = 0) -> dict:
        self.load_inputs(run)
        await self.start()
        st = await self.wait_irq()
        assert st["done"] and not st["error"], st
        bad = self.mismatches(run)
        assert bad == 0, f"run {run}: {bad} output elements differ from the golden vectors"
        return st


def _host(dut) -> Host:
    build = Path(os.environ["TONY_BUILD"])
    golden = Path(os.environ.get("TONY_GOLDEN", build / "golden"))
    rng = log_seed(dut)
    return Host(dut, build, golden, float(os.environ.get("TONY_AXI_STALL", "0")), rng)


@cocotb.test()
async def run_model(dut):
    """Every batch of the build through the AXI top; per-run cycles read over AXI-Lite."""
    h = _host(dut)
    result_path = Path(os.environ["TONY_RESULT"])
    progress_path = os.environ.get("TONY_PROGRESS")
    await reset(dut.clk_i, dut.rst_ni)
    await h.configure()
    report = {"runs": [], "mismatches": 0, "compared": 0, "first_mismatches": [], "samples": 0,
              "axi_stall": float(os.environ.get("TONY_AXI_STALL", "0"))}
    hw = {k: [] for k in h.wants}
    dump = open(result_path.parent / "hw_memory.bin", "wb")  # for `tony compare OUT --hw-dump ... --memory`
    t0 = time.perf_counter()
    for run in range(h.n_runs):
        h.load_inputs(run)
        await h.start()
        st = await h.wait_irq()
        if not st["done"] or st["error"]:
            raise AssertionError(f"run {run} ended with STATUS {st}")
        for key, y, want, lo in h.outputs(run):
            compare_run(report, hw, key, run, lo, y, want)
            report["samples"] += y.shape[0] if key == h.m["outputs"][0]["key"] else 0
        dump.write(h.ram.read(BASE, len(h.image) * h.mb))
        report["runs"].append({"cycles": st["cycles"], "core_cycles": st["core_cycles"],
                               "ar_bursts": h.ar[0], "read_beats": h.ar[1],
                               "issue": list(h.issues)})
        if progress_path:
            Path(progress_path).write_text(f"{run + 1} {h.n_runs} run\n")
    report["sim_seconds"] = time.perf_counter() - t0
    dump.close()
    finish_report(dut, report, hw, result_path)


@cocotb.test()
async def test_bus_error_stops_cleanly_then_next_run_is_exact(dut):
    """SLVERR on the input reads: STATUS.ERROR code 1 (RRESP 2), the core stops, the bus drains;
    with the memory fixed, the next START runs bit-exactly without a reset."""
    from tony.board.bringup import ERR_CODES

    h = _host(dut)
    await reset(dut.clk_i, dut.rst_ni)
    await h.configure()
    inp = h.m["inputs"][0]
    bad = range(BASE + inp["ext"] * h.mb, BASE + (inp["ext"] + inp["beats"]) * h.mb)
    rd = h.ram.read_if
    orig = rd._read

    async def failing(address, length):
        if address in bad:
            raise ValueError("injected bus error")
        return await orig(address, length)

    rd._read = failing
    h.load_inputs(0)
    await h.start()
    st = await h.wait_irq()
    assert st["error"] and not st["done"] and st["code"] == ERR_CODES["read"] and st["resp"] == 2, st
    assert int(dut.u_master.idle_o.value) == 1
    rd._read = orig
    await h.run_exact(0)


@cocotb.test()
async def test_abort_mid_run_then_next_run_is_exact(dut):
    """CTRL.ABORT in the middle of a run: ERROR code 4; the next START is exact."""
    from tony.board.bringup import ERR_CODES

    h = _host(dut)
    await reset(dut.clk_i, dut.rst_ni)
    await h.configure()
    h.load_inputs(0)
    await h.start()
    await ClockCycles(dut.clk_i, 300)
    await h.wr("CTRL", 2)
    st = await h.wait_irq()
    assert st["error"] and st["code"] == ERR_CODES["abort"], st
    await h.run_exact(0)


@cocotb.test()
async def test_reset_mid_run_recovers(dut):
    """rst_ni in the middle of a run (bursts in flight): after reprogramming the registers the
    next run is exact, with the same cycle count as an undisturbed run."""
    h = _host(dut)
    await reset(dut.clk_i, dut.rst_ni)
    await h.configure()
    clean = await h.run_exact(0)
    h.load_inputs(0)
    await h.start()
    await ClockCycles(dut.clk_i, 200)
    await FallingEdge(dut.clk_i)
    await reset(dut.clk_i, dut.rst_ni)
    assert await h.rd("STATUS") == 0
    await h.configure()
    again = await h.run_exact(0)
    if float(os.environ.get("TONY_AXI_STALL", "0")) == 0:
        assert again["cycles"] == clean["cycles"]


@cocotb.test()
async def test_illegal_instruction_stops_then_next_run_is_exact(dut):
    """An unknown opcode in the middle of the program: STATUS.ERROR code 3 with ERR_INFO = its PC,
    the bus is idle; with the program restored, the next START runs bit-exactly without a reset."""
    from tony.accel import isa
    from tony.board.bringup import ERR_CODES

    h = _host(dut)
    rng = random.Random(random.getrandbits(32))  # cocotb seeds `random` with the logged seed
    await reset(dut.clk_i, dut.rst_ni)
    await h.configure()
    per = isa.INSTR_BITS // h.mem_bits
    n = h.m["program"]["length"]
    k = rng.randint(n // 3, n - 2)
    at = h.m["program"]["addr"] + k * per
    good = h.ram.read(BASE + at * h.mb, per * h.mb)
    bad = isa.to_words([rng.randint(isa.EWISE + 1, 15)], h.mem_bits)
    h.ram.write(BASE + at * h.mb, b"".join(int(b).to_bytes(h.mb, "little") for b in bad))
    h.load_inputs(0)
    await h.start()
    st = await h.wait_irq()
    assert st["error"] and not st["done"] and st["code"] == ERR_CODES["illegal"], st
    # ERR_INFO is the index in the instruction memory: in the page that holds instruction k
    words = [sum(int(b) << (j * h.mem_bits) for j, b in enumerate(h.image[h.m["program"]["addr"] + i * per:][:per]))
             for i in range(k)]
    page0 = max([0] + [i + 1 for i, w in enumerate(words)
                       if isa.decode(w)["op"] == isa.LOAD and isa.decode(w)["buf"] == isa.B_IMEM])
    assert await h.rd("ERR_INFO") == k - page0, (await h.rd("ERR_INFO"), k, page0)
    assert int(dut.u_master.idle_o.value) == 1
    dut._log.info("illegal instruction at PC %d: ERROR code %d, ERR_INFO %d", k, st["code"], k - page0)
    h.ram.write(BASE + at * h.mb, good)
    await h.run_exact(0)
