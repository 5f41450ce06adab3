"""Python model of the accelerator: executes a program bit-exactly and counts its cycles.

`run(prog, beats_in)` executes every instruction word (decoded from the external-memory image,
as the controller does) on word-level buffers and returns the external memory after the run.
`cycles(prog)` is the cycle model: the exact clock-cycle count of tony_accel for the program,
per instruction and in total, from the timing rules in docs/isa.md ('Timing'), which the RTL
implements and tests hold it to. Both are plain functions of the program; they never look at
golden values.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..ir.types import Rounding
from ..ref import arith
from ..rtl import PPU_LATENCY
from . import isa
from .layout import beats_to_bias_words, beats_to_words, words_to_beats
from .program import AccelConfig, Program

AMASK = (1 << isa.ADDR_BITS) - 1


def _signed(v: np.ndarray, bits: int) -> np.ndarray:
    v = np.asarray(v, np.int64) & ((1 << bits) - 1)
    return np.where(v >> (bits - 1), v - (1 << bits), v)


def _ext(v: np.ndarray, bits: int, signed: bool) -> np.ndarray:
    return _signed(v, bits) if signed else np.asarray(v, np.int64) & ((1 << bits) - 1)


def pixel_walk(d: dict, n: int):
    """The pixel walker of docs/isa.md: (base, iy, ix) of the first n output pixels."""
    base = np.zeros(n, np.int64)
    iy = np.zeros(n, np.int64)
    ix = np.zeros(n, np.int64)
    b, y, x, ox, oy = d["ibase"], d["iy0"], d["ix0"], 0, d["oy0"]
    for p in range(n):
        base[p], iy[p], ix[p] = b, y, x
        if ox + 1 < d["ow"]:
            ox, x, b = ox + 1, x + d["sw"], b + d["sw"]
        else:
            ox, x = 0, d["ixs"]
            if oy + 1 < d["oh"]:
                oy, y, b = oy + 1, y + d["sh"], b + d["rjump"]
            else:
                oy, y, b = 0, d["iys"], b + d["sjump"]
    return base & AMASK, iy, ix


def tap_walk(d: dict, cols: int):
    """The tap walker: per slice k, (address offset, kyd, kxd, lane), channel outer, kx inner."""
    k = d["klen"]
    ofs = np.zeros(k, np.int64)
    kyd = np.zeros(k, np.int64)
    kxd = np.zeros(k, np.int64)
    lane = np.zeros(k, np.int64)
    kx = ky = cb = 0
    ln = d["lane0"]
    for i in range(k):
        ofs[i] = cb + ky * d["dhw"] + kx * d["dw"]
        kyd[i], kxd[i], lane[i] = ky * d["dh"], kx * d["dw"], ln
        if kx + 1 < d["kw"]:
            kx += 1
        else:
            kx = 0
            if ky + 1 < d["kh"]:
                ky += 1
            else:
                ky = 0
                if ln + 1 < cols:
                    ln += 1
                else:
                    ln, cb = 0, cb + d["cstride"]
    return ofs, kyd, kxd, lane


@dataclass
class Machine:
    cfg: AccelConfig
    rounding: Rounding
    ext: list
    abuf: np.ndarray
    wbuf: np.ndarray
    bbuf: np.ndarray     # [words, 3, COLS]: per lane the bias, and (per-channel builds) its shift and mult
    imem: list
    tbuf: np.ndarray     # [2^A_BITS, COLS]: the table memory, entries as stored (A_BITS bits, not extended)
    gbuf: np.ndarray     # [LN_N, 2]: the LayerNorm unit's gamma/beta memory (gamma, beta per channel)

    @classmethod
    def for_program(cls, prog: Program, rounding: Rounding) -> "Machine":
        c = prog.cfg
        return cls(c, rounding, list(prog.image), np.zeros((c.abuf_words, c.cols), np.int64),
                   np.zeros((c.wbuf_words, c.cols), np.int64), np.zeros((c.bbuf_words, 3, c.cols), np.int64), [],
                   np.zeros((isa.tab_words(c.a_bits), c.cols), np.int64),
                   np.zeros((max(c.ln_n, 1), 2), np.int64))

    # ---- the post-processing unit -----------------------------------------------------------
    def ppu(self, acc, bias, d, lanes=None) -> np.ndarray:
        """`lanes`: a CONV's bias word [3, COLS]; with mult = 0 (per-channel) every lane's shift and
        mult come from it (the mult 1 where the build stores shifts only)."""
        t = np.asarray(acc, np.int64) + np.asarray(bias, np.int64)
        mult, shift = d["mult"], d["shift"]
        if lanes is not None and mult == 0 and self.cfg.pc_lane_bits:
            shift = lanes[1]
            mult = lanes[2] if self.cfg.per_channel == "mult" else np.ones_like(lanes[1])
            mult, shift = np.asarray(mult, np.int64)[None], np.asarray(shift, np.int64)[None]
        y = arith.rounding_shift(t * mult, shift, self.rounding)
        y = np.clip(y, d["lo"], d["hi"])
        return y & ((1 << self.cfg.a_bits) - 1)

    def _act(self, addr) -> np.ndarray:
        addr = np.asarray(addr, np.int64) & AMASK
        if np.any(addr >= self.cfg.abuf_words):
            raise AssertionError(f"activation read outside the buffer: {int(addr.max())}")
        return self.abuf[addr]

    def _write(self, addr, y) -> None:
        addr = np.asarray(addr, np.int64) & AMASK
        if np.any(addr >= self.cfg.abuf_words):
            raise AssertionError(f"activation write outside the buffer: {int(addr.max())}")
        self.abuf[addr] = y

    # ---- instructions ---------------------------------------------------------------------
    def dma(self, d, store: bool) -> None:
        c = self.cfg
        buf, n = d["buf"], d["nwords"]
        per = c.buf_beats(buf)
        if store:
            words = self.abuf[d["baddr"]:d["baddr"] + n]
            beats = words_to_beats(words, c.a_bits, c.mem_bits)
            self.ext[d["eaddr"]:d["eaddr"] + len(beats)] = beats
            return
        beats = self.ext[d["eaddr"]:d["eaddr"] + n * per]
        if buf == isa.B_IMEM:
            self.imem[d["baddr"]:d["baddr"] + n] = [sum(b << (i * c.mem_bits) for i, b in enumerate(beats[k * per:(k + 1) * per]))
                                                    for k in range(n)]
            return
        if buf == isa.B_BIAS:
            self.bbuf[d["baddr"]:d["baddr"] + n] = beats_to_bias_words(beats, c)
            return
        if buf == isa.B_GB:
            from ..rtl.layernorm_unit import gb_unpack

            words = [sum(b << (i * c.mem_bits) for i, b in enumerate(beats[k * per:(k + 1) * per])) for k in range(n)]
            self.gbuf[d["baddr"]:d["baddr"] + n] = np.array(gb_unpack(words), np.int64).T.reshape(n, 2)
            return
        bits = {isa.B_ACT: c.a_bits, isa.B_WGT: c.w_bits, isa.B_TAB: c.a_bits}[buf]
        words = beats_to_words(beats, c.cols, bits, c.mem_bits)
        target = {isa.B_ACT: self.abuf, isa.B_WGT: self.wbuf, isa.B_TAB: self.tbuf}[buf]
        if buf == isa.B_WGT:
            words = _signed(words, bits)
        target[d["baddr"]:d["baddr"] + n] = words

    def conv(self, d) -> None:
        c = self.cfg
        R = c.rows
        npix, K = d["npix"], d["klen"]
        nt = -(-npix // R)
        base, iy, ix = pixel_walk(d, nt * R)
        ofs, kyd, kxd, lane = tap_walk(d, c.cols)
        yy, xx = iy[:, None] + kyd[None], ix[:, None] + kxd[None]
        inb = (yy >= 0) & (yy < d["h"]) & (xx >= 0) & (xx < d["w"])
        inb[npix:] = False
        addr = (base[:, None] + ofs[None]) & AMASK
        rows, ks = np.nonzero(inb)
        wts = self.wbuf[d["wbase"]:d["wbase"] + K]
        if d["flags"] & isa.F_DEPTHWISE:
            # PE (r, c) takes lane c of row r's word: acc[p][c] = sum_k A[p][k][c] * W[k][c]
            vals = np.zeros(inb.shape + (c.cols,), np.int64)
            vals[rows, ks] = self._act(addr[rows, ks])
            vals = _ext(vals, c.a_bits, bool(d["flags"] & isa.F_A_SIGNED))
            acc = np.einsum("pkc,kc->pc", vals[:npix], wts)
        else:
            vals = np.zeros(inb.shape, np.int64)
            vals[rows, ks] = self._act(addr[rows, ks])[np.arange(len(rows)), lane[ks]]
            vals = _ext(vals, c.a_bits, bool(d["flags"] & isa.F_A_SIGNED))
            acc = arith.matmul_exact(vals[:npix], wts)
        acc = _signed(acc, c.acc_bits)
        word = self.bbuf[d["bbase"]]
        y = self.ppu(acc, word[0][None], d, word)
        self._write(d["obase"] + np.arange(npix), y)

    def vector(self, d, op) -> None:
        c = self.cfg
        npix = d["npix"]
        fl = d["flags"]
        a_signed = bool(fl & isa.F_A_SIGNED)
        base, iy, ix = pixel_walk(d, npix)
        if op == isa.EWISE and fl & isa.F_TABLE:
            # lane l looks up its own table at a - min: a's bits with the sign bit flipped if signed
            idx = self._act(base) ^ (1 << (c.a_bits - 1) if a_signed else 0)
            acc = _ext(self.tbuf[idx, np.arange(c.cols)[None]], c.a_bits, bool(fl & isa.F_B_SIGNED))
        elif op == isa.EWISE:
            a = _ext(self._act(base), c.a_bits, a_signed) << d["sa"]
            b = (_ext(self._act(base + d["boff"]), c.a_bits, bool(fl & isa.F_B_SIGNED)) << d["sb"]
                 if fl & isa.F_HAS_B else np.zeros_like(a))
            if fl & isa.F_MERGE:   # lane l: a's lane (l - rot) mod COLS from lane mlo on, b's below
                a = a[:, (np.arange(c.cols) - d["rot"]) % c.cols]
                acc = np.where(np.arange(c.cols)[None] < d["mlo"], b, a)
            else:
                acc = a + b
        else:
            d1 = dict(d, lane0=0, cstride=0)
            ofs, kyd, kxd, _ = tap_walk(d1, 1 << 30)
            yy, xx = iy[:, None] + kyd[None], ix[:, None] + kxd[None]
            inb = (yy >= 0) & (yy < d["h"]) & (xx >= 0) & (xx < d["w"])
            addr = (base[:, None] + ofs[None]) & AMASK
            vals = np.zeros(addr.shape + (c.cols,), np.int64)
            vals[inb] = _ext(self._act(addr[inb]), c.a_bits, a_signed)
            if fl & isa.F_MAX:
                lo = -(1 << (c.a_bits - 1)) if a_signed else 0
                vals = np.where(inb[..., None], vals, lo)
                acc = vals.max(axis=1)
            else:
                acc = vals.sum(axis=1)
        y = self.ppu(acc, 0, d)
        self._write(d["obase"] + np.arange(npix), y)

    def softmax(self, d) -> None:
        """SOFTMAX: rows p < npix of klen elements, element g*COLS + l in lane l of word
        ibase + p + g*cstride, through `nonlinear.softmax` with the unit's s (shift) and log2e
        (mult); the results go to the same places from obase, lanes past a row's end written 0."""
        from ..ref.nonlinear import LOG2E_BITS, SoftmaxSpec, softmax
        from ..rtl.softmax import FRAC_BITS, TABLE_BITS

        c = self.cfg
        n, rows, groups = d["klen"], d["npix"], -(-d["klen"] // c.cols)
        ofs = np.arange(groups) * d["cstride"]
        src = (d["ibase"] + np.arange(rows)[:, None] + ofs[None]) & AMASK
        x = _ext(self._act(src), c.a_bits, bool(d["flags"] & isa.F_A_SIGNED)).reshape(rows, groups * c.cols)[:, :n]
        spec = SoftmaxSpec(x_exp=LOG2E_BITS - FRAC_BITS - d["shift"], frac_bits=FRAC_BITS, table_bits=TABLE_BITS,
                           out_bits=c.a_bits, log2e=d["mult"])
        y = np.zeros((rows, groups * c.cols), np.int64)
        y[:, :n] = softmax(x, spec)
        self._write((d["obase"] + np.arange(rows)[:, None] + ofs[None]).reshape(-1),
                    y.reshape(rows * groups, c.cols))


    def norm(self, d) -> None:
        """NORM: rows as SOFTMAX's, through `nonlinear.layernorm` with E = mult, A = sa, F = sb,
        shift, lo, hi and gamma/beta words 0 to klen - 1; signed A_BITS elements in and out, lanes past
        a row's end written 0."""
        from ..ref.nonlinear import LayerNormSpec, layernorm

        c = self.cfg
        n, rows, groups = d["klen"], d["npix"], -(-d["klen"] // c.cols)
        ofs = np.arange(groups) * d["cstride"]
        src = (d["ibase"] + np.arange(rows)[:, None] + ofs[None]) & AMASK
        x = _ext(self._act(src), c.a_bits, True).reshape(rows, groups * c.cols)[:, :n]
        spec = LayerNormSpec(n=n, eps_int=d["mult"], sqrt_bits=d["sa"], gamma=tuple(int(v) for v in self.gbuf[:n, 0]),
                             beta=tuple(int(v) for v in self.gbuf[:n, 1]), shift=d["shift"], lo=d["lo"], hi=d["hi"],
                             norm_bits=d["sb"])
        y = np.zeros((rows, groups * c.cols), np.int64)
        y[:, :n] = layernorm(x, spec) & ((1 << c.a_bits) - 1)
        self._write((d["obase"] + np.arange(rows)[:, None] + ofs[None]).reshape(-1),
                    y.reshape(rows * groups, c.cols))


def decode_program(prog: Program) -> list[dict]:
    """The instructions as the controller sees them: read back from the memory image."""
    c = prog.cfg
    per = c.instr_beats
    n = len(prog.words)
    out = []
    for i in range(n):
        beats = prog.image[prog.prog_addr + i * per:prog.prog_addr + (i + 1) * per]
        out.append(isa.decode(sum(b << (k * c.mem_bits) for k, b in enumerate(beats))))
    return out


def run(prog: Program, beats_in: dict, rounding: Rounding | str = Rounding.HALF_EVEN) -> list:
    """Execute the program on the model; `beats_in` = tensor name -> input beats (accel.input_beats).
    Returns the external memory after the run."""
    m = Machine.for_program(prog, Rounding(rounding))
    for name, beats in beats_in.items():
        e = prog.inputs[name]["ext"]
        m.ext[e:e + len(beats)] = beats
    m.dma({"buf": isa.B_IMEM, "baddr": 0, "eaddr": prog.prog_addr, "nwords": prog.boot_words}, store=False)
    pc = 0
    while True:
        d = isa.decode(m.imem[pc])
        op = d["op"]
        pc += 1
        if op == isa.END:
            break
        if op in (isa.LOAD, isa.STORE):
            m.dma(d, store=op == isa.STORE)
            if op == isa.LOAD and d["buf"] == isa.B_IMEM:   # the next page: continue at its first word
                pc = d["baddr"]
        elif op == isa.CONV:
            m.conv(d)
        elif op in (isa.POOL, isa.EWISE):
            m.vector(d, op)
        elif op == isa.SOFTMAX:
            m.softmax(d)
        elif op == isa.NORM:
            m.norm(d)
    return m.ext


# ---- the cycle model ------------------------------------------------------------------------

@dataclass
class Timing:
    issue: list          # cycle in which each instruction issued
    total: int           # cycles from start to done


def cycles(prog: Program) -> Timing:
    """Exact cycle count of tony_accel running `prog` against a memory that accepts a request
    every cycle and answers reads after cfg.mem_latency cycles (docs/isa.md, 'Timing')."""
    return schedule(decode_program(prog), prog.cfg, prog.boot_words)


CONV_DRAIN = PPU_LATENCY + 8
"""The CONV row's constant (docs/isa.md, 'Timing'): the pipeline stages after the last operand read,
tony_ppu's and 8 of the operand path, the PE and the drain."""

VEC_DRAIN = PPU_LATENCY + 10
"""The POOL/EWISE row's constant: tony_ppu's stages and 10 of the vector unit's pipeline."""


def softmax_cycles(rows: int, n: int) -> int:
    """Issue of a SOFTMAX of `rows` rows of n elements to the cycle compute is free again: dispatch
    (1), the first word's read and its move into the serializer (2), the first element taken in
    cycle x + 4; from there the serializer hands the unit an element in every cycle it is ready
    (the next row's first word is ready before the unit takes it), so the rows run back to back:
    the unit's last result leaves `block_cycles(rows, n)` - 1 cycles after the first element
    (3 n + 31 for one row, then max(n, 17) a row more), and the last word is written in the cycle
    after it (docs/isa.md, 'Timing')."""
    from ..rtl.softmax import block_cycles

    return 5 + block_cycles(rows, n)


def norm_cycles(rows: int, n: int) -> int:
    """Issue of a NORM of `rows` rows of n elements to the cycle compute is free again: as SOFTMAX
    (the serializer's first element in cycle x + 4, the last word written in the cycle after the
    last result), one row every `cycles_per_row(n)` of the LayerNorm unit (tony.rtl.layernorm_unit:
    first element to the next row's first when the producer never waits; the serializer holds the
    next row's first element ready while the unit computes and drains)."""
    from ..rtl.layernorm_unit import cycles_per_row

    return 5 + rows * cycles_per_row(n)


def schedule(instrs, c: AccelConfig, boot_words: int) -> Timing:
    """The cycle model on decoded instructions (dicts of op and fields; the fields timing reads),
    of which the first `boot_words` are booted."""
    R, C, L = c.rows, c.cols, c.mem_latency
    # boot: the program (its first page) is read into the instruction memory by the DMA engine
    dma_free = boot_words * c.instr_beats + L
    stream_free = compute_free = 0
    t = dma_free + 2
    issue = []
    for d in instrs:
        op = d["op"]
        if op in (isa.LOAD, isa.STORE):
            x = max(t, dma_free)
            nb = d["nwords"] * c.buf_beats(d["buf"])
            dma_free = x + nb + L + 2 if op == isa.LOAD else x + nb + 3
            if op == isa.LOAD and d["buf"] == isa.B_IMEM:   # a page: nothing issues until it is loaded
                issue.append(x)
                t = dma_free + 2
                continue
        elif op == isa.CONV:
            x = max(t, stream_free)
            nt = -(-d["npix"] // R)
            T = d["period"]
            stream_free = x + 2 + R + nt * T
            compute_free = max(compute_free, x + 2 + R + (nt - 1) * T + d["klen"] + C + R + CONV_DRAIN)
        elif op in (isa.POOL, isa.EWISE):
            x = max(t, compute_free, stream_free)
            compute_free = stream_free = x + d["npix"] * d["klen"] + VEC_DRAIN
        elif op == isa.SOFTMAX:
            x = max(t, compute_free, stream_free)
            compute_free = stream_free = x + softmax_cycles(d["npix"], d["klen"])
        elif op == isa.NORM:
            x = max(t, compute_free, stream_free)
            compute_free = stream_free = x + norm_cycles(d["npix"], d["klen"])
        elif op == isa.SYNC:
            need = [t]
            if d["sync"] & isa.S_DMA:
                need.append(dma_free)
            if d["sync"] & isa.S_STREAM:
                need.append(stream_free)
            if d["sync"] & isa.S_COMPUTE:
                need.append(compute_free)
            x = max(need)
        elif op == isa.END:
            x = max(t, dma_free, stream_free, compute_free)
            issue.append(x)
            return Timing(issue, x + 1)
        else:
            raise ValueError(f"unknown opcode {op}")
        issue.append(x)
        t = x + 2
    raise ValueError("program has no END")


def compute_start(ins: list[dict], first: int, last: int) -> int:
    """The index of the first compute instruction in ins[first:last] (`first` when there is none)."""
    return next((i for i in range(first, last) if ins[i]["op"] in isa.COMPUTE_OPS), first)


def layer_table(prog: Program, timing: Timing) -> list[dict]:
    """Per layer: predicted cycles, MACs, utilization, and the dataflow / memory-bandwidth bound on
    utilization.

    A layer's cycles run from the issue of its first compute instruction (`start`) to the next
    layer's (the last layer's to the SYNC before the final stores): a layer's DMA-only prefix (a
    table or operand LOAD) issues while the layer before it still streams, so the issue of a
    layer's first instruction would charge that layer's compute to the next one. Each row keeps
    `first`/`last`, the instructions the layer owns (for its traffic), and `start`/`end`, the
    instructions whose issue cycles bound its time (the simulator's measured table uses them)."""
    c = prog.cfg
    peak = c.rows * c.cols
    rows = []
    ins = decode_program(prog)
    starts = [compute_start(ins, L.first, L.last) for L in prog.layers]
    ends = starts[1:] + [prog.layers[-1].last] if prog.layers else []
    first = starts[0] if prog.layers else len(ins) - 1
    rows.append({"name": "(load)", "op": "dma", "first": 0, "last": prog.layers[0].first if prog.layers else first,
                 "start": 0, "end": first, "macs": 0,
                 "predicted": timing.issue[first] if prog.layers else timing.total, "bound": None})
    for i, L in enumerate(prog.layers):
        end = timing.issue[ends[i]] if ends[i] < len(timing.issue) else timing.total
        cyc = end - timing.issue[starts[i]]
        # cycles the array streams: a tile takes its period, max(klen, ROWS, COLS) (a depthwise tile's
        # klen = kh*kw may be shorter than the array's side)
        stream = sum(-(-d["npix"] // c.rows) * max(d["klen"], c.rows, c.cols)
                     for d in ins[L.first:L.last] if d["op"] == isa.CONV)
        dw = any(d["op"] == isa.CONV and d["flags"] & isa.F_DEPTHWISE for d in ins[L.first:L.last])
        # its own weight blocks (each CONV's block is loaded one CONV ahead, so in steady state the
        # memory port must deliver them at the pace the layer consumes them)
        wbeats = sum(d["klen"] * c.wgt_beats for d in ins[L.first:L.last] if d["op"] == isa.CONV)
        row = {"name": L.name, "op": L.op, "first": L.first, "last": L.last, "start": starts[i], "end": ends[i],
               "macs": L.macs, "predicted": cyc,
               **{k: v for k, v in L.info.items()}}
        if L.macs:
            df = L.macs / (peak * stream) if stream else 1.0
            mem = L.macs / (peak * wbeats) if wbeats else 1.0
            row["dataflow_bound"] = min(1.0, df)
            row["memory_bound"] = min(1.0, mem)
            row["bound"] = min(1.0, df, mem)
            why = []
            if df < 0.999:
                why.append("dataflow: " + ("depthwise mode, kh*kw slices per tile against the array's period "
                                           "max(ROWS, COLS), or channels filling the array partly" if dw else
                                           "grouped/depthwise, one input channel per output lane"
                                           if L.info.get("group", 1) > 1 else
                                           f"{L.info.get('pixels')} output pixels or {L.info.get('M')} channels "
                                           "fill the array partly"))
            if mem < df:
                why.append("memory bandwidth: weights are used by fewer pixels than it takes beats to load them")
            row["bound_why"] = "; ".join(why)
        rows.append(row)
    last = prog.layers[-1].last if prog.layers else 0
    rows.append({"name": "(store)", "op": "dma", "first": last, "last": len(ins), "start": last, "end": len(ins),
                 "macs": 0,
                 "predicted": timing.total - timing.issue[last], "bound": None})
    for r in rows:
        r["utilization"] = r["macs"] / (r["predicted"] * peak) if r["predicted"] and r["macs"] else None
    return rows
