"""The Python side of the Softmax unit (templates/tony_softmax.v.j2): the ROM its template renders,
the row inputs for a `SoftmaxSpec`, and its exact cycle count per row.

The unit computes `tony.ref.nonlinear.softmax` bit for bit (docs/transformer.md, 'Softmax'); F, P
and the output width are fixed when it is rendered, the shift s and log2e come in with each row.
"""
from __future__ import annotations

from ..ref.nonlinear import LOG2E, SoftmaxSpec, softmax_table

EXP_LATENCY = 8
"""Read address to e in the exponent pipeline (row buffer, its output register, d, d * L, the
shift, u, the table, T >> z)."""
DIV_CYCLES = 32
"""One quotient bit a cycle: R = 2^(P + 31) // S has 32 bits."""
OUT_LATENCY = EXP_LATENCY + 3
"""Read address to the output register (e * R in two stages, the rounding shift)."""
LOG2E_BITS = 16
FRAC_BITS = 6
"""F of the unit the accelerator instantiates (SOFTMAX, docs/isa.md): the SoftmaxSpec default."""
TABLE_BITS = 15
"""P of that unit (the SoftmaxSpec default)."""
SHIFT_BITS = 6
"""Width of that unit's shift input (any s of an A_BITS + 1-bit input fits: s <= A_BITS + 18)."""


def row_cycles(n: int) -> int:
    """Cycles from the cycle a row's first element is taken to the cycle the next row's first can
    be, for a row of n elements with the input always valid and the output always ready:
    n (IN) + n + EXP_LATENCY (SUM) + DIV_CYCLES (DIV) + n + OUT_LATENCY (OUT) = 3 n + 51.
    The last result leaves in the cycle before (row_cycles(n) - 1 after the first element)."""
    if n < 1:
        raise ValueError(f"softmax unit: a row has at least one element, not {n}")
    return 3 * n + EXP_LATENCY + DIV_CYCLES + OUT_LATENCY


def check_params(values: dict) -> None:
    """One-line errors for parameters the unit cannot take (the ranges of SoftmaxSpec, widths that
    the datapath's fixed 16-bit log2e and 32-bit reciprocal assume)."""
    f, p, ob = values["FRAC_BITS"], values["TABLE_BITS"], values["OUT_BITS"]
    if not 1 <= f <= 12 or not 8 <= p <= 24 or not 1 <= ob <= 16:
        raise ValueError(f"tony_softmax: FRAC_BITS={f} in [1, 12], TABLE_BITS={p} in [8, 24], OUT_BITS={ob} in [1, 16]")
    if not 2 <= values["IN_BITS"] <= 46:
        raise ValueError(f"tony_softmax: IN_BITS={values['IN_BITS']} in [2, 46]")
    if values["MAX_N"] < 1:
        raise ValueError(f"tony_softmax: MAX_N={values['MAX_N']} must be at least 1")
    if not 1 <= values["SHIFT_BITS"] <= 8:
        raise ValueError(f"tony_softmax: SHIFT_BITS={values['SHIFT_BITS']} in [1, 8]")


def template_context(values: dict) -> dict:
    """What the template needs beyond its parameters: the ROM T[r] = round(2^(P - r / 2^F))."""
    check_params(values)
    return {"table": [int(v) for v in softmax_table(values["FRAC_BITS"], values["TABLE_BITS"])]}


def unit_inputs(spec: SoftmaxSpec, *, in_bits: int, out_bits: int, frac_bits: int, table_bits: int,
                shift_bits: int = 6) -> tuple[int, int]:
    """(shift_i, log2e_i) for rows of `spec` on a unit rendered with these parameters.

    Raises ValueError where the unit computes something else: F, P or the output width differ. A
    shift past the product's width (any s >= in_bits + 17 rounds every u to 0) is given as the
    smallest such s, so every input scale fits a shift_bits-wide port."""
    got = (spec.frac_bits, spec.table_bits, spec.out_bits)
    want = (frac_bits, table_bits, out_bits)
    if got != want:
        raise ValueError(f"softmax spec (F, P, out_bits) = {got}, the unit has {want}")
    if not 1 <= spec.log2e <= LOG2E or spec.log2e >= 1 << LOG2E_BITS:
        raise ValueError(f"softmax spec log2e={spec.log2e} does not fit the unit's {LOG2E_BITS}-bit input")
    shift = min(spec.shift, in_bits + LOG2E_BITS + 1)
    if shift >= 1 << shift_bits:
        raise ValueError(f"softmax shift {shift} does not fit SHIFT_BITS={shift_bits}")
    return shift, spec.log2e


__all__ = ["DIV_CYCLES", "EXP_LATENCY", "FRAC_BITS", "OUT_LATENCY", "SHIFT_BITS", "TABLE_BITS", "check_params", "row_cycles", "template_context",
           "unit_inputs"]
