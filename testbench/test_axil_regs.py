"""Unit testbench of tony_axil_regs (AXI4-Lite registers and the run state machine).

cocotbext-axi's AxiLiteMaster is the host (with and without idle/back-pressure on every
AXI4-Lite channel); a small core model stands in for tony_accel and the bus bridge: it counts
cycles after start_o, raises done_i after a chosen number of cycles, and holds bus_idle_i low
for a while after that (writes still in flight). Register offsets come from
tony.board.bringup.REGISTERS, the table docs/registers.md and the C header are made from.
`test_axil_regs` at the bottom is the pytest entry.
"""
from __future__ import annotations


import cocotb
from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiLiteBus, AxiLiteMaster

from tony.sim.benches.common import run_unit_bench, log_seed, make_pause, reset, start_clock


def regs():
    from tony.board.bringup import REGISTERS

    return {r.name: r.offset for r in REGISTERS}


class CoreModel:
    """Plays tony_accel (start_o -> done_i after `run_cycles`, cycles_i counting) and the bridge
    (bus_idle_i low for `drain_cycles` after done or after an abort)."""

    def __init__(self, dut):
        self.dut = dut
        self.run_cycles = 50
        self.drain_cycles = 10
        self.starts = 0
        self.resets = 0
        dut.done_i.value = 0
        dut.cycles_i.value = 0
        dut.pc_i.value = 0
        dut.illegal_i.value = 0
        dut.bus_idle_i.value = 1
        dut.rd_err_i.value = 0
        dut.wr_err_i.value = 0
        dut.err_resp_i.value = 0
        cocotb.start_soon(self._run())

    async def _run(self):
        d = self.dut
        running, count, drain = False, 0, 0
        while True:
            await RisingEdge(d.clk_i)
            await ReadOnly()
            start, core_rst = int(d.start_o.value), int(d.core_rst_o.value)
            await FallingEdge(d.clk_i)
            if core_rst:
                if running:
                    self.resets += 1
                    drain = self.drain_cycles
                else:
                    drain = max(drain - 1, 0)
                running, count = False, 0
                d.done_i.value = 0
                d.cycles_i.value = 0
            elif start:
                self.starts += 1
                running, count = True, 0
                d.done_i.value = 0
            elif running:
                count += 1
                d.cycles_i.value = count
                if count == self.run_cycles:
                    running = False
                    d.done_i.value = 1
                    drain = self.drain_cycles
            else:
                drain = max(drain - 1, 0)
            if running:
                d.pc_i.value = count // 3
            d.bus_idle_i.value = int(drain == 0 and not running)


class TB:
    def __init__(self, dut):
        self.dut = dut
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self.core = CoreModel(dut)
        self.axil = AxiLiteMaster(AxiLiteBus.from_prefix(dut, "s_axil"), dut.clk_i, dut.rst_ni,
                                  reset_active_level=False)
        self.r = regs()

    def set_idle(self, kind: str, rng) -> None:
        w, r = self.axil.write_if, self.axil.read_if
        for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel):
            ch.set_pause_generator(make_pause(kind, rng) if kind != "none" else None)

    async def reset(self):
        await reset(self.dut.clk_i, self.dut.rst_ni)

    async def rd(self, name: str) -> int:
        return await self.axil.read_dword(self.r[name])

    async def wr(self, name: str, value: int) -> None:
        await self.axil.write_dword(self.r[name], value)

    async def status(self) -> dict:
        from tony.board.bringup import decode_status

        return decode_status(await self.rd("STATUS"))

    async def wait_idle(self, limit: int = 2000) -> dict:
        for _ in range(limit):
            s = await self.status()
            if not s["busy"]:
                return s
        raise AssertionError("run did not end")


@cocotb.test()
@cocotb.parametrize(idle=["none", "random"])
async def test_identity_and_configuration(dut, idle: str):
    """ID, VERSION and the configuration registers report the build's parameters."""
    from tony.board.bringup import REG_ID, REG_VERSION

    tb = TB(dut)
    tb.set_idle(idle, log_seed(dut))
    await tb.reset()
    assert await tb.rd("ID") == REG_ID
    assert await tb.rd("VERSION") == REG_VERSION
    p = {k: int(getattr(dut, k).value) for k in ("ROWS", "COLS", "A_BITS", "W_BITS", "ACC_BITS", "MEM_BITS",
                                                    "ROUND_MODE", "PER_CHANNEL", "AXI_DATA_BITS", "AXI_ADDR_BITS", "MAX_BURST",
                                                    "IMEM_WORDS", "ABUF_WORDS", "WBUF_WORDS", "BBUF_WORDS", "BUILD_ID")}
    a = await tb.rd("CFG_ARRAY")
    assert (a & 0xFF, a >> 8 & 0xFF, a >> 16 & 0xFF, a >> 24) == (p["ROWS"], p["COLS"], p["A_BITS"], p["W_BITS"])
    m = await tb.rd("CFG_MEM")
    assert (m & 0xFF, m >> 8 & 0xFF, m >> 16) == (p["ACC_BITS"], p["ROUND_MODE"], p["MEM_BITS"])
    x = await tb.rd("CFG_AXI")
    assert (x & 0xFFFF, x >> 16 & 0x7F, (x >> 23) + 1) == (p["AXI_DATA_BITS"], p["AXI_ADDR_BITS"], p["MAX_BURST"])
    for name in ("IMEM_WORDS", "ABUF_WORDS", "WBUF_WORDS", "BBUF_WORDS", "BUILD_ID"):
        assert await tb.rd(name) == p[name], name
    assert await tb.rd("CFG_PPU") == p["PER_CHANNEL"]


@cocotb.test()
@cocotb.parametrize(idle=["none", "random"])
async def test_read_write_registers(dut, idle: str):
    """Writable registers read back what was written, byte strobes respected; unmapped reads 0."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.set_idle(idle, rng)
    await tb.reset()
    for name, mask in (("PROG_ADDR", 0xFFFFFFFF), ("PROG_LEN", 0xFFFF), ("BASE_LO", 0xFFFFFFFF),
                       ("BASE_HI", 0xFFFFFFFF), ("IER", 0x3)):
        v = rng.getrandbits(32)
        await tb.wr(name, v)
        assert await tb.rd(name) == v & mask, name
    await tb.wr("BASE_LO", 0x11223344)
    await tb.axil.write(tb.r["BASE_LO"] + 1, b"\xAA")  # one byte lane
    assert await tb.rd("BASE_LO") == 0x1122AA44
    assert await tb.axil.read_dword(0xFC) == 0
    assert await tb.rd("CTRL") == 0


@cocotb.test()
@cocotb.parametrize(idle=["none", "random"])
async def test_run_done_waits_for_bus_and_raises_interrupt(dut, idle: str):
    """START pulses start_o once; DONE only after done_i and an idle bus; ISR/irq W1C."""
    tb = TB(dut)
    tb.set_idle(idle, log_seed(dut))
    await tb.reset()
    tb.core.run_cycles, tb.core.drain_cycles = 60, 40
    await tb.wr("PROG_LEN", 7)
    await tb.wr("IER", 1)
    await tb.wr("CTRL", 1)
    s = await tb.status()
    assert s["busy"] and not s["done"]
    await tb.wr("CTRL", 1)  # ignored while running
    seen_done_busy = False
    while True:
        s = await tb.status()
        if int(dut.done_i.value) and s["busy"]:
            seen_done_busy = True
        if not s["busy"]:
            break
    assert seen_done_busy, "STATUS left BUSY before the bus drained"
    assert s["done"] and not s["error"]
    assert tb.core.starts == 1
    assert await tb.rd("CYCLES") == tb.core.run_cycles
    assert await tb.rd("ISR") == 1 and int(dut.irq_o.value) == 1
    await tb.wr("ISR", 1)
    assert await tb.rd("ISR") == 0
    await RisingEdge(dut.clk_i)
    assert int(dut.irq_o.value) == 0
    # a second run without reset
    tb.core.run_cycles = 30
    await tb.wr("CTRL", 1)
    s = await tb.wait_idle()
    assert s["done"] and tb.core.starts == 2 and await tb.rd("CYCLES") == 30


@cocotb.test()
@cocotb.parametrize(cause=["read", "write", "illegal", "abort"], idle=["none", "random"])
async def test_error_drains_and_reports(dut, cause: str, idle: str):
    """A bus error, an illegal instruction or CTRL.ABORT holds the core in reset until the bus
    is idle, then reports ERROR with its code (and the bus response); a new run then works."""
    from tony.board.bringup import ERR_CODES

    tb = TB(dut)
    tb.set_idle(idle, log_seed(dut))
    await tb.reset()
    tb.core.run_cycles, tb.core.drain_cycles = 400, 25
    await tb.wr("PROG_LEN", 3)
    await tb.wr("IER", 2)
    await tb.wr("CTRL", 1)
    await ClockCycles(dut.clk_i, 20)
    await FallingEdge(dut.clk_i)
    if cause == "abort":
        await tb.wr("CTRL", 2)
    else:
        sig = {"read": dut.rd_err_i, "write": dut.wr_err_i, "illegal": dut.illegal_i}[cause]
        sig.value = 1
        dut.err_resp_i.value = 3 if cause != "illegal" else 0
        await FallingEdge(dut.clk_i)
        sig.value = 0
        dut.err_resp_i.value = 0
    cycles = 0
    while not int(dut.core_rst_o.value):
        await FallingEdge(dut.clk_i)
        cycles += 1
        assert cycles < 200
    s = await tb.wait_idle()
    assert s["error"] and not s["done"], s
    assert s["code"] == ERR_CODES[cause], s
    assert s["resp"] == (3 if cause in ("read", "write") else 0)
    assert await tb.rd("ISR") == 2 and int(dut.irq_o.value) == 1
    assert int(dut.core_rst_o.value) == 0
    tb.core.run_cycles = 20
    await tb.wr("ISR", 3)
    await tb.wr("CTRL", 1)
    s = await tb.wait_idle()
    assert s["done"] and not s["error"] and s["code"] == 0


@cocotb.test()
async def test_bad_program_length_does_not_start(dut):
    """PROG_LEN 0 or above IMEM_WORDS: ERROR with code BAD_LEN, start_o never pulses."""
    from tony.board.bringup import ERR_CODES

    tb = TB(dut)
    await tb.reset()
    for n in (0, int(dut.IMEM_WORDS.value) + 1):
        await tb.wr("PROG_LEN", n)
        await tb.wr("CTRL", 1)
        s = await tb.status()
        assert s["error"] and not s["busy"] and s["code"] == ERR_CODES["bad_len"], s
    assert tb.core.starts == 0


# ---------------------------------------------------------------------------------------
# pytest entry

try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize(
        "params",
        [{}, {"ADDR_BITS": 8, "ROWS": 16, "COLS": 8, "MEM_BITS": 32, "IMEM_WORDS": 40, "BUILD_ID": 0x12345678,
              "MAX_BURST": 256, "AXI_DATA_BITS": 128, "AXI_ADDR_BITS": 40, "PER_CHANNEL": 2}],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()) or "defaults",
    )
    def test_axil_regs(params, tmp_path):
        run_unit_bench(__name__, "tony_axil_regs", tmp_path, parameters=params)
