"""The program checker: every compiled program is held to the rules of docs/isa.md
('Illegal instructions', 'Hazards and how the compiler avoids them', 'Timing').

Instructions issue in order; an instruction waits at issue for its own engine only (DMA for
LOAD/STORE, the streamer for CONV, all of compute for POOL/EWISE; SYNC for the engines in its
mask; END for everything). The checker follows that: it keeps every buffer access that may
still be in flight, retires accesses when the issue rules or a SYNC guarantee that their
engine is done, and refuses an access that meets an in-flight one. `check(prog)` raises
`ProgramCheckError` naming the rule and the instruction index.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import TonyError
from . import isa
from .program import AccelConfig, Program

AMASK = (1 << isa.ADDR_BITS) - 1

RULES = {
    "opcode": "the opcode is one of END, SYNC, LOAD, STORE, CONV, POOL, EWISE, SOFTMAX on an accelerator "
              "with the Softmax unit, and NORM on one with the LayerNorm unit",
    "dma-buffer": "LOAD names the activation, weight, bias, instruction or table buffer, or the gamma/beta memory "
                  "on an accelerator with the LayerNorm unit; STORE the activation buffer",
    "dma-range": "a LOAD/STORE moves at least one word and stays inside its buffer (baddr + nwords <= depth)",
    "ext-range": "a LOAD/STORE stays inside the external-memory image",
    "store-over-constants": "a STORE writes only the input, spill and output regions, never the program, "
                            "biases or weights (the next run needs them)",
    "end": "the program ends with its only END",
    "imem-size": "the instructions the host boots (the first page) fit the instruction memory",
    "page": "a LOAD into the instruction memory (a page) loads, at imem[0], exactly the instructions that follow "
            "it in the image, and every page ends with a page LOAD or END (nothing runs past a page)",
    "act-range": "every activation word a compute instruction reads or writes is inside the buffer",
    "wgt-range": "a CONV's weight block [wbase, wbase + klen) is inside the weight buffer",
    "bias-range": "a CONV's bias word is inside the bias buffer",
    "conv-period": "a CONV's period is at least max(klen, ROWS, COLS)",
    "softmax": "a SOFTMAX has at least one row, rows of 1 to the unit's longest row (smx_n) elements, a shift "
               "that fits the unit's 6-bit input and a log2e in [1, LOG2E]",
    "norm": "a NORM has at least one row, rows of 1 to the unit's longest row (ln_n) elements, and a spec "
            "the unit takes (tony.rtl.layernorm_unit.port_values: E, A, F, shift, lo <= hi in the unit's widths)",
    "conv-depthwise": "a depthwise CONV runs only on an array with COLS <= ROWS + 3 (its first slice must come "
                      "COLS cycles after the previous CONV's last; two CONVs are always ROWS + 3 apart)",
    "own-overlap": "a compute instruction writes none of the activation words it reads (its unit reads ahead of "
                   "its writes, so a result could replace a word not read yet), except an EWISE operand read "
                   "exactly in place (operand word k is result word k)",
    "uninitialized-read": "every buffer word an instruction reads was written by an earlier instruction",
    "read-after-write": "an instruction reads no word that an instruction still in flight writes "
                        "(compute results until SYNC compute; LOADs until SYNC dma)",
    "write-after-read": "an instruction writes no word that an instruction still in flight reads "
                        "(STORE until SYNC dma; CONV operands until SYNC stream; CONV biases until SYNC compute)",
    "act-write-port": "a LOAD into a bank of the activation buffer is never in flight together with a compute "
                      "instruction that writes activations into that bank (they share the bank's write port; the "
                      "controller interlocks them and stops with illegal_o should they still meet)",
}


class ProgramCheckError(TonyError):
    """A compiled program breaks a rule of the accelerator: a compiler defect, caught before any
    hardware runs it. Reported in one line like every error, with the rule and the instruction."""

    def __init__(self, rule: str, index: int, message: str):
        super().__init__(f"instruction {index}: rule '{rule}' broken: {message}",
                         where="compiler", hint="a compiler defect: please report the model; a larger "
                                                "--abuf-words (no spilling) may avoid it")
        self.rule, self.index = rule, index


# ---- address sets: sorted, disjoint half-open intervals ---------------------------------------------
def intervals(addrs) -> list[tuple[int, int]]:
    """Distinct addresses -> sorted disjoint runs [lo, hi)."""
    a = np.asarray(addrs, np.int64).ravel()
    if not len(a):
        return []
    mark = np.zeros(int(a.max()) + 1, bool)
    mark[a] = True
    a = np.flatnonzero(mark)
    cut = np.nonzero(np.diff(a) != 1)[0]
    lo = np.concatenate([a[:1], a[cut + 1]])
    hi = np.concatenate([a[cut], a[-1:]]) + 1
    return list(zip(lo.tolist(), hi.tolist()))


def overlap(a: list, b: list) -> tuple[int, int] | None:
    """The first range two interval lists share, or None."""
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo < hi:
            return lo, hi
        if a[i][1] <= b[j][1]:
            i += 1
        else:
            j += 1
    return None


class Written:
    """The words of one buffer written so far (merged intervals)."""

    def __init__(self):
        self.ivs: list[tuple[int, int]] = []

    def add(self, ivs: list) -> None:
        merged = []
        for lo, hi in sorted(self.ivs + list(ivs)):
            if merged and lo <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
            else:
                merged.append((lo, hi))
        self.ivs = merged

    def missing(self, ivs: list) -> int | None:
        """The first address of `ivs` not written, or None."""
        for lo, hi in ivs:
            k = np.searchsorted([a for a, _ in self.ivs], lo, side="right") - 1
            if k < 0 or self.ivs[k][1] < hi:
                return lo if k < 0 or self.ivs[k][1] <= lo else self.ivs[k][1]
        return None


# ---- the address generators in closed form (model.pixel_walk / tap_walk) ----------------------------
def pixel_walk(d: dict, n: int):
    """(base address, iy, ix) of the first n output pixels of a compute instruction."""
    if n <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    ow, oh = max(d["ow"], 1), max(d["oh"], 1)
    q = d["oy0"] * ow + np.arange(n, dtype=np.int64)
    ox, oy, s = q % ow, (q // ow) % oh, q // (ow * oh)
    step = np.where(ox[:-1] + 1 < ow, d["sw"], np.where(oy[:-1] + 1 < oh, d["rjump"], d["sjump"]))
    base = (d["ibase"] + np.concatenate([[0], np.cumsum(step)])) & AMASK
    first_row = (s == 0) & (oy == d["oy0"])
    ix = np.where(first_row, d["ix0"], d["ixs"]) + ox * d["sw"]
    iy = np.where(s == 0, d["iy0"] + (oy - d["oy0"]) * d["sh"], d["iys"] + oy * d["sh"])
    return base, iy, ix


def tap_walk(d: dict, cols: int, vector: bool):
    """(address offset, ky*dh, kx*dw) of every slice of a window (the vector unit reads whole words)."""
    k = np.arange(d["klen"], dtype=np.int64)
    kw, kh = max(d["kw"], 1), max(d["kh"], 1)
    kx, ky, c = k % kw, (k // kw) % kh, k // (kw * kh)
    cb = 0 if vector else ((d["lane0"] + c) // cols) * d["cstride"]
    return cb + ky * d["dhw"] + kx * d["dw"], ky * d["dh"], kx * d["dw"]


def act_reads(d: dict, cols: int) -> list:
    """The activation words a compute instruction reads (in-bounds taps of its real pixels)."""
    op, n = d["op"], d["npix"]
    base, iy, ix = pixel_walk(d, n)
    if op == isa.EWISE:
        addrs = [base]
        if d["flags"] & isa.F_HAS_B:
            addrs.append((base + d["boff"]) & AMASK)
        return intervals(np.concatenate(addrs))
    ofs, kyd, kxd = tap_walk(d, cols, vector=op == isa.POOL)
    yy, xx = iy[:, None] + kyd[None], ix[:, None] + kxd[None]
    inb = (yy >= 0) & (yy < d["h"]) & (xx >= 0) & (xx < d["w"])
    return intervals(((base[:, None] + ofs[None]) & AMASK)[inb])


def softmax_words(d: dict, base: str, cols: int) -> list:
    """The activation words of a SOFTMAX's rows from `base` (ibase: read, obase: written): row p's
    channel group g at base + p + g*cstride."""
    groups = -(-d["klen"] // cols)
    rows = d[base] + np.arange(d["npix"], dtype=np.int64)
    return intervals((rows[:, None] + np.arange(groups)[None] * d["cstride"]) & AMASK)


def own_overlaps(d: dict, reads: list, out: list) -> list:
    """The operand word sets that the instruction's results overlap unsafely. An EWISE streams
    word k of each operand into result word k, so an operand read exactly in place (the same
    address for every k: a Concat merge's B) is safe; any other overlap is not."""
    if d["op"] != isa.EWISE:
        return [reads] if overlap(reads, out) is not None else []
    outw = (d["obase"] + np.arange(d["npix"], dtype=np.int64)) & AMASK
    base = pixel_walk(d, d["npix"])[0]
    streams = [base] + ([(base + d["boff"]) & AMASK] if d["flags"] & isa.F_HAS_B else [])
    return [ivs for s in streams if not np.array_equal(s, outw)
            for ivs in [intervals(s)] if overlap(ivs, out) is not None]


# ---- the checker ------------------------------------------------------------------------------------
ACT, WGT, BIAS, TAB, GB = isa.B_ACT, isa.B_WGT, isa.B_BIAS, isa.B_TAB, isa.B_GB
DMA, STREAM, COMPUTE = "dma", "stream", "compute"   # what retires an access (the engine that must be idle)


@dataclass(frozen=True)
class Access:
    buf: int
    ivs: list
    write: bool
    index: int
    engine: str      # DMA (retired by SYNC dma), STREAM (SYNC stream or compute), COMPUTE (SYNC compute)
    dma: bool        # made by the DMA engine


def _retires(d: dict) -> set:
    """The engines an instruction's issue waits for (docs/isa.md, 'Hazards')."""
    op = d["op"]
    if op in (isa.LOAD, isa.STORE):
        return {DMA}
    if op == isa.CONV:
        return {STREAM}
    if op in (isa.POOL, isa.EWISE, isa.SOFTMAX, isa.NORM):
        return {STREAM, COMPUTE}
    if op == isa.SYNC:
        m = d["sync"]
        return ({DMA} if m & isa.S_DMA else set()) | ({STREAM} if m & (isa.S_STREAM | isa.S_COMPUTE) else set()) | \
            ({COMPUTE} if m & isa.S_COMPUTE else set())
    return {DMA, STREAM, COMPUTE}


class Checker:
    def __init__(self, cfg: AccelConfig, image_beats: int | None, io_start: int | None):
        self.cfg, self.image_beats, self.io_start = cfg, image_beats, io_start
        self.pending: list[Access] = []
        self.written = {ACT: Written(), WGT: Written(), BIAS: Written(), TAB: Written(), GB: Written()}
        self.i = 0

    def fail(self, rule: str, message: str):
        raise ProgramCheckError(rule, self.i, message)

    def legal(self, d: dict) -> None:
        """'Illegal instructions' and the external-memory rules."""
        op, cfg = d["op"], self.cfg
        if op not in isa.OPNAMES:
            self.fail("opcode", f"unknown opcode {op}")
        if op == isa.SOFTMAX:
            self.softmax(d)
        if op == isa.NORM:
            self.norm(d)
        if op not in (isa.LOAD, isa.STORE):
            return
        buf, n, name = d["buf"], d["nwords"], isa.OPNAMES[op]
        loads = (ACT, WGT, BIAS, isa.B_IMEM, TAB) + ((GB,) if cfg.ln_n > 0 else ())
        if (op == isa.LOAD and buf not in loads) or (op == isa.STORE and buf != ACT):
            self.fail("dma-buffer", f"{name} names buffer {buf} ({isa.BUFNAMES.get(buf, 'none')})")
        if n == 0 or d["baddr"] + n > cfg.buf_words(buf):
            self.fail("dma-range", f"{name} of {n} words at {isa.BUFNAMES[buf]}[{d['baddr']}]; "
                                   f"the buffer holds {cfg.buf_words(buf)}")
        beats = n * cfg.buf_beats(buf)
        if self.image_beats is not None and d["eaddr"] + beats > self.image_beats:
            self.fail("ext-range", f"{name} of beats [{d['eaddr']}, {d['eaddr'] + beats}) beyond the "
                                   f"{self.image_beats}-beat image")
        if op == isa.STORE and self.io_start is not None and d["eaddr"] < self.io_start:
            self.fail("store-over-constants", f"STORE to beat {d['eaddr']}, before the first I/O region at "
                                              f"{self.io_start}")

    def softmax(self, d: dict) -> None:
        """SOFTMAX's own rules: the unit is there, and its fields are values the unit takes."""
        from ..ref.nonlinear import LOG2E
        from ..rtl.softmax import SHIFT_BITS

        n, cfg = d["klen"], self.cfg
        if cfg.smx_n <= 0:
            self.fail("opcode", "SOFTMAX on an accelerator without the Softmax unit")
        if d["npix"] == 0 or not 1 <= n <= cfg.smx_n:
            self.fail("softmax", f"SOFTMAX of {d['npix']} rows of {n} elements; the unit takes rows of 1 to "
                                 f"{cfg.smx_n}")
        if not 0 <= d["shift"] < 1 << SHIFT_BITS or not 1 <= d["mult"] <= LOG2E:
            self.fail("softmax", f"SOFTMAX shift {d['shift']} (0 to {(1 << SHIFT_BITS) - 1}) or log2e {d['mult']} "
                                 f"(1 to {LOG2E}) outside the unit's range")

    def norm(self, d: dict) -> None:
        """NORM's own rules: the unit is there, and its fields are values the unit takes."""
        from ..rtl.layernorm_unit import DEFAULTS, NORM_RECIP_BITS

        n, cfg = d["klen"], self.cfg
        if cfg.ln_n <= 0:
            self.fail("opcode", "NORM on an accelerator without the LayerNorm unit")
        if d["npix"] == 0 or not 1 <= n <= cfg.ln_n:
            self.fail("norm", f"NORM of {d['npix']} rows of {n} elements; the unit takes rows of 1 to {cfg.ln_n}")
        sh, ob = 1 << (DEFAULTS["SHIFT_BITS"] - 1), 1 << cfg.a_bits
        for what, v, lo, hi in (("E", d["mult"], 0, (1 << DEFAULTS["EPS_BITS"]) - 1),
                                ("A", d["sa"], 0, 62 - NORM_RECIP_BITS),
                                ("F", d["sb"], 0, min(DEFAULTS["NORM_BITS_MAX"], NORM_RECIP_BITS)),
                                ("shift", d["shift"], -sh, sh - 1), ("lo", d["lo"], -ob, ob - 1),
                                ("hi", d["hi"], max(d["lo"], -ob), ob - 1)):
            if not lo <= v <= hi:
                self.fail("norm", f"NORM {what} = {v} outside the unit's [{lo}, {hi}]")

    def accesses(self, d: dict) -> list[Access]:
        """The buffer words the instruction reads and writes, and what retires each access."""
        op, i, cfg = d["op"], self.i, self.cfg
        if op == isa.LOAD and d["buf"] == isa.B_IMEM:
            return []   # a page: the controller issues nothing until it is loaded
        if op in (isa.LOAD, isa.STORE):
            ivs = [(d["baddr"], d["baddr"] + d["nwords"])]
            return [Access(d["buf"], ivs, op == isa.LOAD, i, DMA, True)]
        if op not in isa.COMPUTE_OPS:
            return []
        if op in (isa.SOFTMAX, isa.NORM):
            reads, out = softmax_words(d, "ibase", cfg.cols), softmax_words(d, "obase", cfg.cols)
        else:
            reads = act_reads(d, cfg.cols)
            out = intervals((d["obase"] + np.arange(d["npix"])) & AMASK)
        for ivs in (reads, out):
            if ivs and ivs[-1][1] > cfg.abuf_words:
                self.fail("act-range", f"{isa.OPNAMES[op]} touches activation word {ivs[-1][1] - 1}; "
                                       f"the buffer holds {cfg.abuf_words}")
        for ivs in own_overlaps(d, reads, out):
            hit = overlap(ivs, out)
            self.fail("own-overlap", f"{isa.OPNAMES[op]} writes activation words [{hit[0]}, {hit[1]}) that it "
                                     "also reads")
        if op != isa.CONV:
            acc = [Access(ACT, reads, False, i, STREAM, False), Access(ACT, out, True, i, STREAM, False)]
            if op == isa.EWISE and d["flags"] & isa.F_TABLE:   # any entry may be looked up
                acc.append(Access(TAB, [(0, isa.tab_words(cfg.a_bits))], False, i, STREAM, False))
            if op == isa.NORM:   # gamma and beta of the row's channels
                acc.append(Access(GB, [(0, d["klen"])], False, i, STREAM, False))
            return acc
        if d["wbase"] + d["klen"] > cfg.wbuf_words:
            self.fail("wgt-range", f"weight block [{d['wbase']}, {d['wbase'] + d['klen']}) beyond the "
                                   f"{cfg.wbuf_words}-word weight buffer")
        if d["bbase"] >= cfg.bbuf_words:
            self.fail("bias-range", f"bias word {d['bbase']} beyond the {cfg.bbuf_words}-word bias buffer")
        if d["period"] < max(d["klen"], cfg.rows, cfg.cols):
            self.fail("conv-period", f"period {d['period']} < max(klen {d['klen']}, ROWS {cfg.rows}, "
                                     f"COLS {cfg.cols})")
        if d["flags"] & isa.F_DEPTHWISE and cfg.cols > cfg.rows + 3:
            self.fail("conv-depthwise", f"depthwise CONV on a {cfg.rows}x{cfg.cols} array (COLS > ROWS + 3)")
        return [Access(ACT, reads, False, i, STREAM, False),
                Access(WGT, [(d["wbase"], d["wbase"] + d["klen"])], False, i, STREAM, False),
                Access(BIAS, [(d["bbase"], d["bbase"] + 1)], False, i, COMPUTE, False),
                Access(ACT, out, True, i, COMPUTE, False)]

    def banks(self, ivs) -> set:
        """The activation-buffer banks that the word intervals touch: bank 0 holds the words below
        cfg.abuf_split, bank 1 the others (abuf_split 0: bank 1 only)."""
        split = self.cfg.abuf_split
        return {b for lo, hi in ivs for b, hit in ((0, lo < split), (1, hi > split)) if hit}

    def conflicts(self, new: list[Access]) -> None:
        """The new accesses against those in flight: RAW, WAR, and the activation write ports."""
        for a in new:
            for p in self.pending:
                if a.buf == p.buf == ACT and a.write and p.write and a.dma != p.dma and \
                        self.banks(a.ivs) & self.banks(p.ivs):
                    self.fail("act-write-port", f"{'LOAD act' if a.dma else 'a compute result'} while "
                                                f"instruction {p.index}'s {'LOAD' if p.dma else 'results'} "
                                                "may still be writing the same bank of the activation buffer")
                if a.buf != p.buf or a.write == p.write:
                    continue
                hit = overlap(a.ivs, p.ivs)
                if hit is not None:
                    rule = "write-after-read" if a.write else "read-after-write"
                    self.fail(rule, f"{isa.BUFNAMES[a.buf]} words [{hit[0]}, {hit[1]}), which instruction "
                                    f"{p.index} may still be {'reading' if a.write else 'writing'}")

    def initialized(self, new: list[Access]) -> None:
        for a in new:
            if not a.write:
                miss = self.written[a.buf].missing(a.ivs)
                if miss is not None:
                    self.fail("uninitialized-read", f"{isa.BUFNAMES[a.buf]} word {miss} is read before "
                                                    "anything wrote it")
        for a in new:
            if a.write:
                self.written[a.buf].add(a.ivs)

    def step(self, d: dict) -> None:
        self.legal(d)
        done = _retires(d)
        self.pending = [p for p in self.pending if p.engine not in done]
        new = self.accesses(d)
        self.conflicts(new)
        self.initialized(new)
        self.pending += new


def check_pages(c: Checker, instrs: list[dict], boot: int, prog_addr: int) -> None:
    """'imem-size' and 'page': the instructions in the order they sit in the image are the order they
    run, page after page. A page's instructions are the `nwords` after its LOAD (or the `boot` first
    ones), loaded at imem[0], and each page ends with the next page's LOAD or END within them."""
    cfg = c.cfg
    if cfg.imem_words and boot > cfg.imem_words:
        c.fail("imem-size", f"{boot} instructions at start; the instruction memory holds {cfg.imem_words}")
    start, n = 0, boot
    while True:
        ends = [k for k in range(start, min(start + n, len(instrs)))
                if instrs[k]["op"] == isa.END or (instrs[k]["op"] == isa.LOAD and instrs[k]["buf"] == isa.B_IMEM)]
        if start + n > len(instrs) or not ends:
            c.i = start
            c.fail("page", f"the page of instructions [{start}, {start + n}) has no page LOAD or END in the "
                           f"{len(instrs)}-instruction program")
        c.i = k = ends[0]
        d = instrs[k]
        if d["op"] == isa.END:
            return
        if d["baddr"] != 0 or d["eaddr"] != prog_addr + (k + 1) * cfg.instr_beats:
            c.fail("page", f"LOAD imem[{d['baddr']}] from beat {d['eaddr']}; the next instruction is at imem[0] "
                           f"<- beat {prog_addr + (k + 1) * cfg.instr_beats}")
        start, n = k + 1, d["nwords"]


def check_instructions(instrs: list[dict], cfg: AccelConfig, image_beats: int | None = None,
                       io_start: int | None = None, boot: int | None = None, prog_addr: int = 0) -> None:
    """Check decoded instructions (isa.decode) against every rule in RULES; raises ProgramCheckError.
    `boot`: the instructions the host loads at start (default: all)."""
    c = Checker(cfg, image_beats, io_start)
    if not instrs or instrs[-1]["op"] != isa.END:
        c.i = len(instrs) - 1
        c.fail("end", "the program does not end with END")
    check_pages(c, instrs, len(instrs) if boot is None else boot, prog_addr)
    for c.i, d in enumerate(instrs):
        if d["op"] == isa.END and c.i != len(instrs) - 1:
            c.fail("end", "END before the last instruction (the rest never runs)")
        c.step(d)


def check(prog: Program) -> None:
    """Check a compiled program (its words, buffer sizes and memory image)."""
    regions = [v["ext"] for v in prog.inputs.values()] + [v["ext"] for v in prog.outputs.values()]
    check_instructions([isa.decode(w) for w in prog.words], prog.cfg, len(prog.image),
                       min(regions, default=len(prog.image)), prog.boot_words, prog.prog_addr)
