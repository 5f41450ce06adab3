"""Unit testbench of tony_vec_unit's table lookup (EWISE with the table flag, docs/isa.md 'Tables').

The bench writes COLS random tables of 2^A_BITS entries into the table memory through its write
port (as LOAD tab does: word e holds every lane's entry e), then runs EWISE lookups over a
random activation region served by a Python model of the activation buffer's registered read
ports. Every lane of every result (pp_acc_o, with pp_waddr_o) must equal the reference's
`tony.ref.nonlinear.lookup` of that lane's value in that lane's table, sign-extended to ACC_BITS
when the entries are signed. The region's first words hold the extremes (-128, 127, 0, -1 for a
signed input; 0, 255, 1, 254 unsigned, at A_BITS = 8) in every lane; the rest is uniform. Four
runs: signed and unsigned inputs, signed and unsigned entries, each of WORDS words (COLS lanes
each, >= 1000 lookups per run). The last run reloads the tables first, so a rewritten table
memory is read. `test_vec_table` is the pytest entry.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge

from tony.ref.nonlinear import Lut, lookup
from tony.sim.benches.common import log_seed, reset, run_unit_bench
from tony.sim.benches.vec import PARAMS, VecBench, ewise_walk, param_id

WORDS = 260          # words per run: 260 x COLS lanes (>= 1,040 lookups at COLS = 4)
TIMEOUT = 4000       # cycles a run may take


class TB(VecBench):
    def __init__(self, dut, rng):
        super().__init__(dut, rng)
        self.n = 1 << self.a_bits

    async def load_tables(self, tables: list[list[int]]) -> None:
        """Write entry e of every lane's table as word e (the DMA engine's LOAD tab)."""
        d, mask = self.dut, (1 << self.a_bits) - 1
        for e in range(self.n):
            d.tab_we_i.value = 1
            d.tab_waddr_i.value = e
            d.tab_wdata_i.value = sum((tables[lane][e] & mask) << (lane * self.a_bits) for lane in range(self.cols))
            await FallingEdge(d.clk_i)
        d.tab_we_i.value = 0

    def lanes(self, signed: bool) -> list[list[int]]:
        """WORDS words of COLS lane values: the extremes first, then uniform."""
        lo = -(self.n // 2) if signed else 0
        hi = lo + self.n - 1
        special = [lo, hi, 0, -1] if signed else [lo, hi, 1, hi - 1]
        words = [[v] * self.cols for v in special]
        words += [[self.rng.randint(lo, hi) for _ in range(self.cols)] for _ in range(WORDS - len(words))]
        return words

    async def run(self, signed_in: bool, signed_out: bool, tables: list[list[int]]) -> int:
        """One EWISE lookup over WORDS words at a random base; returns the lookups checked."""
        d, rng, mask = self.dut, self.rng, (1 << self.a_bits) - 1
        base, obase = rng.randrange(0, 1 << 12), rng.randrange(0, 1 << 12)
        words = self.lanes(signed_in)
        self.store(base, words)
        lo_in = -(self.n // 2) if signed_in else 0
        luts = [Lut(lo=lo_in, table=tuple(t)) for t in tables]
        want = [[int(lookup(w[lane], luts[lane])) for lane in range(self.cols)] for w in words]
        self.set_fields(ewise_walk(base, obase, WORDS))
        d.table_i.value, d.a_signed_i.value, d.b_signed_i.value = 1, int(signed_in), int(signed_out)
        d.mult_i.value, d.shift_i.value = 1, 0

        def check(k: int, y: list[int]) -> None:
            exp = [v if signed_out else v & mask for v in want[k]]
            assert y == exp, (f"word {k} (lanes {words[k]}, input {'signed' if signed_in else 'unsigned'}, "
                              f"entries {'signed' if signed_out else 'unsigned'}): {y}, expected {exp}")

        await self.execute(obase, WORDS, check, TIMEOUT)
        return WORDS * self.cols


def _tables(rng, n: int, cols: int, signed_out: bool, a_bits: int) -> list[list[int]]:
    lo = -(1 << (a_bits - 1)) if signed_out else 0
    return [[rng.randint(lo, lo + (1 << a_bits) - 1) for _ in range(n)] for _ in range(cols)]


@cocotb.test()
async def test_table_lookups_match_reference(dut):
    rng = log_seed(dut)
    tb = TB(dut, rng)
    tb.idle()
    await reset(dut.clk_i, dut.rst_ni)
    checked = 0
    for signed_in, signed_out in ((True, True), (False, False), (True, False), (False, True)):
        tables = _tables(rng, tb.n, tb.cols, signed_out, tb.a_bits)
        await tb.load_tables(tables)
        checked += await tb.run(signed_in, signed_out, tables)
    dut._log.info("%d lookups checked", checked)
    assert checked >= 4 * 1000


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", PARAMS, ids=param_id)
    def test_vec_table(params, tmp_path):
        run_unit_bench(__name__, "tony_vec_unit", tmp_path, parameters=params)
