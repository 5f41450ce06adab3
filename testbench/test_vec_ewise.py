"""Unit testbench of tony_vec_unit's EWISE (docs/isa.md, 'EWISE'): shifts, the B operand and merges.

Each run is one EWISE over WORDS words at random A and B regions, served by a Python model of the
activation buffer's registered read ports, with random fields: sa and sb anywhere in their 6 bits
(0 to 63: the multiples of 8, the shifts that move every bit out of ACC_BITS, and those between),
A and B signed or not, with or without B, and with the merge flag a random rotation and first
A lane. Every lane of every result (pp_acc_o, at pp_waddr_o) must equal the instruction's
definition computed here, modulo 2^ACC_BITS (the unit's result width):

    plain:  (A[l] << sa) + (B[l] << sb)          (B[l] = 0 without B)
    merge:  A[(l - rot) mod COLS] << sa  for l >= mlo,  B[l] << sb  for l < mlo

The runs' first words hold each input type's extremes in every lane. `test_vec_ewise` is the
pytest entry (two parameter sets: ACC_BITS 32, and 24, whose byte shifts do not fill a power of 2).
"""
from __future__ import annotations

import cocotb

from tony.sim.benches.common import log_seed, reset, run_unit_bench
from tony.sim.benches.vec import PARAMS, VecBench, ewise_walk, param_id

WORDS = 40           # words per run
RUNS = 24            # instructions per test
TIMEOUT = 1000       # cycles a run may take


class TB(VecBench):
    def region(self, signed: bool) -> list[list[int]]:
        """WORDS words of COLS lane values: the type's extremes first, then uniform."""
        n = 1 << self.a_bits
        lo = -(n // 2) if signed else 0
        hi = lo + n - 1
        words = [[v] * self.cols for v in (lo, hi, 0, -1 if signed else 1)]
        return words + [[self.rng.randint(lo, hi) for _ in range(self.cols)] for _ in range(WORDS - len(words))]

    def want(self, a: list[int], b: list[int], f: dict) -> list[int]:
        """The instruction's result for one word, modulo 2^ACC_BITS, as a signed value."""
        cols, m = self.cols, 1 << self.acc_bits
        bv = [(v << f["sb"]) if f["has_b"] else 0 for v in b]
        if f["merge"]:
            y = [bv[lane] if lane < f["mlo"] else a[(lane - f["rot"]) % cols] << f["sa"] for lane in range(cols)]
        else:
            y = [(a[lane] << f["sa"]) + bv[lane] for lane in range(cols)]
        return [((v % m) ^ (m >> 1)) - (m >> 1) for v in y]

    async def run(self, f: dict) -> int:
        """One EWISE with fields `f` over WORDS words; returns the lanes checked."""
        d, rng = self.dut, self.rng
        base, boff, obase = rng.randrange(0, 1 << 12), rng.randrange(WORDS, 1 << 12), rng.randrange(0, 1 << 12)
        a_words, b_words = self.region(f["a_signed"]), self.region(f["b_signed"])
        self.store(base, a_words)
        self.store(base + boff, b_words)
        self.set_fields(dict(ewise_walk(base, obase, WORDS), boff=boff, sa=f["sa"], sb=f["sb"], rot=f["rot"],
                             mlo=f["mlo"]))
        d.a_signed_i.value, d.b_signed_i.value = int(f["a_signed"]), int(f["b_signed"])
        d.has_b_i.value, d.merge_i.value = int(f["has_b"]), int(f["merge"])
        d.mult_i.value, d.shift_i.value = 1, 0

        def check(k: int, y: list[int]) -> None:
            exp = self.want(a_words[k], b_words[k], f)
            assert y == exp, f"word {k} of EWISE {f} (A {a_words[k]}, B {b_words[k]}): {y}, expected {exp}"

        await self.execute(obase, WORDS, check, TIMEOUT)
        return WORDS * self.cols


def fields(rng, cols: int, acc_bits: int, i: int) -> dict:
    """Run i's fields: the first runs take the shifts at the edges (0, 7, 8, the last that keeps a
    bit, the first that keeps none, 63), the rest are uniform; every fourth run merges."""
    edges = [0, 7, 8, acc_bits - 1, acc_bits, 63]
    pick = (lambda: rng.choice(edges)) if i < 12 else (lambda: rng.randrange(64))
    merge = i % 4 == 3
    return dict(sa=pick(), sb=pick(), a_signed=rng.random() < 0.5, b_signed=rng.random() < 0.5,
                has_b=rng.random() < 0.75, merge=merge, rot=rng.randrange(cols) if merge else 0,
                mlo=rng.randrange(cols + 1) if merge else 0)


@cocotb.test()
async def test_ewise_matches_definition(dut):
    rng = log_seed(dut)
    tb = TB(dut, rng)
    tb.idle()
    await reset(dut.clk_i, dut.rst_ni)
    checked = 0
    for i in range(RUNS):
        checked += await tb.run(fields(rng, tb.cols, tb.acc_bits, i))
    dut._log.info("%d lanes checked", checked)
    assert checked == RUNS * WORDS * tb.cols


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", PARAMS, ids=param_id)
    def test_vec_ewise(params, tmp_path):
        run_unit_bench(__name__, "tony_vec_unit", tmp_path, parameters=params)
