"""Row bands: a layer whose operands and result do not fit the activation buffer together.

Every live tensor is spilled; then per band of output rows: LOAD the input rows the band's
windows touch (the kernel's halo, clipped to the image; one LOAD per channel group and sample),
run the layer's instructions on the band (a band of h rows is a tensor of h rows with its own
top padding), STORE the output rows. The result stays in external memory until its next use.
"""
from __future__ import annotations

from .. import ir
from ..errors import UnsupportedError
from . import isa
from .liveness import where
from .plan import ABUF_HINT, Memory, OpPlan, Site
from .program import Ext, Stored, dma, sync


def geometry(g: ir.Graph, op):
    """(kernel height, stride y, dilation y, pad top) of a layer that can run in bands of output rows."""
    if isinstance(op, ir.Conv) and len(g.tensors[op.inputs[0]].shape) == 4:
        return g.tensors[op.inputs[1]].shape[2], op.strides[0], op.dilations[0], op.pads[0]
    if isinstance(op, ir.MaxPool):
        return op.kernel[0], op.strides[0], op.dilations[0], op.pads[0]
    if isinstance(op, ir.AvgPool):
        return op.kernel[0], op.strides[0], 1, op.pads[0]
    if isinstance(op, (ir.Add, ir.Clamp)) and len(g.tensors[op.inputs[0]].shape) == 4:
        return 1, 1, 1, 0
    return None


def _input_rows(rows: int, h: int, geo) -> int:
    kh, sh, dh, _ = geo
    return min(h, (rows - 1) * sh + (kh - 1) * dh + 1)


def band_rows(mem: Memory, op, reads) -> int | None:
    """None if the layer fits the buffer (with spilling); else its output rows per band."""
    t, cfg = mem.t, mem.cfg
    if not cfg.abuf_words:
        return None
    names = [n for n in op.inputs if n not in t.g.constants]
    out = mem.shape(op.outputs[0])
    need = sum(mem.stored[r].words for r in set(reads)) + out.words
    geo = geometry(t.g, op)
    if need <= cfg.abuf_words or geo is None:
        return None
    if op.outputs[0] in t.cslice or any(t.view.get(n, n) in t.cslice or t.chw(n) != t.chw(t.root(n)) for n in names):
        raise UnsupportedError(f"the layer needs {need} activation-buffer words and would run in row bands, "
                               "which Concat slices and reshaped inputs do not support", where=where(op),
                               hint=ABUF_HINT)
    srcs = [mem.stored[t.root(n)] for n in names]
    for rows in range(out.h, 0, -1):
        ih = _input_rows(rows, srcs[0].h, geo)
        words = sum(sv.groups * mem.batch * ih * sv.w for sv in srcs) + out.groups * mem.batch * rows * out.w
        if words <= cfg.abuf_words:
            return rows
    raise UnsupportedError(f"one output row of the layer needs {words} activation-buffer words with its input "
                           f"rows; the buffer has {cfg.abuf_words}", where=where(op),
                           hint=ABUF_HINT)


def band_dma(opc: int, sv: Stored, key: Ext, base: int, y0: int, y1: int, act_beats: int) -> list:
    """LOAD/STORE rows y0..y1 of every channel group and sample of `sv` (external) at `base` (buffer),
    laid out as a tensor of y1 - y0 rows."""
    rows = y1 - y0
    if rows <= 0:
        return []
    if rows == sv.h:
        return [dma(opc, isa.B_ACT, base, key, sv.words)]
    return [dma(opc, isa.B_ACT, base + (gi * sv.n + n) * rows * sv.w,
                key + (gi * sv.gstride + n * sv.h * sv.w + y0 * sv.w) * act_beats, rows * sv.w)
            for gi in range(sv.groups) for n in range(sv.n)]


def plan_bands(mem: Memory, i: int, op, rows: int) -> OpPlan:
    """Spill everything, then one Site per band of `rows` output rows with its LOADs and STOREs."""
    t = mem.t
    names = [n for n in op.inputs if n not in t.g.constants]
    locs = {n: mem.loc(n) for n in names}
    mem.flush(i)
    geo = geometry(t.g, op)
    kh, sh, dh, pt = geo
    srcs = [mem.stored[t.root(n)] for n in names]
    H = srcs[0].h
    out = op.outputs[0]
    so = mem.stored[out] = mem.shape(out)
    mem.in_dram.add(out)
    mem.spilled.add(out)
    ih = _input_rows(rows, H, geo)
    in_words = [Stored(0, sv.c, ih, sv.w, mem.batch, sv.cols).words for sv in srcs]
    out_words = Stored(0, so.c, rows, so.w, mem.batch, so.cols).words
    bases = [mem.alloc.alloc(n) for n in in_words]
    obase = mem.alloc.alloc(out_words)
    pre, sites, ab = mem.take(), [], mem.cfg.act_beats
    for a in range(0, so.h, rows):
        b = min(so.h, a + rows)
        y0 = min(max(0, a * sh - pt), H - 1)  # a band wholly in the bottom padding still loads a row
        y1 = min(H, max(y0, (b - 1) * sh - pt + (kh - 1) * dh + 1))
        # the previous band has been read (LOAD act never overlaps compute)
        before = [sync(isa.S_COMPUTE)]
        for n, sv, base in zip(names, srcs, bases):
            before += band_dma(isa.LOAD, sv, mem.ext(t.root(n)), base, y0, y1, ab)
        before.append(sync(isa.S_DMA))  # the band is in, and the previous band's STORE has read its rows
        after = [sync(isa.S_COMPUTE)] + band_dma(isa.STORE, so, Ext("spill", out), obase, a, b, ab)
        sites.append(Site(tuple(Stored(base, sv.c, y1 - y0, sv.w, mem.batch, sv.cols) for sv, base in zip(srcs, bases)),
                          Stored(obase, so.c, b - a, so.w, mem.batch, so.cols), y1 - y0, pt - (a * sh - y0), b - a,
                          tuple(before), tuple(after)))
    mem.dirty.clear()
    for base, n in zip(bases, in_words):
        mem.alloc.free(base, n)
    mem.alloc.free(obase, out_words)
    # the regions are free only once the last STORE has read them
    return OpPlan(i, op, pre, locs, tuple(sites), True, (sync(isa.S_DMA),))
