"""Unit testbench of tony_ppu (bias, multiplier, rounding shift, clamp).

A driver presents one beat per cycle (with idle cycles from a pause pattern) and checks,
after every rising edge, that valid_o carries exactly the beat presented LATENCY edges
earlier with y_o equal to models.ppu. Stimulus kinds: uniform random, constructed rounding
ties (rem == h with r odd and even, and rem == h +- 1), saturation at the extremes, and
left shifts (s <= 0) that land just inside or outside [lo, hi]. With PER_LANE = 1 (per-channel
requantization) every lane of a beat has its own mult and shift, each lane drawn from the same
kinds independently (so one beat mixes ties, extremes and left shifts across lanes).
`test_ppu` at the bottom is the pytest entry.
"""
from __future__ import annotations

import collections
import random
from collections.abc import Iterator

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge

from tony.sim.benches.common import run_unit_bench, log_seed, make_pause, no_pause, pack, reset, start_clock, unpack
from tony.rtl import PPU_LATENCY
from tony.sim.benches.models import ppu


class TB:
    """tony_ppu with clock, reset, a beat driver and an in-line checker."""

    def __init__(self, dut):
        self.dut = dut
        self.lanes = int(dut.LANES.value)
        self.acc_bits = int(dut.ACC_BITS.value)
        self.out_bits = int(dut.OUT_BITS.value)
        self.shift_bits = int(dut.SHIFT_BITS.value)
        self.mult_bits = int(dut.MULT_BITS.value)
        self.round_mode = int(dut.ROUND_MODE.value)
        self.latency = int(dut.LATENCY.value)
        self.per_lane = bool(int(dut.PER_LANE.value))
        assert self.latency == PPU_LATENCY, f"RTL LATENCY {self.latency} != tony.rtl.PPU_LATENCY {PPU_LATENCY}"
        self.pause: Iterator[bool] = no_pause()
        self.expected: collections.deque = collections.deque()
        self.edge = 0
        self.beats = 0
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        self._idle()

    # ranges of the inputs
    @property
    def acc_range(self):
        return -(1 << (self.acc_bits - 1)), (1 << (self.acc_bits - 1)) - 1

    @property
    def shift_range(self):
        return -(1 << (self.shift_bits - 1)), (1 << (self.shift_bits - 1)) - 1

    @property
    def clamp_range(self):
        return -(1 << self.out_bits), (1 << self.out_bits) - 1

    def set_pause_generator(self, pause: Iterator[bool]) -> None:
        self.pause = pause

    def _idle(self) -> None:
        d = self.dut
        d.valid_i.value = 0
        d.acc_i.value = 0
        d.bias_i.value = 0
        d.mult_i.value = pack([1] * (self.lanes if self.per_lane else 1), self.mult_bits)
        d.shift_i.value = 0
        d.lo_i.value = 0
        d.hi_i.value = 0

    async def reset(self) -> None:
        await reset(self.dut.clk_i, self.dut.rst_ni)

    async def _cycle(self, beat) -> None:
        """Drive `beat` (or nothing) for one cycle and check the outputs after the edge."""
        d = self.dut
        await FallingEdge(d.clk_i)
        if beat is None:
            d.valid_i.value = 0
        else:
            accs, biases, mult, shift, lo, hi = beat
            d.acc_i.value = pack(accs, self.acc_bits)
            d.bias_i.value = pack(biases, self.acc_bits)
            # per lane: lists of one mult / shift per lane; shared: one int each
            mults = list(mult) if self.per_lane else [mult] * self.lanes
            shifts = list(shift) if self.per_lane else [shift] * self.lanes
            d.mult_i.value = pack(mults, self.mult_bits) if self.per_lane else mult
            d.shift_i.value = pack(shifts, self.shift_bits) if self.per_lane else shift & ((1 << self.shift_bits) - 1)
            d.lo_i.value = lo & ((1 << (self.out_bits + 1)) - 1)
            d.hi_i.value = hi & ((1 << (self.out_bits + 1)) - 1)
            d.valid_i.value = 1
            want = [ppu(a, b, m, sh, lo, hi, self.round_mode) for a, b, m, sh in zip(accs, biases, mults, shifts)]
            self.expected.append((self.edge + self.latency - 1, beat, want))
        await RisingEdge(d.clk_i)
        await ReadOnly()
        due = bool(self.expected) and self.expected[0][0] == self.edge
        valid = int(d.valid_o.value)
        assert valid == due, f"edge {self.edge}: valid_o = {valid}, expected {int(due)}"
        if due:
            _, beat, want = self.expected.popleft()
            got = unpack(d.y_o.value.to_unsigned(), self.lanes, self.out_bits, is_signed=False)
            mask = (1 << self.out_bits) - 1
            assert got == [w & mask for w in want], (
                f"(acc, bias, mult, shift, lo, hi) = {beat} round_mode={self.round_mode}: "
                f"y_o lanes = {got}, expected {[w & mask for w in want]} (unclamped-to-bits {want})"
            )
        self.edge += 1

    async def send(self, beats) -> None:
        """Send every beat (idle cycles from the pause pattern in between), then drain the pipeline."""
        for beat in beats:
            while next(self.pause):
                await self._cycle(None)
            await self._cycle(beat)
            self.beats += 1
        for _ in range(self.latency):
            await self._cycle(None)
        assert not self.expected, "beats left in the pipeline"


# ---- stimulus ------------------------------------------------------------------------------


class Stimulus:
    """Beat generators: a beat is (accs, biases, mult, shift, lo, hi) with one acc/bias per lane."""

    def __init__(self, tb: TB, rng: random.Random):
        self.tb = tb
        self.rng = rng
        self.forced_clamp = None   # (lo, hi) every beat uses while lanes are drawn one by one

    def clamp_pair(self):
        if self.forced_clamp is not None:
            return self.forced_clamp
        rng = self.rng
        c_lo, c_hi = self.tb.clamp_range
        n = self.tb.out_bits
        choice = rng.random()
        if choice < 0.3:
            return -(1 << (n - 1)), (1 << (n - 1)) - 1  # int
        if choice < 0.5:
            return 0, (1 << n) - 1  # uint
        if choice < 0.65:
            return 0, rng.randint(0, (1 << n) - 1)  # ReLU6-style
        if choice < 0.68:
            return rng.randint(c_lo, c_hi), rng.randint(c_lo, c_hi)  # even lo > hi
        lo = rng.randint(c_lo, c_hi)
        return lo, rng.randint(lo, c_hi)

    def mult(self):
        rng = self.rng
        choice = rng.random()
        if choice < 0.35:
            return 1  # pow2 mode
        if choice < 0.45:
            return 1 << rng.randint(0, self.tb.mult_bits - 1)
        if choice < 0.55:
            return (1 << self.tb.mult_bits) - 1
        return rng.randint(0, (1 << min(31, self.tb.mult_bits)) - 1) if rng.random() < 0.8 else rng.randint(
            0, (1 << self.tb.mult_bits) - 1
        )

    def split(self, t: int):
        """acc, bias in range with acc + bias == t (t must fit ACC_BITS + 1 bits)."""
        a_lo, a_hi = self.tb.acc_range
        acc = self.rng.randint(max(a_lo, t - a_hi), min(a_hi, t - a_lo))
        return acc, t - acc

    def random_beat(self):
        """Random magnitudes; half of the beats pick the shift that brings lane 0 near the output range."""
        rng = self.rng
        a_lo, a_hi = self.tb.acc_range
        s_lo, s_hi = self.tb.shift_range
        shared_bits = rng.randint(1, self.tb.acc_bits)
        accs, biases = [], []
        for _ in range(self.tb.lanes):
            bits = shared_bits if rng.random() < 0.7 else rng.randint(1, self.tb.acc_bits)
            accs.append(rng.randint(-(1 << (bits - 1)), (1 << (bits - 1)) - 1))
            biases.append(rng.randint(a_lo, a_hi) if rng.random() < 0.1 else rng.randint(-(1 << (bits - 1)) // 8, (1 << (bits - 1)) // 8))
        mult = self.mult()
        if rng.random() < 0.5:
            p0 = (accs[0] + biases[0]) * mult
            shift = p0.bit_length() - self.tb.out_bits + rng.randint(-2, 2)
        elif rng.random() < 0.5:
            shift = rng.randint(-8, min(s_hi, self.tb.acc_bits + 8))
        else:
            shift = rng.randint(s_lo, s_hi)
        shift = max(s_lo, min(s_hi, shift))
        return (accs, biases, mult, shift) + self.clamp_pair()

    def tie_beat(self):
        """p = r * 2^s + rem with rem in {h, h-1, h+1, 0}, r near 0 or near the clamp edges."""
        rng = self.rng
        tb = self.tb
        c_lo, c_hi = tb.clamp_range
        lo, hi = self.clamp_pair()
        max_s = tb.acc_bits + tb.mult_bits - 2
        s = rng.randint(1, min(tb.shift_range[1], max_s))
        accs, biases = [], []
        mult = 1
        if rng.random() < 0.5:  # route the value through the multiplier: t * 2^j
            j = rng.randint(0, min(s - 1, tb.mult_bits - 1))
            mult = 1 << j
        else:
            j = 0
        step = 1 << j  # p = t * 2^j has its low j bits zero, so rem moves in steps of 2^j
        h = 1 << (s - 1)
        t_lo, t_hi = 2 * tb.acc_range[0], 2 * tb.acc_range[1]
        for _ in range(tb.lanes):
            r = rng.choice([rng.randint(-3, 3), lo + rng.randint(-2, 2), hi + rng.randint(-2, 2), rng.randint(c_lo - 4, c_hi + 4)])
            rem = rng.choice([h, h, h - step, h + step, 0]) % (1 << s)  # ties, just below, just above
            t = max(t_lo, min(t_hi, ((r << s) + rem) >> j))
            acc, bias = self.split(t)
            accs.append(acc)
            biases.append(bias)
        return accs, biases, mult, s, lo, hi

    def extreme_beat(self):
        rng = self.rng
        a_lo, a_hi = self.tb.acc_range
        s_lo, s_hi = self.tb.shift_range
        accs = [rng.choice([a_lo, a_hi, a_lo + 1, a_hi - 1, 0, -1, 1]) for _ in range(self.tb.lanes)]
        biases = [rng.choice([a_lo, a_hi, 0, -1, 1]) for _ in range(self.tb.lanes)]
        mult = rng.choice([0, 1, (1 << self.tb.mult_bits) - 1, (1 << (self.tb.mult_bits - 1)), (1 << 31) - 1 if self.tb.mult_bits > 31 else min(3, (1 << self.tb.mult_bits) - 1)])
        shift = rng.choice([s_lo, s_hi, s_lo + 1, s_hi - 1, 0, -1, 1, rng.randint(s_lo, s_hi)])
        return (accs, biases, mult, shift) + self.clamp_pair()

    def left_shift_beat(self):
        """s <= 0 with small t: results just inside and just past lo/hi, and huge shifts."""
        rng = self.rng
        tb = self.tb
        s_lo, _ = tb.shift_range
        lo, hi = self.clamp_pair()
        n = rng.randint(0, min(8, -s_lo)) if rng.random() < 0.8 else rng.randint(0, -s_lo)
        accs, biases = [], []
        for _ in range(tb.lanes):
            target = rng.choice([lo, hi, lo - 1, hi + 1, lo + 1, hi - 1, 0, rng.randint(min(lo, hi) - 5, max(lo, hi) + 5)])
            t = target >> n if rng.random() < 0.5 else -((-target) >> n)
            t += rng.choice([0, 0, 1, -1])
            acc, bias = self.split(t)
            accs.append(acc)
            biases.append(bias)
        return accs, biases, rng.choice([1, 1, 1, min(3, (1 << tb.mult_bits) - 1), (1 << tb.mult_bits) - 1]), -n, lo, hi


KINDS = {
    "random": Stimulus.random_beat,
    "ties": Stimulus.tie_beat,
    "extremes": Stimulus.extreme_beat,
    "left_shift": Stimulus.left_shift_beat,
}


def draw(stim: Stimulus, kind: str):
    """One beat of `kind`. With per-lane mult/shift: one clamp pair, then lane l is lane l of its
    own beat (its own mult and shift), drawn from `kind` or, one lane in three, from any kind."""
    if not stim.tb.per_lane:
        return KINDS[kind](stim)
    stim.forced_clamp = stim.clamp_pair()
    try:
        accs, biases, mults, shifts = [], [], [], []
        for lane in range(stim.tb.lanes):
            k = kind if stim.rng.random() < 2 / 3 else stim.rng.choice(list(KINDS))
            a, b, m, sh, _, _ = KINDS[k](stim)
            accs.append(a[lane])
            biases.append(b[lane])
            mults.append(m)
            shifts.append(sh)
        return (accs, biases, mults, shifts) + stim.forced_clamp
    finally:
        stim.forced_clamp = None


@cocotb.test()
@cocotb.parametrize(kind=list(KINDS), pause=["none", "random"])
async def test_ppu_matches_model(dut, kind: str, pause: str):
    """1000 beats of one stimulus kind checked against models.ppu, with and without idle cycles."""
    tb = TB(dut)
    rng = log_seed(dut)
    tb.set_pause_generator(make_pause(pause, rng))
    stim = Stimulus(tb, rng)
    await tb.reset()
    await tb.send(draw(stim, kind) for _ in range(1000))


@cocotb.test()
async def test_ppu_directed_rounding(dut):
    """Hand-written ties and edges: 2.5 -> 2, 3.5 -> 4, -2.5 -> -2 (half-even); -128/127 clamps."""
    tb = TB(dut)
    await tb.reset()
    lo, hi = -(1 << (tb.out_bits - 1)), (1 << (tb.out_bits - 1)) - 1
    lanes = tb.lanes
    beats = []
    if tb.per_lane:
        await tb.send(_per_lane_directed(tb, lo, hi))
        return
    for t in (5, 7, -5, -7, 4, 6, -4, -6, 1, -1, 3, -3):  # t / 2 at s = 1
        beats.append(([t] * lanes, [0] * lanes, 1, 1, lo, hi))
    for t in (hi * 4 + 1, hi * 4 + 2, hi * 4 + 3, lo * 4 - 2, lo * 4 - 3, (lo - 1) * 4 + 2):
        beats.append(([t] * lanes, [0] * lanes, 1, 2, lo, hi))
    beats.append(([1] * lanes, [0] * lanes, 1, -(tb.out_bits - 1), lo, hi))  # 2^(n-1): just past hi
    beats.append(([-1] * lanes, [0] * lanes, 1, -(tb.out_bits - 1), lo, hi))  # -2^(n-1): lo exactly
    beats.append(([-1] * lanes, [0] * lanes, 1, tb.shift_range[0], lo, hi))  # huge left shift of -1
    beats.append(([tb.acc_range[1]] * lanes, [tb.acc_range[1]] * lanes, (1 << tb.mult_bits) - 1, tb.shift_range[0], lo, hi))
    beats.append(([tb.acc_range[0]] * lanes, [tb.acc_range[0]] * lanes, (1 << tb.mult_bits) - 1, tb.shift_range[1], lo, hi))
    await tb.send(beats)


def _per_lane_directed(tb: TB, lo: int, hi: int) -> list:
    """Per-lane beats by hand: one value under a different shift and mult in every lane (the
    lanes must not share their control), the shift and mult rails in neighbouring lanes."""
    n = tb.lanes
    s_lo, s_hi = tb.shift_range
    m_max = (1 << tb.mult_bits) - 1
    a_lo, a_hi = tb.acc_range
    beats = []
    for t in (5, 7, -5, -7, 3, -3, 100, -100):
        beats.append(([t] * n, [0] * n, [1] * n, [(l % 4) - 1 for l in range(n)], lo, hi))     # >>-1, >>0, >>1, >>2
        beats.append(([t] * n, [0] * n, [l + 1 for l in range(n)], [1] * n, lo, hi))           # *1, *2, ... >>1
    rails = [(s_lo, m_max), (s_hi, m_max), (s_lo, 0), (s_hi, 1), (0, 1), (1, m_max), (-1, 3), (s_hi - 1, 1 << (tb.mult_bits - 1))]
    for k in range(len(rails)):
        sel = [rails[(k + l) % len(rails)] for l in range(n)]
        for accs in ([a_hi] * n, [a_lo] * n, [(-1) ** l for l in range(n)]):
            beats.append((accs, list(accs), [m for _, m in sel], [s for s, _ in sel], lo, hi))
    return beats


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
            {"LANES": 4, "ROUND_MODE": 0},
            {"LANES": 3, "ROUND_MODE": 1},
            {"LANES": 2, "ROUND_MODE": 2, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6, "MULT_BITS": 12},
            {"LANES": 4, "ROUND_MODE": 0, "PER_LANE": 1},
            {"LANES": 3, "ROUND_MODE": 1, "PER_LANE": 1, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6, "MULT_BITS": 12},
            {"LANES": 2, "ROUND_MODE": 2, "PER_LANE": 1, "SHIFT_BITS": 8},
            {"LANES": 2, "ROUND_MODE": 0, "SHIFT_BITS": 8},   # the accelerator's: shifts past the product's width
        ],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()),
    )
    def test_ppu(params, tmp_path):
        run_unit_bench(__name__, "tony_ppu", tmp_path, parameters=params)

    @pytest.mark.sim
    @pytest.mark.parametrize(
        "params",
        [
            {"LANES": 2, "ROUND_MODE": 0, "SHIFT_BITS": 8},                   # four products on MULT18X18D
            {"LANES": 2, "ROUND_MODE": 1, "PER_LANE": 1, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6,
             "MULT_BITS": 12},                                                  # two on MULT18X18D, two twins
            {"LANES": 1, "ROUND_MODE": 0, "MULT_BITS": 1},                     # pow2 mode: twins only
        ],
        ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()),
    )
    def test_ppu_on_mult18x18d(params, tmp_path):
        """The ECP5 build's unit (TONY_ECP5: the partial products of a wide enough t * mult on
        MULT18X18D with their own input and output registers) against the same model, the
        primitive simulated by testbench.test_mac's MULT18X18D_MODEL."""
        from testbench.test_mac import MULT18X18D_MODEL

        model = tmp_path / "mult18x18d_model.v"
        model.write_text(MULT18X18D_MODEL)
        run_unit_bench(__name__, "tony_ppu", tmp_path, parameters=params, extra_sources=[model],
                       build_args=["-DTONY_ECP5"])
