"""Integer nonlinear kernels for transformer encoders: Softmax, LayerNorm, GELU (docs/transformer.md).

Each kernel is exact integer arithmetic on int64 numpy arrays. Floats appear only in the
compile-time functions (`softmax_spec`, `layernorm_spec`, `gelu_table`) that turn scales and
learned parameters into the integer constants of a frozen spec; the kernels themselves
(`softmax`, `layernorm`, `lookup`) never touch a float. All reductions are over the last axis.

Rounding is the contract's round-half-even shift (`arith.rounding_shift`); the only other
roundings are the floors of the integer square root and of the one division per row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .arith import rounding_shift

# ---------------------------------------------------------------------------------------------
# Softmax: base-2 exponent with shifts (docs/transformer.md, 'Softmax')

LOG2E_BITS = 15
LOG2E = round(math.log2(math.e) * 2**LOG2E_BITS)  # 47274: log2(e) in Q1.15
RECIP_BITS = 31  # R = 2^(P + 31) // S, so R <= 2^31


def softmax_table(frac_bits: int, table_bits: int) -> np.ndarray:
    """The exponent table of a softmax: T[r] = round(2^(P - r / 2^F)) for r in [0, 2^F), F = frac_bits
    and P = table_bits, in float64 at compile time (the hardware unit's ROM holds the same values)."""
    f, p = frac_bits, table_bits
    return np.array([round(2.0 ** (p - r / 2**f)) for r in range(2**f)], dtype=np.int64)


@dataclass(frozen=True)
class SoftmaxSpec:
    """Integer softmax over the last axis: input at scale 2^x_exp, output uint(out_bits) at 2^-out_bits.

    frac_bits F: fraction bits of the base-2 exponent (the table has 2^F entries);
    table_bits P: the table holds 2^(-r / 2^F) in Q0.P (entries in (2^(P-1), 2^P]);
    log2e: the constant multiplier, LOG2E, or round(LOG2E / c) for an input whose scale is
    2^x_exp / c with c >= 1 (attention scores divided by a d_head^0.5 that is not a power of two).
    """

    x_exp: int
    frac_bits: int = 6
    table_bits: int = 15
    out_bits: int = 8
    log2e: int = LOG2E

    def __post_init__(self):
        if self.shift < 0:
            raise ValueError(f"softmax input scale 2^{self.x_exp} is too coarse (needs x_exp <= "
                             f"{LOG2E_BITS - self.frac_bits})")
        if not 1 <= self.log2e <= LOG2E:
            raise ValueError(f"softmax: log2e in [1, {LOG2E}]")
        if not 1 <= self.frac_bits <= 12 or not 8 <= self.table_bits <= 24 or not 1 <= self.out_bits <= 16:
            raise ValueError("softmax: frac_bits in [1, 12], table_bits in [8, 24], out_bits in [1, 16]")

    @property
    def shift(self) -> int:
        """s in u = round_shift((max - q) * LOG2E, s): from Q(-x_exp) * Q15 to Q(F)."""
        return LOG2E_BITS - self.x_exp - self.frac_bits

    @property
    def table(self) -> np.ndarray:
        """T[r] = round(2^(P - r / 2^F)), r in [0, 2^F): a compile-time constant (float64 exp2)."""
        return softmax_table(self.frac_bits, self.table_bits)

    @property
    def recip_exp(self) -> int:
        """K in R = 2^K // S."""
        return self.table_bits + RECIP_BITS


def softmax(q, spec: SoftmaxSpec) -> np.ndarray:
    """docs/transformer.md, 'Softmax':
        u = round_shift((max(q) - q) * LOG2E, s)        u >= 0, Q(F): -(x - max) * log2(e)
                                                        (spec.log2e in place of LOG2E when set)
        z = u >> F, r = u & (2^F - 1)                   2^-u = 2^-z * 2^(-r / 2^F)
        e = T[r] >> min(z, P + 1)                       Q0.P, floor shift
        S = sum(e);  R = 2^K // S                       one division per row (S >= 2^P)
        y = clamp(round_shift(e * R, K - out_bits), 0, 2^out_bits - 1)
    """
    q = np.asarray(q, dtype=np.int64)
    f, p = spec.frac_bits, spec.table_bits
    d = q.max(axis=-1, keepdims=True) - q
    u = rounding_shift(d * spec.log2e, spec.shift)
    z = np.minimum(u >> f, p + 1)
    e = spec.table[u & ((1 << f) - 1)] >> z
    r = (np.int64(1) << spec.recip_exp) // e.sum(axis=-1, keepdims=True)
    y = rounding_shift(e * r, spec.recip_exp - spec.out_bits)
    return np.clip(y, 0, (1 << spec.out_bits) - 1)


# ---------------------------------------------------------------------------------------------
# LayerNorm: exact mean and variance, integer square root, one reciprocal

NORM_RECIP_BITS = 40  # R = 2^(A + 40) // r, so D * R stays below sqrt(n) * 2^40
ISQRT_ITERATIONS = 6  # Newton steps from 2^ceil(L/2): exact floor sqrt below 2^62 (tested)


def bit_length(n) -> np.ndarray:
    """Exact bit length of non-negative int64 values (a leading-zero count in hardware)."""
    n = np.asarray(n, dtype=np.int64)
    b = np.zeros(n.shape, dtype=np.int64)
    for k in (32, 16, 8, 4, 2, 1):
        hit = (n >> (b + k)) > 0
        b = np.where(hit, b + k, b)
    return b + (n > 0)


def isqrt(n) -> np.ndarray:
    """floor(sqrt(n)) of int64 values in [0, 2^62) by Newton's iteration:
        x0 = 2^ceil(L/2) with L = bit_length(n)   (x0 >= sqrt(n))
        x  = min(x, (x + n // x) >> 1)             ISQRT_ITERATIONS times
    Every step stays >= floor(sqrt(n)) and decreases until it reaches it (docs/transformer.md)."""
    n = np.asarray(n, dtype=np.int64)
    if np.any(n < 0) or np.any(n >= 1 << 62):
        raise ValueError("isqrt takes values in [0, 2^62)")
    x = np.int64(1) << ((bit_length(n) + 1) >> 1)
    for _ in range(ISQRT_ITERATIONS):
        x = np.minimum(x, (x + n // np.maximum(x, 1)) >> 1)
    return np.where(n == 0, 0, x)


@dataclass(frozen=True)
class LayerNormSpec:
    """Integer LayerNorm over the last axis (length n).

    eps_int E: eps in the units of W = n^2 * var (E = round(eps * n^2 / 2^(2 x_exp)));
    sqrt_bits A: the square root keeps A fraction bits; norm_bits F: fraction bits of the
    normalized value; gamma (int, per channel) and beta (int at scale 2^(e_gamma - F)) with one
    rounding shift to the output, clamped to [lo, hi].
    """

    n: int
    eps_int: int
    sqrt_bits: int
    gamma: tuple[int, ...]
    beta: tuple[int, ...]
    shift: int
    lo: int = -128
    hi: int = 127
    norm_bits: int = 16

    def __post_init__(self):
        if len(self.gamma) != self.n or len(self.beta) != self.n:
            raise ValueError(f"layernorm: gamma and beta need {self.n} values")
        if not 0 <= self.sqrt_bits <= 62 - NORM_RECIP_BITS or not 0 <= self.norm_bits <= NORM_RECIP_BITS:
            raise ValueError("layernorm: sqrt_bits in [0, 22], norm_bits in [0, 40]")


def layernorm(q, spec: LayerNormSpec) -> np.ndarray:
    """docs/transformer.md, 'LayerNorm':
        S1 = sum(q), S2 = sum(q^2), W = n * S2 - S1^2       W = n^2 * var, exact
        D  = n * q - S1                                     D = n * (q - mean), exact
        r  = isqrt((W + E) << 2A)                           floor(sqrt(n^2 (var + eps)) * 2^A)
        R  = 2^(A + 40) // r  (0 when r = 0, where every D = 0)
        v  = round_shift(D * R, 40 - F)                     (q - mean) / sqrt(var + eps), Q(F)
        y  = clamp(round_shift(v * gamma + beta, shift), lo, hi)
    """
    q = np.asarray(q, dtype=np.int64)
    n, a = spec.n, spec.sqrt_bits
    if q.shape[-1] != n:
        raise ValueError(f"layernorm over {q.shape[-1]} values, spec for {n}")
    s1 = q.sum(axis=-1, keepdims=True)
    w = n * (q * q).sum(axis=-1, keepdims=True) - s1 * s1
    d = n * q - s1
    r = isqrt((w + spec.eps_int) << (2 * a))
    big = np.int64(1) << (a + NORM_RECIP_BITS)
    recip = np.where(r > 0, big // np.maximum(r, 1), 0)
    v = rounding_shift(d * recip, NORM_RECIP_BITS - spec.norm_bits)
    g, b = np.asarray(spec.gamma, np.int64), np.asarray(spec.beta, np.int64)
    return np.clip(rounding_shift(v * g + b, spec.shift), spec.lo, spec.hi)


def pow2_exp(max_abs: float, bits: int) -> int:
    """Exponent e of the signed `bits` grid 2^e that holds max_abs: 2^ceil(log2 max) / 2^(bits-1)."""
    return math.ceil(math.log2(max(max_abs, 2.0**-30))) - (bits - 1)


def layernorm_spec(n: int, x_exp: int, y_exp: int, gamma=None, beta=None, *, eps: float = 1e-5,
                   in_bits: int = 8, gamma_bits: int = 16, out_bits: int = 8, norm_bits: int = 16) -> LayerNormSpec:
    """Compile-time constants of an integer LayerNorm from the float parameters and pow2 scales:
    gamma per tensor on a signed gamma_bits pow2 grid, beta on gamma's grid times 2^-norm_bits, the
    square root's fraction bits A as large as keeps (W + E) << 2A below 2^62."""
    gamma = np.ones(n) if gamma is None else np.asarray(gamma, np.float64)
    beta = np.zeros(n) if beta is None else np.asarray(beta, np.float64)
    e_g = pow2_exp(float(np.abs(gamma).max()), gamma_bits)
    g = np.clip(np.rint(gamma / 2.0**e_g), -(2 ** (gamma_bits - 1)), 2 ** (gamma_bits - 1) - 1)
    b = np.rint(beta / 2.0 ** (e_g - norm_bits))
    eps_int = round(eps * n * n / 2.0 ** (2 * x_exp))
    w_max = n * n * 4 ** (in_bits - 1) + eps_int
    a = min(max((62 - w_max.bit_length()) // 2, 0), 62 - NORM_RECIP_BITS)
    return LayerNormSpec(n=n, eps_int=eps_int, sqrt_bits=a, gamma=tuple(int(v) for v in g),
                         beta=tuple(int(v) for v in b), shift=norm_bits - e_g + y_exp,
                         lo=-(2 ** (out_bits - 1)), hi=2 ** (out_bits - 1) - 1, norm_bits=norm_bits)


# ---------------------------------------------------------------------------------------------
# GELU (and any elementwise function of an int8 input): a table over the input range


@dataclass(frozen=True)
class Lut:
    """y = table[q - lo] for q in [lo, lo + len(table))."""

    lo: int
    table: tuple[int, ...]


def lookup(q, lut: Lut) -> np.ndarray:
    q = np.asarray(q, dtype=np.int64)
    i = q - lut.lo
    if np.any(i < 0) or np.any(i >= len(lut.table)):
        raise ValueError(f"table input outside [{lut.lo}, {lut.lo + len(lut.table) - 1}]")
    return np.asarray(lut.table, dtype=np.int64)[i]


def gelu_float(x, approximate: str = "none") -> np.ndarray:
    """ONNX Gelu in float64: 0.5 x (1 + erf(x / sqrt 2)), or with approximate='tanh'
    0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3)))."""
    x = np.asarray(x, dtype=np.float64)
    if approximate == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if approximate != "none":
        raise ValueError(f"Gelu approximate={approximate!r}: 'none' or 'tanh'")
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def lut_for(fn, x_exp: int, y_exp: int, *, in_bits: int = 8, out_bits: int = 8, in_signed: bool = True,
            out_signed: bool = True) -> Lut:
    """table[q - lo] = clamp(round_half_even(fn(q * 2^x_exp) / 2^y_exp)) over the whole input dtype,
    computed once in float64 at compile time."""
    if not 1 <= in_bits <= 16:
        raise ValueError("a table input has 1 to 16 bits")
    lo = -(2 ** (in_bits - 1)) if in_signed else 0
    q = np.arange(lo, lo + 2**in_bits, dtype=np.int64)
    olo, ohi = (-(2 ** (out_bits - 1)), 2 ** (out_bits - 1) - 1) if out_signed else (0, 2**out_bits - 1)
    y = np.clip(np.rint(fn(q * 2.0**x_exp) / 2.0**y_exp), olo, ohi)
    return Lut(lo=lo, table=tuple(int(v) for v in y))


def gelu_table(x_exp: int, y_exp: int, approximate: str = "none", *, in_bits: int = 8, out_bits: int = 8) -> Lut:
    """ONNX Gelu (either approximate mode) as a table over the signed in_bits input."""
    return lut_for(lambda x: gelu_float(x, approximate), x_exp, y_exp, in_bits=in_bits, out_bits=out_bits)
