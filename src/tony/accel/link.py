"""Linking: the layers' instructions become one program in one external-memory image.

Weight blocks are double-buffered one block ahead (`SYNC dma` before the first CONV of every
block after the first; successive CONVs of one block, a layer's row bands, share its load, and
so do CONVs alternating between the two blocks in the buffer, two layers' interleaved bands); the
program starts by loading the biases, the device inputs and the first weight block and ends by
storing the outputs; two SYNCs in a row become one. A program longer than a fixed instruction memory is cut into
pages, each ending with the LOAD of the next into the instruction memory (`paginate`). The image is the program, then the biases, the weight blocks,
the tables, the input, spill and output regions; symbolic external addresses are resolved against it, the
instructions encoded and the buffers sized.
"""
from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from ..errors import UnsupportedError
from . import isa
from .emit import Code
from .liveness import Tensors
from .plan import MemoryPlan
from .program import AccelConfig, Ext, ExtBlock, Instr, Layer, Program, dma, sync


@dataclass(frozen=True)
class Linked:
    instrs: tuple       # the whole program, addresses still symbolic
    layers: tuple       # Layer per op, indices into instrs
    blocks: tuple       # weight blocks in CONV order
    half: int           # weight-buffer words per half (the largest block)
    wbuf: int


@dataclass(frozen=True)
class Slot:
    """Where one CONV's weight block lives in the weight buffer, and whether it is loaded while the
    previous CONV streams (prefetched) or only after it (when the two blocks do not fit together)."""

    base: int
    prefetch: bool


def weight_slots(sizes: list[int], wbuf: int) -> list[Slot]:
    """Double buffering in a weight buffer of `wbuf` words: blocks alternate between the two ends.
    When every block fits half of the buffer the halves are [0, half) and [half, 2 half) with half
    the largest block; otherwise a block sits at the low end or ends at the high end, and is
    prefetched only if it fits beside the previous one."""
    half = max(sizes, default=1)
    if 2 * half <= wbuf:
        return [Slot((i % 2) * half, True) for i in range(len(sizes))]
    return [Slot(0 if i % 2 == 0 else wbuf - n, i == 0 or sizes[i - 1] + n <= wbuf) for i, n in enumerate(sizes)]


@dataclass(frozen=True)
class BiasWindow:
    """The bias words [start, start + words) in the bias buffer; a CONV reads word bbase - start."""

    start: int
    words: int


def _bias_window(b: int, n_biases: int, bbuf: int) -> BiasWindow:
    return BiasWindow(b, min(bbuf, n_biases - b))


def _load_bias(cfg: AccelConfig, w: BiasWindow) -> Instr:
    return dma(isa.LOAD, isa.B_BIAS, 0, Ext("bias", 0) + w.start * cfg.bias_beats, max(1, w.words))


def _wsrc(blocks: list, i: int) -> Ext:
    """Where CONV i's weight block is read from: its region of the image, or (ExtBlock) the
    activation words it is made of."""
    return blocks[i].src if isinstance(blocks[i], ExtBlock) else Ext("w", i)


EARLY_BIAS_CONVS = 2


def early_bias_words(body: list, n_biases: int, bbuf: int) -> int:
    """Bias words loaded before the first CONV: when every bias fits the buffer, those of the CONVs
    that read the first EARLY_BIAS_CONVS bias words (the rest is loaded while the last CONV before
    the first one that needs it computes, so that the first CONV's time is left to the next program
    page, see overlap_pages, and the input's row bands of overlap.py load first; the row bands of
    one layer share its words), else the first window."""
    if n_biases > bbuf:
        return _bias_window(0, n_biases, bbuf).words
    firsts = list(dict.fromkeys(ins.fields["bbase"] for ins in body if ins.op == isa.CONV))[:EARLY_BIAS_CONVS]
    return min(n_biases, max(firsts, default=n_biases - 1) + 1)


def block_uses(body: list, pairs: bool = True) -> tuple[list, list]:
    """The weight blocks to load, and for every CONV the index of its block: successive CONVs
    with the very same block (a layer's row bands, overlap.py) use one load, and so do CONVs that
    alternate between the last two blocks loaded (two layers' row bands interleaved,
    overlap.fused_bands) where `pairs` says the weight buffer holds two blocks side by side (it
    fits twice the largest): those two sit in its two halves, and the next block is loaded only
    once the older one is not used again (_weights_and_biases)."""
    blocks, uses = [], []
    for ins in body:
        if ins.op == isa.CONV:
            if pairs and len(blocks) > 1 and ins.block is blocks[-2] and ins.block is not blocks[-1]:
                uses.append(len(blocks) - 2)
                continue
            if not blocks or ins.block is not blocks[-1]:
                blocks.append(ins.block)
            uses.append(len(blocks) - 1)
    return blocks, uses


def _weights_and_biases(body: list, blocks: list, uses: list, slots: list, cfg: AccelConfig, n_biases: int,
                        bbuf: int) -> tuple[list, dict]:
    """Insert the weight loads (one block ahead where the slots allow) and their syncs, and, when the
    biases do not all fit the bias buffer, reload the window of bias words a CONV needs
    (`SYNC compute; LOAD bias; SYNC dma`: the previous CONVs read their bias word while draining).
    A prefetched block is loaded right after the last CONV of the block before it issues (the first
    one's issue means the CONV before it, which read the same words, has streamed; the DMA that the
    CONVs between need, the input's row bands of overlap.py, goes first), and the first CONV of its
    block waits with `SYNC dma` only: the CONV itself waits for the streamer. CONVs that reuse the
    previous CONV's block (`uses`, block_uses) need no load. When every bias fits, the
    words after early_bias_words are loaded after the last CONV before the first that reads one of
    them issues (that one reads a new weight block, so its `SYNC dma` covers them). Returns the
    instructions and the new index of every old one (and of the end)."""
    out, remap, ci = [], {}, 0
    window = _bias_window(0, n_biases, bbuf)
    early = early_bias_words(body, n_biases, bbuf)
    bb = [ins.fields["bbase"] for ins in body if ins.op == isa.CONV]
    rest_after = next((c - 1 for c, b in enumerate(bb) if b >= early), None) \
        if early < n_biases <= bbuf else None   # the CONV after which the other bias words load
    last_use = {u: c for c, u in enumerate(uses)}   # block -> its last CONV
    used = set()                                      # blocks read by the CONVs so far
    for idx, ins in enumerate(body):
        after = []
        if ins.op == isa.CONV:
            b, u = ins.fields["bbase"], uses[ci]
            first = u not in used
            used.add(u)
            if not window.start <= b < window.start + window.words:
                window = _bias_window(b, n_biases, bbuf)
                for x in (sync(isa.S_COMPUTE), _load_bias(cfg, window), sync(isa.S_DMA)):
                    _append(out, x)
            if first and u > 0:
                if slots[u].prefetch:
                    _append(out, sync(isa.S_DMA))
                else:  # loaded once the previous CONV has streamed its block
                    for x in (sync(isa.S_DMA | isa.S_STREAM),
                              dma(isa.LOAD, isa.B_WGT, slots[u].base, _wsrc(blocks, u), blocks[u].shape[0]),
                              sync(isa.S_DMA)):
                        _append(out, x)
            # the next block goes where block u - 1 was: loaded after a run of u once u - 1 is not used again
            last = (ci + 1 == len(uses) or uses[ci + 1] != u) and last_use.get(u - 1, -1) < ci
            if last and u + 1 < len(blocks) and slots[u + 1].prefetch and u + 1 not in used:
                after.append(dma(isa.LOAD, isa.B_WGT, slots[u + 1].base, _wsrc(blocks, u + 1), blocks[u + 1].shape[0]))
            if ci == rest_after:
                after.append(dma(isa.LOAD, isa.B_BIAS, early, Ext("bias", 0) + early * cfg.bias_beats,
                                 n_biases - early))
            ins = ins.with_fields(wbase=slots[u].base, bbase=b - window.start)
            ci += 1
        remap[idx] = len(out) - (ins.op == isa.SYNC and bool(out) and out[-1].op == isa.SYNC)
        for x in [ins] + after:
            _append(out, x)
    remap[len(body)] = len(out)
    return out, remap


def _append(out: list, ins: Instr) -> None:
    """Append an instruction; a SYNC right after a SYNC joins it (one issue waits for both masks)."""
    if ins.op == isa.SYNC and out and out[-1].op == isa.SYNC:
        out[-1] = sync(out[-1].fields["sync"] | ins.fields["sync"])
    else:
        out.append(ins)


def _head_tail(t: Tensors, mp: MemoryPlan, cfg: AccelConfig, early: int, blocks: list) -> tuple[list, list]:
    head = [_load_bias(cfg, BiasWindow(0, early))]
    for name, base in mp.input_base.items():
        head.append(dma(isa.LOAD, isa.B_ACT, base, Ext("in", name), mp.stored[name].words))
    if blocks:
        head.append(dma(isa.LOAD, isa.B_WGT, 0, _wsrc(blocks, 0), blocks[0].shape[0]))
    head.append(sync(isa.S_DMA))
    tail = [sync(isa.S_COMPUTE)]
    for name in t.outputs:
        r = t.root(name)
        if r in mp.resident:
            tail.append(dma(isa.STORE, isa.B_ACT, mp.stored[r].base, Ext("out", name), mp.stored[r].words))
    tail.append(Instr(isa.END, {}))
    return head, tail


def _check_blocks(codes: list[Code], wheres: list[str], wbuf: int) -> None:
    """A weight block larger than the whole weight buffer cannot run: the array accumulates one
    block per CONV (no partial sums across CONVs)."""
    for code, where in zip(codes, wheres):
        for ins in code.instrs:
            if ins.op == isa.CONV and ins.block.shape[0] > wbuf:
                raise UnsupportedError(
                    f"its weight block is {ins.block.shape[0]} k-slices (input channels x kernel taps) of "
                    f"weight-buffer words; the weight buffer holds {wbuf}",
                    where=where, hint="use an accelerator with a larger weight buffer (--wbuf-words, or "
                                      "wbuf_words in the overlay's HW.toml)")


def assemble(t: Tensors, cfg: AccelConfig, mp: MemoryPlan, codes: list[Code], names: list,
             wheres: list[str] | None = None) -> Linked:
    """One instruction list: prologue, the layers with their weight loads, epilogue."""
    body, spans = [], []
    for code in codes:
        spans.append((len(body), len(body) + len(code.instrs)))
        body += code.instrs
    half = max([ins.block.shape[0] for ins in body if ins.op == isa.CONV], default=1)
    wbuf = cfg.wbuf_words or 2 * half
    blocks, uses = block_uses(body, pairs=2 * half <= wbuf)
    _check_blocks(codes, wheres or [n for n, _ in names], wbuf)
    n_biases = sum(len(c.biases) for c in codes)
    bbuf = cfg.bbuf_words or max(n_biases, 1)
    head, tail = _head_tail(t, mp, cfg, early_bias_words(body, n_biases, bbuf), blocks)
    slots = weight_slots([blk.shape[0] for blk in blocks], wbuf)
    final, remap = _weights_and_biases(body, blocks, uses, slots, cfg, n_biases, bbuf)
    off = len(head)
    layers = [Layer(name, kind, remap[a] + off, remap[b] + off, code.macs, info=code.info)
              for (name, kind), code, (a, b) in zip(names, codes, spans)]
    # widen each layer over the SYNC/LOAD that were inserted before the next layer's first op
    layers = [replace(a, last=b.first) for a, b in zip(layers, layers[1:])] + layers[-1:]
    return Linked(tuple(head + final + tail), tuple(layers), tuple(blocks), half, wbuf)


def layout(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan, n_instr: int, biases: np.ndarray,
           blocks, tables=(), gbs=()) -> tuple:
    """The external-memory image after the program: (region -> beat address, blobs, inputs, outputs)."""
    from .layout import bias_words_to_beats, words_to_beats

    addr = n_instr * cfg.instr_beats
    ext, blobs = {}, []

    def region(key, beats: list) -> None:
        nonlocal addr
        ext[key] = addr
        blobs.append(beats)
        addr += len(beats)
    region(("bias", 0), bias_words_to_beats(biases, cfg))
    for i, blk in enumerate(blocks):
        if not isinstance(blk, ExtBlock):
            region(("w", i), words_to_beats(blk, cfg.w_bits, cfg.mem_bits))
    for i, tab in enumerate(tables):
        region(("tab", i), words_to_beats(tab, cfg.a_bits, cfg.mem_bits))
    for i, words in enumerate(gbs):   # gamma/beta words, each gb_beats beats, low beat first
        per, mask = cfg.gb_beats, (1 << cfg.mem_bits) - 1
        region(("gb", i), [(w >> (k * cfg.mem_bits)) & mask for w in words for k in range(per)])
    inputs, outputs = {}, {}
    for name in t.inputs:
        s = mp.stored[name]
        inputs[name] = {"ext": addr, "stored": s, "beats": s.words * cfg.act_beats}
        region(("in", name), [0] * (s.words * cfg.act_beats))
    for name in mp.spilled:
        region(("spill", name), [0] * (mp.stored[name].words * cfg.act_beats))
    for name in t.outputs:
        r = t.root(name)
        s = mp.stored[r]
        n_beats = s.words * cfg.act_beats
        if r in mp.resident:
            region(("out", name), [0] * n_beats)
        outputs[name] = {"ext": ext[("out", name)] if r in mp.resident else ext[("spill", r)],
                         "stored": s, "beats": n_beats, "signed": t.g.tensors[name].dtype.signed,
                         "shape": (batch,) + tuple(t.g.tensors[name].shape[1:])}
    return ext, blobs, inputs, outputs


def _bias_entry(b, cols: int) -> np.ndarray:
    """A bias word as [3, COLS]: biases, lane shifts, lane mults (emit gives a per-tensor CONV's
    word as its COLS biases; its shifts and mults are unused, 0)."""
    b = np.asarray(b, np.int64)
    return b if b.ndim == 2 else np.stack([b, np.zeros(cols, np.int64), np.zeros(cols, np.int64)])


def encode(instrs, ext: dict) -> list[int]:
    """Resolve the symbolic external addresses and encode every instruction."""
    words = []
    for ins in instrs:
        f = {k: (ext[v.region] + v.offset if isinstance(v, Ext) else v) for k, v in ins.fields.items()}
        words.append(isa.encode(ins.op, **f))
    return words


def size_buffers(cfg: AccelConfig, high: int, n_biases: int, n_instr: int, wbuf: int, split: int = 0) -> AccelConfig:
    """The build's buffer depths: as given, or sized to the program (and with it the activation
    buffer's banks: `split`, where the plan loads the input under the first layer, see overlap.py);
    refuses what does not fit.
    (A fixed bias buffer smaller than the biases is reloaded in windows, see _weights_and_biases; a
    fixed instruction memory smaller than the program holds it page by page, see paginate.)"""
    abuf = cfg.abuf_words or max(64, 1 << max(0, (high - 1)).bit_length())
    if high > abuf:
        raise UnsupportedError(f"the activations need {high} activation-buffer words; the buffer has {abuf}",
                               where="activation buffer", hint=f"build with at least {high} words")
    bbuf = cfg.bbuf_words or max(n_biases, 1)
    imem = cfg.imem_words or n_instr
    abuf_split = cfg.abuf_split if cfg.abuf_words else split
    return replace(cfg, abuf_words=abuf, wbuf_words=wbuf, bbuf_words=bbuf, imem_words=imem, abuf_split=abuf_split)


@dataclass(frozen=True)
class Pages:
    """A program cut into pages of at most `size` instructions (docs/isa.md, 'Pages'): a page LOAD
    goes before instruction `breaks[k]` of the program without page LOADs."""

    size: int
    breaks: tuple     # indices (program without page LOADs) of the first instruction of every page but the first
    n: int            # instructions without page LOADs

    @cached_property
    def starts(self) -> tuple:
        """The index of every page's first instruction (after the page LOADs are inserted)."""
        return (0,) + tuple(b + k + 1 for k, b in enumerate(self.breaks))

    @property
    def total(self) -> int:
        return self.n + len(self.breaks)

    def length(self, k: int) -> int:
        s = self.starts
        return (s[k + 1] if k + 1 < len(s) else self.total) - s[k]

    def new_index(self, i: int) -> int:
        """Where instruction i of the program without page LOADs ends up (i = its length: the end)."""
        return i + sum(1 for b in self.breaks if b <= i)


def paginate(n_instr: int, imem: int) -> Pages:
    """Pages for a program of n_instr instructions and an instruction memory of imem words: while
    the rest does not fit, a page holds imem - 1 instructions and the LOAD of the next page."""
    if imem < 2:
        raise UnsupportedError(f"an instruction memory of {imem} words cannot hold a page and its jump",
                               where="instruction memory", hint="use at least 16 instruction words")
    jumps = 0 if n_instr <= imem else -(-(n_instr - imem) // (imem - 1))
    return Pages(imem, tuple((imem - 1) * (k + 1) for k in range(jumps)), n_instr)


def _stream_slack(instrs: list, i: int, cfg: AccelConfig) -> int:
    """Cycles the memory port is free while the CONV at instrs[i] streams, less the loads issued
    right after it (the next weight block, the rest of the biases)."""
    d = instrs[i].fields
    free = 2 + cfg.rows + -(-d["npix"] // cfg.rows) * d["period"]
    j = i + 1
    while j < len(instrs) and instrs[j].op == isa.LOAD:
        free -= instrs[j].fields["nwords"] * cfg.buf_beats(instrs[j].fields["buf"]) + cfg.mem_latency + 2
        j += 1
    return free - cfg.mem_latency - 8   # the page LOAD's own issue: it ends L + 4 cycles after its last beat


def overlap_pages(instrs: list, size: int, cfg: AccelConfig) -> Pages:
    """Pages of at most `size` instructions whose LOADs hide behind computation. A page ends right
    after a CONV and the loads that follow it, so that the next page loads while that CONV streams;
    the breaks minimize (dynamic programming over those points) the boot (the first page) plus the
    cycles by which each later page's load outlasts the CONV it follows. Where no such point is
    within reach, a page ends where it is full."""
    n, beats = len(instrs), cfg.instr_beats
    slack = {}     # page start -> cycles of the memory port free for its load
    for i, ins in enumerate(instrs):
        if ins.op == isa.CONV:
            j = i + 1
            while j < n and instrs[j].op == isa.LOAD:
                j += 1
            if j < n:
                slack[j] = _stream_slack(instrs, i, cfg)
    points = sorted(slack)
    best: dict = {}   # page start -> (cycles from its load to the end, the next page's start or None)

    def solve(s: int) -> tuple:
        if s not in best:
            load = (lambda words: words * beats) if s == 0 else \
                (lambda words: max(0, words * beats - slack.get(s, 0)))
            if n - s <= size:
                best[s] = (load(n - s), None)
            else:
                reach = points[bisect_right(points, s):bisect_right(points, s + size - 1)] or [s + size - 1]
                best[s] = min((load(b - s + 1) + solve(b)[0], b) for b in reach)
        return best[s]

    for s in reversed(points):   # from the end, so that the recursion stays shallow
        solve(s)
    breaks, s = [], solve(0)[1]
    while s is not None:
        breaks.append(s)
        s = solve(s)[1]
    return Pages(size, tuple(breaks), n)


def insert_pages(instrs: list, layers: list, pg: Pages, prog_addr: int, cfg: AccelConfig) -> tuple[list, list]:
    """The instructions with a page LOAD (`LOAD imem[0] <- the next page`) ending every page but the
    last, and the layers' indices moved past them."""
    if len(pg.starts) == 1:
        return list(instrs), list(layers)
    out = []
    for k, start in enumerate(pg.starts):
        body = pg.length(k) - (1 if k + 1 < len(pg.starts) else 0)
        first = start - k                    # index in the program without page LOADs
        out += instrs[first:first + body]
        if k + 1 < len(pg.starts):
            nxt = pg.starts[k + 1]
            out.append(dma(isa.LOAD, isa.B_IMEM, 0, prog_addr + nxt * cfg.instr_beats, pg.length(k + 1)))
    assert len(out) == pg.total, (len(out), pg.total)
    layers = [replace(L, first=pg.new_index(L.first), last=pg.new_index(L.last)) for L in layers]
    return out, layers


PAGE_SIZES = (16, 32, 64, 128, 256, 512)


def link(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan, codes: list[Code], names: list,
         wheres: list[str] | None = None) -> Program:
    """Assemble, lay out the image, relocate, encode and size the buffers. With a fixed instruction
    memory the program is cut into pages of its size (paginate); with one sized to the program, into
    the pages (overlap_pages, PAGE_SIZES) or the single page that give the fewest cycles (cycle
    model): the boot then reads only the first page, and the others load while CONVs compute."""
    ld = assemble(t, cfg, mp, codes, names, wheres)
    biases = [_bias_entry(b, cfg.cols) for c in codes for b in c.biases]
    bias_words = np.stack(biases) if biases else np.zeros((1, 3, cfg.cols), np.int64)
    n = len(ld.instrs)
    pg = paginate(n, cfg.imem_words) if cfg.imem_words else fastest_pages(list(ld.instrs), cfg)
    tables = [tab for c in codes for tab in c.tables]
    gbs = [gb for c in codes for gb in c.gbs]
    return _program(t, cfg, batch, mp, ld, biases, bias_words, pg, tables, gbs)


def fastest_pages(instrs: list, cfg: AccelConfig) -> Pages:
    """Of one page (the whole program) and overlap_pages for every size in PAGE_SIZES, the pages
    with the fewest cycles (the cycle model, model.schedule), of those the smallest instruction
    memory."""
    from .model import schedule

    def key(pg: Pages) -> tuple:
        paged, _ = insert_pages(instrs, [], pg, 0, cfg)
        boot = pg.length(0) if len(pg.starts) > 1 else len(paged)
        return schedule([dict(ins.fields, op=ins.op) for ins in paged], cfg, boot).total, _longest(pg)
    return min([paginate(len(instrs), len(instrs))] +
               [overlap_pages(instrs, size, cfg) for size in PAGE_SIZES if size < len(instrs)], key=key)


def _longest(pg: Pages) -> int:
    return max(pg.length(k) for k in range(len(pg.starts)))


def _program(t: Tensors, cfg: AccelConfig, batch: int, mp: MemoryPlan, ld: Linked, biases: list,
             bias_words: np.ndarray, pg: Pages, tables=(), gbs=()) -> Program:
    instrs, layers = insert_pages(list(ld.instrs), list(ld.layers), pg, 0, cfg)
    ext, blobs, inputs, outputs = layout(t, cfg, batch, mp, len(instrs), bias_words, ld.blocks, tables, gbs)
    words = encode(instrs, ext)
    image = isa.to_words(words, cfg.mem_bits)
    for bl in blobs:
        image.extend(bl)
    imem = cfg.imem_words or _longest(pg)
    cfg2 = size_buffers(replace(cfg, imem_words=imem), mp.high, len(biases), len(words), ld.wbuf, mp.split)
    boot = pg.length(0) if len(pg.starts) > 1 else 0
    return Program(cfg2, words, [isa.describe(w) for w in words], image, 0, inputs, outputs, layers, batch, boot)
