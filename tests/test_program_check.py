"""The program checker (tony.accel.check): hand-made programs that break each rule of docs/isa.md
are refused with the rule's name and the instruction's index; every bundled workload is accepted."""
import numpy as np
import pytest

from tony.accel import check as ck
from tony.accel import isa
from tony.accel import model as am
from tony.accel.compiler import compile_program
from tony.accel.program import AccelConfig

CFG = AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=32)
IMAGE, IO = 300, 110  # image beats; first I/O region (the input at 110, the output at 200)


def load(buf, baddr, eaddr, n):
    return dict(op=isa.LOAD, buf=buf, baddr=baddr, eaddr=eaddr, nwords=n)


def store(baddr, eaddr, n):
    return dict(op=isa.STORE, buf=isa.B_ACT, baddr=baddr, eaddr=eaddr, nwords=n)


def sync(mask):
    return dict(op=isa.SYNC, sync=mask)


def conv(ibase=0, obase=16, **kw):
    """A 1x1 convolution of a 4x4 image at `ibase` (16 words) into 16 words at `obase`."""
    f = dict(op=isa.CONV, ibase=ibase, obase=obase, npix=16, ow=4, oh=4, sw=1, sh=1, rjump=1, sjump=1, h=4, w=4,
             kh=1, kw=1, dh=1, dw=1, dhw=4, nic=1, cstride=16, klen=1, period=2, wbase=0, bbase=0, mult=1,
             lo=-128, hi=127)
    return {**f, **kw}


def ewise(ibase, obase, n=16):
    return dict(op=isa.EWISE, ibase=ibase, obase=obase, npix=n, ow=4095, oh=1, sw=1, sh=1, sjump=1, h=1, w=4095,
                kh=1, kw=1, dh=1, dw=1, nic=1, klen=1, period=1, mult=1, lo=-128, hi=127)


END = dict(op=isa.END)
BASE = [load(isa.B_BIAS, 0, 100, 1), load(isa.B_WGT, 0, 104, 1), load(isa.B_ACT, 0, IO, 16), sync(isa.S_DMA),
        conv(), sync(isa.S_COMPUTE), store(16, 200, 16), END]


def run(instrs, cfg=CFG):
    """Encode, decode (as the controller sees them) and check."""
    decoded = [isa.decode(isa.encode(d["op"], **{k: v for k, v in d.items() if k != "op"})) for d in instrs]
    ck.check_instructions(decoded, cfg, IMAGE, IO)


def test_the_base_program_is_accepted():
    run(BASE)


def edit(at, *new, drop=0):
    """BASE with `drop` instructions at index `at` replaced by `new`."""
    return BASE[:at] + list(new) + BASE[at + drop:]


S = isa.S_DMA | isa.S_STREAM | isa.S_COMPUTE
BROKEN = [
    # rule, program, index of the refused instruction
    ("opcode", edit(4, dict(op=9)), 4),
    ("dma-buffer", edit(0, load(5, 0, 100, 1), drop=1), 0),
    ("dma-buffer", edit(6, dict(store(16, 200, 16), buf=isa.B_WGT), drop=1), 6),
    ("dma-range", edit(2, load(isa.B_ACT, 56, IO, 16), drop=1), 2),
    ("dma-range", edit(1, load(isa.B_WGT, 0, 104, 0), drop=1), 1),
    ("ext-range", edit(6, store(16, 290, 16), drop=1), 6),
    ("store-over-constants", edit(6, store(16, 104, 1), drop=1), 6),
    ("end", BASE[:-1], 6),
    ("end", edit(4, END), 4),
    ("act-range", edit(4, conv(obase=50), drop=1), 4),
    ("wgt-range", edit(4, conv(wbase=16), drop=1), 4),
    ("bias-range", edit(4, conv(bbase=4), drop=1), 4),
    ("conv-period", edit(4, conv(period=1), drop=1), 4),
    ("uninitialized-read", edit(2, drop=1), 3),                       # no input loaded: CONV reads act[0..16)
    ("uninitialized-read", edit(4, conv(wbase=1), drop=1), 4),         # the weight block was loaded at 0
    # a CONV reads a result the previous CONV may still be draining (CONV waits for the streamer only)
    ("read-after-write", edit(5, conv(ibase=16, obase=32)), 5),
    # STORE of a result without SYNC compute
    ("read-after-write", edit(5, drop=1), 5),
    # a CONV reads the weights a LOAD may still be writing (no SYNC dma)
    ("read-after-write", edit(3, drop=1), 3),
    # a CONV overwrites words a STORE may still be reading (spilling needs SYNC dma after the STORE)
    ("write-after-read", BASE[:-1] + [conv(obase=16), sync(S), END], 7),
    # a LOAD overwrites the weight block a CONV may still be streaming (double buffering needs SYNC stream)
    ("write-after-read", edit(5, load(isa.B_WGT, 0, 104, 1)), 5),
    # a LOAD overwrites the bias word a CONV reads when its results drain (SYNC stream is not enough)
    ("write-after-read", edit(5, sync(isa.S_STREAM), load(isa.B_BIAS, 0, 100, 1)), 6),
    # a LOAD into the activation buffer while results may still be written, even elsewhere in the buffer
    ("act-write-port", edit(5, load(isa.B_ACT, 40, IO, 8)), 5),
    # a compute instruction issued while a LOAD into the activation buffer may still be writing
    ("act-write-port", BASE[:4] + [load(isa.B_ACT, 40, IO, 8), conv()] + BASE[5:], 5),
    ("act-write-port", BASE[:4] + [load(isa.B_ACT, 40, IO, 8), ewise(0, 32)] + BASE[5:], 5),
    # a page LOAD that does not load the instructions after it (the next one sits at beat 5 * 8)
    ("page", BASE[:4] + [load(isa.B_IMEM, 0, 48, 4)] + BASE[4:], 4),
    # a page that ends before its page LOAD or END: the controller would run past it
    ("page", BASE[:4] + [load(isa.B_IMEM, 0, 40, 3)] + BASE[4:], 5),
    # results over the instruction's own operands: in place, and shifted by a few words
    ("own-overlap", edit(4, conv(obase=0), drop=1), 4),
    ("own-overlap", edit(6, ewise(16, 24), drop=0), 6),
]


def test_the_instruction_memory_size_is_checked():
    with pytest.raises(ck.ProgramCheckError, match="rule 'imem-size'"):
        run(BASE, AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=4))


def test_a_depthwise_conv_needs_cols_at_most_rows_plus_3():
    prog = edit(4, conv(flags=isa.F_DEPTHWISE, period=5), drop=1)
    run(prog)   # a 2x2 array
    with pytest.raises(ck.ProgramCheckError, match="instruction 4: rule 'conv-depthwise'"):
        run(prog, AccelConfig(1, 5, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=64))
    run(prog, AccelConfig(1, 4, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=64))


def test_a_program_in_pages_is_accepted():
    """BASE as two pages: the first 4 instructions and the LOAD of the other 4 (at beat 5 * 8)."""
    paged = BASE[:4] + [load(isa.B_IMEM, 0, 40, 4)] + BASE[4:]
    small = AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=5)
    decoded = [isa.decode(isa.encode(d["op"], **{k: v for k, v in d.items() if k != "op"})) for d in paged]
    ck.check_instructions(decoded, small, IMAGE, IO, boot=5)
    with pytest.raises(ck.ProgramCheckError, match="instruction 0: rule 'imem-size'"):
        ck.check_instructions(decoded, small, IMAGE, IO, boot=9)


def test_an_ewise_operand_read_exactly_in_place_is_accepted():
    """Word k of the operand is result word k (a Concat merge's B): read before it is written."""
    run(BASE[:6] + [ewise(16, 16), sync(isa.S_COMPUTE)] + BASE[6:])


def test_every_rule_has_a_refused_program():
    assert {r for r, *_ in BROKEN + SMX_BROKEN + NORM_BROKEN} | {"imem-size", "conv-depthwise"} == set(ck.RULES)


def test_what_the_engines_guarantee_needs_no_sync():
    # EWISE waits for all of compute at issue: it may read the previous CONV's result at once
    run(BASE[:5] + [ewise(16, 32)] + BASE[5:])
    # a LOAD waits for the DMA engine: it may overwrite what the previous STORE read
    run(BASE[:-1] + [load(isa.B_ACT, 16, IO, 16), sync(isa.S_DMA), END])


def test_isa_doc_states_every_checked_rule():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "isa.md").read_text()
    for rule in ck.RULES:
        assert f"`{rule}`" in doc, rule


# ---- the address generators in closed form ---------------------------------------------------------
def test_the_checker_walks_pixels_and_taps_like_the_model(rng):
    for _ in range(200):
        d = {k: int(rng.integers(lo, hi)) for k, (lo, hi) in dict(
            ibase=(0, 4000), ow=(1, 6), oh=(1, 6), oy0=(0, 5), sw=(1, 4), sh=(1, 4), ixs=(-3, 2), iys=(-3, 2),
            ix0=(-3, 2), iy0=(-3, 2), rjump=(-40, 40), sjump=(-90, 90), klen=(1, 40), kh=(1, 4), kw=(1, 4),
            dh=(1, 3), dw=(1, 3), dhw=(0, 30), lane0=(0, 4), cstride=(0, 50)).items()}
        d["oy0"] %= d["oh"]
        n = int(rng.integers(1, 60))
        for got, want in zip(ck.pixel_walk(d, n), am.pixel_walk(d, n)):
            assert np.array_equal(got, want), d
        ofs, kyd, kxd = ck.tap_walk(d, 4, vector=False)
        m_ofs, m_kyd, m_kxd, _ = am.tap_walk(d, 4)
        assert np.array_equal(ofs, m_ofs) and np.array_equal(kyd, m_kyd) and np.array_equal(kxd, m_kxd), d


# ---- compiled programs ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def graphs(bundled):
    from tony.api import load_ir
    from tony.models import EXAMPLES

    return {name: load_ir(bundled(name) / "model.onnx", requant="pow2") for name in EXAMPLES}


RUNS = [((8, 8), {}), ((4, 4), {}), ((5, 3), {}), ((16, 16), {}), ((8, 8), {"mem_bits": 32})]


@pytest.mark.parametrize("arr,kw", RUNS, ids=[f"{a[0]}x{a[1]}{'-' + str(k) if k else ''}" for a, k in RUNS])
def test_every_bundled_workload_is_accepted(graphs, arr, kw):
    for name, g in graphs.items():
        for batch in (1, 2):
            ck.check(compile_program(g, AccelConfig(*arr, **kw), batch=batch))


@pytest.mark.parametrize("name,arr,abuf", [("digits-cnn", (4, 4), 128), ("digits-cnn", (8, 8), 64),
                                           ("resnet8", (8, 8), 1024), ("resnet8", (8, 8), 4096),
                                           ("dscnn", (4, 4), 2048), ("digits-mobilenet", (4, 4), 256)])
def test_spilled_and_banded_workloads_are_accepted(graphs, name, arr, abuf):
    prog = compile_program(graphs[name], AccelConfig(*arr, abuf_words=abuf))
    assert any(t.startswith("STORE act") for t in prog.text[:-3])
    ck.check(prog)


def test_compilation_runs_the_checker(graphs, monkeypatch):
    from tony.accel import link

    # a compiler that forgets the SYNC before each CONV: the next weight block may still be loading
    monkeypatch.setattr(link, "sync", lambda mask: link.Instr(isa.SYNC, dict(sync=0)))
    with pytest.raises(ck.ProgramCheckError, match="rule '(read-after-write|write-after-read)'"):
        compile_program(graphs["digits-cnn"], AccelConfig(8, 8))


def test_an_activation_load_may_overlap_compute_only_into_the_other_bank():
    """With ABUF_SPLIT 32 (bank 0: words 0-31, bank 1: 32-63) a LOAD into bank 0 may run while a
    CONV writes bank 1, in either order; into the bank the CONV writes, or with one bank, it may not."""
    banked = AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=32, abuf_split=32)
    load_then_conv = BASE[:4] + [load(isa.B_ACT, 16, IO, 8), conv(obase=32)] + [sync(S), store(32, 200, 16), END]
    conv_then_load = BASE[:4] + [conv(obase=32), load(isa.B_ACT, 16, IO, 8)] + [sync(S), store(32, 200, 16), END]
    for prog in (load_then_conv, conv_then_load):
        run(prog, banked)
        with pytest.raises(ck.ProgramCheckError, match="rule 'act-write-port'"):
            run(prog)   # one bank
    into_bank_1 = BASE[:4] + [conv(obase=32), load(isa.B_ACT, 48, IO, 8)] + [sync(S), store(32, 200, 16), END]
    with pytest.raises(ck.ProgramCheckError, match="instruction 5: rule 'act-write-port'"):
        run(into_bank_1, banked)
    across = BASE[:4] + [conv(obase=32), load(isa.B_ACT, 28, IO, 8)] + [sync(S), store(32, 200, 16), END]
    with pytest.raises(ck.ProgramCheckError, match="instruction 5: rule 'act-write-port'"):
        run(across, banked)   # words 28-35: both banks


# ---- SOFTMAX ------------------------------------------------------------------------------------------
SMX = AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=32, smx_n=5)


def softmax(ibase=16, obase=32, npix=16, n=2, cstride=16, shift=13, log2e=47274):
    """Rows of n elements of the CONV's result (16 pixels, channel group g at + g*cstride) into obase."""
    return dict(op=isa.SOFTMAX, ibase=ibase, obase=obase, npix=npix, klen=n, cstride=cstride, shift=shift,
                mult=log2e)


SMX_BASE = BASE[:5] + [sync(isa.S_COMPUTE), softmax(), sync(isa.S_COMPUTE), store(32, 200, 16), END]
SMX_BROKEN = [
    ("opcode", SMX_BASE, 6, CFG),                                           # an accelerator without the unit
    ("softmax", SMX_BASE[:6] + [softmax(n=6)] + SMX_BASE[7:], 6, SMX),      # rows longer than the unit's
    ("softmax", SMX_BASE[:6] + [softmax(n=0)] + SMX_BASE[7:], 6, SMX),
    ("softmax", SMX_BASE[:6] + [softmax(npix=0)] + SMX_BASE[7:], 6, SMX),
    ("softmax", SMX_BASE[:6] + [softmax(shift=64)] + SMX_BASE[7:], 6, SMX),  # the unit's shift input is 6 bits
    ("softmax", SMX_BASE[:6] + [softmax(shift=-1)] + SMX_BASE[7:], 6, SMX),
    ("softmax", SMX_BASE[:6] + [softmax(log2e=0)] + SMX_BASE[7:], 6, SMX),
    ("softmax", SMX_BASE[:6] + [softmax(log2e=47275)] + SMX_BASE[7:], 6, SMX),
    # 3 elements a row are two channel groups: the second at 16 + 40 + p runs past the 64 words
    ("act-range", SMX_BASE[:6] + [softmax(n=3, cstride=40)] + SMX_BASE[7:], 6, SMX),
    # the second channel group (16 + 16 + p) was never written
    ("uninitialized-read", SMX_BASE[:6] + [softmax(n=3, obase=40, npix=8)] + SMX_BASE[7:], 6, SMX),
    # the STORE reads rows the SOFTMAX may still be writing
    ("read-after-write", SMX_BASE[:7] + SMX_BASE[8:], 7, SMX),
    # a LOAD into the activation buffer while the SOFTMAX may still be writing it
    ("act-write-port", SMX_BASE[:7] + [load(isa.B_ACT, 0, IO, 8)] + SMX_BASE[7:], 7, SMX),
    # the SOFTMAX overwrites the words a STORE may still be reading
    ("write-after-read", SMX_BASE[:6] + [store(16, 200, 16), softmax(ibase=32, obase=16, npix=8)] + SMX_BASE[7:],
     7, SMX),
    # a Softmax in place: the unit reads the next rows while it writes a row's results
    ("own-overlap", SMX_BASE[:6] + [softmax(obase=16)] + SMX_BASE[7:], 6, SMX),
]


def test_a_softmax_program_is_accepted_and_runs_on_the_model():
    """A SOFTMAX over a CONV's result (2 channels per pixel, 16 rows) between the CONV and the STORE;
    on an accelerator with the unit the checker accepts it, and its timing is issue + 5 + the unit's
    block of 16 rows of 2: the first row's last result 3n + 31 cycles after its first element, then
    one row every max(n, 17) cycles (the divider's 16 + 1), the cycle after the last result."""
    run(SMX_BASE, SMX)
    t = am.schedule([isa.decode(isa.encode(d["op"], **{k: v for k, v in d.items() if k != "op"})) for d in SMX_BASE],
                    SMX, len(SMX_BASE))
    assert t.issue[7] == t.issue[6] + 5 + (3 * 2 + 31) + 15 * 17 + 1


# ---- NORM ---------------------------------------------------------------------------------------------
LN = AccelConfig(2, 2, abuf_words=64, wbuf_words=16, bbuf_words=4, imem_words=32, ln_n=5)


def norm(ibase=16, obase=32, npix=16, n=2, cstride=16, eps=10, a=17, f=16, shift=25, lo=-128, hi=127):
    """LayerNorm rows of n elements of the CONV's result (16 pixels, channel group g at + g*cstride)
    into obase: E in mult, A in sa, F in sb."""
    return dict(op=isa.NORM, flags=isa.F_A_SIGNED, ibase=ibase, obase=obase, npix=npix, klen=n, cstride=cstride,
                mult=eps, sa=a, sb=f, shift=shift, lo=lo, hi=hi)


GB = load(isa.B_GB, 0, 90, 2)
NORM_BASE = BASE[:5] + [GB, sync(isa.S_COMPUTE | isa.S_DMA), norm(), sync(isa.S_COMPUTE), store(32, 200, 16), END]


def _norm_at(**kw):
    return NORM_BASE[:7] + [norm(**kw)] + NORM_BASE[8:]


NORM_BROKEN = [
    ("opcode", NORM_BASE[:5] + NORM_BASE[6:], 6, CFG),                   # an accelerator without the unit
    ("dma-buffer", NORM_BASE, 5, CFG),                                   # ... has no gamma/beta memory
    ("dma-range", NORM_BASE[:5] + [load(isa.B_GB, 0, 90, 6)] + NORM_BASE[6:], 5, LN),   # 6 words into 5
    ("norm", _norm_at(n=6), 7, LN),                                      # rows longer than the unit's
    ("norm", _norm_at(n=0), 7, LN),
    ("norm", _norm_at(npix=0), 7, LN),
    ("norm", _norm_at(a=23), 7, LN),                                     # A is at most 22
    ("norm", _norm_at(f=17), 7, LN),                                     # F at most the unit's NORM_BITS_MAX
    ("norm", _norm_at(shift=64), 7, LN),                                 # the unit's shift is 7 bits
    ("norm", _norm_at(lo=-257), 7, LN),                                  # lo and hi are A_BITS + 1 bits
    ("norm", _norm_at(hi=256), 7, LN),
    ("norm", _norm_at(lo=5, hi=4), 7, LN),
    # gamma/beta of channel 1 never loaded
    ("uninitialized-read", NORM_BASE[:5] + [load(isa.B_GB, 0, 90, 1)] + NORM_BASE[6:], 7, LN),
    # the NORM reads gamma/beta words the LOAD may still be writing
    ("read-after-write", NORM_BASE[:6] + [sync(isa.S_COMPUTE)] + NORM_BASE[7:], 7, LN),
    # the next LayerNorm's gamma/beta loaded while the NORM may still read them
    ("write-after-read", NORM_BASE[:8] + [GB] + NORM_BASE[8:], 8, LN),
    # the STORE reads rows the NORM may still be writing
    ("read-after-write", NORM_BASE[:8] + NORM_BASE[9:], 8, LN),
]


def test_a_norm_program_is_accepted_and_timed_by_the_layernorm_units_rows():
    """A NORM over a CONV's result (2 channels per pixel, 16 rows) after its LOAD gb; on an
    accelerator with the unit the checker accepts it, and the cycle model gives it issue + 5 + rows
    times the unit's cycles_per_row(n) (tony.rtl.layernorm_unit)."""
    from tony.rtl.layernorm_unit import cycles_per_row

    run(NORM_BASE, LN)
    t = am.schedule([isa.decode(isa.encode(d["op"], **{k: v for k, v in d.items() if k != "op"})) for d in NORM_BASE],
                    LN, len(NORM_BASE))
    assert t.issue[8] == t.issue[7] + 5 + 16 * cycles_per_row(2)


ALL_BROKEN = [(r, instrs, i, CFG) for r, instrs, i in BROKEN] + SMX_BROKEN + NORM_BROKEN


@pytest.mark.parametrize("rule,instrs,index,cfg", ALL_BROKEN,
                         ids=[f"{r}-{i}" for i, (r, *_) in enumerate(ALL_BROKEN)])
def test_a_broken_rule_is_refused_with_its_name_and_the_instruction_index(rule, instrs, index, cfg):
    with pytest.raises(ck.ProgramCheckError, match=f"instruction {index}: rule '{rule}'") as e:
        run(instrs, cfg)
    assert (e.value.rule, e.value.index) == (rule, index)
