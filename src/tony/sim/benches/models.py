"""Cycle-free Python models of the hardware blocks, for the unit testbenches.

Plain Python ints, written to be obviously right; they follow the integer arithmetic
contract (docs/) and the module header comments in tony/rtl/templates/.
"""
from __future__ import annotations

from collections.abc import Sequence

ROUND_HALF_EVEN = 0
ROUND_HALF_UP = 1
ROUND_FLOOR = 2


def wrap(value: int, bits: int) -> int:
    """`value` modulo 2^bits, read back as a signed bits-wide integer."""
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def to_signed(value: int, bits: int) -> int:
    """Read the low `bits` bits of `value` as two's complement."""
    return wrap(value, bits)


def matmul(A: Sequence[Sequence[int]], B: Sequence[Sequence[int]], acc_bits: int = 32) -> list[list[int]]:
    """C = A (ROWS x K) @ B (K x COLS), each entry wrapped to signed acc_bits (tony_os_array's tiles)."""
    rows, k = len(A), len(A[0]) if A else 0
    cols = len(B[0]) if B else 0
    if len(B) != k:
        raise ValueError(f"A is {rows}x{k} but B has {len(B)} rows")
    return [[wrap(sum(int(A[r][i]) * int(B[i][c]) for i in range(k)), acc_bits) for c in range(cols)] for r in range(rows)]


def round_shift(p: int, s: int, round_mode: int = ROUND_HALF_EVEN) -> int:
    """p / 2^s rounded as the contract says (s > 0), or p * 2^-s exactly (s <= 0)."""
    if s <= 0:
        return p << (-s)
    r = p >> s  # Python's >> on ints is an arithmetic (floor) shift
    rem = p & ((1 << s) - 1)
    h = 1 << (s - 1)
    if round_mode == ROUND_HALF_EVEN:
        return r + (1 if rem > h or (rem == h and r & 1) else 0)
    if round_mode == ROUND_HALF_UP:
        return (p + h) >> s
    if round_mode == ROUND_FLOOR:
        return r
    raise ValueError(f"unknown round mode {round_mode}")


def ppu(acc: int, bias: int, mult: int, shift: int, lo: int, hi: int, round_mode: int = ROUND_HALF_EVEN) -> int:
    """One lane of tony_ppu: clamp(round_shift((acc + bias) * mult, shift), lo, hi).

    Returns the clamped integer; the hardware outputs its low OUT_BITS bits.
    """
    t = acc + bias
    p = t * mult
    y = round_shift(p, shift, round_mode)
    return min(max(y, lo), hi)
