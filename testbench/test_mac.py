"""Unit testbench of tony_mac, the multiply-accumulate PE of tony_os_array.

Random operands with random valid/last flags every cycle (idle patterns from the pause
generators): after every rising edge the pass-through registers (a_o, a_valid_o, a_last_o,
b_o) must hold the previous cycle's inputs and res_o the last finished tile's sum (the operand
registers' product two edges later (the multiplier's own registers), registered beside the
accumulator, accumulated one edge later: four edges after the operands), wrapped to ACC_BITS, as a Python model of the PE computes them. `test_mac` at the bottom is the pytest entry.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge

from tony.sim.benches.common import log_seed, make_pause, reset, run_unit_bench, signed, start_clock
from tony.sim.benches.models import wrap

CYCLES = 2000


class TB:
    """tony_mac with clock, reset and a model of its registers."""

    def __init__(self, dut):
        self.dut = dut
        self.a_bits = int(dut.A_BITS.value)
        self.w_bits = int(dut.W_BITS.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.acc = self.res = 0
        self.regs = (0, 0, 0, 0)  # a_o, a_valid_o, a_last_o, b_o
        self.mult_in = (0, 0, 0, 0)  # the multiplier's input registers and the flags: a, b, valid, last
        self.mult_out = (0, 0, 0)    # the multiplier's product register and the flags
        self.prod = (0, 0, 0)        # the product register beside the accumulator and its flags
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self.drive(0, 0, 0, 0)

    def drive(self, a: int, b: int, valid: int, last: int) -> None:
        d = self.dut
        d.a_i.value = a & ((1 << self.a_bits) - 1)
        d.b_i.value = b & ((1 << self.w_bits) - 1)
        d.a_valid_i.value = valid
        d.a_last_i.value = last

    def edge(self, a: int, b: int, valid: int, last: int) -> None:
        """The model's registers after a rising edge with these inputs: the operands registered
        with the flags, copied into the multiplier's input registers, their product registered in
        the multiplier, then beside the accumulator, and the product there accumulated."""
        prod, pvalid, plast = self.prod
        ra, rvalid, rlast, rb = self.regs
        ma, mb, mvalid, mlast = self.mult_in
        self.prod = self.mult_out
        self.mult_out = (ma * mb, mvalid, mlast)
        self.mult_in = (ra, rb, rvalid, rlast)
        self.regs = (a, valid, last, b)
        if pvalid:
            s = wrap(self.acc + prod, self.acc_bits)
            if plast:
                self.res, self.acc = s, 0
            else:
                self.acc = s

    def check(self, n: int) -> None:
        d = self.dut
        got = (signed(int(d.a_o.value), self.a_bits), int(d.a_valid_o.value), int(d.a_last_o.value),
               signed(int(d.b_o.value), self.w_bits))
        assert got == self.regs, f"cycle {n}: (a_o, a_valid_o, a_last_o, b_o) = {got}, expected {self.regs}"
        res = signed(int(d.res_o.value), self.acc_bits)
        assert res == self.res, f"cycle {n}: res_o = {res}, expected {self.res}"


@cocotb.test()
@cocotb.parametrize(pause=["none", "random"])
async def test_mac_matches_model(dut, pause: str):
    tb = TB(dut)
    rng = log_seed(dut)
    idle = make_pause(pause, rng)
    await reset(dut.clk_i, dut.rst_ni)
    tb.check(-1)
    a_lim, w_lim = 1 << (tb.a_bits - 1), 1 << (tb.w_bits - 1)
    for n in range(CYCLES):
        extreme = rng.random() < 0.2
        a = rng.choice([-a_lim, a_lim - 1]) if extreme else rng.randint(-a_lim, a_lim - 1)
        b = rng.choice([-w_lim, w_lim - 1]) if extreme else rng.randint(-w_lim, w_lim - 1)
        valid = int(not next(idle))
        last = int(rng.random() < 0.15)
        tb.drive(a, b, valid, last)
        tb.edge(a, b, valid, last)
        await FallingEdge(dut.clk_i)
        tb.check(n)


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [{"A_BITS": 9, "W_BITS": 8, "ACC_BITS": 32},
                                        {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 10}],
                             ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_mac(params, tmp_path):
        run_unit_bench(__name__, "tony_mac", tmp_path, parameters=params)

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [{"A_BITS": 9, "W_BITS": 8, "ACC_BITS": 32},
                                        {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 10}],
                             ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_mac_on_mult18x18d(params, tmp_path):
        """The ECP5 build's PE (TONY_ECP5: the product from a MULT18X18D, the operands in its top
        bits) against the same model, the primitive simulated by MULT18X18D_MODEL."""
        model = tmp_path / "mult18x18d_model.v"
        model.write_text(MULT18X18D_MODEL)
        run_unit_bench(__name__, "tony_mac", tmp_path, parameters=params, extra_sources=[model],
                       build_args=["-DTONY_ECP5"])


# A behavioural MULT18X18D for the configuration tony_mac uses (Lattice's FPGA-TN-02205): input
# registers A and B and the output register on CLK0 (when their REG_*_CLK is "CLK0"), P the 36-bit
# product of A and B, each signed when SIGNEDA / SIGNEDB is high. Written from the primitive's
# description, not from the RTL under test.
_PORTS = ", ".join([f"input wire A{i}, B{i}" for i in range(18)] + [f"output wire P{i}" for i in range(36)])
MULT18X18D_MODEL = f"""
`default_nettype none
module MULT18X18D #(
  parameter REG_INPUTA_CLK = "NONE", parameter REG_INPUTA_CE = "CE0", parameter REG_INPUTA_RST = "RST0",
  parameter REG_INPUTB_CLK = "NONE", parameter REG_INPUTB_CE = "CE0", parameter REG_INPUTB_RST = "RST0",
  parameter REG_INPUTC_CLK = "NONE", parameter REG_PIPELINE_CLK = "NONE",
  parameter REG_OUTPUT_CLK = "NONE", parameter REG_OUTPUT_CE = "CE0", parameter REG_OUTPUT_RST = "RST0",
  parameter CLK0_DIV = "ENABLED", parameter GSR = "ENABLED", parameter RESETMODE = "SYNC"
) ({_PORTS},
  input wire SIGNEDA, SIGNEDB, SOURCEA, SOURCEB, CLK0, CE0, RST0);
  wire [17:0] a = {{{", ".join(f"A{i}" for i in reversed(range(18)))}}};
  wire [17:0] b = {{{", ".join(f"B{i}" for i in reversed(range(18)))}}};
  reg  [17:0] a_q, b_q;
  reg  [35:0] p_q;
  always @(posedge CLK0) if (CE0) begin a_q <= a; b_q <= b; end
  wire [17:0] ma = (REG_INPUTA_CLK == "CLK0") ? a_q : a;
  wire [17:0] mb = (REG_INPUTB_CLK == "CLK0") ? b_q : b;
  wire signed [36:0] xa = {{{{19{{SIGNEDA & ma[17]}}}}, ma}};
  wire signed [36:0] xb = {{{{19{{SIGNEDB & mb[17]}}}}, mb}};
  wire signed [73:0] prod = xa * xb;
  always @(posedge CLK0) if (CE0) p_q <= prod[35:0];
  wire [35:0] p = (REG_OUTPUT_CLK == "CLK0") ? p_q : prod[35:0];
  assign {{{", ".join(f"P{i}" for i in reversed(range(36)))}}} = p;
  wire unused = ^{{SOURCEA, SOURCEB, RST0}};
endmodule
`default_nettype wire
"""
