"""Activation-buffer planning: where every tensor lives while it is needed, and the DMA that
moves tensors between the buffer and external memory.

Tensors are placed first-fit. With a limited buffer (cfg.abuf_words) a tensor that the current
op does not need may be spilled to external memory (STORE once: tensors never change) and
loaded back before its next use; when the operands and the result fit only in an empty buffer,
every live tensor is spilled first; a layer that does not fit at all runs in row bands
(bands.py). `plan_memory` walks the device ops once and returns, per op, the instructions that
must run before it (spills, reloads, syncs), where its operands and result live, and its sites
(the whole tensors, or one site per row band) for the emitters.
"""
from __future__ import annotations

from dataclasses import dataclass

from .. import ir
from ..errors import UnsupportedError
from . import isa
from .liveness import Tensors, where
from .program import AccelConfig, Ext, Instr, Stored, dma, sync

ABUF_HINT = "use an accelerator with a larger activation buffer (--abuf-words, or abuf_words in the overlay's HW.toml)"


@dataclass(frozen=True)
class Site:
    """Where one run of a layer's instructions reads and writes: its activation operands, its
    result, and for a row band its input height, top padding and output rows (None: the whole
    tensors); `before`/`after` are the band's DMA."""

    srcs: tuple
    dst: Stored
    h: int | None = None
    pt: int | None = None
    oh: int | None = None
    before: tuple = ()
    after: tuple = ()


@dataclass(frozen=True)
class OpPlan:
    index: int
    op: object
    pre: tuple            # instructions before the op's own (spills, reloads, syncs)
    locs: dict            # input tensor -> where it lives while the op runs
    sites: tuple          # one Site, or one per row band
    banded: bool
    post: tuple = ()


@dataclass(frozen=True)
class MemoryPlan:
    steps: tuple          # OpPlan per device op (Reshape has none)
    stored: dict          # storage root -> Stored (its last placement)
    resident: frozenset   # roots in the buffer at the end
    input_base: dict      # device inputs loaded whole at start -> buffer base
    spilled: tuple        # roots with a spill region, sorted
    high: int             # activation-buffer words used
    split: int = 0        # the activation buffer's bank 1 starts here (0: one bank; overlap.input_bands)


class Alloc:
    """First-fit allocation of activation-buffer words."""

    def __init__(self, limit: int = 0, used=()):
        self.used: list[tuple[int, int]] = list(used)  # (base, words) in use
        self.high = 0
        self.limit = limit  # 0: unlimited

    def alloc(self, words: int) -> int | None:
        pos = 0
        for b, n in sorted(self.used):
            if b - pos >= words:
                break
            pos = max(pos, b + n)
        if self.limit and pos + words > self.limit:
            return None
        self.used.append((pos, words))
        self.high = max(self.high, pos + words)
        return pos

    def free(self, base: int, words: int) -> None:
        self.used.remove((base, words))


class Memory:
    """The activation buffer's state while the planner walks the ops; DMA it needs goes to `out`."""

    def __init__(self, t: Tensors, cfg: AccelConfig, batch: int, hold: dict | None = None):
        self.t, self.cfg, self.batch = t, cfg, batch
        self.alloc = Alloc(cfg.abuf_words)
        self.stored: dict[str, Stored] = {}
        self.resident: set[str] = set()
        self.in_dram: set[str] = set()      # its external-memory copy is current
        self.spilled: set[str] = set()      # has a spill region in external memory
        self.dirty: set[str] = set()        # written by compute since the last SYNC compute
        # a Concat output whose inputs are written into it one by one, before its Concat has run:
        # root -> (word offset, words) of the slices written so far (only these are spilled and
        # reloaded: the rest holds nothing yet)
        self.partial: dict[str, list[tuple[int, int]]] = {}
        self.last_use = dict(t.last_use)
        for name, i in (hold or {}).items():   # kept in the buffer at least until op i has run
            self.last_use[name] = max(self.last_use.get(name, i), i)
        self.out: list[Instr] = []

    def shape(self, name: str, base: int = 0) -> Stored:
        return Stored(base, *self.t.chw(name), self.batch, self.cfg.cols)

    def ext(self, name: str) -> Ext:
        """Where a tensor's external-memory copy lives: the input region for device inputs."""
        return Ext("in", name) if name in self.t.inputs else Ext("spill", name)

    def sync_compute(self) -> None:
        self.out.append(sync(isa.S_COMPUTE))
        self.dirty.clear()

    def next_use(self, name: str, i: int) -> int:
        t = self.t
        uses = [j for j, op in enumerate(t.ops) if j >= i and any(t.root(n) == name for n in op.inputs)]
        return uses[0] if uses else (len(t.ops) if name in {t.root(o) for o in t.outputs} else -1)

    def regions(self, name: str) -> list[tuple[int, int]]:
        """(word offset, words) of `name`'s storage that hold data: all of it, or of a Concat output
        still being filled, the slices written so far."""
        return sorted(self.partial[name]) if name in self.partial else [(0, self.stored[name].words)]

    def _dma(self, opc: int, name: str, s: Stored, key: Ext) -> None:
        ab = self.cfg.act_beats
        self.out.extend(dma(opc, isa.B_ACT, s.base + off, key + off * ab, n) for off, n in self.regions(name))

    def evict(self, protect, i: int) -> bool:
        cands = sorted(n for n in self.resident if n not in protect)  # ties: by name, not hash order
        if not cands:
            return False
        victim = max(cands, key=lambda n: self.next_use(n, i))
        s = self.stored[victim]
        if victim not in self.in_dram:
            self.sync_compute()
            self._dma(isa.STORE, victim, s, Ext("spill", victim))
            self.out.append(sync(isa.S_DMA))  # the region is free only once the STORE has read it
            self.in_dram.add(victim)
            self.spilled.add(victim)
        self.alloc.free(s.base, s.words)
        self.resident.discard(victim)
        return True

    def flush(self, i: int) -> None:
        """Spill every live tensor (the buffer is empty afterwards)."""
        while self.resident:
            self.evict(set(), i)

    def alloc_words(self, words: int, protect, i: int, what: str) -> int:
        while True:
            base = self.alloc.alloc(words)
            if base is not None:
                return base
            if not self.evict(protect, i):
                raise UnsupportedError(f"{what} needs {words} activation-buffer words with its operands; the "
                                       f"activation buffer holds {self.cfg.abuf_words}", where=where(self.t.ops[i]),
                                       hint=ABUF_HINT)

    def place(self, name: str, protect=(), i: int = 0) -> Stored:
        s = self.shape(name)
        s = s.at(self.alloc_words(s.words, set(protect) | {name}, i, f"tensor '{name}'"))
        self.stored[name] = s
        self.resident.add(name)
        return s

    def reload(self, name: str, protect, i: int) -> None:
        s = self.stored[name]
        s = self.stored[name] = s.at(self.alloc_words(s.words, set(protect), i, f"tensor '{name}'"))
        self.resident.add(name)
        self.sync_compute()
        self._dma(isa.LOAD, name, s, self.ext(name))
        self.out.append(sync(isa.S_DMA))

    def loc(self, name: str) -> Stored:
        """Where `name` lives now: its own storage, or its channel groups' slice of a Concat output."""
        t = self.t
        r = t.view.get(name, name)
        if r not in t.cslice:
            return self.stored[r]
        cr, goff = t.cslice[r]
        s = self.stored[cr]
        return Stored(s.base + goff * s.gstride, *t.chw(r), self.batch, self.cfg.cols)

    def dest(self, name: str, protect, i: int) -> Stored:
        """Storage for an op's result; a Concat input's slice keeps the rest of its Concat output."""
        if name not in self.t.cslice:
            return self.place(name, protect, i)
        cr = self.t.cslice[name][0]
        if cr not in self.stored:
            self.place(cr, protect, i)
            self.partial[cr] = []
        elif cr not in self.resident:
            self.reload(cr, set(protect) | {cr}, i)
        self.in_dram.discard(cr)  # the external copy (if any) lacks this slice from now on
        dst = self.loc(name)
        if cr in self.partial:
            self.partial[cr].append((dst.base - self.stored[cr].base, dst.words))
        return dst

    def release_after(self, i: int) -> None:
        for name, lu in list(self.last_use.items()):
            if lu == i and name in self.stored:
                if name in self.resident:
                    self.alloc.free(self.stored[name].base, self.stored[name].words)
                    self.resident.discard(name)
                del self.last_use[name]

    def fits(self, op, reads) -> bool:
        """Would the operands and the result find room, with every other tensor evicted?"""
        if not self.cfg.abuf_words:
            return True
        sim = Alloc(self.cfg.abuf_words, [(self.stored[r].base, self.stored[r].words)
                                          for r in set(reads) if r in self.resident])
        need = [self.stored[r].words for r in dict.fromkeys(reads) if r not in self.resident]
        out = op.outputs[0]
        r_out = self.t.cslice[out][0] if out in self.t.cslice else out
        if r_out not in self.resident and not (isinstance(op, ir.Concat) and r_out in reads):
            need.append(self.stored[r_out].words if r_out in self.stored else self.shape(r_out).words)
        return all(sim.alloc(n) is not None for n in need)

    def take(self) -> tuple:
        out, self.out = tuple(self.out), []
        return out


def _place_inputs(mem: Memory) -> dict:
    """Device inputs: loaded whole at start, or (larger than the buffer) read band by band."""
    input_base = {}
    t = mem.t
    read = {r for op in t.ops for r in t.reads(op)}
    for name in t.inputs:
        mem.in_dram.add(name)  # the host writes it to external memory; it never needs a spill
        s = mem.shape(name)
        if name not in read:   # read only as weights (a PixelMatMul's b): from external memory
            mem.stored[name] = s
        elif mem.cfg.abuf_words and s.words > mem.cfg.abuf_words:
            mem.stored[name] = s
        else:
            input_base[name] = mem.place(name).base
    return input_base


def _plan_whole(mem: Memory, i: int, op, reads) -> OpPlan:
    """An op that runs on whole tensors: make room, load its operands, place its result."""
    t = mem.t
    if not mem.fits(op, reads):
        mem.flush(i)  # the buffer is fragmented: spill everything, then place the layer from word 0
    for r in reads:
        if r not in mem.resident:
            mem.reload(r, set(reads), i)
    zero_copy = isinstance(op, ir.Concat) and all(t.in_place(op))
    if any(r in mem.dirty for r in reads) and not zero_copy:
        mem.sync_compute()
    out = op.outputs[0]
    if isinstance(op, ir.Concat):
        dst = mem.stored[out] if out in mem.stored else mem.dest(out, reads, i)
        mem.in_dram.discard(out)
    else:
        dst = mem.dest(out, reads, i)
    acts = [n for n in op.inputs if n not in t.g.constants]
    locs = {n: mem.loc(n) for n in acts}
    return OpPlan(i, op, mem.take(), locs, (Site(tuple(locs[n] for n in acts), dst),), False)


def plan_memory(t: Tensors, cfg: AccelConfig, batch: int, hold: dict | None = None) -> MemoryPlan:
    """Walk the device ops: placements, spills, reloads and row bands, in program order. `hold`
    (tensor -> op index) keeps a tensor's words reserved until that op has run, past its last use
    (the input that loads while the second layer computes, overlap.fused_bands)."""
    from .bands import band_rows, plan_bands

    mem = Memory(t, cfg, batch, hold)
    input_base = _place_inputs(mem)
    steps = []
    for i, op in enumerate(t.ops):
        if isinstance(op, ir.Reshape):
            continue
        reads = t.reads(op)
        rows = band_rows(mem, op, reads)
        step = _plan_whole(mem, i, op, reads) if rows is None else plan_bands(mem, i, op, rows)
        steps.append(step)
        if isinstance(op, ir.Concat):   # every slice of its output is written now
            mem.partial.pop(t.root(op.outputs[0]), None)
        mem.dirty.add(t.root(op.outputs[0]))
        mem.release_after(i)
    return MemoryPlan(tuple(steps), dict(mem.stored), frozenset(mem.resident), input_base,
                      tuple(sorted(mem.spilled)), mem.alloc.high)
