"""Compiler back end for the instruction-driven accelerator (docs/isa.md, docs/architecture.md).

IR device ops -> a program (instruction words) + one external-memory image (program, weights,
biases, inputs) + the layout of every tensor, for an accelerator of a given `AccelConfig`.

Activation layout (in the activation buffer and in external memory): a tensor with C channels,
N samples of H x W pixels is ceil(C/COLS) channel groups of N*H*W words; word
base + g*N*H*W + n*H*W + y*W + x holds channels g*COLS .. g*COLS+COLS-1 of that pixel, channel
c in lane c % COLS (A_BITS bits per lane, lane 0 in the low bits). A dense layer's [N, K] input
is a K-channel 1x1 image per sample; a Dense that follows a Flatten runs as a convolution whose
kernel covers the whole un-flattened image, so Reshape never moves data.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

from .. import ir
from ..errors import UnsupportedError
from . import isa


@dataclass(frozen=True)
class AccelConfig:
    """Parameters of one accelerator build (the HDL parameters of tony_accel)."""

    rows: int = 8
    cols: int = 8
    a_bits: int = 8
    w_bits: int = 8
    acc_bits: int = 32
    mem_bits: int = 64
    abuf_words: int = 0      # 0: sized by the compiler to the model
    wbuf_words: int = 0
    bbuf_words: int = 0
    imem_words: int = 0
    mem_latency: int = 2     # external memory: a read accepted in cycle t is answered in cycle t + mem_latency

    def beats(self, bits: int) -> int:
        return -(-bits // self.mem_bits)

    @property
    def act_beats(self) -> int:
        return self.beats(self.cols * self.a_bits)

    @property
    def wgt_beats(self) -> int:
        return self.beats(self.cols * self.w_bits)

    @property
    def bias_beats(self) -> int:
        return self.beats(self.cols * self.acc_bits)

    @property
    def instr_beats(self) -> int:
        return isa.INSTR_BITS // self.mem_bits

    def buf_beats(self, buf: int) -> int:
        return {isa.B_ACT: self.act_beats, isa.B_WGT: self.wgt_beats, isa.B_BIAS: self.bias_beats,
                isa.B_IMEM: self.instr_beats}[buf]

    def hdl_params(self) -> dict:
        return {"ROWS": self.rows, "COLS": self.cols, "A_BITS": self.a_bits, "W_BITS": self.w_bits,
                "ACC_BITS": self.acc_bits, "MEM_BITS": self.mem_bits, "ABUF_WORDS": self.abuf_words,
                "WBUF_WORDS": self.wbuf_words, "BBUF_WORDS": self.bbuf_words, "IMEM_WORDS": self.imem_words}


@dataclass
class Stored:
    """Where a tensor lives in the activation buffer: base word, logical C x H x W, N samples."""

    base: int
    c: int
    h: int
    w: int
    n: int
    cols: int

    @property
    def groups(self) -> int:
        return -(-self.c // self.cols)

    @property
    def gstride(self) -> int:
        return self.n * self.h * self.w

    @property
    def words(self) -> int:
        return self.groups * self.gstride


def pack_act(x: np.ndarray, c: int, h: int, w: int, cols: int, a_bits: int) -> np.ndarray:
    """Logical [N, C, H, W] (any shape with N*C*H*W elements) -> words [G*N*H*W, COLS] of raw lane bits."""
    x = np.asarray(x, np.int64).reshape(-1, c, h, w)
    n = x.shape[0]
    g = -(-c // cols)
    xp = np.zeros((n, g * cols, h, w), np.int64)
    xp[:, :c] = x
    words = xp.reshape(n, g, cols, h, w).transpose(1, 0, 3, 4, 2).reshape(g * n * h * w, cols)
    return words & ((1 << a_bits) - 1)


def unpack_act(words: np.ndarray, n: int, c: int, h: int, w: int, cols: int, a_bits: int, signed: bool) -> np.ndarray:
    """Inverse of pack_act: words [G*N*H*W, COLS] -> [N, C, H, W] integers."""
    g = -(-c // cols)
    v = np.asarray(words, np.int64).reshape(g, n, h, w, cols).transpose(1, 0, 4, 2, 3).reshape(n, g * cols, h, w)[:, :c]
    v = v & ((1 << a_bits) - 1)
    if signed:
        v = np.where(v >> (a_bits - 1), v - (1 << a_bits), v)
    return v


def words_to_beats(words: np.ndarray, lane_bits: int, mem_bits: int) -> list[int]:
    """Buffer words [n, COLS] (lane 0 low) -> external-memory beats (ceil(COLS*lane_bits/mem_bits) per word)."""
    cols = words.shape[1]
    per = -(-cols * lane_bits // mem_bits)
    mask, bmask = (1 << lane_bits) - 1, (1 << mem_bits) - 1
    out = []
    for row in np.asarray(words, np.int64):
        wv = 0
        for i, v in enumerate(row.tolist()):
            wv |= (int(v) & mask) << (i * lane_bits)
        out.extend((wv >> (b * mem_bits)) & bmask for b in range(per))
    return out


def beats_to_words(beats, cols: int, lane_bits: int, mem_bits: int) -> np.ndarray:
    per = -(-cols * lane_bits // mem_bits)
    mask = (1 << lane_bits) - 1
    n = len(beats) // per
    out = np.zeros((n, cols), np.int64)
    for i in range(n):
        wv = 0
        for b in range(per):
            wv |= int(beats[i * per + b]) << (b * mem_bits)
        out[i] = [(wv >> (l * lane_bits)) & mask for l in range(cols)]
    return out


@dataclass
class Layer:
    """Book-keeping for reports: one IR op and the instructions it became."""

    name: str
    op: str
    first: int            # index of its first instruction
    last: int             # index after its last instruction
    macs: int = 0         # real MACs per run (all samples of the batch)
    bound: float = 1.0    # best utilization the dataflow allows for this layer (docs/architecture.md)
    bound_why: str = ""
    info: dict = field(default_factory=dict)


@dataclass
class Program:
    cfg: AccelConfig
    words: list            # instruction words
    text: list             # one line per instruction
    image: list            # external memory, beats
    prog_addr: int
    inputs: dict           # tensor name -> {"ext": beat address, "stored": Stored, "words": n}
    outputs: dict          # tensor name -> {"ext": ..., "stored": ..., "signed": bool, "shape": logical shape}
    layers: list
    batch: int


def _where(op) -> str:
    return f'node "{op.origin or op.outputs[0]}" ({type(op).__name__})'


def _rq_fields(rq: ir.Requant | None, out: ir.Tensor, op) -> dict:
    if rq is None:
        return {"mult": 1, "shift": 0, "lo": out.dtype.min, "hi": out.dtype.max}
    if rq.per_channel:
        raise UnsupportedError("per-channel requantization is not supported on the accelerator", where=_where(op),
                               hint="quantize weights per tensor")
    if rq.zero_point:
        raise UnsupportedError(f"output zero point {rq.zero_point}; the accelerator needs 0", where=_where(op),
                               hint="quantize activations symmetrically")
    if not (0 < rq.mult < 1 << 32) or not (-128 <= rq.shift <= 127):
        raise UnsupportedError(f"requantization *{rq.mult} >>{rq.shift} is outside the post-processing unit's range",
                               where=_where(op))
    return {"mult": rq.mult, "shift": rq.shift, "lo": max(rq.lo, -2048), "hi": min(rq.hi, 2047)}


class _Alloc:
    """First-fit allocation of activation-buffer words."""

    def __init__(self, limit: int = 0):
        self.free_list: list[tuple[int, int]] = []  # (base, words) in use
        self.high = 0
        self.limit = limit  # 0: unlimited

    def alloc(self, words: int) -> int | None:
        used = sorted(self.free_list)
        pos = 0
        for b, n in used:
            if b - pos >= words:
                break
            pos = max(pos, b + n)
        if self.limit and pos + words > self.limit:
            return None
        self.free_list.append((pos, words))
        self.high = max(self.high, pos + words)
        return pos

    def free(self, base: int, words: int) -> None:
        self.free_list.remove((base, words))


def compile_program(g: ir.Graph, cfg: AccelConfig, batch: int = 1) -> Program:
    """Schedule every device op of `g` onto the accelerator; returns the program and memory image."""
    R, C = cfg.rows, cfg.cols
    ops = g.device_ops
    # ---- storage: views for Reshape, last use of every tensor -------------------------------
    view: dict[str, str] = {}          # tensor -> tensor whose storage it shares
    producers = {o: op for op in ops for o in op.outputs}

    def producer_of(name):
        return producers.get(name)

    for op in ops:
        if isinstance(op, ir.Reshape):
            view[op.outputs[0]] = view.get(op.inputs[0], op.inputs[0])

    produced = {view.get(o, o) for op in ops if not isinstance(op, ir.Reshape) for o in op.outputs}
    # Concat along channels: an input at the output's scale whose channel offset is a whole number
    # of channel groups is written by its producer straight into its slice of the output (zero
    # copy); every other input is copied (and requantized) by the vector unit (EWISE).
    cslice: dict[str, tuple[str, int]] = {}   # tensor -> (concat output holding it, first group)
    graph_outs = set(g.outputs) | {op.inputs[0] for op in g.ops if op.host}
    for op in ops:
        if not isinstance(op, ir.Concat):
            continue
        nd = len(g.tensors[op.outputs[0]].shape)
        if op.axis != 1 or nd not in (2, 4):
            raise UnsupportedError(f"Concat along axis {op.axis} of a {nd}-d tensor; the accelerator concatenates "
                                   "channels (axis 1) of [N, C, H, W] or [N, K] tensors", where=_where(op))
        off = 0
        for name, rq in zip(op.inputs, op.requants):
            t = g.tensors[name]
            if off % C:
                raise UnsupportedError(f"Concat input '{name}' starts at channel {off}, not a multiple of the "
                                       f"array's {C} columns (channels per activation word); the accelerator "
                                       "cannot move channels between lanes", where=_where(op),
                                       hint=f"use input channel counts that are multiples of {C}, or an array "
                                            "whose column count divides them")
            identity = (rq is not None and not rq.per_channel and rq.mult == 1 and rq.shift == 0
                        and not rq.zero_point and rq.lo <= t.dtype.min and rq.hi >= t.dtype.max)
            if (identity and name in produced and name not in view and name not in cslice
                    and name not in graph_outs and not isinstance(producer_of(name), ir.Concat)):
                cslice[name] = (op.outputs[0], off // C)
            off += t.shape[1]

    def root(name):
        r = view.get(name, name)
        return cslice[r][0] if r in cslice else r

    def in_place(op) -> list[bool]:
        """Per Concat input: was it written in place (by its producer) into its channel groups?"""
        offs = np.cumsum([0] + [g.tensors[n].shape[1] for n in op.inputs])
        return [cslice.get(n) == (op.outputs[0], int(o) // C) for n, o in zip(op.inputs, offs)]

    dev_inputs = []
    for op in ops:
        for name in op.inputs[:1] if isinstance(op, (ir.Conv, ir.Dense)) else op.inputs:
            r = root(name)
            if r not in produced and r not in g.constants and r not in dev_inputs:
                dev_inputs.append(r)
    dev_outputs = []
    for op in g.ops:
        if op.host and isinstance(op, ir.Dequantize) and op.inputs[0] not in dev_outputs:
            dev_outputs.append(op.inputs[0])
    for name in g.outputs:
        if not g.tensors[name].dtype.is_float and name not in dev_outputs:
            dev_outputs.append(name)
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name not in g.constants:
                last_use[root(name)] = i
    for name in dev_outputs:
        last_use[root(name)] = len(ops)

    def chw(name):
        shp = g.tensors[name].shape
        if len(shp) == 4:
            return shp[1], shp[2], shp[3]
        if len(shp) == 2:
            return shp[1], 1, 1
        raise UnsupportedError(f"tensor '{name}' has shape {list(shp)}; the accelerator stores [N, C, H, W] or [N, K]",
                               where=f"tensor {name}")

    # Tensors live in the activation buffer while they are needed. With a limited buffer
    # (cfg.abuf_words), a tensor that is not needed by the current op may be spilled to external
    # memory (STORE once; tensors never change) and loaded back before its next use.
    alloc = _Alloc(cfg.abuf_words)
    stored: dict[str, Stored] = {}
    resident: set[str] = set()
    in_dram: set[str] = set()           # its external-memory copy is current
    spilled: set[str] = set()           # has a spill region in external memory
    input_base: dict[str, int] = {}
    prog: list[tuple[int, dict]] = []   # (op, fields)
    dirty: set[str] = set()

    def emit(op, flags=0, sync=0, **f):
        prog.append((op, dict(flags=flags, sync=sync, **f)))

    def ext_key(name):
        """Where a tensor's external-memory copy lives: the input region for device inputs."""
        return ("in", name) if name in dev_inputs else ("spill", name)

    def next_use(name, i):
        uses = [j for j, op in enumerate(ops) if j >= i and any(root(n) == name for n in op.inputs)]
        return uses[0] if uses else (len(ops) if name in {root(o) for o in dev_outputs} else -1)

    def evict(protect, i) -> bool:
        cands = [n for n in resident if n not in protect]
        if not cands:
            return False
        victim = max(cands, key=lambda n: next_use(n, i))
        s = stored[victim]
        if victim not in in_dram:
            emit(isa.SYNC, sync=isa.S_COMPUTE)
            dirty.clear()
            emit(isa.STORE, buf=isa.B_ACT, baddr=s.base, eaddr=("spill", victim), nwords=s.words)
            emit(isa.SYNC, sync=isa.S_DMA)  # the region is free only once the STORE has read it
            in_dram.add(victim)
            spilled.add(victim)
        alloc.free(s.base, s.words)
        resident.discard(victim)
        return True

    def alloc_words(words, protect, i, what):
        while True:
            base = alloc.alloc(words)
            if base is not None:
                return base
            if not evict(protect, i):
                raise UnsupportedError(f"{what} needs {words} activation-buffer words with its operands; the buffer "
                                       f"has {cfg.abuf_words}", where="--abuf-words",
                                       hint="build with a larger activation buffer")

    def place(name, protect=(), i=0):
        c, h, w = chw(name)
        s = Stored(0, c, h, w, batch, C)
        s.base = alloc_words(s.words, set(protect) | {name}, i, f"tensor '{name}'")
        stored[name] = s
        resident.add(name)
        return s

    def reload(name, protect, i):
        s = stored[name]
        s.base = alloc_words(s.words, set(protect), i, f"tensor '{name}'")
        resident.add(name)
        emit(isa.SYNC, sync=isa.S_COMPUTE)
        dirty.clear()
        emit(isa.LOAD, buf=isa.B_ACT, baddr=s.base, eaddr=ext_key(name), nwords=s.words)
        emit(isa.SYNC, sync=isa.S_DMA)

    def loc(name) -> Stored:
        """Where `name` lives now: its own storage, or its channel groups' slice of a Concat output."""
        r = view.get(name, name)
        if r not in cslice:
            return stored[r]
        cr, goff = cslice[r]
        s = stored[cr]
        c, h, w = chw(r)
        return Stored(s.base + goff * s.gstride, c, h, w, batch, C)

    def dest(name, protect, i) -> Stored:
        """Storage for an op's result; a Concat input's slice keeps the rest of its Concat output."""
        if name not in cslice:
            return place(name, protect, i)
        cr = cslice[name][0]
        if cr not in stored:
            place(cr, protect, i)
        elif cr not in resident:
            reload(cr, set(protect) | {cr}, i)
        in_dram.discard(cr)  # the external copy (if any) lacks this slice from now on
        return loc(name)

    def release_after(i):
        for name, lu in list(last_use.items()):
            if lu == i and name in stored:
                if name in resident:
                    alloc.free(stored[name].base, stored[name].words)
                    resident.discard(name)
                del last_use[name]

    for name in dev_inputs:
        in_dram.add(name)  # the host writes it to external memory; it never needs a spill
        c, h, w = chw(name)
        if cfg.abuf_words and Stored(0, c, h, w, batch, C).words > cfg.abuf_words:
            stored[name] = Stored(0, c, h, w, batch, C)  # read band by band from external memory
        else:
            input_base[name] = place(name).base

    # ---- row bands: a layer whose operands and result do not fit the buffer together ----------
    def geometry(op):
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

    def band_plan(op, reads):
        """None if the layer fits the buffer (with spilling); else its output rows per band."""
        if not cfg.abuf_words:
            return None
        names = [n for n in op.inputs if n not in g.constants]
        out = Stored(0, *chw(op.outputs[0]), batch, C)
        need = sum(stored[r].words for r in set(reads)) + out.words
        geo = geometry(op)
        if need <= cfg.abuf_words or geo is None:
            return None
        if op.outputs[0] in cslice or any(view.get(n, n) in cslice or chw(n) != chw(root(n)) for n in names):
            raise UnsupportedError(f"the layer needs {need} activation-buffer words and would run in row bands, "
                                   "which Concat slices and reshaped inputs do not support", where=_where(op),
                                   hint="build with a larger activation buffer (--abuf-words)")
        kh, sh, dh, _ = geo
        srcs = [stored[root(n)] for n in names]
        for rows in range(out.h, 0, -1):
            ih = min(srcs[0].h, (rows - 1) * sh + (kh - 1) * dh + 1)
            words = sum(sv.groups * batch * ih * sv.w for sv in srcs) + out.groups * batch * rows * out.w
            if words <= cfg.abuf_words:
                return rows
        raise UnsupportedError(f"one output row of the layer needs {words} activation-buffer words with its input "
                               f"rows; the buffer has {cfg.abuf_words}", where=_where(op),
                               hint="build with a larger activation buffer (--abuf-words)")

    def fits(op, reads) -> bool:
        """Would the operands and the result find room, with every other tensor evicted?"""
        if not cfg.abuf_words:
            return True
        sim = _Alloc(cfg.abuf_words)
        sim.free_list = [(stored[r].base, stored[r].words) for r in set(reads) if r in resident]
        need = [stored[r].words for r in dict.fromkeys(reads) if r not in resident]
        out = op.outputs[0]
        r_out = cslice[out][0] if out in cslice else out
        if r_out not in resident and not (isinstance(op, ir.Concat) and r_out in reads):
            need.append(stored[r_out].words if r_out in stored else Stored(0, *chw(r_out), batch, C).words)
        return all(sim.alloc(n) is not None for n in need)

    def band_dma(opc, sv, key, base, y0, y1):
        """LOAD/STORE rows y0..y1 of every channel group and sample of `sv` (external) at `base` (buffer),
        laid out as a tensor of y1 - y0 rows."""
        rows = y1 - y0
        if rows <= 0:
            return
        ab = cfg.act_beats
        if rows == sv.h:
            emit(opc, buf=isa.B_ACT, baddr=base, eaddr=key, nwords=sv.words)
            return
        for gi in range(sv.groups):
            for n in range(sv.n):
                emit(opc, buf=isa.B_ACT, baddr=base + (gi * sv.n + n) * rows * sv.w,
                     eaddr=key + ((gi * sv.gstride + n * sv.h * sv.w + y0 * sv.w) * ab,), nwords=rows * sv.w)

    def run_bands(op, i, rows, body) -> int:
        """Run a layer band by band: every live tensor goes to external memory, then per band of
        `rows` output rows: LOAD the input rows it needs (with the kernel's halo), compute
        (`body(band inputs, band output, band input height, band pad top, band output height)`),
        STORE the output rows. The result stays in external memory. Returns the number of bands."""
        while resident:
            evict(set(), i)
        kh, sh, dh, pt = geometry(op)
        names = [n for n in op.inputs if n not in g.constants]
        srcs = [stored[root(n)] for n in names]
        H = srcs[0].h
        out = op.outputs[0]
        so = Stored(0, *chw(out), batch, C)
        stored[out] = so
        in_dram.add(out)
        spilled.add(out)
        ih = min(H, (rows - 1) * sh + (kh - 1) * dh + 1)
        bases = [alloc.alloc(Stored(0, sv.c, ih, sv.w, batch, C).words) for sv in srcs]
        obase = alloc.alloc(Stored(0, so.c, rows, so.w, batch, C).words)
        nb = 0
        for a in range(0, so.h, rows):
            b = min(so.h, a + rows)
            y0 = max(0, a * sh - pt)
            y1 = min(H, max(y0, (b - 1) * sh - pt + (kh - 1) * dh + 1))
            emit(isa.SYNC, sync=isa.S_COMPUTE)  # the previous band has been read (LOAD act never overlaps compute)
            for n, sv, base in zip(names, srcs, bases):
                band_dma(isa.LOAD, sv, ext_key(root(n)), base, y0, y1)
            emit(isa.SYNC, sync=isa.S_DMA)  # the band is in, and the previous band's STORE has read its rows
            body([Stored(base, sv.c, y1 - y0, sv.w, batch, C) for sv, base in zip(srcs, bases)],
                 Stored(obase, so.c, b - a, so.w, batch, C), y1 - y0, pt - (a * sh - y0), b - a)
            emit(isa.SYNC, sync=isa.S_COMPUTE)
            band_dma(isa.STORE, so, ("spill", out), obase, a, b)
            nb += 1
        emit(isa.SYNC, sync=isa.S_DMA)  # the regions are free only once the last STORE has read them
        dirty.clear()
        for base, sv in zip(bases, srcs):
            alloc.free(base, Stored(0, sv.c, ih, sv.w, batch, C).words)
        alloc.free(obase, Stored(0, so.c, rows, so.w, batch, C).words)
        return nb

    # ---- instructions ----------------------------------------------------------------------
    chunks: list[np.ndarray] = []       # weight blocks [K, COLS] in CONV order
    biases: list[np.ndarray] = []       # bias words [COLS]
    layers: list[Layer] = []

    conv_slots: list[int] = []          # program index of each CONV (for weight-load insertion below)

    for i, op in enumerate(ops):
        if isinstance(op, ir.Reshape):
            continue
        lname = op.origin or op.outputs[0]
        first = len(prog)
        out_t = g.tensors[op.outputs[0]]
        reads = [root(n) for n in (op.inputs[:1] if isinstance(op, (ir.Conv, ir.Dense)) else op.inputs)]
        band = band_plan(op, reads)
        if band is None and not fits(op, reads):
            while resident:  # the buffer is fragmented: spill everything, then place the layer from word 0
                evict(set(), i)
        for r in reads:
            if r not in resident and band is None:
                reload(r, set(reads), i)
        zero_copy = isinstance(op, ir.Concat) and all(in_place(op))
        if any(r in dirty for r in reads) and not zero_copy and band is None:
            emit(isa.SYNC, sync=isa.S_COMPUTE)
            dirty.clear()
        for n in op.inputs:
            t = g.tensors[n]
            if n not in g.constants and t.zero_point:
                raise UnsupportedError(f"tensor '{n}' has zero point {t.zero_point}; the accelerator needs 0",
                                       where=_where(op), hint="quantize activations symmetrically")
            if n not in g.constants and t.dtype.bits > cfg.a_bits:
                raise UnsupportedError(f"'{n}' is {t.dtype}; the accelerator takes {cfg.a_bits}-bit activations",
                                       where=_where(op))
        if out_t.dtype.bits > cfg.a_bits:
            raise UnsupportedError(f"'{op.outputs[0]}' is {out_t.dtype}; the accelerator writes {cfg.a_bits}-bit "
                                   "activations", where=_where(op))
        src = loc(op.inputs[0])
        a_signed = g.tensors[op.inputs[0]].dtype.signed
        layer = Layer(lname, op.kind, first, first)
        if isinstance(op, (ir.Conv, ir.Dense)):
            rq = _rq_fields(op.requant, out_t, op)
            wt = g.tensors[op.inputs[1]]
            w = np.asarray(g.constants[op.inputs[1]], np.int64)
            if wt.zero_point:
                raise UnsupportedError("weight zero point must be 0 on hardware", where=_where(op))
            if not (wt.dtype.signed and wt.dtype.bits <= cfg.w_bits):
                raise UnsupportedError(f"weights are {wt.dtype}; the array takes signed <= {cfg.w_bits} bits",
                                       where=_where(op))
            if isinstance(op, ir.Dense):
                if w.ndim != 2 or len(g.tensors[op.inputs[0]].shape) != 2:
                    raise UnsupportedError("the array runs MatMul/Gemm as [N, K] x [K, M]", where=_where(op))
                k, m = w.shape
                if src.c * src.h * src.w != k:
                    raise UnsupportedError(f"input holds {src.c * src.h * src.w} values per sample, weights expect {k}",
                                           where=_where(op))
                w4 = w.T.reshape(m, src.c, src.h, src.w)
                kh, kw, sh, sw, pads, dh, dw, group = src.h, src.w, 1, 1, (0, 0, 0, 0), 1, 1, 1
                oh = ow = 1
            else:
                w4 = w
                m = w.shape[0]
                kh, kw = w.shape[2:]
                sh, sw = op.strides
                dh, dw = op.dilations
                pads, group = op.pads, op.group
                oh, ow = out_t.shape[2:]
                if max(sh, sw, dh, dw, kh, kw) > 255:
                    raise UnsupportedError("kernel, stride and dilation must be <= 255 on the accelerator",
                                           where=_where(op))
            b = np.asarray(g.constants[op.inputs[2]], np.int64) if len(op.inputs) > 2 else np.zeros(m, np.int64)
            cg, mg = w4.shape[1], m // group
            pt, pl = pads[0], pads[1]
            W = src.w
            blocks = []
            for j in range(-(-m // C)):
                ocs = np.arange(j * C, min(m, (j + 1) * C))
                g_lo, g_hi = ocs[0] // mg, ocs[-1] // mg
                ic0, nic = g_lo * cg, (g_hi - g_lo + 1) * cg
                K = nic * kh * kw
                blk = np.zeros((K, C), np.int64)
                for l, oc in enumerate(ocs):
                    gi = oc // mg
                    rel = gi * cg - ic0
                    blk[rel * kh * kw:(rel + cg) * kh * kw, l] = w4[oc].reshape(-1)
                bw = np.zeros(C, np.int64)
                bw[:len(ocs)] = b[ocs]
                blocks.append((ic0, nic, K, blk, len(biases)))
                biases.append(bw)

            def emit_conv(srcs, dst, H, pt, oh):
                src = srcs[0]
                for j, (ic0, nic, K, blk, bbase) in enumerate(blocks):
                    conv_slots.append(len(prog))
                    emit(isa.CONV, flags=isa.F_A_SIGNED if a_signed else 0,
                         ibase=src.base + (ic0 // C) * src.gstride + (-pt) * W + (-pl), obase=dst.base + j * dst.gstride,
                         npix=batch * oh * ow, ow=ow, oh=oh, oy0=0, sw=sw, sh=sh,
                         ixs=-pl, iys=-pt, ix0=-pl, iy0=-pt, rjump=sh * W - (ow - 1) * sw,
                         sjump=H * W - (oh - 1) * sh * W - (ow - 1) * sw, h=H, w=W, kh=kh, kw=kw, dh=dh, dw=dw,
                         dhw=dh * W, nic=nic, lane0=ic0 % C, cstride=src.gstride, klen=K, period=max(K, R, C),
                         wbase=0, bbase=bbase, **rq)
                    chunks.append(blk)
            if band is None:
                emit_conv([src], dest(op.outputs[0], reads, i), src.h, pt, oh)
            else:
                layer.info["bands"] = run_bands(op, i, band, emit_conv)
            layer.macs = batch * oh * ow * m * cg * kh * kw
            layer.info.update({"K": cg * kh * kw, "M": m, "group": group, "pixels": batch * oh * ow})
        elif isinstance(op, (ir.MaxPool, ir.AvgPool)):
            rq = _rq_fields(op.requant, out_t, op)
            kh, kw = op.kernel
            sh, sw = op.strides
            dh, dw = op.dilations if isinstance(op, ir.MaxPool) else (1, 1)
            pt, pl = op.pads[0], op.pads[1]
            oh, ow = out_t.shape[2:]
            W = src.w
            if max(sh, sw, dh, dw, kh, kw) > 255:
                raise UnsupportedError("pooling window too large for the accelerator", where=_where(op))

            def emit_pool(srcs, dst, H, pt, oh):
                src = srcs[0]
                for j in range(src.groups):
                    emit(isa.POOL, flags=(isa.F_A_SIGNED if a_signed else 0) | (isa.F_MAX if isinstance(op, ir.MaxPool) else 0),
                         ibase=src.base + j * src.gstride - pt * W - pl, obase=dst.base + j * dst.gstride,
                         npix=batch * oh * ow, ow=ow, oh=oh, oy0=0, sw=sw, sh=sh, ixs=-pl, iys=-pt, ix0=-pl, iy0=-pt,
                         rjump=sh * W - (ow - 1) * sw, sjump=H * W - (oh - 1) * sh * W - (ow - 1) * sw, h=H, w=W,
                         kh=kh, kw=kw, dh=dh, dw=dw, dhw=dh * W, nic=1, klen=kh * kw, period=kh * kw, **rq)
            layer.info = {"window": [kh, kw]}
            if band is None:
                emit_pool([src], dest(op.outputs[0], reads, i), src.h, pt, oh)
            else:
                layer.info["bands"] = run_bands(op, i, band, emit_pool)
        elif isinstance(op, (ir.Add, ir.Clamp)):
            rq = _rq_fields(op.requant, out_t, op)
            flags = isa.F_A_SIGNED if a_signed else 0
            sa = sb = 0
            if isinstance(op, ir.Add):
                if op.mult_a != 1 or op.mult_b != 1 or op.shift_a < 0 or op.shift_b < 0 or max(op.shift_a, op.shift_b) > cfg.acc_bits - cfg.a_bits - 2:
                    raise UnsupportedError("Add needs power-of-two input scales (alignment by left shifts) on the "
                                           "accelerator", where=_where(op), hint="use --requant pow2")
                other = loc(op.inputs[1])
                if (other.c, other.h, other.w) != (src.c, src.h, src.w):
                    raise UnsupportedError("Add with broadcasting is not supported on the accelerator", where=_where(op))
                flags |= isa.F_HAS_B | (isa.F_B_SIGNED if g.tensors[op.inputs[1]].dtype.signed else 0)
                sa, sb = op.shift_a, op.shift_b

            def emit_ewise(srcs, dst, *_):
                span = 4095
                emit(isa.EWISE, flags=flags, ibase=srcs[0].base, boff=srcs[-1].base - srcs[0].base if len(srcs) > 1 else 0,
                     obase=dst.base, npix=srcs[0].words, ow=span, oh=1, sw=1, sh=1, ixs=0, iys=0, ix0=0, iy0=0,
                     rjump=0, sjump=1, h=1, w=span, kh=1, kw=1, dh=1, dw=1, nic=1, klen=1, period=1, sa=sa, sb=sb,
                     **rq)
            if band is None:
                emit_ewise([loc(n) for n in op.inputs], dest(op.outputs[0], reads, i))
            else:
                layer.info["bands"] = run_bands(op, i, band, emit_ewise)
        elif isinstance(op, ir.Concat):
            # zero-copy inputs are already in place; the others go through the vector unit's
            # stand-alone requantization (EWISE without B) into their channel groups
            cat = op.outputs[0]
            dst = stored[cat] if cat in stored else dest(cat, reads, i)
            in_dram.discard(cat)
            off = 0
            for name, rq0, done in zip(op.inputs, op.requants, in_place(op)):
                part = loc(name)
                if not done:
                    if (part.c, part.h, part.w) != chw(name):
                        raise UnsupportedError(f"Concat input '{name}' is a reshaped tensor; the accelerator "
                                               "concatenates channels of tensors in their own layout",
                                               where=_where(op))
                    rq = _rq_fields(rq0, out_t, op)
                    emit(isa.EWISE, flags=isa.F_A_SIGNED if g.tensors[name].dtype.signed else 0, ibase=part.base,
                         boff=0, obase=dst.base + (off // C) * dst.gstride, npix=part.words, ow=4095, oh=1, sw=1,
                         sh=1, ixs=0, iys=0, ix0=0, iy0=0, rjump=0, sjump=1, h=1, w=4095, kh=1, kw=1, dh=1, dw=1,
                         nic=1, klen=1, period=1, sa=0, sb=0, **rq)
                off += g.tensors[name].shape[1]
            layer.info = {"copied": [n for n, done in zip(op.inputs, in_place(op)) if not done]}
        else:
            raise UnsupportedError(f"{type(op).__name__} has no accelerator mapping", where=_where(op),
                                   hint="`tony run` executes it in the reference")
        dirty.add(root(op.outputs[0]))
        layer.last = len(prog)
        layers.append(layer)
        release_after(i)

    # ---- weight loads: double-buffered, one block ahead ------------------------------------
    half = max([blk.shape[0] for blk in chunks], default=1)
    wbuf = cfg.wbuf_words or 2 * half
    if 2 * half > wbuf:
        raise UnsupportedError(f"a layer needs {half} weight words per buffer half; the weight buffer has {wbuf // 2}",
                               where="--wbuf-words", hint=f"build with at least {2 * half} weight-buffer words")
    final: list[tuple[int, dict]] = []
    remap: dict[int, int] = {}
    k = 0
    # prologue: biases, inputs, first weight block
    head: list[tuple[int, dict]] = []
    head.append((isa.LOAD, dict(buf=isa.B_BIAS, baddr=0, eaddr=("bias", 0), nwords=max(1, len(biases)))))
    for name in input_base:
        s = stored[name]
        head.append((isa.LOAD, dict(buf=isa.B_ACT, baddr=input_base[name], eaddr=("in", name), nwords=s.words)))
    if chunks:
        head.append((isa.LOAD, dict(buf=isa.B_WGT, baddr=0, eaddr=("w", 0), nwords=chunks[0].shape[0])))
    head.append((isa.SYNC, dict(sync=isa.S_DMA)))
    ci = 0
    for idx, (op, f) in enumerate(prog):
        if op == isa.CONV:
            if ci > 0:
                final.append((isa.SYNC, dict(sync=isa.S_DMA | isa.S_STREAM)))
            if ci + 1 < len(chunks):
                final.append((isa.LOAD, dict(buf=isa.B_WGT, baddr=((ci + 1) % 2) * half, eaddr=("w", ci + 1),
                                             nwords=chunks[ci + 1].shape[0])))
            f = dict(f, wbase=(ci % 2) * half)
            ci += 1
        remap[idx] = len(final)
        final.append((op, f))
    remap[len(prog)] = len(final)
    tail: list[tuple[int, dict]] = [(isa.SYNC, dict(sync=isa.S_COMPUTE))]
    for name in dev_outputs:
        s = stored[root(name)]
        if root(name) in resident:
            tail.append((isa.STORE, dict(buf=isa.B_ACT, baddr=s.base, eaddr=("out", name), nwords=s.words)))
    tail.append((isa.END, {}))
    allp = head + final + tail
    off = len(head)
    for L in layers:
        # a layer starts at the first instruction emitted for it (including its weight loads and syncs)
        L.first, L.last = remap[L.first] + off, remap[L.last] + off
    # widen each layer backwards over the SYNC/LOAD that were inserted before its first op
    for a, b2 in zip(layers, layers[1:]):
        a.last = b2.first
    # ---- external memory image -----------------------------------------------------------
    n_instr = len(allp)
    prog_beats = n_instr * cfg.instr_beats
    addr = prog_beats
    ext: dict = {}
    blobs: list[list[int]] = []
    bias_words = np.stack(biases) if biases else np.zeros((1, C), np.int64)
    ext[("bias", 0)] = addr
    bb = words_to_beats(bias_words, cfg.acc_bits, cfg.mem_bits)
    blobs.append(bb)
    addr += len(bb)
    for i2, blk in enumerate(chunks):
        ext[("w", i2)] = addr
        wb = words_to_beats(blk, cfg.w_bits, cfg.mem_bits)
        blobs.append(wb)
        addr += len(wb)
    inputs, outputs = {}, {}
    for name in dev_inputs:
        s = stored[name]
        ext[("in", name)] = addr
        n_beats = s.words * cfg.act_beats
        inputs[name] = {"ext": addr, "stored": s, "beats": n_beats}
        blobs.append([0] * n_beats)
        addr += n_beats
    for name in sorted(spilled):
        ext[("spill", name)] = addr
        n_beats = stored[name].words * cfg.act_beats
        blobs.append([0] * n_beats)
        addr += n_beats
    for name in dev_outputs:
        s = stored[root(name)]
        n_beats = s.words * cfg.act_beats
        if root(name) in resident:
            ext[("out", name)] = addr
            blobs.append([0] * n_beats)
            addr += n_beats
        outputs[name] = {"ext": ext[("out", name)] if root(name) in resident else ext[("spill", root(name))],
                         "stored": s, "beats": n_beats, "signed": g.tensors[name].dtype.signed,
                         "shape": (batch,) + tuple(g.tensors[name].shape[1:])}
    words, text = [], []
    for op, f in allp:
        f = {k2: (ext[v[:2]] + sum(v[2:]) if isinstance(v, tuple) else v) for k2, v in f.items()}
        wd = isa.encode(op, **f)
        words.append(wd)
        text.append(isa.describe(wd))
    image = isa.to_words(words, cfg.mem_bits)
    for bl in blobs:
        image.extend(bl)
    abuf = cfg.abuf_words or max(64, 1 << max(0, (alloc.high - 1)).bit_length())
    if alloc.high > abuf:
        raise UnsupportedError(f"the activations need {alloc.high} activation-buffer words; the buffer has {abuf}",
                               where="--abuf-words", hint=f"build with at least {alloc.high} words")
    bbuf = cfg.bbuf_words or max(len(biases), 1)
    if len(biases) > bbuf:
        raise UnsupportedError(f"the biases need {len(biases)} bias-buffer words; the buffer has {bbuf}",
                               where="--bbuf-words", hint=f"build with at least {len(biases)} words")
    imem = cfg.imem_words or n_instr
    if n_instr > imem:
        raise UnsupportedError(f"the program has {n_instr} instructions; the instruction memory holds {imem}",
                               where="--imem-words", hint=f"build with at least {n_instr} words")
    cfg2 = replace(cfg, abuf_words=abuf, wbuf_words=wbuf, bbuf_words=bbuf, imem_words=imem)
    return Program(cfg2, words, text, image, 0, inputs, outputs, layers, batch)


def input_beats(prog: Program, feeds: dict) -> dict[str, list[int]]:
    """Device inputs (tensor name -> [N, ...] integers of one batch) as external-memory beats."""
    cfg = prog.cfg
    out = {}
    for name, info in prog.inputs.items():
        s = info["stored"]
        words = pack_act(feeds[name], s.c, s.h, s.w, cfg.cols, cfg.a_bits)
        out[name] = words_to_beats(words, cfg.a_bits, cfg.mem_bits)
    return out


def read_outputs(prog: Program, mem) -> dict[str, np.ndarray]:
    """Device outputs from an external-memory image after a run."""
    cfg = prog.cfg
    res = {}
    for name, info in prog.outputs.items():
        s = info["stored"]
        beats = mem[info["ext"]:info["ext"] + info["beats"]]
        words = beats_to_words(beats, cfg.cols, cfg.a_bits, cfg.mem_bits)
        res[name] = unpack_act(words, s.n, s.c, s.h, s.w, cfg.cols, cfg.a_bits, info["signed"]).reshape(info["shape"])
    return res
