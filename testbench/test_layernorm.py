"""Unit testbench of tony_layernorm, the LayerNorm unit, against the reference kernel.

Rows are sent in groups that share one spec from `layernorm_spec` (random n from 1 to N_MAX, input
and output scales, gamma and beta: ones and zeros, random, negative, tiny or large; eps that makes
E zero or large; gamma_bits and norm_bits from 8 to the unit's limit; in_bits below the unit's
IN_BITS). Before a group the bench waits for the unit to finish, writes gamma and beta and sets the
spec's ports; then it sends the group's rows back to back, with or without idle cycles between
elements, offering each row's first element as soon as the previous row's last is taken (so
in_ready_o's low phase is exercised). Row kinds: uniform, gaussian, constant (variance 0, eps alone
under the square root or r = 0), alternating min/max, min/max at random, one outlier, two
neighbouring values, all min, all max.

Every output element is compared with tony.ref.nonlinear.layernorm; every row's timing with
tony.rtl.layernorm_unit: its n outputs in n consecutive cycles with out_last_o on the last, the
last output `latency(n)` cycles after its last element, and (groups without idle cycles) the next
row's first element taken `cycles_per_row(n)` cycles after this row's first. `test_layernorm` at
the bottom is the pytest entry; LN_ROWS sets the number of random rows.
"""
from __future__ import annotations

import dataclasses
import math
import os
import random

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, ReadOnly, RisingEdge
from cocotb.utils import get_sim_time

from tony.errors import UnsupportedError
from tony.ref.nonlinear import NORM_RECIP_BITS, LayerNormSpec, isqrt, layernorm, layernorm_spec
from tony.rtl.layernorm_unit import (
    DEFAULTS,
    RECIP_DIGITS,
    ROOT_DIGITS,
    SETUP_CYCLES,
    cycles_per_row,
    latency,
    port_values,
)
from tony.sim.benches.common import (
    CLOCK_PERIOD_NS,
    log_seed,
    make_pause,
    no_pause,
    reset,
    signed,
    start_clock,
)


class TB:
    """tony_layernorm with clock and reset, a row driver, an output monitor and the checks."""

    def __init__(self, dut):
        self.dut = dut
        self.p = {k: int(getattr(dut, k).value) for k in DEFAULTS}  # the unit's HDL parameters
        self.rise_ns = 0                # a rising edge's time modulo the clock period (set by reset)
        self.rows: list[dict] = []      # sent rows: q, spec, the cycles taking each element, steady (no idles)
        self.outs: list[list[tuple[int, int, int]]] = [[]]   # per row: (cycle, y, last)
        start_clock(dut.clk_i)
        dut.rst_ni.value = 1
        dut.in_valid_i.value = 0
        dut.in_data_i.value = 0
        dut.gb_we_i.value = 0
        cocotb.start_soon(self._monitor())

    def _port(self, name: str, value: int, bits: int) -> None:
        getattr(self.dut, name).value = value & ((1 << bits) - 1)

    def cycle(self) -> int:
        """The current clock cycle: cycle k lies between rising edges k and k + 1."""
        return (int(get_sim_time("ns")) - self.rise_ns) // CLOCK_PERIOD_NS

    async def reset(self) -> None:
        await RisingEdge(self.dut.clk_i)
        self.rise_ns = int(get_sim_time("ns")) % CLOCK_PERIOD_NS
        await reset(self.dut.clk_i, self.dut.rst_ni)

    async def _monitor(self) -> None:
        d = self.dut
        ob = self.p["OUT_BITS"]
        while True:
            await RisingEdge(d.clk_i)
            await ReadOnly()
            if not int(d.out_valid_o.value):
                await RisingEdge(d.out_valid_o)
                await ReadOnly()
            last = int(d.out_last_o.value)
            self.outs[-1].append((self.cycle(), signed(int(d.out_data_o.value), ob), last))
            if last:
                self.outs.append([])

    async def idle_until_done(self) -> None:
        """Wait (at a falling edge) until every sent row's outputs have come out."""
        await FallingEdge(self.dut.clk_i)
        while len(self.outs) - 1 < len(self.rows):  # the monitor counts at the rising edges
            await FallingEdge(self.dut.clk_i)

    async def load_spec(self, spec: LayerNormSpec) -> None:
        """Write gamma and beta (one channel per cycle) and set the spec's ports; the unit is idle."""
        await self.idle_until_done()
        d, p = self.dut, self.p
        ports = port_values(spec, **p)
        for i, (g, b) in enumerate(zip(ports["gamma"], ports["beta"])):
            d.gb_we_i.value = 1
            d.gb_addr_i.value = i
            self._port("gb_gamma_i", g, p["GAMMA_BITS"])
            self._port("gb_beta_i", b, p["BETA_BITS"])
            await FallingEdge(d.clk_i)
        d.gb_we_i.value = 0
        d.n_i.value = spec.n
        d.eps_i.value = spec.eps_int
        d.sqrt_bits_i.value = spec.sqrt_bits
        d.norm_bits_i.value = spec.norm_bits
        self._port("shift_i", spec.shift, p["SHIFT_BITS"])
        self._port("lo_i", spec.lo, p["OUT_BITS"] + 1)
        self._port("hi_i", spec.hi, p["OUT_BITS"] + 1)

    async def send(self, spec: LayerNormSpec, rows, pause) -> None:
        """Send the rows (from a falling edge), each element held until the unit takes it."""
        d = self.dut
        mask = (1 << self.p["IN_BITS"]) - 1
        steady = pause is None
        pause = pause or no_pause()
        for q in rows:
            taken = []
            for x in q:
                while next(pause):
                    d.in_valid_i.value = 0
                    await FallingEdge(d.clk_i)
                d.in_valid_i.value = 1
                d.in_data_i.value = int(x) & mask
                while not int(d.in_ready_o.value):
                    await RisingEdge(d.in_ready_o)
                    await FallingEdge(d.clk_i)
                taken.append(self.cycle())
                await FallingEdge(d.clk_i)
            self.rows.append({"q": list(q), "spec": spec, "taken": taken, "steady": steady})
        d.in_valid_i.value = 0

    async def root_and_recip(self, last_taken: int) -> tuple[int, int]:
        """r and R of the row whose last element was taken in cycle `last_taken` (call it before the
        next row starts): the root's register in the cycle after its last digit, and the reciprocal's
        quotient (0 when m = 0) in the cycle after its own last digit, the cycle counts being
        tony.rtl.layernorm_unit's."""
        d = self.dut
        at_root = last_taken + SETUP_CYCLES + ROOT_DIGITS
        while self.cycle() < at_root:
            await FallingEdge(d.clk_i)
        assert self.cycle() == at_root, "called too late"
        r = int(d.r_q.value)
        while self.cycle() < at_root + RECIP_DIGITS:
            await FallingEdge(d.clk_i)
        recip = 0 if int(d.m_zero_q.value) else int(d.quo_q.value)
        return r, recip

    def check(self) -> int:
        """Compare every row's outputs with the kernel and its timing with the cycle functions."""
        done = self.outs[: len(self.rows)]
        assert len(done) == len(self.rows) and not self.outs[len(self.rows)], "rows missing or extra outputs"
        for k, (row, out) in enumerate(zip(self.rows, done)):
            spec, q, n = row["spec"], row["q"], row["spec"].n
            want = layernorm(np.array(q, dtype=np.int64), spec).tolist()
            mask = (1 << self.p["OUT_BITS"]) - 1
            got = [y for _, y, _ in out]
            where = f"row {k} (n={n}, q={q}, spec={spec})"
            assert [y & mask for y in got] == [w & mask for w in want], f"{where}: y = {got}, kernel {want}"
            cycles = [c for c, _, _ in out]
            assert cycles == list(range(cycles[0], cycles[0] + n)), f"{where}: outputs in cycles {cycles}"
            assert [last for _, _, last in out] == [0] * (n - 1) + [1], f"{where}: out_last_o misplaced"
            assert cycles[-1] - row["taken"][-1] == latency(n), (
                f"{where}: last output {cycles[-1] - row['taken'][-1]} cycles after the last element, "
                f"latency({n}) = {latency(n)}")
            nxt = self.rows[k + 1] if k + 1 < len(self.rows) else None
            if row["steady"] and nxt is not None and nxt["spec"] is spec:
                span = nxt["taken"][0] - row["taken"][0]
                assert span == cycles_per_row(n), f"{where}: next row after {span} cycles, cycles_per_row = " \
                                                  f"{cycles_per_row(n)}"
        return len(done)


# ---------------------------------------------------------------------------------------------
# stimulus

def draw_spec(rng: random.Random, p: dict) -> tuple[LayerNormSpec, int]:
    """A random spec from layernorm_spec that the unit holds, and its inputs' bits."""
    n_max = p["N_MAX"]
    while True:
        n = rng.choice([1, 2, 3, n_max, n_max - 1, rng.randint(1, n_max), rng.randint(1, min(n_max, 16))])
        n = max(1, n)
        in_bits = p["IN_BITS"] if rng.random() < 0.8 else rng.randint(2, p["IN_BITS"])
        gk = rng.choice(["ones", "random", "negative", "tiny", "large", "zeros_some"])
        if gk == "ones":
            gamma = None
        elif gk == "random":
            gamma = [rng.uniform(0.25, 2.0) for _ in range(n)]
        elif gk == "negative":
            gamma = [rng.uniform(-3.0, 3.0) for _ in range(n)]
        elif gk == "tiny":
            gamma = [rng.uniform(-0.01, 0.01) or 0.005 for _ in range(n)]
        elif gk == "large":
            gamma = [rng.uniform(-60.0, 60.0) or 1.0 for _ in range(n)]
        else:
            gamma = [rng.choice([0.0, 1.0, -0.5]) for _ in range(n)]
            gamma[0] = 1.0
        beta = None if rng.random() < 0.3 else [rng.uniform(-2.0, 2.0) for _ in range(n)]
        try:
            spec = layernorm_spec(
                n, x_exp=rng.randint(-7, 0), y_exp=rng.randint(-7, -1), gamma=gamma, beta=beta,
                eps=rng.choice([1e-5, 1e-12, 1e-2, 0.5, 0.0]), in_bits=in_bits,
                gamma_bits=rng.choice([b for b in (8, 12, 16) if b <= p["GAMMA_BITS"]] or [p["GAMMA_BITS"]]),
                out_bits=p["OUT_BITS"],
                norm_bits=rng.choice([0, 4, 8, 12, p["NORM_BITS_MAX"], rng.randint(0, p["NORM_BITS_MAX"])]))
            port_values(spec, **p)
        except (UnsupportedError, ValueError):
            continue   # beta beyond BETA_BITS for a tiny gamma, say: draw again
        return spec, in_bits


ROW_KINDS = ("uniform", "gaussian", "constant", "alternating", "minmax", "outlier", "neighbours", "all_min",
             "all_max")


def draw_row(rng: random.Random, n: int, in_bits: int, kind: str) -> list[int]:
    lo, hi = -(1 << (in_bits - 1)), (1 << (in_bits - 1)) - 1
    if kind == "uniform":
        return [rng.randint(lo, hi) for _ in range(n)]
    if kind == "gaussian":
        mu, sd = rng.uniform(lo / 2, hi / 2), rng.uniform(0.5, hi / 2 + 1)
        return [min(hi, max(lo, round(rng.gauss(mu, sd)))) for _ in range(n)]
    if kind == "constant":
        return [rng.choice([lo, hi, 0, rng.randint(lo, hi)])] * n
    if kind == "alternating":
        first = rng.choice([lo, hi])
        return [first if i % 2 == 0 else lo + hi - first for i in range(n)]
    if kind == "minmax":
        return [rng.choice([lo, hi]) for _ in range(n)]
    if kind == "outlier":
        c = rng.randint(lo, hi)
        row = [c] * n
        row[rng.randrange(n)] = rng.choice([lo, hi])
        return row
    if kind == "neighbours":
        c = rng.randint(lo, hi - 1)
        return [c + rng.randint(0, 1) for _ in range(n)]
    return [lo] * n if kind == "all_min" else [hi] * n


def worked_example() -> tuple[LayerNormSpec, list[int], list[int]]:
    """docs/transformer.md's worked example: y = [14, -35, -7, 54]."""
    spec = layernorm_spec(4, -4, -5, gamma=[1, 1, 0.5, 2], beta=[0, 0.25, 0, -1])
    return spec, [20, -12, 4, 36], [14, -35, -7, 54]


@cocotb.test()
async def test_layernorm_worked_example(dut):
    """The documented example row, twice (the second row reuses the spec's gamma and beta)."""
    tb = TB(dut)
    await tb.reset()
    spec, q, y = worked_example()
    try:
        port_values(spec, **tb.p)
    except UnsupportedError as e:
        dut._log.info("the worked example does not fit this unit: %s", e)
        return
    if max(map(abs, q)) >= 1 << (tb.p["IN_BITS"] - 1):
        dut._log.info("the worked example's inputs need more than IN_BITS")
        return
    await tb.load_spec(spec)
    await tb.send(spec, [q, q], None)
    await tb.idle_until_done()
    assert [v for _, v, _ in tb.outs[0]] == y == [v for _, v, _ in tb.outs[1]]
    tb.check()


@cocotb.test()
async def test_layernorm_rows_match_kernel(dut):
    """LN_ROWS random rows (default 1000) in groups of one spec, with and without idle cycles."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    total = int(os.environ.get("LN_ROWS", "1000"))
    sent, group = 0, 0
    while sent < total:
        if group < 2:  # the first groups: length 1 and the longest row
            spec, in_bits = draw_spec_of_length(rng, tb.p, [1, tb.p["N_MAX"]][group])
        else:
            spec, in_bits = draw_spec(rng, tb.p)
        # rows per group: fewer for long rows, so that one group does not take the whole budget
        count = min(total - sent, rng.randint(1, max(1, min(40, 4096 // spec.n))))
        rows = [draw_row(rng, spec.n, in_bits, rng.choice(ROW_KINDS)) for _ in range(count)]
        await tb.load_spec(spec)
        await tb.send(spec, rows, None if group % 2 == 0 else make_pause("random", rng))
        sent += count
        group += 1
    await tb.idle_until_done()
    checked = tb.check()
    dut._log.info("%d rows in %d specs checked against the kernel (%d cycles)", checked, group, tb.cycle())


# ---------------------------------------------------------------------------------------------
# the square root's edge cases: rows whose m = (W + E) << 2A is 0, a perfect square, one below or
# above one, or the largest the unit takes; each row gets its own spec (E and A chosen for its W)

ROOT_CASES = ("zero", "square", "square_minus_1", "square_plus_1", "next_square_minus_1", "largest")


def row_w(q: list[int]) -> int:
    """W = n S2 - S1^2 of a row (the kernel's definition, in Python integers)."""
    return len(q) * sum(x * x for x in q) - sum(q) ** 2


def root_case_spec(rng: random.Random, p: dict, q: list[int], case: str) -> LayerNormSpec | None:
    """A spec for row q (gamma, beta and the shift from layernorm_spec) whose E and A make
    m = (W + E) << 2A the case asked for and that the unit holds (port_values); None if none does."""
    n, w = len(q), row_w(q)
    w_max = n * n * 4 ** (p["IN_BITS"] - 1)
    e_max = (1 << p["EPS_BITS"]) - 1
    base = layernorm_spec(n, -4, -5, gamma=[rng.uniform(-2.0, 2.0) or 1.0 for _ in range(n)],
                          beta=[rng.uniform(-1.0, 1.0) for _ in range(n)], in_bits=p["IN_BITS"],
                          gamma_bits=min(16, p["GAMMA_BITS"]), out_bits=p["OUT_BITS"],
                          norm_bits=rng.randint(0, p["NORM_BITS_MAX"]))
    for _ in range(50):
        a = rng.choice([0, 0, 22, (62 - 32) // 2, rng.randint(0, 22)])
        x_max = min(w + e_max, ((1 << (62 - 2 * a)) - 1) - (w_max - w))   # the largest W + E it holds
        if x_max < w:
            continue
        if case == "zero":
            if w:
                return None
            x = 0
        elif case == "largest":
            x = x_max
        else:
            k_lo = math.isqrt(w - 1) + 1 if w else 1          # k^2 >= W, so E >= 0
            k_hi = math.isqrt(x_max + 1) - 1                    # k^2 + 2k <= x_max
            if k_lo > k_hi:
                continue
            k = rng.choice([k_lo, k_hi, rng.randint(k_lo, k_hi)])
            x = {"square": k * k, "square_minus_1": k * k - 1, "square_plus_1": k * k + 1,
                 "next_square_minus_1": k * k + 2 * k}[case]
            if x < w:
                continue
        spec = dataclasses.replace(base, eps_int=x - w, sqrt_bits=a)
        try:
            port_values(spec, **p)
        except UnsupportedError:
            continue
        return spec
    return None


@cocotb.test()
async def test_layernorm_root_edge_cases(dut):
    """LN_EDGE_ROWS rows (default 240) whose m is 0, a perfect square, a square -1 or +1, (k + 1)^2 - 1
    or the largest the unit takes: the outputs against the kernel, and the unit's r and R (read inside
    it, since one off in r rarely moves an output) against the kernel's isqrt(m) and 2^(A + 40) // r."""
    tb = TB(dut)
    rng = log_seed(dut)
    await tb.reset()
    p = tb.p
    total = int(os.environ.get("LN_EDGE_ROWS", "240"))
    seen = dict.fromkeys(ROOT_CASES, 0)
    odd_square_minus_1 = 0                                      # m itself one below a square (A = 0)
    largest_m = 0
    k = 0
    while sum(seen.values()) < total:
        case = ROOT_CASES[k % len(ROOT_CASES)]
        k += 1
        assert k < 100 * total, f"no specs for these rows on this unit after {k} draws: {seen}"
        n = rng.choice([1, 2, 3, 4, rng.randint(1, min(16, p["N_MAX"])), p["N_MAX"]])
        kind = "constant" if case == "zero" else rng.choice(ROW_KINDS)
        q = draw_row(rng, n, p["IN_BITS"], kind)
        spec = root_case_spec(rng, p, q, case)
        if spec is None:
            continue
        m = (row_w(q) + spec.eps_int) << (2 * spec.sqrt_bits)
        r = int(isqrt(np.array([m], np.int64))[0])             # the kernel's r and R
        recip = (1 << (spec.sqrt_bits + NORM_RECIP_BITS)) // r if r else 0
        odd_square_minus_1 += m == (r + 1) ** 2 - 1 and m > 0
        largest_m = max(largest_m, m)
        seen[case] += 1
        await tb.load_spec(spec)
        await tb.send(spec, [q], None)
        got = await tb.root_and_recip(tb.rows[-1]["taken"][-1])
        assert got == (r, recip), f"{case} row {q}, E = {spec.eps_int}, A = {spec.sqrt_bits}, m = {m}: " \
                                  f"(r, R) = {got}, kernel {(r, recip)}"
    await tb.idle_until_done()
    checked = tb.check()
    assert min(seen.values()) > 0 and odd_square_minus_1 > 0, f"cases not reached: {seen}"
    dut._log.info("%d edge rows checked against the kernel: %s; %d with m = s^2 - 1; largest m = 2^62 - %d",
                  checked, seen, odd_square_minus_1, (1 << 62) - largest_m)


def draw_spec_of_length(rng: random.Random, p: dict, n: int) -> tuple[LayerNormSpec, int]:
    """A draw_spec spec of length n: drawn with N_MAX = n (so that n is one of its likely lengths)
    until it has that length; the other constants are drawn as always."""
    while True:
        spec, in_bits = draw_spec(rng, {**p, "N_MAX": max(n, 1)})
        if spec.n == n:
            return spec, in_bits


# ---------------------------------------------------------------------------------------------
# pytest entry: render, build with Verilator, run the cocotb tests above

try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:
    from tony.sim.benches.common import run_unit_bench

    @pytest.mark.sim
    def test_layernorm(tmp_path):
        """1000 random rows on a 64-element unit (the full row length is cheap to reach)."""
        run_unit_bench(__name__, "tony_layernorm", tmp_path, parameters={"N_MAX": 64},
                       extra_env={"LN_ROWS": "1000"})

    @pytest.mark.sim
    @pytest.mark.slow
    @pytest.mark.parametrize(
        "params,rows",
        [({}, 300),
         ({"N_MAX": 48, "NORM_BITS_MAX": 40, "BETA_BITS": 64, "SHIFT_BITS": 8}, 4000),
         ({"N_MAX": 20, "IN_BITS": 4, "OUT_BITS": 6, "GAMMA_BITS": 8, "BETA_BITS": 24}, 4000)],
        ids=["defaults", "norm40", "int4"],
    )
    def test_layernorm_sweep(params, rows, tmp_path):
        """More rows: the default unit (rows up to 1024), F up to 40, and narrow inputs and outputs."""
        run_unit_bench(__name__, "tony_layernorm", tmp_path, parameters=params, extra_env={"LN_ROWS": str(rows)})
