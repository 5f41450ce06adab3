"""The Softmax unit's timing functions agree with each other (tony.rtl.softmax): `schedule` (every
row's first element and last result, for any row lengths; the unit bench holds the RTL to it row
by row) against its closed forms for a row alone (`row_latency`) and a block of equal rows
(`block_cycles`, what the cycle model charges a SOFTMAX), and the stage limits that make it so."""
from __future__ import annotations

import random

import pytest

from tony.rtl.softmax import DIV_CYCLES, E_SLOTS, Q_SLOTS, block_cycles, row_latency, row_period, schedule


@pytest.mark.parametrize("n", [1, 2, 5, DIV_CYCLES - 1, DIV_CYCLES, DIV_CYCLES + 1, DIV_CYCLES + 2, 32, 64, 257, 1024])
def test_block_cycles_is_the_schedule_of_equal_rows(n):
    for rows in range(1, 3 * (Q_SLOTS + E_SLOTS) + 2):
        s = schedule([n] * rows)
        assert s[-1][1] + 1 == block_cycles(rows, n), (rows, n)
        assert s[0] == (0, row_latency(n))


def test_rows_follow_each_other_at_the_slower_of_input_and_divider():
    """A long block settles at one row per max(n, DIV_CYCLES + 1) cycles: neither the q slots nor
    the e slots hold a stage up (the e slots would for some n with fewer of them)."""
    for n in range(1, 200):
        s = schedule([n] * 40)
        gaps = {s[k + 1][0] - s[k][0] for k in range(20, 39)}
        assert gaps == {row_period(n)}, (n, gaps)


def test_a_row_alone_takes_three_passes_and_the_division():
    assert [row_latency(n) for n in (1, 32, 64)] == [3 + DIV_CYCLES + 15, 96 + DIV_CYCLES + 15, 192 + DIV_CYCLES + 15]


def test_mixed_rows_keep_their_order_and_the_stage_limits():
    """Random lengths: rows are taken in order, one element a cycle with no gap inside a row, the
    next row at the earliest the cycle after, results in order, and no row faster than alone."""
    rng = random.Random(5)
    for _ in range(200):
        ns = [rng.choice([1, 2, rng.randint(1, 40), rng.randint(1, 300)]) for _ in range(rng.randint(1, 30))]
        s = schedule(ns)
        for k in range(1, len(ns)):
            assert s[k][0] >= s[k - 1][0] + ns[k - 1]
            assert s[k][1] >= s[k - 1][1] + ns[k]
        assert all(last - first >= row_latency(n) for (first, last), n in zip(s, ns))
