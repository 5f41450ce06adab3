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
group, link.block_uses, and one block ahead otherwise). `input_bands` is a stage between emitting and linking: it takes the memory
plan and the layers' code and returns them with the first layer banded, or unchanged where the
conditions do not hold.
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
