"""Unit testbench of tony_os_array, the ROWS x COLS output-stationary array of tony_mac that
the accelerator's CONV engine drives.

Random tiles (K k-slices of random signed A and B, extremes mixed in) stream back to back with
random idle cycles inside a tile and between tiles; successive tiles' last slices are kept at
least max(ROWS, COLS) cycles apart, as the protocol requires (docs in the template). Tiles are
plain (one activation per row, C = models.matmul(A, B)) or, in `test_os_array_depthwise_mode`,
plain and depthwise mixed at random: in_dw_i, PE (r, c) multiplies its own activation
A[r][k][c] (presented on dw_a_i r cycles after the slice, as the CONV engine does) by B[k][c],
C[r][c] = sum_k A[r][k][c] * B[k][c]; a depthwise slice comes at least COLS cycles after the
last plain one. Activation inputs that no PE should take (a_i of a depthwise slice, dw_a_i in
every other cycle) carry random values. Every cycle row_done_o must be exactly the rows due
(row r of a tile whose last slice came in cycle t is due in cycle t + COLS + r + 4, in both
modes), row_done_c_o its copy per PE, and each due row of res_o must equal the model.
`test_os_array` at the bottom is the pytest entry.
"""
from __future__ import annotations

import collections

import cocotb
from cocotb.triggers import FallingEdge

from tony.sim.benches.common import log_seed, make_pause, pack, reset, run_unit_bench, start_clock, unpack
from tony.sim.benches.models import matmul, wrap

SLICES = 1200


class TB:
    def __init__(self, dut):
        self.dut = dut
        self.rows, self.cols = int(dut.ROWS.value), int(dut.COLS.value)
        self.a_bits, self.w_bits = int(dut.A_BITS.value), int(dut.W_BITS.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.gap = max(self.rows, self.cols)
        self.due: dict[int, list] = collections.defaultdict(list)  # cycle -> [(row, values)]
        self.cycle = 0
        self.rows_checked = 0
        self.lanes: dict[int, dict] = collections.defaultdict(dict)  # cycle -> {row: depthwise lanes}
        self.rng = None
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self._drive(None)

    def _noise(self, n: int) -> list:
        lim = 1 << (self.a_bits - 1)
        return [self.rng.randint(-lim, lim - 1) if self.rng else 0 for _ in range(n)]

    def _drive(self, slice_) -> None:
        d = self.dut
        if slice_ is not None and slice_[3]:
            # a depthwise slice: row r's own activations come r cycles after it
            for r in range(self.rows):
                self.lanes[self.cycle + r][r] = slice_[0][r]
        due = self.lanes.pop(self.cycle, {})
        d.dw_a_i.value = pack([v for r in range(self.rows) for v in due.get(r, self._noise(self.cols))], self.a_bits)
        if slice_ is None:
            d.in_valid_i.value = 0
            d.in_last_i.value = 0
            d.in_dw_i.value = 0
            d.a_i.value = pack(self._noise(self.rows), self.a_bits)
            return
        a, b, last, dw = slice_
        if dw:
            a = self._noise(self.rows)
        d.a_i.value = pack(a, self.a_bits)
        d.b_i.value = pack(b, self.w_bits)
        d.in_valid_i.value = 1
        d.in_last_i.value = int(last)
        d.in_dw_i.value = int(dw)

    def _check(self) -> None:
        d = self.dut
        want = dict(self.due.pop(self.cycle, []))
        done = int(d.row_done_o.value)
        got_rows = {r for r in range(self.rows) if done >> r & 1}
        assert got_rows == set(want), f"cycle {self.cycle}: row_done_o rows {sorted(got_rows)}, expected {sorted(want)}"
        copies = int(d.row_done_c_o.value)   # bit r*COLS+c: PE (r, c)'s copy of row_done_o[r]
        want_c = sum(((done >> r) & 1) << (r * self.cols + c) for r in range(self.rows) for c in range(self.cols))
        assert copies == want_c, f"cycle {self.cycle}: row_done_c_o {copies:#x}, expected {want_c:#x}"
        if want:
            res = unpack(d.res_o.value.to_unsigned(), self.rows * self.cols, self.acc_bits)
            for r, values in want.items():
                got = res[r * self.cols:(r + 1) * self.cols]
                assert got == values, f"cycle {self.cycle}: row {r} = {got}, expected {values}"
                self.rows_checked += 1

    async def cycle_with(self, slice_) -> None:
        """Check this cycle's outputs, present `slice_` (or nothing) for it, go to the next cycle."""
        await FallingEdge(self.dut.clk_i)
        self._check()
        self._drive(slice_)
        self.cycle += 1

    def expect_tile(self, last_cycle: int, A, B, dw: bool = False) -> None:
        if dw:
            c = [[wrap(sum(int(A[r][i][j]) * int(B[i][j]) for i in range(len(B))), self.acc_bits)
                  for j in range(self.cols)] for r in range(self.rows)]
        else:
            c = matmul(A, B, self.acc_bits)
        for r in range(self.rows):
            self.due[last_cycle + self.cols + r + 4].append((r, c[r]))


async def stream_tiles(dut, pause: str, depthwise: bool) -> None:
    tb = TB(dut)
    rng = log_seed(dut)
    tb.rng = rng
    idle = make_pause(pause, rng)
    await reset(dut.clk_i, dut.rst_ni)
    a_lim, w_lim = 1 << (tb.a_bits - 1), 1 << (tb.w_bits - 1)

    def val(lim):
        return rng.choice([-lim, lim - 1]) if rng.random() < 0.1 else rng.randint(-lim, lim - 1)

    sent, last_at, plain_at, n_dw = 0, -10 * tb.gap, -10 * tb.gap, 0
    while sent < SLICES:
        k = rng.choice([1, 2, rng.randint(1, 3 * tb.gap)])
        dw = depthwise and rng.random() < 0.5
        A = [[[val(a_lim) for _ in range(tb.cols)] if dw else val(a_lim) for _ in range(k)] for _ in range(tb.rows)]
        B = [[val(w_lim) for _ in range(tb.cols)] for _ in range(k)]
        for i in range(k):
            last = i == k - 1
            while next(idle) or (last and tb.cycle - last_at < tb.gap) or (dw and tb.cycle - plain_at < tb.cols):
                await tb.cycle_with(None)
            if last:
                last_at = tb.cycle
                tb.expect_tile(tb.cycle, A, B, dw)
            if not dw:
                plain_at = tb.cycle
            await tb.cycle_with(([A[r][i] for r in range(tb.rows)], B[i], last, dw))
            sent += 1
        n_dw += dw
    for _ in range(2 * (tb.rows + tb.cols) + 4):
        await tb.cycle_with(None)
    assert not tb.due, f"rows never drained: {sorted(tb.due)}"
    dut._log.info("%d slices, %d rows checked, %d depthwise tiles", sent, tb.rows_checked, n_dw)


@cocotb.test()
@cocotb.parametrize(pause=["none", "random"])
async def test_os_array_matches_model(dut, pause: str):
    await stream_tiles(dut, pause, depthwise=False)


@cocotb.test()
@cocotb.parametrize(pause=["none", "random"])
async def test_os_array_depthwise_mode(dut, pause: str):
    await stream_tiles(dut, pause, depthwise=True)


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [
        {"ROWS": 4, "COLS": 4},
        {"ROWS": 3, "COLS": 5},
        {"ROWS": 6, "COLS": 2},
        {"ROWS": 1, "COLS": 1},
        {"ROWS": 2, "COLS": 7, "A_BITS": 5, "W_BITS": 4, "ACC_BITS": 12},
    ], ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_os_array(params, tmp_path):
        run_unit_bench(__name__, "tony_os_array", tmp_path, parameters=params)
