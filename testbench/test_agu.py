"""Unit testbench of tony_agu, the implicit-im2col address generator.

Random convolution geometries (kernel, stride, dilation, padding, channel range, batch) are
encoded as CONV instructions and decoded (tony.accel.isa) into the AGU's field ports; every cycle's per-row addresses, in-bounds flags (a cycle after
their slice), lanes and slice markers must equal the Python model (tony.accel.model.pixel_walk / tap_walk),
and slices must come at exactly the cycles docs/isa.md gives ('Timing'). With B_ADDR 1, operand
b's address (addr_b_o) must be row 0's plus the offset given with start_i.
"""
from __future__ import annotations


import cocotb
from cocotb.triggers import FallingEdge, RisingEdge

from tony.sim.benches.common import run_unit_bench, log_seed, reset, start_clock


def random_conv(rng, rows: int, cols: int) -> dict:
    """Instruction fields of a random (valid) CONV on a C x H x W input, N samples."""
    from tony.accel import isa

    n = rng.randint(1, 2)
    c = rng.randint(1, 2 * cols + 3)
    h, w = rng.randint(1, 7), rng.randint(1, 7)
    kh, kw = rng.randint(1, 3), rng.randint(1, 3)
    sh, sw = rng.randint(1, 2), rng.randint(1, 2)
    dh, dw = rng.randint(1, 2), rng.randint(1, 2)
    pt, pl, pb, pr = (rng.randint(0, 2) for _ in range(4))
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if oh < 1 or ow < 1:
        return random_conv(rng, rows, cols)
    ic0 = rng.randint(0, c - 1)
    nic = rng.randint(1, c - ic0)
    base = rng.randint(0, 300)
    gstride = n * h * w
    klen = nic * kh * kw
    return dict(flags=isa.F_A_SIGNED, ibase=base + (ic0 // cols) * gstride - pt * w - pl, obase=rng.randint(0, 500),
                npix=n * oh * ow, ow=ow, oh=oh, oy0=0, sw=sw, sh=sh, ixs=-pl, iys=-pt, ix0=-pl, iy0=-pt,
                rjump=sh * w - (ow - 1) * sw, sjump=h * w - (oh - 1) * sh * w - (ow - 1) * sw, h=h, w=w, kh=kh,
                kw=kw, dh=dh, dw=dw, dhw=dh * w, nic=nic, lane0=ic0 % cols, cstride=gstride, klen=klen,
                period=max(klen, rows, cols) + rng.randint(0, 2))


def expected(d: dict, rows: int, cols: int):
    """Per slice (tile, k): row addresses, in-bounds flags, lane; per tile (oaddr, nvalid)."""
    from tony.accel.model import AMASK, pixel_walk, tap_walk

    nt = -(-d["npix"] // rows)
    base, iy, ix = pixel_walk(d, nt * rows)
    ofs, kyd, kxd, lane = tap_walk(d, cols)
    slices, tiles = {}, []
    for t in range(nt):
        for k in range(d["klen"]):
            addrs, inb = [], []
            for r in range(rows):
                p = t * rows + r
                y, x = iy[p] + kyd[k], ix[p] + kxd[k]
                addrs.append(int(base[p] + ofs[k]) & AMASK)
                inb.append(int(p < d["npix"] and 0 <= y < d["h"] and 0 <= x < d["w"]))
            slices[(t, k)] = (addrs, inb, int(lane[k]))
        tiles.append(((d["obase"] + t * rows) & AMASK, min(rows, d["npix"] - t * rows)))
    return nt, slices, tiles


def drive_fields(dut, word: int) -> None:
    """The decoded compute fields of `word` onto the AGU's <field>_i ports (raw field bits)."""
    from tony.accel import isa
    from tony.rtl import AGU_FIELDS

    for name in AGU_FIELDS:
        f = isa.FIELDS[f"c_{name}"]
        getattr(dut, f"{name}_i").value = (word >> f.lo) & ((1 << f.bits) - 1)


@cocotb.test()
async def test_agu_matches_model(dut):
    from tony.accel import isa

    rng = log_seed(dut)
    rows, cols = int(dut.ROWS.value), int(dut.COLS.value)
    b_addr = int(dut.B_ADDR.value)
    aw = isa.ADDR_BITS
    start_clock(dut.clk_i)
    dut.start_i.value = 0
    dut.boff_i.value = 0
    drive_fields(dut, 0)
    await reset(dut.clk_i, dut.rst_ni)
    for trial in range(25):
        d = random_conv(rng, rows, cols)
        word = isa.encode(isa.CONV, **d)
        full = isa.decode(word)
        nt, slices, tiles = expected(full, rows, cols)
        await FallingEdge(dut.clk_i)
        boff = rng.randrange(1 << aw)       # operand b's offset (B_ADDR 1), wrapping past the top
        dut.start_i.value = 1
        dut.boff_i.value = boff
        drive_fields(dut, word)
        await RisingEdge(dut.clk_i)
        await FallingEdge(dut.clk_i)
        dut.start_i.value = 0
        dut.boff_i.value = rng.randrange(1 << aw)   # only the value with start_i counts
        cyc = 1  # cycles since the start cycle
        seen = 0
        pending = None  # the previous cycle's slice: its bounds check (inb_o) comes in this cycle

        def check_inb(pending):
            t, k, addrs, inb, got_a, got_b = pending
            got_i = [(int(dut.inb_o.value) >> r) & 1 for r in range(rows)]
            assert got_i == inb, (trial, t, k, got_i, inb, d)
            assert [a for a, i in zip(got_a, inb) if i] == [a for a, i in zip(addrs, inb) if i], (trial, t, k, d)
            if not b_addr:
                assert got_b == 0
            elif inb[0]:
                assert got_b == (addrs[0] + boff) % (1 << aw), (trial, t, k, got_b, addrs[0], boff, d)

        while int(dut.busy_o.value):
            if pending is not None:
                check_inb(pending)
                pending = None
            off = cyc - 1 - rows
            t, k = divmod(off, full["period"]) if off >= 0 else (-1, -1)
            in_slice = off >= 0 and k < full["klen"]
            assert int(dut.slice_valid_o.value) == int(in_slice), (trial, cyc, d)
            if in_slice:
                addrs, inb, lane = slices[(t, k)]
                word_a = int(dut.addr_o.value)
                got_a = [(word_a >> (r * aw)) & ((1 << aw) - 1) for r in range(rows)]
                pending = (t, k, addrs, inb, got_a, int(dut.addr_b_o.value))
                assert int(dut.lane_o.value) == lane
                assert int(dut.slice_first_o.value) == int(k == 0)
                last = k == full["klen"] - 1
                assert int(dut.slice_last_o.value) == int(last)
                if last:
                    assert (int(dut.tile_oaddr_o.value), int(dut.tile_nvalid_o.value)) == tiles[t]
                seen += 1
            await RisingEdge(dut.clk_i)
            await FallingEdge(dut.clk_i)
            cyc += 1
        if pending is not None:
            check_inb(pending)
        assert cyc == 1 + rows + nt * full["period"], (cyc, d)
        assert seen == nt * full["klen"]


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("params", [{"ROWS": 4, "COLS": 4, "B_ADDR": 0}, {"ROWS": 1, "COLS": 8, "B_ADDR": 1},
                                        {"ROWS": 3, "COLS": 5, "B_ADDR": 1}],
                             ids=lambda p: f"{p['ROWS']}x{p['COLS']}" + ("_b" if p["B_ADDR"] else ""))
    def test_agu(params, tmp_path):

        run_unit_bench(__name__, "tony_agu", tmp_path, parameters=params)
