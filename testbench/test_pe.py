"""Unit testbench of tony_pe (one MAC of the output-stationary systolic array).

The cocotb tests drive random operands, valid and clear patterns and check every output
after every rising edge against models.pe_step. `test_pe` at the bottom is the pytest entry:
it renders the template for a few parameter sets and runs the cocotb tests on Verilator.
"""
from __future__ import annotations


import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from tony.sim.benches.common import run_unit_bench, log_seed, reset, start_clock
from tony.sim.benches.models import pe_step


class TB:
    """tony_pe with its clock, reset and a one-cycle drive/check helper."""

    def __init__(self, dut):
        self.dut = dut
        self.a_bits = int(dut.A_BITS.value)
        self.w_bits = int(dut.W_BITS.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.acc = 0
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self.idle()

    def idle(self) -> None:
        d = self.dut
        d.clear_i.value = 0
        d.a_valid_i.value = 0
        d.a_i.value = 0
        d.b_i.value = 0

    async def reset(self) -> None:
        await reset(self.dut.clk_i, self.dut.rst_ni)
        self.acc = 0

    def ranges(self):
        return (-(1 << (self.a_bits - 1)), (1 << (self.a_bits - 1)) - 1), (
            -(1 << (self.w_bits - 1)),
            (1 << (self.w_bits - 1)) - 1,
        )

    async def step(self, a: int, b: int, valid: bool, clear: bool) -> None:
        """Present one cycle's inputs (at the falling edge), then check the outputs after the rising edge."""
        d = self.dut
        await FallingEdge(d.clk_i)
        d.a_i.value = a & ((1 << self.a_bits) - 1)
        d.b_i.value = b & ((1 << self.w_bits) - 1)
        d.a_valid_i.value = int(valid)
        d.clear_i.value = int(clear)
        await RisingEdge(d.clk_i)
        await ReadOnly()
        self.acc = pe_step(self.acc, a, b, valid, clear, self.acc_bits)
        got = (d.acc_o.value.to_signed(), d.a_o.value.to_signed(), int(d.a_valid_o.value), d.b_o.value.to_signed())
        want = (self.acc, a, int(valid), b)
        assert got == want, f"inputs a={a} b={b} valid={valid} clear={clear}: (acc, a, a_valid, b) = {got}, expected {want}"


@cocotb.test()
async def test_pe_random_operands(dut):
    """Random operands over the full signed ranges with random valid and clear, 2000 cycles."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    (a_lo, a_hi), (b_lo, b_hi) = tb.ranges()
    for _ in range(2000):
        await tb.step(rng.randint(a_lo, a_hi), rng.randint(b_lo, b_hi), rng.random() < 0.7, rng.random() < 0.05)


@cocotb.test()
async def test_pe_extremes_wrap(dut):
    """Only range-edge operands, long runs without clear: the accumulator wraps like the model."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    (a_lo, a_hi), (b_lo, b_hi) = tb.ranges()
    for _ in range(1500):
        await tb.step(rng.choice([a_lo, a_hi, -1, 0]), rng.choice([b_lo, b_hi, -1]), rng.random() < 0.9, rng.random() < 0.002)


@cocotb.test()
async def test_pe_clear_with_valid(dut):
    """clear_i with a_valid_i loads the product; clear_i alone zeroes; reset zeroes everything."""
    tb = TB(dut)
    await tb.reset()
    (a_lo, _), (b_lo, _) = tb.ranges()
    await tb.step(3, 5, True, False)
    await tb.step(7, -2, True, True)  # acc = -14
    await tb.step(a_lo, b_lo, True, False)
    await tb.step(1, 1, False, True)  # acc = 0
    await tb.step(a_lo, b_lo, True, True)
    await tb.reset()
    await ReadOnly()
    assert dut.acc_o.value.to_signed() == 0 and int(dut.a_valid_o.value) == 0


# ---------------------------------------------------------------------------------------
# pytest entry: render, build with Verilator, run the cocotb tests above

try:
    import pytest
except ImportError:  # inside the simulator pytest is not needed
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize(
        "params",
        [
            {"A_BITS": 9, "W_BITS": 8, "ACC_BITS": 32},
            {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 12},
        ],
        ids=lambda p: "a{A_BITS}w{W_BITS}acc{ACC_BITS}".format(**p),
    )
    def test_pe(params, tmp_path):
        run_unit_bench(__name__, "tony_pe", tmp_path, parameters=params)
