"""Unit testbench of tony_dma, the DMA engine (LOAD, STORE and the program boot over the
valid/ready memory port).

A Python model of external memory answers read requests in order L cycles after they are accepted
(L random per transfer, 1 to 3) and of the activation buffer answers the STORE's reads the cycle
after. Random transfers (the boot, then LOADs into each buffer and STOREs of random lengths and
addresses) run back to back. Every buffer write must be the word the model assembles from the
external beats (ceil(word bits / MEM_BITS) beats per word, low beat first, cut to the buffer's
word), at the next address of that transfer; every STORE beat the word's beat at the next external
address; mem_req_len_o the beats not yet requested. With back-pressure and response gaps
("random") only the data is checked; without ("none") busy_o must also fall exactly when
docs/isa.md ('Timing') says: a LOAD of n beats dispatched in cycle g (go_i high) is busy until
g + n + L, a STORE until g + n + 1, the boot of b beats until b + L. `test_dma` is the pytest
entry.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, Timer

from tony.sim.benches.common import log_seed, reset, run_unit_bench, start_clock

B_ACT, B_WGT, B_BIAS, B_IMEM = 0, 1, 2, 3
INSTR_BITS = 512
TRANSFERS = 40


class TB:
    def __init__(self, dut, rng, pause: str):
        self.dut, self.rng, self.pause = dut, rng, pause
        self.mem_bits = int(dut.MEM_BITS.value)
        self.bits = {B_ACT: int(dut.ACT_BITS.value), B_WGT: int(dut.WGT_BITS.value),
                     B_BIAS: int(dut.BIAS_BITS.value), B_IMEM: INSTR_BITS}
        self.latency = 1
        self.ext: dict[int, int] = {}       # external memory, one beat per address
        self.act: dict[int, int] = {}       # the activation buffer as the STORE reads it
        self.cycle = 0
        self.pending: list[tuple[int, int]] = []   # accepted reads: (address, cycle answerable)
        self.rd_word = 0                    # rd_data_i: the word read at the last rd_o
        self.writes: list[tuple[int, int, int]] = []   # (buffer, address, data) in order
        self.stores: list[tuple[int, int]] = []        # (external address, beat)
        self.busy: list[int] = []           # busy_o per cycle
        self.stats = {"loads": 0, "stores": 0, "beats": 0, "resp_gaps": 0, "req_stalls": 0, "latencies": set()}
        start_clock(dut.clk_i)

    def bpw(self, b: int) -> int:
        return -(-self.bits[b] // self.mem_bits)

    def beat(self, addr: int) -> int:
        if addr not in self.ext:
            self.ext[addr] = self.rng.getrandbits(self.mem_bits)
        return self.ext[addr]

    def act_word(self, addr: int) -> int:
        if addr not in self.act:
            self.act[addr] = self.rng.getrandbits(self.bits[B_ACT])
        return self.act[addr]

    def idle(self) -> None:
        d = self.dut
        for name in ("boot_i", "go_i", "store_i", "buf_i", "baddr_i", "eaddr_i", "nwords_i", "prog_addr_i",
                     "prog_len_i", "mem_req_ready_i", "mem_resp_valid_i", "mem_resp_rdata_i", "rd_data_i"):
            getattr(d, name).value = 0

    async def step(self) -> None:
        """One clock cycle: drive the memory and buffer models' inputs, check the outputs that the
        rising edge samples, then advance the models."""
        d, rng, mb = self.dut, self.rng, self.mem_bits
        paused = self.pause == "random"
        ready = not (paused and rng.random() < 0.3)
        resp = bool(self.pending) and self.pending[0][1] <= self.cycle and not (paused and rng.random() < 0.3)
        self.stats["resp_gaps"] += int(bool(self.pending) and self.pending[0][1] <= self.cycle and not resp)
        d.mem_req_ready_i.value = int(ready)
        d.mem_resp_valid_i.value = int(resp)
        d.mem_resp_rdata_i.value = self.beat(self.pending[0][0]) if resp else rng.getrandbits(mb)
        d.rd_data_i.value = self.rd_word
        await Timer(1, unit="ns")
        if resp:
            self.pending.pop(0)
        if int(d.mem_req_valid_o.value):
            if not ready:
                self.stats["req_stalls"] += 1
            else:
                addr = int(d.mem_req_addr_o.value)
                if int(d.mem_req_we_o.value):
                    self.stores.append((addr, int(d.mem_req_wdata_o.value)))
                else:
                    self.pending.append((addr, self.cycle + self.latency))
                    self.req_len.append(int(d.mem_req_len_o.value))
                self.stats["beats"] += 1
        wr = [(b, int(getattr(d, f"wr_{n}_o").value)) for b, n in
              ((B_ACT, "act"), (B_WGT, "wgt"), (B_BIAS, "bias"), (B_IMEM, "imem"))]
        hot = [b for b, v in wr if v]
        assert len(hot) <= 1, f"cycle {self.cycle}: two buffer writes at once {hot}"
        if hot:
            b = hot[0]
            name = {B_ACT: "act", B_WGT: "wgt", B_BIAS: "bias", B_IMEM: "imem"}[b]
            self.writes.append((b, int(d.wr_addr_o.value), int(getattr(d, f"wr_{name}_data_o").value)))
        if int(d.rd_o.value):
            self.rd_word = self.act_word(int(d.rd_addr_o.value))
        self.busy.append(int(d.busy_o.value))
        self.act_load.append(int(d.act_load_o.value))
        await FallingEdge(d.clk_i)
        self.cycle += 1

    async def transfer(self, kind: str, b: int, baddr: int, eaddr: int, nwords: int) -> None:
        d = self.dut
        self.writes, self.stores, self.busy, self.act_load, self.req_len = [], [], [], [], []
        self.latency = self.rng.randint(1, 3)   # no read in flight between transfers
        self.stats["latencies"].add(self.latency)
        store = kind == "store"
        if kind == "boot":
            d.boot_i.value, d.prog_addr_i.value, d.prog_len_i.value = 1, eaddr, nwords
        else:
            d.go_i.value, d.store_i.value = 1, int(store)
            d.buf_i.value, d.baddr_i.value, d.eaddr_i.value, d.nwords_i.value = b, baddr, eaddr, nwords
        await self.step()
        d.boot_i.value, d.go_i.value = 0, 0
        for name in ("store_i", "buf_i", "baddr_i", "eaddr_i", "nwords_i", "prog_addr_i", "prog_len_i"):
            sig = getattr(d, name)
            sig.value = self.rng.getrandbits(len(sig))   # ignored while busy
        while True:
            await self.step()
            if not self.busy[-1]:
                break
            assert len(self.busy) < 5000, f"{kind} never finished"
        self.check(kind, b, baddr, eaddr, nwords)

    def check(self, kind: str, b: int, baddr: int, eaddr: int, nwords: int) -> None:
        k, mb = self.bpw(b), self.mem_bits
        n = nwords * k
        where = f"{kind} buf {b} baddr {baddr} eaddr {eaddr} nwords {nwords} (L={self.latency})"
        assert self.busy[0] == 0 and all(self.busy[1:-1]) and self.busy[-1] == 0, f"{where}: busy_o {self.busy}"
        if kind == "store":
            want = [(eaddr + w * k + i, (self.act_word(baddr + w) >> (i * mb)) & ((1 << mb) - 1))
                    for w in range(nwords) for i in range(k)]
            assert self.stores == want, f"{where}: store beats {self.stores} != {want}"
            assert not self.writes, f"{where}: a STORE wrote a buffer {self.writes}"
            self.stats["stores"] += 1
        else:
            want = []
            for w in range(nwords):
                word = sum(self.beat(eaddr + w * k + i) << (i * mb) for i in range(k))
                want.append((b, baddr + w, word & ((1 << self.bits[b]) - 1)))
            assert self.writes == want, f"{where}: buffer writes {self.writes} != {want}"
            assert not self.stores and not self.pending, f"{where}: stray beats"
            assert self.req_len == list(range(n, 0, -1)), f"{where}: mem_req_len_o {self.req_len}"
            assert all(a == (b == B_ACT) for a in self.act_load[1:-1]), f"{where}: act_load_o {self.act_load}"
            self.stats["loads"] += 1
        if self.pause == "none":
            # busy from the cycle after go_i (cycle 0 here) up to and including the last busy cycle
            last = {"load": n + self.latency, "boot": n + self.latency, "store": n + 1}[kind]
            assert len(self.busy) == last + 2, f"{where}: busy until cycle {len(self.busy) - 2}, expected {last}"


async def run(dut, pause: str) -> None:
    rng = log_seed(dut)
    tb = TB(dut, rng, pause)
    tb.idle()
    await reset(dut.clk_i, dut.rst_ni)
    await tb.transfer("boot", B_IMEM, 0, rng.randrange(1 << 20), rng.randint(1, 3))
    for _ in range(TRANSFERS):
        kind = rng.choice(["load", "load", "store"])
        b = B_ACT if kind == "store" else rng.choice([B_ACT, B_WGT, B_BIAS, B_IMEM])
        await tb.transfer(kind, b, rng.randrange(1 << 12), rng.randrange(1 << 20), rng.randint(1, 5))
    dut._log.info("%s", tb.stats)
    assert tb.stats["loads"] and tb.stats["stores"]
    if pause == "random":
        assert tb.stats["resp_gaps"] and tb.stats["req_stalls"]


@cocotb.test()
async def test_dma_back_to_back(dut):
    await run(dut, "none")


@cocotb.test()
async def test_dma_with_backpressure_and_response_gaps(dut):
    await run(dut, "random")


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [
        {"MEM_BITS": 64, "ACT_BITS": 16, "WGT_BITS": 32, "BIAS_BITS": 64},       # the 2x2 accelerator
        {"MEM_BITS": 64, "ACT_BITS": 24, "WGT_BITS": 120, "BIAS_BITS": 96},      # 5x3: words over two beats
        {"MEM_BITS": 32, "ACT_BITS": 24, "WGT_BITS": 24, "BIAS_BITS": 96},       # 32-bit port, three beats
        {"MEM_BITS": 64, "ACT_BITS": 128, "WGT_BITS": 512, "BIAS_BITS": 512},    # 16x16-like: eight beats
    ], ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_dma(params, tmp_path):
        run_unit_bench(__name__, "tony_dma", tmp_path, parameters=params)
