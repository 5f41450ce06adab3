"""Unit testbench of tony_systolic_array (ROWS x COLS output-stationary MAC grid).

Each tile: clear, K unskewed k-slices (with idle cycles from a pause pattern), then wait
for busy_o to fall; the drain time must be models.array_latency and acc_o must equal
models.systolic_matmul. `test_systolic_array` at the bottom is the pytest entry.
"""
from __future__ import annotations

from collections.abc import Iterator

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from tony.sim.benches.common import run_unit_bench, log_seed, make_pause, no_pause, pack, reset, start_clock, unpack
from tony.sim.benches.models import array_latency, systolic_matmul


class TB:
    """tony_systolic_array with clock, reset and a tile driver that checks the result."""

    def __init__(self, dut):
        self.dut = dut
        self.rows = int(dut.ROWS.value)
        self.cols = int(dut.COLS.value)
        self.a_bits = int(dut.A_BITS.value)
        self.w_bits = int(dut.W_BITS.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.pause: Iterator[bool] = no_pause()
        self.slices = 0
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        dut.clear_i.value = 0
        dut.in_valid_i.value = 0
        dut.a_signed_i.value = 1
        dut.a_i.value = 0
        dut.b_i.value = 0

    def set_pause_generator(self, pause: Iterator[bool]) -> None:
        """Idle cycles between slices: the driver skips a cycle whenever `pause` yields True."""
        self.pause = pause

    async def reset(self) -> None:
        await reset(self.dut.clk_i, self.dut.rst_ni)

    def a_range(self, signed: bool) -> tuple[int, int]:
        return (-(1 << (self.a_bits - 1)), (1 << (self.a_bits - 1)) - 1) if signed else (0, (1 << self.a_bits) - 1)

    def w_range(self) -> tuple[int, int]:
        return -(1 << (self.w_bits - 1)), (1 << (self.w_bits - 1)) - 1

    def read_acc(self) -> list[list[int]]:
        flat = unpack(self.dut.acc_o.value.to_unsigned(), self.rows * self.cols, self.acc_bits)
        return [flat[r * self.cols : (r + 1) * self.cols] for r in range(self.rows)]

    async def run_tile(self, A, B, a_signed: bool, clear_with_first: bool = True) -> None:
        """Compute A (rows x K) @ B (K x cols) on the array and check acc_o and the drain time.

        Starts and ends at a falling edge of clk_i.
        """
        d = self.dut
        k_total = len(B)
        d.a_signed_i.value = int(a_signed)
        if not clear_with_first:
            d.clear_i.value = 1
            await RisingEdge(d.clk_i)
            await FallingEdge(d.clk_i)
            d.clear_i.value = 0
        k = 0
        while True:
            if next(self.pause):
                d.in_valid_i.value = 0
                d.clear_i.value = 0
            else:
                d.a_i.value = pack([A[r][k] for r in range(self.rows)], self.a_bits)
                d.b_i.value = pack(B[k], self.w_bits)
                d.in_valid_i.value = 1
                d.clear_i.value = int(clear_with_first and k == 0)
                k += 1
            await RisingEdge(d.clk_i)
            if k == k_total:
                break
            await FallingEdge(d.clk_i)
        self.slices += k_total
        # count the rising edges after the one that sampled the last slice until busy_o falls
        drain = 0
        while True:
            await ReadOnly()
            if not int(d.busy_o.value):
                break
            await FallingEdge(d.clk_i)
            d.in_valid_i.value = 0
            d.clear_i.value = 0
            await RisingEdge(d.clk_i)
            drain += 1
            assert drain <= array_latency(self.rows, self.cols), "busy_o stays high too long"
        got = self.read_acc()
        want = systolic_matmul(A, B, self.acc_bits)
        assert drain == array_latency(self.rows, self.cols), f"busy_o fell after {drain} edges"
        assert got == want, f"a_signed={a_signed} A={A} B={B}: acc_o = {got}, expected {want}"
        await FallingEdge(d.clk_i)
        d.in_valid_i.value = 0
        d.clear_i.value = 0

    def random_tile(self, rng, k: int, a_signed: bool, extremes: bool = False):
        a_lo, a_hi = self.a_range(a_signed)
        w_lo, w_hi = self.w_range()
        if extremes:
            A = [[rng.choice([a_lo, a_hi]) for _ in range(k)] for _ in range(self.rows)]
            B = [[rng.choice([w_lo, w_hi]) for _ in range(self.cols)] for _ in range(k)]
        else:
            A = [[rng.randint(a_lo, a_hi) for _ in range(k)] for _ in range(self.rows)]
            B = [[rng.randint(w_lo, w_hi) for _ in range(self.cols)] for _ in range(k)]
        return A, B


@cocotb.test()
@cocotb.parametrize(activations=["int8", "uint8", "mixed"], pause=["none", "random"])
async def test_array_random_tiles(dut, activations: str, pause: str):
    """Random tiles (K = 1..24, 1000+ slices), signed/unsigned activations, with and without idle gaps."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.set_pause_generator(make_pause(pause, rng))
    await tb.reset()
    while tb.slices < 1000:
        a_signed = {"int8": True, "uint8": False}.get(activations, rng.random() < 0.5)
        A, B = tb.random_tile(rng, rng.randint(1, 24), a_signed, extremes=rng.random() < 0.15)
        await tb.run_tile(A, B, a_signed, clear_with_first=rng.random() < 0.7)


@cocotb.test()
async def test_array_extreme_long_tiles(dut):
    """Long tiles of range-edge values only (largest |sums|), signed and unsigned activations."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    for i in range(6):
        a_signed = bool(i % 2)
        A, B = tb.random_tile(rng, 200, a_signed, extremes=True)
        await tb.run_tile(A, B, a_signed)
    # all products at their largest: min * min for int8, max * min for uint8
    for a_signed in (True, False):
        a_lo, a_hi = tb.a_range(a_signed)
        w_lo, _ = tb.w_range()
        a_val = a_lo if a_signed else a_hi
        A = [[a_val] * 100 for _ in range(tb.rows)]
        B = [[w_lo] * tb.cols for _ in range(100)]
        await tb.run_tile(A, B, a_signed)


@cocotb.test()
async def test_array_single_slice_tiles(dut):
    """1000 K = 1 tiles back to back: clear and the only slice in one cycle, then the drain."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    for _ in range(1000):
        a_signed = rng.random() < 0.5
        A, B = tb.random_tile(rng, 1, a_signed)
        await tb.run_tile(A, B, a_signed)


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
            {"ROWS": 2, "COLS": 2},
            {"ROWS": 4, "COLS": 3},
            {"ROWS": 1, "COLS": 5, "A_BITS": 4, "W_BITS": 3, "ACC_BITS": 16},
            {"ROWS": 8, "COLS": 8},
        ],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()),
    )
    def test_systolic_array(params, tmp_path):
        run_unit_bench(__name__, "tony_systolic_array", tmp_path, parameters=params)
