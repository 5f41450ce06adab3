"""Unit testbench of tony_softmax (docs/transformer.md, 'Softmax'; the unit's header).

Rows go in on the valid/ready input stream, each with its own spec (input scale 2^x_exp through
the shift, log2e), and every output element is compared with `tony.ref.nonlinear.softmax`, the
Python reference, on the same row and spec (equal integers, element for element; out_last where
the row ends). Row kinds: uniform over the input range or over a narrow window, a few near the
max, all equal, one maximum and the rest at the input's minimum, several maxima; lengths 1,
MAX_N and in between; specs with x_exp from the shift's 0 to past the product's width, log2e =
LOG2E, LOG2E / sqrt(d) and random below it: 1,000 random rows per build (8,000 in the slow
sweep), plus directed extremes, rows built to hit the output shift's rounding ties, and rows
longer than MAX_N (cut by the unit), blocks of equal rows (what a SOFTMAX instruction sends). Rows
go in back to back, so several are in the unit at once. Without idle cycles the bench checks the
cycle of every row's first element taken and last result out against tony.rtl.softmax.schedule
(and a block of equal rows against block_cycles); with random idle cycles on the input and
back-pressure on the output (short random gaps, or long stalls that fill every row slot) only the
values. `test_softmax` at the bottom is the pytest entry.
"""
from __future__ import annotations

import math
import os
import random
from collections.abc import Iterator

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge

from tony.ref.arith import rounding_shift
from tony.ref.nonlinear import LOG2E, LOG2E_BITS, SoftmaxSpec, softmax
from tony.rtl.softmax import DIV_CYCLES, block_cycles, row_latency, schedule, unit_inputs
from tony.sim.benches.common import (
    log_seed,
    make_pause,
    no_pause,
    reset,
    run_unit_bench,
    start_clock,
)

# rows without idle cycles (cycle counts checked) and with random idle input and output
# back-pressure; TONY_SOFTMAX_ROWS (the slow sweep sets it) scales both
ROWS_PLAIN = int(os.environ.get("TONY_SOFTMAX_ROWS", "1000")) * 3 // 5
ROWS_PAUSED = int(os.environ.get("TONY_SOFTMAX_ROWS", "1000")) * 2 // 5
SWEEP_ROWS = 8000     # the slow parametrizations'


class TB:
    """tony_softmax with clock, reset and a cycle-by-cycle driver of both streams."""

    def __init__(self, dut):
        self.dut = dut
        self.max_n = int(dut.MAX_N.value)
        self.in_bits = int(dut.IN_BITS.value)
        self.out_bits = int(dut.OUT_BITS.value)
        self.frac_bits = int(dut.FRAC_BITS.value)
        self.table_bits = int(dut.TABLE_BITS.value)
        self.shift_bits = int(dut.SHIFT_BITS.value)
        self.in_pause: Iterator[bool] = no_pause()
        self.out_pause: Iterator[bool] = no_pause()
        start_clock(dut.clk_i, impl="gpi")
        dut.rst_ni.value = 1
        dut.in_valid_i.value = 0
        dut.in_data_i.value = 0
        dut.in_last_i.value = 0
        dut.shift_i.value = 0
        dut.log2e_i.value = 0
        dut.out_ready_i.value = 0

    @property
    def in_range(self) -> tuple[int, int]:
        return -(1 << (self.in_bits - 1)), (1 << (self.in_bits - 1)) - 1

    def spec(self, x_exp: int, log2e: int = LOG2E) -> SoftmaxSpec:
        return SoftmaxSpec(x_exp=x_exp, frac_bits=self.frac_bits, table_bits=self.table_bits,
                           out_bits=self.out_bits, log2e=log2e)

    async def reset(self) -> None:
        await reset(self.dut.clk_i, self.dut.rst_ni)

    async def run(self, rows, *, check_cycles: bool) -> None:
        """Send `rows` [(values, spec, pieces)] back to back and check every result; `pieces` is
        how the unit cuts the row (rows of at most MAX_N), each piece's softmax expected in turn.
        With check_cycles (no idle cycles then), every row's first element must be taken and its
        last result leave in exactly the cycles `schedule` gives. Returns the cycles from the
        first element taken to the last result out."""
        d = self.dut
        beats = []     # (value, last, shift, log2e) in input order
        want = []      # (y, last) in output order
        sizes = []     # the unit's rows (the pieces), in order
        starts = set()  # beat indices that start one of them
        for values, spec, pieces in rows:
            shift, log2e = unit_inputs(spec, in_bits=self.in_bits, out_bits=self.out_bits, frac_bits=self.frac_bits,
                                       table_bits=self.table_bits, shift_bits=self.shift_bits)
            for i, v in enumerate(values):
                beats.append((v, i == len(values) - 1, shift, log2e))
            lo = 0
            for n in pieces:
                starts.add(len(beats) - len(values) + lo)
                ys = softmax(np.array(values[lo:lo + n], dtype=np.int64), spec)
                want += [(int(y), i == n - 1) for i, y in enumerate(ys)]
                sizes.append(n)
                lo += n
        mask = (1 << self.in_bits) - 1
        cycle, nin, nout = 0, 0, 0
        firsts, lasts = [], []          # cycles of each row's first element in, last result out
        presenting = False
        budget = sum(row_latency(n) for n in sizes) * 8 + 1000
        while nout < len(want):
            await FallingEdge(d.clk_i)
            assert cycle < budget, f"no progress: {nout} of {len(want)} results after {cycle} cycles"
            # outputs registered at the last rising edge; a result moves if we are ready now
            ready_out = not next(self.out_pause)
            d.out_ready_i.value = int(ready_out)
            if int(d.out_valid_o.value) and ready_out:
                got, last = int(d.out_data_o.value), bool(int(d.out_last_o.value))
                y, y_last = want[nout]
                assert (got, last) == (y, y_last), (
                    f"result {nout}: out_data_o = {got} (last {last}), the reference gives {y} (last {y_last})")
                if last:
                    lasts.append(cycle)
                nout += 1
            # an input element: held until taken, or an idle cycle from the pause pattern
            if not presenting and nin < len(beats) and not next(self.in_pause):
                v, last, shift, log2e = beats[nin]
                d.in_data_i.value = v & mask
                d.in_last_i.value = int(last)
                d.shift_i.value = shift
                d.log2e_i.value = log2e
                d.in_valid_i.value = 1
                presenting = True
            if presenting and int(d.in_ready_o.value):
                if nin in starts:
                    firsts.append(cycle)
                nin += 1
                presenting = False
            elif not presenting:
                d.in_valid_i.value = 0
            cycle += 1
        await FallingEdge(d.clk_i)
        d.in_valid_i.value = 0
        assert nin == len(beats)
        assert len(firsts) == len(lasts) == len(sizes)
        if check_cycles:
            got = [(f - firsts[0], t - firsts[0]) for f, t in zip(firsts, lasts)]
            for k, (g, w) in enumerate(zip(got, schedule(sizes))):
                assert g == w, (
                    f"row {k} of {len(sizes)} (n = {sizes[k]}, previous {sizes[max(0, k - 4):k]}): first element "
                    f"taken and last result out in cycles {g}, schedule gives {w}")
        return lasts[-1] - firsts[0]


# ---- stimulus ------------------------------------------------------------------------------


class Rows:
    """Rows with their specs: (values, spec, pieces) with pieces == [len(values)] unless cut."""

    def __init__(self, tb: TB, rng: random.Random):
        self.tb = tb
        self.rng = rng

    def length(self) -> int:
        rng, m = self.rng, self.tb.max_n
        return rng.choice([1, m, m, 2, rng.randint(1, m), rng.randint(1, m), rng.randint(1, m), rng.randint(1, m)])

    def spec(self) -> SoftmaxSpec:
        """x_exp from s = 0 down to past the product's width; log2e LOG2E, LOG2E / sqrt(d) or random."""
        rng, tb = self.rng, self.tb
        top = LOG2E_BITS - tb.frac_bits                      # s = 0
        choice = rng.random()
        if choice < 0.1:
            x_exp = top
        elif choice < 0.15:
            x_exp = top - (tb.in_bits + 18 + rng.randint(0, 3))   # s past the product's width: u = 0
        else:
            x_exp = rng.randint(top - tb.in_bits - 12, top)
        choice = rng.random()
        if choice < 0.5:
            log2e = LOG2E
        elif choice < 0.8:
            log2e = round(LOG2E / math.sqrt(rng.choice([2, 8, 32, 128])))
        else:
            log2e = rng.choice([1, rng.randint(1, LOG2E)])
        return tb.spec(x_exp, log2e)

    def values(self, n: int) -> list[int]:
        rng = self.rng
        lo, hi = self.tb.in_range
        kind = rng.choice(["uniform", "window", "window", "near_max", "equal", "spike", "maxima"])
        if kind == "uniform":
            return [rng.randint(lo, hi) for _ in range(n)]
        if kind == "window":      # a window of 2^k around a random centre: e spread over the table
            k = rng.randint(0, self.tb.in_bits)
            c = rng.randint(lo, hi)
            return [min(hi, max(lo, c + rng.randint(-(1 << k) // 2, (1 << k) // 2))) for _ in range(n)]
        if kind == "near_max":
            return [hi - rng.randint(0, 3) for _ in range(n)]
        if kind == "equal":
            v = rng.choice([lo, hi, 0, rng.randint(lo, hi)])
            return [v] * n
        if kind == "spike":       # one maximum, the rest at the input's minimum
            row = [lo] * n
            row[rng.randrange(n)] = rng.choice([hi, lo + 1, 0])
            return row
        top = rng.randint(lo, hi)  # several maxima
        return [top if rng.random() < 0.4 else rng.randint(lo, top) for _ in range(n)]

    def row(self):
        n = self.length()
        return self.values(n), self.spec(), [n]

    def tie_rows(self, count: int, tries: int = 4000) -> list:
        """Up to `count` rows in which some e * R lies exactly halfway between two outputs (the
        output shift's tie, where half-even and half-up differ). A tie needs e * R divisible by
        2^(K - OUT_BITS - 1), which random rows almost never are, so the rows are built: with a row
        sum S = 2^(P+j), R = 2^(31-j), and e * R is a tie exactly when e = 2^v * odd for v = P - 1 -
        OUT_BITS + j. A row is the maximum (e = 2^P), one element with such an e, and elements
        whose e (greedily, largest first) make up the rest of 2^(P+j). e(d) for every difference d
        = max - q comes from the spec's table here to choose stimulus only: the expected results
        still come from the reference."""
        tb, rng = self.tb, self.rng
        lo, hi = tb.in_range
        p, ob = tb.table_bits, tb.out_bits
        d = np.arange(0, min(hi - lo, 1 << 16) + 1, dtype=np.int64)
        found = []
        for _ in range(tries):
            spec = self.spec()
            u = rounding_shift(d * spec.log2e, spec.shift)
            e = spec.table[u & ((1 << tb.frac_bits) - 1)] >> np.minimum(u >> tb.frac_bits, p + 1)
            values, first = np.unique(e, return_index=True)       # e values ascending, a d for each
            j = rng.randint(max(1, ob + 1 - p), max(1, ob + 1 - p) + 3)
            v = p - 1 - ob + j
            odd = values[(values > 0) & ((values >> v) & 1 == 1) & (values & ((1 << v) - 1) == 0)] if v >= 0 else []
            if len(odd) == 0 or (1 << j) + 1 > tb.max_n:
                continue
            et = int(rng.choice(list(odd)))
            rest, picks = (1 << (p + j)) - (1 << p) - et, [et]
            while rest > 0 and len(picks) < tb.max_n - 1:
                k = int(np.searchsorted(values, rest, side="right")) - 1   # the largest e <= rest
                if values[k] > 1 and rng.random() < 0.3:                   # now and then the next smaller
                    k = max(1, k - 1)
                if values[k] <= 0:
                    break
                picks.append(int(values[k]))
                rest -= int(values[k])
            if rest != 0:
                continue
            row = [hi] + [hi - int(first[np.searchsorted(values, ev)]) for ev in picks]
            rng.shuffle(row)
            found.append((row, spec, [len(row)]))
            if len(found) >= count:
                break
        return found

@cocotb.test()
async def test_softmax_random_rows(dut):
    """ROWS_PLAIN random rows back to back: every result equals the reference, every row's first
    element is taken and its last result leaves in the cycles `schedule` gives."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    rows = Rows(tb, rng)
    await tb.run([rows.row() for _ in range(ROWS_PLAIN)], check_cycles=True)


@cocotb.test()
async def test_softmax_random_rows_paused(dut):
    """ROWS_PAUSED random rows with random idle input cycles and output back-pressure: the same
    results (the timing changes, nothing else)."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.in_pause = make_pause("random", rng)
    tb.out_pause = make_pause("random", rng)
    await tb.reset()
    rows = Rows(tb, rng)
    await tb.run([rows.row() for _ in range(ROWS_PAUSED)], check_cycles=False)


def stalls(rng: random.Random) -> Iterator[bool]:
    """Back-pressure in long stretches: ready for a few cycles, then held off for up to 200 (long
    enough for every row slot of the unit to fill and the input to wait)."""
    while True:
        for _ in range(rng.randint(1, 40)):
            yield False
        for _ in range(rng.choice([1, 5, rng.randint(1, 200)])):
            yield True


@cocotb.test()
async def test_softmax_random_rows_stalled(dut):
    """ROWS_PAUSED // 2 random rows with long output stalls and random idle input cycles: the
    same results while the unit's rows pile up behind the output."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.in_pause = make_pause("random", rng)
    tb.out_pause = stalls(rng)
    await tb.reset()
    rows = Rows(tb, rng)
    await tb.run([rows.row() for _ in range(ROWS_PAUSED // 2)], check_cycles=False)


@cocotb.test()
async def test_softmax_blocks_of_equal_rows(dut):
    """Blocks of equal rows back to back, as a SOFTMAX instruction sends them: lengths around the
    divider's DIV_CYCLES + 1 (where the row period turns from the divider's to the input's) and
    1, 2 and MAX_N. Each block, sent alone, takes exactly block_cycles(rows, n) from its first
    element to the cycle after its last result."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    rows = Rows(tb, rng)
    m = tb.max_n
    lengths = sorted({n for n in (1, 2, DIV_CYCLES - 1, DIV_CYCLES, DIV_CYCLES + 1, DIV_CYCLES + 2, m // 2, m)
                      if 1 <= n <= m})
    for n in lengths:
        count = rng.randint(2, 9)
        block = [(rows.values(n), rows.spec(), [n]) for _ in range(count)]
        took = await tb.run(block, check_cycles=True)
        assert took + 1 == block_cycles(count, n), (
            f"{count} rows of {n}: {took + 1} cycles, block_cycles gives {block_cycles(count, n)}")
        for _ in range(12):          # let the unit empty before the next block
            await FallingEdge(dut.clk_i)


@cocotb.test()
async def test_softmax_extremes(dut):
    """Directed rows: length 1 and MAX_N, all equal at the rails, one maximum with the rest at the
    minimum (the saturated 2^OUT_BITS - 1), the largest and smallest shift and log2e."""
    tb = TB(dut)
    await tb.reset()
    lo, hi = tb.in_range
    m = tb.max_n
    top = LOG2E_BITS - tb.frac_bits
    rows = []
    for x_exp in (top, top - 4, top - tb.in_bits - 17, top - min(tb.in_bits + 30, 62)):  # the reference's shifts stop at 62
        for log2e in (LOG2E, 1, round(LOG2E / math.sqrt(8)), (LOG2E >> tb.frac_bits) << tb.frac_bits):
            spec = tb.spec(x_exp, log2e)
            for values in ([hi], [lo], [0], [hi] * m, [lo] * m, [hi] + [lo] * (m - 1), [lo] * (m - 1) + [hi],
                           [hi, lo] * (m // 2) + [hi] * (m % 2), list(range(hi, hi - m, -1)),
                           [lo + (i % 2) for i in range(m)]):
                values = [min(hi, max(lo, v)) for v in values]
                rows.append((values, spec, [len(values)]))
    await tb.run(rows, check_cycles=True)


@cocotb.test()
async def test_softmax_output_ties(dut):
    """Rows built to put exact ties into the output's rounding shift (rounded half to even)."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    rows = Rows(tb, rng).tie_rows(20)
    dut._log.info("%d rows with output rounding ties", len(rows))
    assert len(rows) >= 5, f"only {len(rows)} rows with output ties found"
    await tb.run(rows, check_cycles=True)


@cocotb.test()
async def test_softmax_long_row_is_cut(dut):
    """A row longer than MAX_N (no in_last at its MAX_N-th element) is taken as rows of MAX_N
    elements and a last one of the rest, each its own softmax with the first element's constants."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    rows = Rows(tb, rng)
    m = tb.max_n
    cut = []
    for extra in (1, m - 1, m, m + 3):
        n = m + extra
        pieces = [m] * (n // m) + ([n % m] if n % m else [])
        cut.append((rows.values(n), rows.spec(), pieces))
    await tb.run(cut, check_cycles=True)


# ---------------------------------------------------------------------------------------
# pytest entry: render, build with Verilator, run the cocotb tests above

try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize(
        "params",
        [
            {"MAX_N": 24, "IN_BITS": 8, "OUT_BITS": 8, "FRAC_BITS": 6, "TABLE_BITS": 15},
            {"MAX_N": 12, "IN_BITS": 16, "OUT_BITS": 16, "FRAC_BITS": 5, "TABLE_BITS": 18},
            pytest.param({"MAX_N": 130, "IN_BITS": 32, "OUT_BITS": 16, "FRAC_BITS": 8, "TABLE_BITS": 20},
                         marks=pytest.mark.slow),
            pytest.param({"MAX_N": 5, "IN_BITS": 12, "OUT_BITS": 12, "FRAC_BITS": 4, "TABLE_BITS": 12,
                           "SHIFT_BITS": 7}, marks=pytest.mark.slow),
        ],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()),
    )
    def test_softmax(params, tmp_path, request):
        slow = request.node.get_closest_marker("slow") is not None
        run_unit_bench(__name__, "tony_softmax", tmp_path, render_params=params,
                       extra_env={"TONY_SOFTMAX_ROWS": str(SWEEP_ROWS)} if slow else None)

    def test_unit_inputs_clamped_shift_gives_the_same_rows():
        """A shift past the product's width is given to the unit as in_bits + 17: the reference
        gives the same result at both (every u rounds to 0), so the clamp changes nothing."""
        rng = np.random.default_rng(7)
        q = rng.integers(-128, 128, size=(200, 13))
        for x_exp in (-20, -30, -40):
            spec = SoftmaxSpec(x_exp=x_exp)
            shift, log2e = unit_inputs(spec, in_bits=8, out_bits=8, frac_bits=6, table_bits=15)
            assert shift == min(spec.shift, 25) and log2e == LOG2E
            at_clamp = SoftmaxSpec(x_exp=LOG2E_BITS - 6 - shift)
            assert np.array_equal(softmax(q, spec), softmax(q, at_clamp))

    @pytest.mark.parametrize("spec,what", [(SoftmaxSpec(x_exp=-4, frac_bits=5), r"\(F, P, out_bits\) = \(5, 15, 8\)"),
                                           (SoftmaxSpec(x_exp=-4, out_bits=16), r"the unit has \(6, 15, 8\)")])
    def test_unit_inputs_rejects_a_spec_the_unit_does_not_compute(spec, what):
        with pytest.raises(ValueError, match=what):
            unit_inputs(spec, in_bits=8, out_bits=8, frac_bits=6, table_bits=15)

    def test_unit_inputs_rejects_a_shift_wider_than_the_port():
        with pytest.raises(ValueError, match="SHIFT_BITS=4"):
            unit_inputs(SoftmaxSpec(x_exp=-20), in_bits=8, out_bits=8, frac_bits=6, table_bits=15, shift_bits=4)

    def test_timing_rejects_an_empty_row():
        for f in (lambda: row_latency(0), lambda: schedule([3, 0]), lambda: block_cycles(2, 0)):
            with pytest.raises(ValueError, match="at least one element"):
                f()
        with pytest.raises(ValueError, match="at least one row"):
            block_cycles(0, 4)
