"""Loading the model's input while the first layer computes (docs/architecture.md, 'Utilization
and its bounds'; docs/isa.md, 'Hazards').

A program starts by loading its input into the activation buffer, and the first layer can only
read rows that have arrived. With a banked activation buffer (`AccelConfig.abuf_split`: bank 0
holds the words below the split, bank 1 the rest, each with its own write port) the DMA engine
may write bank 0 while the post-processing unit writes bank 1. So when the input lies in bank 0
and the first layer (a convolution over the whole input) writes bank 1, the input is loaded in
bands of rows and the layer runs in bands of output rows:

    LOAD input rows of band 0; SYNC dma; CONV band 0; LOAD input rows of band 1;
    SYNC dma; CONV band 1; LOAD input rows of band 2; ...

Each CONV reads only rows loaded before its `SYNC dma` (the window rows of its output rows, the
kernel's halo included); the LOAD after it writes the next rows while it computes. The bands of
one output-channel group share its weight block (linking loads it once when the layer has one
group, link.block_uses, and one block ahead otherwise). `input_bands` is a stage between
emitting and linking: it takes the memory plan and the layers' code and returns them with the
first layer banded, or unchanged where the conditions do not hold.

Where the first layer computes for less time than the input takes to load, the second layer can
load under it too (`fused_bands`): the second convolution's output rows in bands, each after the
first layer's rows that its windows reach, so that the second layer computes while the rest of
the input loads:

    LOAD input rows; SYNC dma; CONV first rows; SYNC compute; CONV second band 0; LOAD rows;
    SYNC dma; CONV first rows; LOAD rows; SYNC compute; CONV second band 1; ...

The planner keeps the input's words until the second op has run (`fusion_hold`), so that the
second layer's result lies in bank 1 beside it; the two layers' weight blocks stay in the two
halves of the weight buffer (link.block_uses).
"""
from __future__ import annotations

from dataclasses import replace
from math import gcd

from .. import ir
from . import isa
from .emit import Code
from .liveness import Tensors
from .plan import MemoryPlan
from .program import AccelConfig, Ext, Instr, dma, sync

SYNC_CYCLES = 4
"""Issue cycles a band adds beyond its LOAD and CONV (the SYNC and the issue slots around it)."""


def _split(cfg: AccelConfig, base: int, words: int) -> int:
    """Bank 1's first word: the end of the input when the compiler sizes the activation buffer
    (abuf_words 0), else the build's own split if the input lies below it (0: no overlap)."""
    if not cfg.abuf_words:
        return base + words if base == 0 else 0
    return cfg.abuf_split if 0 < cfg.abuf_split and base + words <= cfg.abuf_split else 0


def _rows_needed(f: dict, r_end: int) -> int:
    """Input rows [0, n) that the windows of output rows [0, r_end) touch (clipped to the image)."""
    if r_end <= 0:
        return 0
    last = (r_end - 1) * f["sh"] + f["iy0"] + (f["kh"] - 1) * f["dh"]
    return max(0, min(f["h"], last + 1))


def _bounds(oh: int, nb: int, q: int) -> list[int]:
    """nb bands of output rows as boundaries 0 = r_0 < ... < r_nb = oh, as even as possible, on
    multiples of q rows where they allow (so that a band's pixels fill whole tiles)."""
    out = [0]
    for k in range(1, nb):
        r = round(k * oh / nb / q) * q
        if out[-1] < r < oh:
            out.append(r)
    return out + [oh]


def _estimate(cfg: AccelConfig, f: dict, convs: list[Instr], b: list[int], groups: int) -> int:
    """Cycles of the banded layer by the timing table (docs/isa.md, 'Timing'): band k's LOAD runs
    while band k-1's CONVs stream; with more than one output-channel group each CONV's weight
    block also crosses the memory port once per band (link.block_uses)."""
    R, L = cfg.rows, cfg.mem_latency
    wgt = sum(c.fields["klen"] * cfg.wgt_beats + L + 2 for c in convs) if len(convs) > 1 else 0

    def load(k: int) -> int:
        rows = _rows_needed(f, b[k + 1]) - (_rows_needed(f, b[k]) if k else 0)
        if k + 2 == len(b):
            rows = f["h"] - _rows_needed(f, b[k])
        return rows * f["w"] * groups * cfg.act_beats + L + 2 if rows else 0

    def stream(k: int) -> int:
        n = (b[k + 1] - b[k]) * f["ow"]
        return sum(2 + R + -(-n // R) * c.fields["period"] for c in convs)

    nb = len(b) - 1
    total = load(0) + stream(nb - 1) + nb * SYNC_CYCLES
    for k in range(1, nb):
        total += max(stream(k - 1), load(k) + wgt)
    return total


def input_bands(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan, codes: list[Code]) -> \
        tuple[MemoryPlan, list[Code]]:
    """The memory plan and code with the input loaded band by band under the first layer, where
    the first device op is a convolution over a whole device input of one sample, the input can
    lie in bank 0 and the layer writes only bank 1; else both unchanged. The plan's `split` is
    bank 1's first word (0 where nothing overlaps) and its input_base no longer holds the input,
    which the first layer's code now loads itself."""
    if batch != 1 or not mp.steps or not codes:
        return mp, codes
    step, code = mp.steps[0], codes[0]
    op = step.op
    if not isinstance(op, ir.Conv) or step.banded or step.pre or step.post:
        return mp, codes
    name = op.inputs[0]
    if name not in mp.input_base or t.root(name) != name:
        return mp, codes
    x, dst = step.locs[name], step.sites[0].dst
    split = _split(cfg, x.base, x.words)
    convs = list(code.instrs)
    if not split or dst.base < split or any(c.op != isa.CONV for c in convs) or not convs:
        return mp, codes
    f = convs[0].fields
    oh, q = f["oh"], cfg.rows // gcd(cfg.rows, f["ow"])
    best = min((_estimate(cfg, f, convs, b, x.groups), len(b), b)
               for b in {tuple(_bounds(oh, nb, q)) for nb in range(1, oh + 1)})
    b = list(best[2])
    if len(b) <= 2:
        return mp, codes
    out, loaded = [], 0
    for k in range(len(b) - 1):
        rows = x.h if k + 2 == len(b) else _rows_needed(f, b[k + 1])
        if rows > loaded:
            out += _load_rows(cfg, name, x, loaded, rows)
            loaded = rows
        out.append(sync(isa.S_DMA))
        out += [_band(c, b[k], b[k + 1]) for c in convs]
    info = dict(code.info, input_bands=len(b) - 1)
    inputs = {n: base for n, base in mp.input_base.items() if n != name}
    return replace(mp, input_base=inputs, split=split), [replace(code, instrs=tuple(out), info=info)] + codes[1:]


def _load_rows(cfg: AccelConfig, name: str, x, y0: int, y1: int) -> list[Instr]:
    """LOADs of the input's rows [y0, y1), one per channel group (one sample)."""
    out = []
    for g in range(x.groups):
        off = g * x.gstride + y0 * x.w
        out.append(dma(isa.LOAD, isa.B_ACT, x.base + off, Ext("in", name) + off * cfg.act_beats, (y1 - y0) * x.w))
    return out


def _band(c: Instr, r0: int, r1: int) -> Instr:
    """A CONV over the whole image restricted to output rows [r0, r1): the pixel walker starts at
    row r0 (its window origin r0 strides down), and the results go to the band's words."""
    f = c.fields
    return c.with_fields(oy0=r0, iy0=f["iy0"] + r0 * f["sh"], ibase=f["ibase"] + r0 * f["sh"] * f["w"],
                         obase=f["obase"] + r0 * f["ow"], npix=(r1 - r0) * f["ow"])


# ---- the second layer too: its row bands interleaved with the first's --------------------------------
def _fusable(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan) -> tuple | None:
    """(input name, first step, second step) where the second device op can run in row bands
    interleaved with the first layer's while the input loads (fused_bands): a batch-1 program whose
    first op is a convolution over a whole device input and whose second is a convolution that
    reads only the first one's result, both on whole tensors, and a weight buffer sized by the
    compiler (so that it holds both layers' blocks side by side, link.block_uses); else None."""
    if batch != 1 or len(mp.steps) < 2 or cfg.wbuf_words:
        return None
    a, b = mp.steps[0], mp.steps[1]
    if not isinstance(a.op, ir.Conv) or a.banded or a.pre or a.post:
        return None
    name = a.op.inputs[0]
    if name not in mp.input_base or t.root(name) != name:
        return None
    if not isinstance(b.op, ir.Conv) or b.banded or b.post or any(i.op != isa.SYNC for i in b.pre):
        return None
    acts = [n for n in b.op.inputs if n not in t.g.constants]
    if acts != [b.op.inputs[0]] or t.root(acts[0]) != t.root(a.op.outputs[0]) or acts[0] != t.root(acts[0]):
        return None
    return name, a, b


def fusion_hold(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan) -> dict:
    """The tensors the planner must keep for fused_bands (plan.plan_memory's `hold`): the input,
    which still loads while the second layer computes, reserved until the second op has run, so
    that the second layer's result is placed beside it; {} where the layers cannot be fused."""
    f = _fusable(t, cfg, batch, mp)
    return {f[0]: f[2].index} if f else {}


def _fused_order(cfg: AccelConfig, name: str, x, fa: dict, fb: dict, ca: list, cb: list, b: list) -> list:
    """The instructions of the two layers with the second one's output rows banded at `b`: per band
    k, `SYNC dma` and the first layer's rows that the band's windows reach beyond those computed
    (their input rows loaded before), then `SYNC compute` and the second layer's band. The input
    rows of the next band load while the second layer's band computes: their LOAD follows the
    first layer's band, or in band 0 the second layer's band (whose first CONV waits with
    `SYNC dma` for its weight block, linked after the first layer's first CONV)."""
    nb = len(b) - 1
    a_end = [fa["oh"] if k + 1 == nb else min(fa["oh"], _rows_needed(fb, b[k + 1])) for k in range(nb)]
    in_end = [x.h if e == fa["oh"] else _rows_needed(fa, e) for e in a_end]
    out, loaded, a_done = _load_rows(cfg, name, x, 0, in_end[0]), in_end[0], 0
    for k in range(nb):
        if a_end[k] > a_done:
            out += [sync(isa.S_DMA)] + [_band(c, a_done, a_end[k]) for c in ca]
            a_done = a_end[k]
        nxt = []
        if k + 1 < nb and in_end[k + 1] > loaded:
            nxt, loaded = _load_rows(cfg, name, x, loaded, in_end[k + 1]), in_end[k + 1]
        out += (nxt if k else []) + [sync(isa.S_COMPUTE)] + [_band(c, b[k], b[k + 1]) for c in cb]
        out += [] if k else nxt
    return out


def _fused_cycles(cfg: AccelConfig, ins: list, wa, wb) -> int:
    """Cycles of the fused layers by the cycle model (model.schedule) on their instructions with
    the first weight block loaded before them and the second one after the first CONV, as
    linking places them (link._weights_and_biases); the boot and biases are left out, the same
    for every candidate."""
    from .model import schedule

    seq = [dict(buf=isa.B_WGT, nwords=wa.shape[0], op=isa.LOAD), dict(sync=isa.S_DMA, op=isa.SYNC)]
    first_a = first_b = True
    for i in ins:
        if i.op == isa.CONV and i.block is wb and first_b:
            seq.append(dict(sync=isa.S_DMA, op=isa.SYNC))
            first_b = False
        seq.append(dict(i.fields, op=i.op))
        if i.op == isa.CONV and i.block is wa and first_a:
            seq.append(dict(buf=isa.B_WGT, nwords=wb.shape[0], op=isa.LOAD))
            first_a = False
    seq += [dict(sync=isa.S_COMPUTE, op=isa.SYNC), dict(op=isa.END)]
    return schedule(seq, cfg, 0).total


def _candidates(oh: int, q: int) -> set:
    """Band boundaries of the second layer's oh output rows to try: the first band of f rows, each
    next one g times longer (the input then loads ahead of the computation), or nb even bands;
    boundaries on multiples of q rows where they allow (whole tiles)."""
    out = {tuple(_bounds(oh, nb, q)) for nb in range(1, min(oh, 8) + 1)}
    for f in range(1, min(oh, 4) + 1):
        for g in (1.5, 2.0, 3.0, 4.0):
            b, size = [0], float(f)
            while b[-1] < oh:
                r = min(oh, b[-1] + max(1, round(size)))
                if r < oh and r > q:
                    r = max(b[-1] + 1, r // q * q)
                b.append(r)
                size *= g
            out.add(tuple(b))
    return out


FUSED_TRIES = 4
"""Band layouts of the fused layers (best by _fused_cycles first) that the compiler links and
times in full: the estimate leaves out the boot, the pages and the biases' loads."""


def fused_bands(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan, codes: list[Code]) -> \
        list[tuple[MemoryPlan, list[Code]]]:
    """The memory plan and code with the input loaded under the first two layers: the second
    layer's output rows in bands, each after the first layer's rows its windows reach, so that the
    second layer computes while the rest of the input loads (docs/architecture.md, 'Utilization
    and its bounds'), for the FUSED_TRIES best band layouts by the estimate. Needs what input_bands
    needs, both layers of one output-channel group, the second layer's result in bank 1 (the
    planner kept the input's words, fusion_hold) and both weight blocks in the buffer; else [].
    The first layer's code holds both layers' instructions and MACs, the second's none (its
    biases stay with it)."""
    f = _fusable(t, cfg, batch, mp)
    if f is None:
        return []
    name, sa, sb = f
    x = sa.locs[name]
    split = _split(cfg, x.base, x.words)
    ca = list(codes[0].instrs)
    cb = [i for i in codes[1].instrs if i.op != isa.SYNC]
    if not split or len(ca) != 1 or len(cb) != 1 or ca[0].op != isa.CONV or cb[0].op != isa.CONV:
        return []
    if min(sa.sites[0].dst.base, sb.sites[0].dst.base) < split:
        return []
    fa, fb = ca[0].fields, cb[0].fields
    q = cfg.rows // gcd(cfg.rows, fb["ow"])
    ranked = sorted((_fused_cycles(cfg, _fused_order(cfg, name, x, fa, fb, ca, cb, list(b)), ca[0].block,
                                   cb[0].block), len(b), b) for b in _candidates(fb["oh"], q) if len(b) > 2)
    inputs = {n: base for n, base in mp.input_base.items() if n != name}
    out = []
    for _, _, b in ranked[:FUSED_TRIES]:
        ins = _fused_order(cfg, name, x, fa, fb, ca, cb, list(b))
        na = sum(1 for i in ins if i.op == isa.CONV and i.block is ca[0].block)
        info = dict(codes[0].info, input_bands=na, rows_with=sb.op.origin or sb.op.outputs[0],
                    second_bands=len(b) - 1)
        first = replace(codes[0], instrs=tuple(ins), macs=codes[0].macs + codes[1].macs, info=info)
        second = replace(codes[1], instrs=(), macs=0,
                         info=dict(codes[1].info, rows_with=sa.op.origin or sa.op.outputs[0]))
        out.append((replace(mp, input_base=inputs, split=split), [first, second] + codes[2:]))
    return out
