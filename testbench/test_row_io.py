"""Unit testbench of tony_row_io: rows of activation words to one element a cycle and back.

The bench serves the activation-buffer read port with a Python model of its registered read (a
word read in cycle t is on act_rdata_i from t+1 until the next read) and stands in for the unit
on the other side: it takes elements when its random el_ready_i is high (the Softmax and LayerNorm
units hold ready low between rows) and gives back, in order and with random gaps, a result per
element, f(x) = (x * 5 + row) mod 2^OUT_BITS, either a few cycles after the element or, as a
unit with several rows in flight does, a row or several rows later (the packer writing row p while
the serializer hands over rows p+1 and on). Each instruction (random rows, row lengths from 1
to past several words, so that most rows end inside a word, random channel-group stride and
addresses, signed and unsigned inputs) must hand over exactly every row's elements, lane g*COLS + l
of word base + p + g*cstride, extended to IN_BITS as signed or unsigned, with el_last_o on each
row's last; its writes must be exactly the rows' words at obase + p + g*cstride, the results in
their lanes and 0 past the row's end, each word once; busy_o must stay high until the last write
and fall after it. `test_row_io` is the pytest entry.
"""
from __future__ import annotations

import cocotb
from cocotb.triggers import FallingEdge, ReadOnly

from tony.sim.benches.common import log_seed, reset, signed, start_clock, unpack

INSTRUCTIONS = 40
TIMEOUT = 20000      # cycles one instruction may take


class TB:
    def __init__(self, dut, rng):
        self.dut, self.rng = dut, rng
        self.cols = int(dut.COLS.value)
        self.a_bits = int(dut.A_BITS.value)
        self.in_bits = int(dut.IN_BITS.value)
        self.out_bits = int(dut.OUT_BITS.value)
        self.mem: dict[int, int] = {}
        self.overlaps = 0           # words written after a later row was handed over entirely
        start_clock(dut.clk_i)

    def idle(self) -> None:
        for name in ("go_i", "ibase_i", "obase_i", "npix_i", "klen_i", "cstride_i", "a_signed_i", "act_rdata_i",
                     "el_ready_i", "res_valid_i", "res_data_i"):
            getattr(self.dut, name).value = 0

    def result(self, x: int, row: int) -> int:
        return (x * 5 + row) % (1 << self.out_bits)

    async def run(self, npix: int, n: int, cstride: int, ibase: int, obase: int, sgn: bool) -> int:
        d, rng, C, A = self.dut, self.rng, self.cols, self.a_bits
        groups = -(-n // C)
        rows = []
        for p in range(npix):       # the source words, random lanes everywhere (past n too)
            for g in range(groups):
                self.mem[ibase + p + g * cstride] = rng.getrandbits(C * A)
            lanes = [v for g in range(groups) for v in unpack(self.mem[ibase + p + g * cstride], C, A, sgn)]
            rows.append(lanes[:n])
        want_writes = {}
        for p, row in enumerate(rows):
            res = [self.result(x, p) for x in row] + [0] * (groups * C - n)
            for g in range(groups):
                want_writes[obase + p + g * cstride] = sum(v << (k * A) for k, v in enumerate(res[g * C:(g + 1) * C]))
        got_el, got_writes = [], {}
        queue = []                  # (cycle the result may leave, value)
        pending_read = None
        d.go_i.value, d.ibase_i.value, d.obase_i.value = 1, ibase, obase
        d.npix_i.value, d.klen_i.value, d.cstride_i.value, d.a_signed_i.value = npix, n, cstride, int(sgn)
        await FallingEdge(d.clk_i)
        d.go_i.value = 0
        p_ready = rng.choice([1.0, 0.7, 0.3])
        p_res = rng.choice([1.0, 0.5])
        lag = rng.choice([0, 0, n + 20, 3 * n + 40])     # results of row p while rows p+1, ... go in
        done_at = None
        for cyc in range(TIMEOUT):
            # drive this cycle's inputs, then sample the outputs once they have settled (the read
            # enable depends on el_ready_i: a word moves into the shift register and the next read
            # issues in the cycle the unit takes the word's last element)
            if pending_read is not None:          # the read of the previous cycle shows now
                d.act_rdata_i.value = self.mem[pending_read]
            ready = rng.random() < p_ready
            d.el_ready_i.value = int(ready)
            if queue and queue[0][0] <= cyc and rng.random() < p_res:
                d.res_valid_i.value, d.res_data_i.value = 1, queue.pop(0)[1]
            else:
                d.res_valid_i.value = 0
            await ReadOnly()
            pending_read = int(d.act_raddr_o.value) if int(d.act_re_o.value) else None
            if pending_read is not None:
                assert pending_read in self.mem, f"read of word {pending_read}, which holds no row"
            if ready and int(d.el_valid_o.value):
                x = signed(int(d.el_data_o.value), self.in_bits)
                p = len(got_el) // n
                got_el.append((x, int(d.el_last_o.value)))
                queue.append((cyc + lag + rng.randint(1, 6), self.result(x, p)))
            if int(d.wb_we_o.value):
                a = int(d.wb_addr_o.value)
                assert a not in got_writes, f"word {a} written twice"
                got_writes[a] = int(d.wb_data_o.value)
                if len(got_el) // n > (a - obase) % cstride + 1:   # a later row fully handed over
                    self.overlaps += 1
            busy = int(d.busy_o.value)
            if len(got_writes) == len(want_writes) and done_at is None:
                done_at = cyc
            if done_at is not None and cyc > done_at:
                assert not busy, "busy_o after the last write"
                break
            assert busy or cyc == 0, f"busy_o low in cycle {cyc} with {len(got_writes)} of {len(want_writes)} words"
            await FallingEdge(d.clk_i)
        else:
            raise AssertionError(f"timeout: {len(got_el)} elements, {len(got_writes)} words")
        await FallingEdge(d.clk_i)
        d.res_valid_i.value = d.el_ready_i.value = 0
        want_el = [(x, int(k == n - 1)) for row in rows for k, x in enumerate(row)]
        if got_el != want_el:
            k = next((k for k, (a, b) in enumerate(zip(got_el, want_el)) if a != b), min(len(got_el), len(want_el)))
            raise AssertionError(f"elements handed to the unit ({npix} rows of {n}, cstride {cstride}, "
                                 f"{'signed' if sgn else 'unsigned'}): element {k} is {got_el[k:k + 3]}, "
                                 f"expected {want_el[k:k + 3]}; {len(got_el)} of {len(want_el)}")
        assert got_writes == want_writes, "words written back"
        return npix * n


@cocotb.test()
async def test_rows_to_elements_and_back(dut):
    rng = log_seed(dut)
    tb = TB(dut, rng)
    tb.idle()
    await reset(dut.clk_i, dut.rst_ni)
    checked = 0
    for i in range(INSTRUCTIONS):
        n = rng.choice([1, tb.cols, tb.cols + 1, rng.randint(1, 4 * tb.cols + 3)])
        npix = rng.randint(1, 6)
        cstride = npix + rng.randint(0, 5)
        ibase = rng.randint(0, 500)
        obase = ibase + cstride * (-(-n // tb.cols)) + rng.randint(0, 50)
        checked += await tb.run(npix, n, cstride, ibase, obase, bool(i % 2))
    dut._log.info("%d elements checked, %d words written behind a later row", checked, tb.overlaps)
    assert tb.overlaps > 0, "no word was written while a later row went in: the overlap went untested"


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:
    from tony.sim.benches.common import run_unit_bench

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [{"COLS": 4, "A_BITS": 8, "IN_BITS": 9, "OUT_BITS": 8},
                                        {"COLS": 1, "A_BITS": 8, "IN_BITS": 9, "OUT_BITS": 8},
                                        {"COLS": 3, "A_BITS": 6, "IN_BITS": 7, "OUT_BITS": 5}],
                             ids=lambda p: "_".join(f"{k}{v}" for k, v in p.items()))
    def test_row_io(params, tmp_path):
        run_unit_bench(__name__, "tony_row_io", tmp_path, parameters=params)
