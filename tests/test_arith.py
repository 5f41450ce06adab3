"""The rounding shift and requantization against an obviously correct Fraction implementation."""
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tony.ir import Requant, Rounding
from tony.ref import arith


def slow_round(p: int, s: int, mode: Rounding) -> int:
    if s <= 0:
        return p * 2 ** (-s)
    q = Fraction(p, 2**s)
    fl = q.numerator // q.denominator
    frac = q - fl
    if mode is Rounding.FLOOR:
        return fl
    if mode is Rounding.HALF_UP:
        return fl + (frac >= Fraction(1, 2))
    if frac > Fraction(1, 2) or (frac == Fraction(1, 2) and fl % 2 == 1):
        return fl + 1
    return fl


@pytest.mark.parametrize("mode", list(Rounding))
def test_rounding_shift_ties_and_signs(mode):
    cases = []
    for s in range(1, 12):
        h = 1 << (s - 1)
        for r in (-5, -4, -1, 0, 1, 2, 3):
            base = r << s
            cases += [base + h, base + h - 1, base + h + 1, base, base - 1]
    p = np.array(cases, dtype=np.int64)
    for s in range(1, 12):
        got = arith.rounding_shift(p, s, mode)
        want = [slow_round(int(v), s, mode) for v in p]
        assert got.tolist() == want


def test_half_even_tie_goes_to_even():
    # 2.5 -> 2, 3.5 -> 4, -2.5 -> -2, -3.5 -> -4 (s = 1)
    got = arith.rounding_shift(np.array([5, 7, -5, -7]), 1, Rounding.HALF_EVEN)
    assert got.tolist() == [2, 4, -2, -4]


@settings(max_examples=400, deadline=None)
@given(p=st.integers(-(2**61), 2**61), s=st.integers(-20, 62), mode=st.sampled_from(list(Rounding)))
def test_rounding_shift_matches_fraction(p, s, mode):
    got = int(arith.rounding_shift(np.array([p]), s, mode)[0])
    want = slow_round(p, s, mode)
    if s < 0:  # left shifts saturate far outside any 32-bit range
        assert got == want or (abs(want) >= 2**31 and abs(got) >= 2**31 and (got > 0) == (want > 0))
    else:
        assert got == want


@settings(max_examples=300, deadline=None)
@given(acc=st.integers(-(2**31), 2**31 - 1), shift=st.integers(-8, 40), mult=st.integers(1, 2**31 - 1),
       zp=st.integers(-10, 10), signed=st.booleans())
def test_requantize_is_round_then_clamp(acc, shift, mult, zp, signed):
    lo, hi = (-128, 127) if signed else (0, 255)
    rq = Requant(shift=shift, lo=lo, hi=hi, mult=mult, zero_point=zp)
    got = int(arith.requantize(np.array([acc]), rq)[0])
    want = min(max(slow_round(acc * mult, shift, Rounding.HALF_EVEN) + zp, lo), hi)
    assert got == want


def test_float64_matmul_is_exact_below_2_53():
    """int8 x int8 products summed in float64 are exact while |sum| < 2^53: worst-case magnitudes."""
    k = 4096
    a = np.full((3, k), -128, dtype=np.int64)
    b = np.full((k, 2), -128, dtype=np.int64)
    b[::2, 1] = 127
    got = arith.matmul_exact(a, b)
    want = np.array([[sum(int(x) * int(y) for x, y in zip(a[i], b[:, j])) for j in range(2)] for i in range(3)])
    assert (got == want).all()
    # a case whose exact sum needs more than 53 bits takes the int64 path and is still exact
    big_a = np.array([[2**40, 1]], dtype=np.int64)
    big_b = np.array([[2**20], [1]], dtype=np.int64)
    assert arith.matmul_exact(big_a, big_b)[0, 0] == 2**60 + 1
    # ...where float64 would have lost the +1
    assert int(np.float64(2**60) + np.float64(1)) != 2**60 + 1


def test_quantize_matches_onnx_definition():
    from tony.ir import INT8, UINT8

    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0], dtype=np.float32)
    assert arith.quantize(x, 1.0, 0, INT8).tolist() == [0, 2, 2, 0, -2, 127, -128]
    assert arith.quantize(x, 1.0, 10, UINT8).tolist() == [10, 12, 12, 10, 8, 255, 0]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31), s=st.integers(-40, 62), mode=st.sampled_from(list(Rounding)))
def test_rounding_shift_one_shift_equals_per_element_shifts(seed, s, mode):
    """The one-shift path (computed in place) against the per-element path with every shift equal,
    left shifts and their saturation included."""
    rng = np.random.default_rng(seed)
    p = np.concatenate([rng.integers(-(2**61), 2**61, 50), rng.integers(-(2**33), 2**33, 50), [0, 1, -1]])
    p0 = p.copy()
    got = arith.rounding_shift(p, s, mode)
    assert got is not p and np.array_equal(p, p0)  # a new array; the input untouched
    assert np.array_equal(got, arith.rounding_shift(p, np.full(p.shape, s), mode))
