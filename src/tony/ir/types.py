"""Integer IR data types: dtypes, tensors, requantization parameters.

Everything here is immutable data. See docs/arithmetic.md for the contract these encode.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum


@dataclass(frozen=True)
class DType:
    """An integer dtype (bits, signed) or float32 (only at the host boundary)."""

    bits: int
    signed: bool
    is_float: bool = False

    @property
    def name(self) -> str:
        if self.is_float:
            return f"float{self.bits}"
        return f"{'int' if self.signed else 'uint'}{self.bits}"

    @property
    def min(self) -> int:
        if self.is_float:
            raise TypeError("float dtype has no integer range")
        return -(1 << (self.bits - 1)) if self.signed else 0

    @property
    def max(self) -> int:
        if self.is_float:
            raise TypeError("float dtype has no integer range")
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    def contains(self, lo: int, hi: int) -> bool:
        return self.min <= lo and hi <= self.max

    def __str__(self) -> str:
        return self.name


INT4 = DType(4, True)
INT8 = DType(8, True)
UINT8 = DType(8, False)
INT16 = DType(16, True)
INT32 = DType(32, True)
FLOAT32 = DType(32, True, is_float=True)


def dtype(name: str) -> DType:
    """DType from a name such as 'int8' or 'uint4'."""
    if name.startswith("float"):
        return DType(int(name[5:]), True, is_float=True)
    signed = not name.startswith("u")
    return DType(int(name[4 if not signed else 3:]), signed)


class Rounding(str, Enum):
    """How a right shift by s > 0 rounds (docs/arithmetic.md, 'The rounding shift')."""

    HALF_EVEN = "half_even"
    HALF_UP = "half_up"
    FLOOR = "floor"

    @property
    def code(self) -> int:
        """The ROUND_MODE parameter of the RTL post-processing unit."""
        return {"half_even": 0, "half_up": 1, "floor": 2}[self.value]


def pow2_exponent(scale: float) -> int | None:
    """e such that scale == 2**e exactly, else None."""
    if not (scale > 0 and math.isfinite(scale)):
        return None
    m, e = math.frexp(scale)
    return e - 1 if m == 0.5 else None


@dataclass(frozen=True)
class Tensor:
    """An IR tensor: real = (int - zero_point) * scale. Zero point is 0 inside the accelerator."""

    name: str
    shape: tuple[int, ...]
    dtype: DType
    scale: float = 1.0
    zero_point: int = 0

    @property
    def exp(self) -> int | None:
        """log2(scale) when the scale is a power of two (pow2 mode), else None."""
        return pow2_exponent(self.scale)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    def describe(self) -> str:
        s = f"{self.dtype}{list(self.shape)}"
        if not self.dtype.is_float:
            e = self.exp
            s += f" scale=2^{e}" if e is not None else f" scale={self.scale:.9g}"
            if self.zero_point:
                s += f" zp={self.zero_point}"
        return s


@dataclass(frozen=True)
class Requant:
    """acc -> out: y = clamp(round_shift(acc * mult, shift) + zero_point, lo, hi).

    `shift` and `mult` are ints (per tensor) or tuples (per output channel, reference only).
    shift > 0 is a rounding right shift, shift <= 0 an exact left shift. lo/hi already combine the
    fused activation clamp and the destination dtype's range.
    """

    shift: int | tuple[int, ...]
    lo: int
    hi: int
    mult: int | tuple[int, ...] = 1
    rounding: Rounding = Rounding.HALF_EVEN
    zero_point: int = 0

    @property
    def per_channel(self) -> bool:
        return isinstance(self.shift, tuple) or isinstance(self.mult, tuple)

    @property
    def is_pow2(self) -> bool:
        m = self.mult if isinstance(self.mult, tuple) else (self.mult,)
        return all(v == 1 for v in m)

    def describe(self) -> str:
        parts = []
        if not self.is_pow2:
            parts.append(f"*{self.mult}")
        parts.append(f">>{self.shift}")
        if self.zero_point:
            parts.append(f"+{self.zero_point}")
        parts.append(f"clamp[{self.lo},{self.hi}]")
        if self.rounding is not Rounding.HALF_EVEN:
            parts.append(self.rounding.value)
        return " ".join(parts)
