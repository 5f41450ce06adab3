"""The integer arithmetic contract in executable form (docs/arithmetic.md).

All functions take and return int64 numpy arrays holding exact integers.
"""
from __future__ import annotations

import numpy as np

from ..ir.types import DType, Requant, Rounding

MAX_SHIFT = 62  # |t * mult| < 2^62 by the ACC_BITS <= 32, mult < 2^31 contract


def rounding_shift(p, s, mode: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """Divide p by 2^s with the chosen rounding (s > 0), or multiply by 2^-s exactly (s <= 0).

    docs/arithmetic.md, 'The rounding shift':
      r = p >> s; rem = p & (2^s - 1); h = 2^(s-1)
      half_even: r + (rem > h or (rem == h and r odd));  half_up: (p + h) >> s;  floor: r.
    Left shifts saturate far outside any 32-bit range instead of wrapping.
    """
    p = np.asarray(p, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if np.any(s > MAX_SHIFT):
        raise ValueError(f"shift {int(s.max())} exceeds {MAX_SHIFT}")
    if s.ndim == 0:
        # one shift for the whole tensor: the same rounding in one pass, in place on one new array.
        # Half-even adds h - 1 plus r's lowest bit, which carries into r exactly when rem > h, or
        # rem == h and r is odd. s <= 0: the saturating left shift below (s = 0: p itself).
        k = int(s)
        if k <= 0:
            y = np.clip(p, -(1 << 31), 1 << 31) if k < 0 else p.copy()
            y <<= min(-k, 31)
            return y
        if mode is Rounding.FLOOR:
            return p >> k
        if mode is Rounding.HALF_UP:
            y = p + (1 << (k - 1))
        else:
            y = p >> k
            y &= 1
            y += p
            y += (1 << (k - 1)) - 1
        y >>= k
        return y
    sr = np.maximum(s, 0)
    r = p >> sr
    if mode is Rounding.FLOOR:
        y = r
    else:
        rem = p & ((np.int64(1) << sr) - 1)
        h = np.where(sr > 0, np.int64(1) << np.maximum(sr - 1, 0), 0)
        if mode is Rounding.HALF_EVEN:
            up = (sr > 0) & ((rem > h) | ((rem == h) & ((r & 1) == 1)))
        elif mode is Rounding.HALF_UP:
            up = (sr > 0) & (rem >= h)
        else:  # pragma: no cover - enum is closed
            raise ValueError(mode)
        y = r + up.astype(np.int64)
    if np.any(s < 0):
        sl = np.minimum(np.maximum(-s, 0), 31)
        left = np.clip(p, -(1 << 31), 1 << 31) << sl
        y = np.where(s < 0, left, y)
    return y


def saturate(x, lo: int, hi: int) -> np.ndarray:
    return np.clip(np.asarray(x, dtype=np.int64), lo, hi)


def _per_channel(v, ndim: int, axis: int = 1):
    if isinstance(v, tuple):
        shape = [1] * ndim
        shape[axis] = len(v)
        return np.asarray(v, dtype=np.int64).reshape(shape)
    return np.int64(v)


def requantize(acc, rq: Requant, channel_axis: int = 1) -> np.ndarray:
    """y = clamp(round_shift(acc * mult, shift) + zp, lo, hi) (docs/arithmetic.md, 'Requantization')."""
    acc = np.asarray(acc, dtype=np.int64)
    mult = _per_channel(rq.mult, acc.ndim, channel_axis)
    shift = _per_channel(rq.shift, acc.ndim, channel_axis)
    p = acc if (np.ndim(mult) == 0 and mult == 1) else acc * mult
    y = rounding_shift(p, shift, rq.rounding)  # a new array
    if rq.zero_point:
        y += rq.zero_point
    return np.clip(y, rq.lo, rq.hi, out=y if isinstance(y, np.ndarray) else None)


def quantize(x, scale: float, zero_point: int, dt: DType) -> np.ndarray:
    """ONNX QuantizeLinear: saturate(round_half_even(x / scale) + zero_point), in float32."""
    x = np.asarray(x, dtype=np.float32)
    q = np.rint(x / np.float32(scale)).astype(np.float64) + zero_point
    return np.clip(q, dt.min, dt.max).astype(np.int64)


def dequantize(q, scale: float, zero_point: int) -> np.ndarray:
    """ONNX DequantizeLinear: (q - zero_point) * scale, in float32."""
    return (np.asarray(q, dtype=np.int64) - zero_point).astype(np.float32) * np.float32(scale)


def exact_float_dtype(bound: float):
    """The float type in which integer products and sums of magnitude <= `bound` are all exact:
    float32 below 2^24, float64 below 2^53 (every integer of that size is representable, so any
    summation order, blocking or FMA gives the exact result); None above (use int64)."""
    if bound < 2.0**24:
        return np.float32
    if bound < 2.0**53:
        return np.float64
    return None


def matmul_exact(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact integer a @ b.

    Every partial sum is bounded by max|a| * max_j sum_k |b[k, j]|; uses float32 or float64 BLAS
    when that bound makes each product and each sum an exactly representable integer
    (exact_float_dtype), int64 arithmetic otherwise.
    """
    bound = float(np.abs(a).max(initial=0)) * float(np.abs(b).sum(axis=0).max(initial=0))
    dt = exact_float_dtype(bound)
    if dt is not None:
        return (a.astype(dt) @ b.astype(dt)).astype(np.int64)
    return a.astype(np.int64) @ b.astype(np.int64)


def divide_round(p, num: int, den: int, mode: Rounding = Rounding.HALF_EVEN) -> np.ndarray:
    """p * num / den rounded to an integer exactly (num, den > 0), with the rounding of
    'The rounding shift': the host's exact division (docs/arithmetic.md, 'Exact division')."""
    p = np.asarray(p, dtype=np.int64)
    big = float(np.abs(p).max(initial=0)) * num >= 2.0**62 or den >= 2**62
    t = p.astype(object) * num if big else p * np.int64(num)
    q = t // den
    r2 = 2 * (t - q * den)
    if mode is Rounding.FLOOR:
        up = np.zeros(np.shape(q), bool)
    elif mode is Rounding.HALF_UP:
        up = r2 >= den
    else:
        up = (r2 > den) | ((r2 == den) & (q % 2 == 1))
    return (q + up).astype(np.int64)
