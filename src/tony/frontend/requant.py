"""Turn a real rescale ratio into an integer (mult, shift) pair: pow2 or multiplier mode."""
from __future__ import annotations

import math

from ..errors import UnsupportedError
from ..ir.types import pow2_exponent

MODES = ("pow2", "multiplier", "auto")
MULT_BITS = 31  # M < 2^31


def rescale(ratio: float, mode: str, *, where: str, what: str = "rescale") -> tuple[int, int]:
    """(mult, shift) with ratio ~= mult * 2^-shift.

    pow2: ratio must be an exact power of two; mult = 1 and shift = -log2(ratio).
    multiplier: mult in [2^30, 2^31), shift chosen to keep 31 bits of the ratio (exact when the
    ratio is a power of two, then mult = 1). auto: pow2 when exact, multiplier otherwise.
    """
    e = pow2_exponent(ratio)
    if e is not None:
        return 1, -e
    if mode == "pow2":
        raise UnsupportedError(
            f"{what} ratio {ratio:.9g} is not a power of two, which pow2 mode requires",
            where=where,
            hint="compile with --requant multiplier, or rewrite the scales with `tony quantize --snap-pow2`")
    if not (ratio > 0 and math.isfinite(ratio)):
        raise UnsupportedError(f"{what} ratio {ratio!r} is not a positive finite number", where=where)
    m, ex = math.frexp(ratio)          # ratio = m * 2^ex, m in [0.5, 1)
    mult = round(m * (1 << MULT_BITS))
    shift = MULT_BITS - ex
    if mult == 1 << MULT_BITS:
        mult >>= 1
        shift -= 1
    return mult, shift
