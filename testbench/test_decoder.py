"""Unit testbench of tony_decoder, the one module that slices an instruction word.

Random instructions of every opcode (and unknown opcodes), encoded with tony.accel.isa.encode
from random in-range field values, plus raw random words: every field output must equal the
field's bits as tony.accel.isa lays them out (signed fields as raw two's complement), the opcode
one-hot must name the opcode (none for an unknown one), and the flag and SYNC bits their bits.
`test_decoder` at the bottom is the pytest entry.
"""
from __future__ import annotations

import random

import cocotb
from cocotb.triggers import Timer

from tony.sim.benches.common import log_seed, run_unit_bench

VECTORS = 1500


def random_word(rng: random.Random) -> int:
    """An instruction word: encoded from random field values, or raw random bits."""
    from tony.accel import isa

    kind = rng.random()
    if kind < 0.15:
        return rng.getrandbits(isa.INSTR_BITS)
    op = rng.choice(list(isa.OPNAMES)) if kind < 0.95 else rng.randint(isa.EWISE + 1, 15)
    if op not in isa.OPNAMES:
        return op | rng.getrandbits(isa.INSTR_BITS - 4) << 4
    fields = isa.DMA_FIELDS if op in (isa.LOAD, isa.STORE) else isa.COMPUTE_FIELDS if op >= isa.CONV else {}
    values = {}
    for name, f in fields.items():
        if f.signed:
            values[name] = rng.randint(-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1)
        else:
            values[name] = rng.choice([0, (1 << f.bits) - 1, rng.getrandbits(f.bits)])
    return isa.encode(op, flags=rng.getrandbits(8), sync=rng.getrandbits(4), **values)


@cocotb.test()
async def test_decoder_fields(dut):
    from tony.accel import isa

    rng = log_seed(dut)
    words = [0, (1 << isa.INSTR_BITS) - 1] + [random_word(rng) for _ in range(VECTORS)]
    for n, word in enumerate(words):
        dut.instr_i.value = word
        await Timer(1, unit="ns")
        for name, f in isa.FIELDS.items():
            want = (word >> f.lo) & ((1 << f.bits) - 1)
            got = int(getattr(dut, f"{name}_o").value)
            assert got == want, f"vector {n} ({isa.describe(word)}): {name}_o = {got:#x}, expected {want:#x}"
        op = word & 0xF
        for code, opname in isa.OPNAMES.items():
            assert int(getattr(dut, f"op_{opname.lower()}_o").value) == int(op == code), (n, opname, op)
        flags, sync = isa.decode(word)["flags"], isa.decode(word)["sync"]
        for port, bit in (("flag_a_signed_o", isa.F_A_SIGNED), ("flag_b_signed_o", isa.F_B_SIGNED),
                          ("flag_has_b_o", isa.F_HAS_B), ("flag_max_o", isa.F_MAX)):
            assert int(getattr(dut, port).value) == int(bool(flags & bit)), (n, port)
        for port, bit in (("sync_dma_o", isa.S_DMA), ("sync_stream_o", isa.S_STREAM),
                          ("sync_compute_o", isa.S_COMPUTE)):
            assert int(getattr(dut, port).value) == int(bool(sync & bit)), (n, port)
    dut._log.info("%d instruction words decoded", len(words))


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    def test_decoder(tmp_path):
        run_unit_bench(__name__, "tony_decoder", tmp_path)
