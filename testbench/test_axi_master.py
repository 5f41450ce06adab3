"""Unit testbench of tony_axi_master (the accelerator's memory port -> AXI4).

A requester model drives the valid/ready memory port with runs of consecutive reads and
writes at random, overlapping beat addresses (some across 4 KiB pages); cocotbext-axi's AxiRam
answers on the AXI side with random idle/back-pressure on every channel (AW, W, B, AR, R).
The expected read data comes from a Python memory updated in port order, so the bench checks
that the bridge keeps the port's order where addresses overlap; at the end the RAM must equal
that memory. A burst monitor checks lengths, 4 KiB boundaries and that writes coalesce.
`test_axi_master` at the bottom is the pytest entry.
"""
from __future__ import annotations

import random

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotbext.axi import AxiBus, AxiRam

from tony.sim.benches.common import run_unit_bench, log_seed, reset, start_clock

PAGE = 4096


def stall_pause(rng: random.Random, p: float):
    while True:
        yield rng.random() < p


class TB:
    """tony_axi_master with clock, reset, an AxiRam on m_axi_* and a memory-port requester."""

    def __init__(self, dut, ram_bytes: int = 1 << 16):
        self.dut = dut
        self.mem_bits = int(dut.MEM_BITS.value)
        self.mb = self.mem_bits // 8
        self.max_burst = int(dut.MAX_BURST.value)
        self.ram_bytes = ram_bytes
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        dut.base_i.value = 0
        dut.mem_req_valid_i.value = 0
        dut.mem_req_addr_i.value = 0
        dut.mem_req_we_i.value = 0
        dut.mem_req_wdata_i.value = 0
        dut.mem_req_len_i.value = 0
        dut.flush_i.value = 0
        self.ram = AxiRam(AxiBus.from_prefix(dut, "m_axi"), dut.clk_i, dut.rst_ni, reset_active_level=False,
                          size=ram_bytes)
        self.responses: list[int] = []
        self.bursts: list[tuple[str, int, int]] = []  # (channel, byte address, beats)
        self.errors = {"rd": 0, "wr": 0}
        self.cycle = 0
        cocotb.start_soon(self._monitor())

    def set_stalls(self, rng: random.Random, p: float) -> None:
        w, r = self.ram.write_if, self.ram.read_if
        for ch in (w.aw_channel, w.w_channel, w.b_channel, r.ar_channel, r.r_channel):
            ch.set_pause_generator(stall_pause(rng, p) if p > 0 else None)

    async def reset(self) -> None:
        await reset(self.dut.clk_i, self.dut.rst_ni)

    async def _monitor(self) -> None:
        d = self.dut
        while True:
            await RisingEdge(d.clk_i)
            await ReadOnly()
            self.cycle += 1
            if int(d.mem_resp_valid_o.value):
                self.responses.append((self.cycle, int(d.mem_resp_rdata_o.value)))
            if int(d.m_axi_awvalid.value) and int(d.m_axi_awready.value):
                self.bursts.append(("aw", int(d.m_axi_awaddr.value), int(d.m_axi_awlen.value) + 1))
            if int(d.m_axi_arvalid.value) and int(d.m_axi_arready.value):
                self.bursts.append(("ar", int(d.m_axi_araddr.value), int(d.m_axi_arlen.value) + 1))
            self.errors["rd"] += int(d.rd_err_o.value)
            self.errors["wr"] += int(d.wr_err_o.value)

    async def run(self, requests, pause=None) -> list[tuple[int, int]]:
        """Drive (we, beat address, data[, announced run length]) requests in order; returns (cycle
        accepted, request) for each, so a test can pair reads with their responses."""
        d = self.dut
        accepted = []
        for req in requests:
            we, addr, data, *run = req
            while True:
                await FallingEdge(d.clk_i)
                if pause is not None and next(pause):
                    d.mem_req_valid_i.value = 0
                    continue
                d.mem_req_valid_i.value = 1
                d.mem_req_we_i.value = we
                d.mem_req_addr_i.value = addr
                d.mem_req_wdata_i.value = data
                d.mem_req_len_i.value = run[0] if run else 0
                await ReadOnly()
                if int(d.mem_req_ready_o.value):
                    accepted.append((self.cycle + 1, req))
                    break
        await FallingEdge(d.clk_i)
        d.mem_req_valid_i.value = 0
        return accepted

    async def drain(self, limit: int = 20000) -> None:
        for _ in range(limit):
            await FallingEdge(self.dut.clk_i)
            if int(self.dut.idle_o.value):
                return
        raise AssertionError("bridge not idle")

    def ram_beat(self, beat: int) -> int:
        return int.from_bytes(self.ram.read(beat * self.mb, self.mb), "little")

    def check_bursts(self) -> None:
        for ch, addr, n in self.bursts:
            assert 1 <= n <= self.max_burst, (ch, addr, n)
            assert addr % self.mb == 0, (ch, addr)
            assert addr // PAGE == (addr + n * self.mb - 1) // PAGE, f"{ch} burst at {addr:#x} x{n} crosses 4 KiB"


def random_requests(rng: random.Random, n_runs: int, beats: int, width: int, announce: float = 0.0):
    """Runs of consecutive reads or writes; a read run is announced (mem_req_len_i) with
    probability `announce`."""
    reqs = []
    for _ in range(n_runs):
        we = rng.random() < 0.5
        ann = not we and rng.random() < announce
        start = rng.randrange(min(200, beats - 64))
        if rng.random() < 0.2:  # just below a 4 KiB page
            start = max(0, (rng.randrange(1, 4) * PAGE) // (width // 8) - rng.randrange(1, 8))
        n = rng.randrange(1, 48)
        for k in range(n):
            reqs.append((int(we), start + k, rng.getrandbits(width) if we else 0) + ((n - k,) if ann else ()))
    return reqs


async def run_and_check(tb: TB, rng: random.Random, reqs, pause=None):
    beats = tb.ram_bytes // tb.mb
    ref = [rng.getrandbits(tb.mem_bits) for _ in range(beats)]
    tb.ram.write(0, b"".join(v.to_bytes(tb.mb, "little") for v in ref))
    expected = []
    for we, addr, data, *_ in reqs:
        if we:
            ref[addr] = data
        else:
            expected.append((addr, ref[addr]))
    accepted = await tb.run(reqs, pause)
    await tb.drain()
    got = [v for _, v in tb.responses]
    assert len(got) == len(expected), (len(got), len(expected))
    for i, ((addr, want), v) in enumerate(zip(expected, got)):
        assert v == want, f"read #{i} of beat {addr}: got {v:#x}, expected {want:#x}"
    for b in range(beats):
        assert tb.ram_beat(b) == ref[b], f"beat {b}: RAM {tb.ram_beat(b):#x}, expected {ref[b]:#x}"
    tb.check_bursts()
    return accepted


@cocotb.test()
@cocotb.parametrize(stall=[0.0, 0.3, 0.7], idle=[False, True])
async def test_random_traffic_matches_port_order(dut, stall: float, idle: bool):
    """Random overlapping read/write runs: reads see every earlier write, RAM ends equal."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.set_stalls(rng, stall)
    await tb.reset()
    reqs = random_requests(rng, 60, tb.ram_bytes // tb.mb, tb.mem_bits, announce=0.5)
    await run_and_check(tb, rng, reqs, stall_pause(rng, 0.3) if idle else None)
    dut._log.info("stall %.1f: %d requests, %d bursts (%d multi-beat)", stall, len(reqs), len(tb.bursts),
                  sum(n > 1 for _, _, n in tb.bursts))


@cocotb.test()
async def test_writes_coalesce_into_full_bursts(dut):
    """A stream of consecutive writes leaves as MAX_BURST-beat bursts (4 KiB pages permitting)."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    n = 4 * tb.max_burst
    await run_and_check(tb, rng, [(1, 64 + k, rng.getrandbits(tb.mem_bits)) for k in range(n)])
    lens = [b for ch, _, b in tb.bursts if ch == "aw"]
    assert sum(lens) == n
    assert max(lens) == min(tb.max_burst, PAGE // tb.mb), lens


@cocotb.test()
async def test_reads_one_per_cycle_fixed_latency(dut):
    """Without stalls a read is accepted every cycle and answered a fixed number of cycles later
    (what the accelerator's cycle model assumes of its memory)."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    reqs = [(0, rng.randrange(2000), 0) for _ in range(100)]
    t0 = tb.cycle
    accepted = await tb.run(reqs)
    await tb.drain()
    assert [c for c, _ in accepted] == list(range(accepted[0][0], accepted[0][0] + len(reqs))), "a read stalled"
    assert accepted[0][0] - t0 <= 2
    lat = {rc - ac for (ac, _), (rc, _) in zip(accepted, tb.responses)}
    assert len(lat) == 1, f"read latencies vary: {sorted(lat)}"
    dut._log.info("read latency %d cycles", lat.pop())


@cocotb.test()
async def test_announced_reads_leave_as_bursts_at_the_same_timing(dut):
    """Announced read runs (mem_req_len_i) leave as MAX_BURST bursts, split at 4 KiB pages, yet
    are accepted every cycle and answered with the same fixed latency as unannounced reads."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    lat = {}
    for ann in (False, True):
        reqs = []
        for start, n in ((64, 4 * tb.max_burst + 3), (PAGE // tb.mb - 5, 2 * tb.max_burst), (900, 1)):
            reqs += [(0, start + k, 0) + ((n - k,) if ann else ()) for k in range(n)]
        tb.bursts.clear()
        tb.responses.clear()
        t0 = tb.cycle
        accepted = await run_and_check(tb, rng, reqs)
        assert [c for c, _ in accepted] == list(range(accepted[0][0], accepted[0][0] + len(reqs))), "a read stalled"
        assert accepted[0][0] - t0 <= 2
        lat[ann] = {rc - ac for (ac, _), (rc, _) in zip(accepted, tb.responses)}
        ars = [n for ch, _, n in tb.bursts if ch == "ar"]
        assert sum(ars) == len(reqs)
        if ann:
            assert max(ars) == min(tb.max_burst, int(dut.MAX_READS.value)), ars
            assert len(ars) <= 2 * (len(reqs) // tb.max_burst) + 4, ars
        dut._log.info("announced %s: %d reads in %d AR bursts, latency %s", ann, len(reqs), len(ars), lat[ann])
    assert len(lat[True]) == 1 and lat[True] == lat[False], lat


@cocotb.test()
async def test_flush_forgets_an_announced_run(dut):
    """The requester announces a long run, makes two reads and is reset (flush_i): the burst's other
    beats still arrive, the bridge goes idle, and the next reads are answered correctly."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    beats = tb.ram_bytes // tb.mb
    ref = [rng.getrandbits(tb.mem_bits) for _ in range(beats)]
    tb.ram.write(0, b"".join(v.to_bytes(tb.mb, "little") for v in ref))
    n = 3 * tb.max_burst
    await tb.run([(0, 100, 0, n), (0, 101, 0, n - 1)])
    tb.dut.flush_i.value = 1
    await FallingEdge(tb.dut.clk_i)
    tb.dut.flush_i.value = 0
    await tb.drain()
    burst = next(b for ch, _, b in tb.bursts if ch == "ar")
    assert [v for _, v in tb.responses] == ref[100:100 + burst]
    tb.responses.clear()
    await tb.run([(0, 300 + k, 0, 5 - k) for k in range(5)] + [(0, 7, 0)])
    await tb.drain()
    assert [v for _, v in tb.responses] == ref[300:305] + [ref[7]]


@cocotb.test()
async def test_read_after_write_waits_for_the_write(dut):
    """A read of a beat just written (B not yet back) returns the new data, under heavy B stalls."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.ram.write_if.b_channel.set_pause_generator(stall_pause(rng, 0.9))
    await tb.reset()
    reqs = []
    for k in range(20):
        a = rng.randrange(100)
        reqs += [(1, a, rng.getrandbits(tb.mem_bits)), (0, a, 0)]
    await run_and_check(tb, rng, reqs)


@cocotb.test()
async def test_error_responses_are_flagged(dut):
    """SLVERR on reads and writes pulses rd_err_o / wr_err_o; the bridge still completes."""
    tb = TB(dut)
    bad = range(0x2000, 0x3000)
    rd, wr = tb.ram.read_if, tb.ram.write_if
    orig_read, orig_write = rd._read, wr._write

    async def read(address, length):
        if address in bad:
            raise ValueError("bad address")
        return await orig_read(address, length)

    async def write(address, data):
        if address in bad:
            raise ValueError("bad address")
        return await orig_write(address, data)

    rd._read, wr._write = read, write
    await tb.reset()
    first = bad.start // tb.mb
    await tb.run([(0, first + k, 0) for k in range(3)] + [(1, first + 8 + k, 5) for k in range(3)]
                 + [(0, 10, 0)])
    await tb.drain()
    assert tb.errors["rd"] == 3, tb.errors
    assert tb.errors["wr"] >= 1, tb.errors
    assert len(tb.responses) == 4


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
        [
            {"MEM_BITS": 64, "AXI_DATA_BITS": 64, "MAX_BURST": 16, "WFIFO_DEPTH": 32},
            {"MEM_BITS": 32, "AXI_DATA_BITS": 128, "MAX_BURST": 4, "WFIFO_DEPTH": 8, "MAX_READS": 8},
        ],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()),
    )
    def test_axi_master(params, tmp_path):
        run_unit_bench(__name__, "tony_axi_master", tmp_path, parameters=params)
