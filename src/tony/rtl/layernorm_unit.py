"""The numbers of the LayerNorm unit (templates/tony_layernorm.v.j2): its cycles per row, the
constants its template is rendered with, and the values its ports take for a `LayerNormSpec`
(tony.ref.nonlinear), checked against the unit's widths.

    from tony.rtl.layernorm_unit import cycles_per_row, latency, port_values
    cycles_per_row(768)                  # 1596: a row of 768 from first element to the next row's
    ports = port_values(spec, N_MAX=1024)  # n_i, eps_i, ..., gamma, beta; UnsupportedError if it can't

The unit's timing does not depend on the data: the square root always produces its ROOT_DIGITS
digits and the reciprocal its RECIP_DIGITS (R is forced to 0 afterwards when m = 0), so the cycle
counts are functions of n alone. The unit bench (testbench/test_layernorm.py) holds the RTL to them.

The square root is the exact floor(sqrt(m)), digit by digit, which is what the kernel's Newton
iteration (nonlinear.isqrt, ISQRT_ITERATIONS steps from 2^ceil(L/2)) returns for every m below
M_LIMIT (docs/transformer.md, 'Integer square root', proves it; tests/test_nonlinear.py checks it).
"""
from __future__ import annotations

from ..errors import UnsupportedError
from ..ref.nonlinear import NORM_RECIP_BITS, LayerNormSpec
from . import MODULES, PPU_LATENCY

M_BITS = 62
"""m = (W + E) << 2A stays below 2^M_BITS for every row (the kernel's isqrt domain)."""

M_LIMIT = 1 << M_BITS

ROOT_DIGITS = (M_BITS // 2 + 1) // 2
"""Radix-4 digits of r = floor(sqrt(m)) < 2^31, one per cycle (m read 4 bits at a time): 16."""

RECIP_EXP = NORM_RECIP_BITS
"""R = 2^(A + RECIP_EXP) // r."""

RECIP_DIGITS = (RECIP_EXP + 2) // 2
"""Radix-4 digits of R <= 2^40 (41 bits), one per cycle: 21."""

SETUP_CYCLES = 5
"""From the cycle that takes the row's last element to the square root's first digit: the sums take
it, n S2 and S1^2, W + E, m = (W + E) << 2A into the root's shift register."""

READ_STAGES = 3
"""Cycles from an element's row-buffer read to u_norm's input (the read, its copy, n * q): the output
phase starts this many cycles before R's last digit, so that u_norm first samples R once it is done."""

OUTPUT_LATENCY = 4 + 2 * PPU_LATENCY
"""From an element's row-buffer read to its output: the read and its register, n * q, tony_ppu
(PPU_LATENCY), v * g, tony_ppu (PPU_LATENCY)."""

DEFAULTS = MODULES["tony_layernorm"].params
"""The unit's HDL parameters and their defaults."""


def latency(n: int) -> int:
    """Cycles from the cycle that takes a row's last element to the cycle of its last output:
    n + 64."""
    return SETUP_CYCLES + ROOT_DIGITS + RECIP_DIGITS - READ_STAGES + (n - 1) + OUTPUT_LATENCY


def cycles_per_row(n: int) -> int:
    """Cycles per row of n when the producer never waits: from the cycle taking the row's first
    element to the cycle taking the next row's first (the unit is ready again the cycle after the
    last output). 2 n + 64."""
    return (n - 1) + latency(n) + 1


def template_context(values: dict) -> dict:
    """The template's constants beyond its parameters (numbers in Python, logic in the template)."""
    return {"M_BITS": M_BITS, "ROOT_DIGITS": ROOT_DIGITS, "RECIP_EXP": RECIP_EXP, "RECIP_DIGITS": RECIP_DIGITS,
            "READ_STAGES": READ_STAGES}


def _check_range(what: str, value: int, lo: int, hi: int, param: str) -> None:
    if not lo <= value <= hi:
        raise UnsupportedError(f"{what} = {value} outside [{lo}, {hi}]", where="tony_layernorm",
                               hint=f"render the unit with a larger {param}")


def _signed(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def port_values(spec: LayerNormSpec, **params: int) -> dict:
    """The unit's inputs for `spec`: n_i, eps_i, sqrt_bits_i, norm_bits_i, shift_i, lo_i, hi_i (plain
    ints, signed where the port is) and the per-channel gamma and beta lists. Raises UnsupportedError
    naming the first value the unit rendered with `params` (defaults: DEFAULTS) cannot hold."""
    unknown = sorted(set(params) - set(DEFAULTS))
    if unknown:
        raise KeyError(f"tony_layernorm has no parameter(s) {', '.join(unknown)}")
    p = {**DEFAULTS, **params}
    _check_range("n", spec.n, 1, p["N_MAX"], "N_MAX")
    _check_range("eps_int", spec.eps_int, 0, (1 << p["EPS_BITS"]) - 1, "EPS_BITS")
    _check_range("norm_bits", spec.norm_bits, 0, min(p["NORM_BITS_MAX"], NORM_RECIP_BITS), "NORM_BITS_MAX")
    _check_range("shift", spec.shift, *_signed(p["SHIFT_BITS"]), "SHIFT_BITS")
    _check_range("lo", spec.lo, *_signed(p["OUT_BITS"] + 1), "OUT_BITS")
    _check_range("hi", spec.hi, *_signed(p["OUT_BITS"] + 1), "OUT_BITS")
    for name, values, param in (("gamma", spec.gamma, "GAMMA_BITS"), ("beta", spec.beta, "BETA_BITS")):
        lo, hi = _signed(p[param])
        for i, v in enumerate(values):
            _check_range(f"{name}[{i}]", v, lo, hi, param)
    w_max = spec.n * spec.n * 4 ** (p["IN_BITS"] - 1)  # n^2 var for inputs of IN_BITS bits
    if (w_max + spec.eps_int) << (2 * spec.sqrt_bits) >= M_LIMIT:
        raise UnsupportedError(f"(n^2 4^(IN_BITS-1) + eps_int) << 2 sqrt_bits reaches 2^62 "
                               f"(n = {spec.n}, eps_int = {spec.eps_int}, sqrt_bits = {spec.sqrt_bits})",
                               where="tony_layernorm", hint="use fewer sqrt_bits (layernorm_spec picks them)")
    return {"n_i": spec.n, "eps_i": spec.eps_int, "sqrt_bits_i": spec.sqrt_bits, "norm_bits_i": spec.norm_bits,
            "shift_i": spec.shift, "lo_i": spec.lo, "hi_i": spec.hi, "gamma": list(spec.gamma),
            "beta": list(spec.beta)}


def accel_unit_params(n_max: int, a_bits: int) -> dict:
    """The parameters of the unit inside tony_accel (NORM, docs/isa.md): rows of up to `n_max`,
    A_BITS-bit signed activations in and out, the other widths the defaults."""
    return {**DEFAULTS, "N_MAX": n_max, "IN_BITS": a_bits, "OUT_BITS": a_bits}


def gb_bits(params: dict | None = None) -> int:
    """Bits of one word of the unit's gamma/beta memory as LOAD gb writes it: gamma (GAMMA_BITS, two's
    complement) in the low bits, beta (BETA_BITS) above it."""
    p = {**DEFAULTS, **(params or {})}
    return p["GAMMA_BITS"] + p["BETA_BITS"]


def gb_words(gamma, beta, params: dict | None = None) -> list[int]:
    """The gamma/beta words of a row's channels (word c: channel c), as unsigned ints of gb_bits."""
    p = {**DEFAULTS, **(params or {})}
    gm, bm = (1 << p["GAMMA_BITS"]) - 1, (1 << p["BETA_BITS"]) - 1
    return [(int(g) & gm) | ((int(b) & bm) << p["GAMMA_BITS"]) for g, b in zip(gamma, beta)]


def gb_unpack(words, params: dict | None = None) -> tuple[list[int], list[int]]:
    """gamma and beta from gamma/beta words (gb_words' inverse)."""
    p = {**DEFAULTS, **(params or {})}
    gb, bb = p["GAMMA_BITS"], p["BETA_BITS"]

    def sx(v: int, bits: int) -> int:
        v &= (1 << bits) - 1
        return v - (1 << bits) if v >> (bits - 1) else v
    return [sx(int(w), gb) for w in words], [sx(int(w) >> gb, bb) for w in words]


__all__ = ["DEFAULTS", "M_BITS", "M_LIMIT", "OUTPUT_LATENCY", "READ_STAGES", "RECIP_DIGITS", "RECIP_EXP", "ROOT_DIGITS",
           "SETUP_CYCLES", "accel_unit_params", "cycles_per_row", "gb_bits", "gb_unpack", "gb_words", "latency",
           "port_values", "template_context"]
