"""The Python side of the Softmax unit (templates/tony_softmax.v.j2): the ROM its template renders,
the row inputs for a `SoftmaxSpec`, and its exact cycle counts.

The unit computes `tony.ref.nonlinear.softmax` bit for bit (docs/transformer.md, 'Softmax'); F, P
and the output width are fixed when it is rendered, the shift s and log2e come in with each row.
Its four stages (IN, SUM, DIV, OUT) each work on their own row; `schedule` gives the cycle of every
row's first element taken and last result out for any row lengths, `block_cycles` the closed form
for a block of equal rows (what a SOFTMAX instruction runs), and the unit bench holds the RTL to
`schedule` row by row.
"""
from __future__ import annotations

from ..ref.nonlinear import LOG2E, SoftmaxSpec, softmax_table

EXP_LATENCY = 8
"""Read address to e in the exponent pipeline (q buffer, its output register, d, d * L, the
shift, u, the table, T >> z)."""
DIV_STEP = 2
"""Quotient bits the divider computes a cycle (restoring steps chained in one cycle)."""
DIV_CYCLES = 32 // DIV_STEP
"""R = 2^(P + 31) // S has 32 bits: 32 / DIV_STEP cycles of the divider."""
OUT_LATENCY = 5
"""Read address to the output register in OUT (the e buffer, its output register, e * R in two
stages, the rounding shift)."""
Q_SLOTS = 2
"""Rows the q buffer holds (IN writes one while SUM reads another)."""
E_SLOTS = 4
"""Rows the e buffer holds (from SUM's start to OUT's last read: enough that no stage waits for one
once rows follow each other; see `block_cycles`)."""
LOG2E_BITS = 16
FRAC_BITS = 6
"""F of the unit the accelerator instantiates (SOFTMAX, docs/isa.md): the SoftmaxSpec default."""
TABLE_BITS = 15
"""P of that unit (the SoftmaxSpec default)."""
SHIFT_BITS = 6
"""Width of that unit's shift input (any s of an A_BITS + 1-bit input fits: s <= A_BITS + 18)."""


def _check_rows(ns) -> None:
    for n in ns:
        if n < 1:
            raise ValueError(f"softmax unit: a row has at least one element, not {n}")


def schedule(ns) -> list[tuple[int, int]]:
    """(first, last) for rows of the lengths `ns` sent back to back, the input always valid and the
    output always ready: the cycle each row's first element is taken and the cycle its last result
    leaves (out_valid_o high), counted from the first row's first element (cycle 0).

    The stages as the RTL runs them, row k of n_k elements (every "cycle" is the cycle an event
    happens in; a register it sets shows in the next):
      a_k   first element taken: the previous row is in (l_{k-1} + 1) and a q slot is free
            (SUM issued row k - Q_SLOTS's last read before: sl + 1)
      l_k   = a_k + n_k - 1, its last element
      ss_k  SUM starts it: it is complete (l_k, the same cycle), SUM issues the previous row's
            last read (sl_{k-1}) or is idle, an e slot is free (OUT read row k - E_SLOTS's last
            element before: ol + 1); its reads are ss_k + 1 .. sl_k = ss_k + n_k
      c_k   = sl_k + EXP_LATENCY: the last e is added, S complete
      ds_k  DIV starts: S complete (c_k + 1), the divider idle or handing over (dh_{k-1})
      dh_k  R handed to OUT: ds_k + DIV_CYCLES + 1 at the earliest, and when R's register is free
            (OUT took the previous R: os_{k-1})
      os_k  OUT takes R: dh_k + 1, and OUT issues the previous row's last read (ol_{k-1}) or idles;
            reads os_k + 1 .. ol_k = os_k + n_k
      last  = ol_k + OUT_LATENCY
    """
    ns = list(ns)
    _check_rows(ns)
    a, l, sl, ol, dh, os_ = [], [], [], [], [], []
    out = []
    for k, n in enumerate(ns):
        ak = 0 if k == 0 else l[-1] + 1
        if k >= Q_SLOTS:
            ak = max(ak, sl[k - Q_SLOTS] + 1)
        lk = ak + n - 1
        ss = lk if k == 0 else max(lk, sl[-1])
        if k >= E_SLOTS:
            ss = max(ss, ol[k - E_SLOTS] + 1)
        slk = ss + n
        ck = slk + EXP_LATENCY
        ds = ck + 1 if k == 0 else max(ck + 1, dh[-1])
        dhk = ds + DIV_CYCLES + 1 if k == 0 else max(ds + DIV_CYCLES + 1, os_[-1])
        osk = dhk + 1 if k == 0 else max(dhk + 1, ol[-1])
        olk = osk + n
        a.append(ak); l.append(lk); sl.append(slk); dh.append(dhk); os_.append(osk); ol.append(olk)
        out.append((ak, olk + OUT_LATENCY))
    return out


def row_latency(n: int) -> int:
    """Cycles from a row's first element taken to its last result out, the unit otherwise empty:
    n (IN) + n + EXP_LATENCY (SUM) + 1 + DIV_CYCLES + 1 (DIV: S taken, the steps, R handed over)
    + 1 + n + OUT_LATENCY (OUT) - 1 = 3 n + DIV_CYCLES + 15."""
    _check_rows([n])
    return 3 * n + EXP_LATENCY + DIV_CYCLES + OUT_LATENCY + 2


def row_period(n: int) -> int:
    """Cycles between back-to-back rows of n elements: IN takes n, the divider DIV_CYCLES + 1;
    the other stages keep up, and E_SLOTS e slots are enough that none waits for one."""
    _check_rows([n])
    return max(n, DIV_CYCLES + 1)


def block_cycles(rows: int, n: int) -> int:
    """Cycles from the first element of `rows` back-to-back rows of n elements taken to the cycle
    after their last result: row_latency(n) + 1 + (rows - 1) row_period(n) (equal to `schedule`,
    tests/test_softmax_timing.py)."""
    if rows < 1:
        raise ValueError(f"softmax unit: a block has at least one row, not {rows}")
    return row_latency(n) + 1 + (rows - 1) * row_period(n)


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
    """What the template needs beyond its parameters: the ROM T[r] = round(2^(P - r / 2^F)), the
    divider's step and the buffers' slots (powers of two)."""
    check_params(values)
    return {"table": [int(v) for v in softmax_table(values["FRAC_BITS"], values["TABLE_BITS"])],
            "DIV_STEP": DIV_STEP, "DIV_CYCLES": DIV_CYCLES,
            "Q_SLOTS": Q_SLOTS, "Q_SLOT_BITS": Q_SLOTS.bit_length() - 1,
            "E_SLOTS": E_SLOTS, "E_SLOT_BITS": E_SLOTS.bit_length() - 1}


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


__all__ = ["DIV_CYCLES", "DIV_STEP", "EXP_LATENCY", "E_SLOTS", "FRAC_BITS", "OUT_LATENCY", "Q_SLOTS", "SHIFT_BITS",
           "TABLE_BITS", "block_cycles", "check_params", "row_latency", "row_period", "schedule", "template_context",
           "unit_inputs"]
