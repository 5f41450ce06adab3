"""Unit testbench of tony_act_buf, the activation buffer (N_RD read ports, a write port per bank
shared by the post-processing unit and the DMA engine: one bank, or two with SPLIT > 0).

Every cycle, random reads on random ports and random PPU and DMA writes, with many collisions
(both writers in one cycle, reads of the word being written, several ports on one word) within
a small address window, plus address bits above the buffer's size. Against a Python model:
rd_data_o of a port that read in cycle t is the word before that cycle's write and holds until
the port's next read; when both write the same bank, the PPU's write lands, the DMA's does not,
conflict_o is high and dma_wready_o low (dma_wready_o = no PPU write into the DMA's bank); when
they write different banks both land. `test_act_buf` is the pytest entry.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, Timer

from tony.sim.benches.common import log_seed, run_unit_bench, start_clock, unpack

CYCLES = 3000


class TB:
    def __init__(self, dut, rng):
        self.dut = dut
        self.rng = rng
        self.bits = int(dut.WORD_BITS.value)
        self.words = int(dut.WORDS.value)
        self.n_rd = int(dut.N_RD.value)
        self.aw = int(dut.AW.value)
        split = int(dut.SPLIT.value)
        self.split = split if 0 < split < self.words else 0
        self.used = max(1, (self.words - 1).bit_length())
        self.mem: dict[int, int] = {}
        self.port: list[int | None] = [None] * self.n_rd  # what each port's rd_data_o must show
        self.window = rng.sample(range(self.words), min(self.words, 6))
        if self.split:   # words on both sides of the banks' border
            self.window += [self.split - 1, self.split] + rng.sample(range(self.split), 1) + \
                rng.sample(range(self.split, self.words), 1)
        self.stats = {"reads": 0, "ppu": 0, "dma": 0, "conflicts": 0, "both": 0}
        start_clock(dut.clk_i)

    def bank(self, w: int) -> int:
        return int(bool(self.split) and w >= self.split)

    def addr(self) -> tuple[int, int]:
        """(word index, address on the port with random bits above the index)."""
        rng = self.rng
        w = rng.choice(self.window) if rng.random() < 0.8 else rng.randrange(self.words)
        high = rng.getrandbits(self.aw - self.used) << self.used if self.aw > self.used else 0
        return w, w | high

    def idle(self) -> None:
        d = self.dut
        d.rd_en_i.value = 0
        d.rd_addr_i.value = 0
        d.ppu_we_i.value = 0
        d.dma_we_i.value = 0
        d.ppu_addr_i.value = 0
        d.dma_addr_i.value = 0
        d.ppu_data_i.value = 0
        d.dma_data_i.value = 0

    async def cycle(self, n: int) -> None:
        rng, d = self.rng, self.dut
        en, addrs, words = 0, 0, []
        for p in range(self.n_rd):
            w, a = self.addr()
            words.append(w)
            if rng.random() < 0.5:
                en |= 1 << p
            addrs |= a << (p * self.aw)
        ppu_we, dma_we = rng.random() < 0.4, rng.random() < 0.4
        (pw, pa), (dw, da) = self.addr(), self.addr()
        pdata, ddata = rng.getrandbits(self.bits), rng.getrandbits(self.bits)
        d.rd_en_i.value = en
        d.rd_addr_i.value = addrs
        d.ppu_we_i.value = int(ppu_we)
        d.ppu_addr_i.value = pa
        d.ppu_data_i.value = pdata
        d.dma_we_i.value = int(dma_we)
        d.dma_addr_i.value = da
        d.dma_data_i.value = ddata
        same = self.bank(pw) == self.bank(dw)
        await Timer(1, unit="ns")
        assert int(d.dma_wready_o.value) == int(not (ppu_we and same)), f"cycle {n}: dma_wready_o"
        assert int(d.conflict_o.value) == int(ppu_we and dma_we and same), f"cycle {n}: conflict_o"
        # the model's edge: reads see the old words, then the arbitrated write
        for p in range(self.n_rd):
            if en >> p & 1:
                self.port[p] = self.mem.get(words[p])
                self.stats["reads"] += 1
        if ppu_we:
            self.mem[pw] = pdata
            self.stats["ppu"] += 1
            self.stats["conflicts"] += int(dma_we and same)
        if dma_we and not (ppu_we and same):
            self.mem[dw] = ddata
            self.stats["dma"] += 1
            self.stats["both"] += int(ppu_we)
        await FallingEdge(d.clk_i)
        got = unpack(int(d.rd_data_o.value), self.n_rd, self.bits, is_signed=False)  # Verilator: 2-state
        for p, want in enumerate(self.port):
            if want is not None:  # None: never read, or read a word never written
                assert got[p] == want, f"cycle {n}: port {p} = {got[p]:#x}, expected {want:#x}"


@cocotb.test()
async def test_act_buf_matches_model(dut):
    rng = log_seed(dut)
    tb = TB(dut, rng)
    tb.idle()
    await FallingEdge(dut.clk_i)
    for n in range(CYCLES):
        await tb.cycle(n)
    dut._log.info("%d cycles: %s", CYCLES, tb.stats)
    assert tb.stats["conflicts"] > 0
    assert tb.stats["both"] > 0 or not tb.split   # both writers in one cycle, into different banks


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [
        {"WORD_BITS": 32, "WORDS": 1024, "N_RD": 7, "AW": 20},
        {"WORD_BITS": 24, "WORDS": 16, "N_RD": 4, "AW": 20},
        {"WORD_BITS": 96, "WORDS": 1000, "N_RD": 11, "AW": 10},
        {"WORD_BITS": 8, "WORDS": 2, "N_RD": 1, "AW": 3},
        {"WORD_BITS": 32, "WORDS": 1024, "N_RD": 5, "AW": 20, "SPLIT": 600},
        {"WORD_BITS": 24, "WORDS": 40, "N_RD": 3, "AW": 8, "SPLIT": 9},
    ], ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_act_buf(params, tmp_path):
        run_unit_bench(__name__, "tony_act_buf", tmp_path, parameters=params)
