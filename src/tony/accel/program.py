"""The data the accelerator back end passes between its stages (docs/isa.md).

`AccelConfig` (one accelerator build), `Stored` (where a tensor lives in the activation buffer),
`Instr` (one instruction before encoding: buffer addresses resolved, external addresses
symbolic as `Ext`, a CONV carrying its weight block), `Layer` (the instructions one IR op
became) and `Program` (the encoded program, its memory image and the I/O regions).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Union

import numpy as np

from . import isa


PER_CHANNEL_CODES = {"none": 0, "shift": 1, "mult": 2}
"""AccelConfig.per_channel -> the PER_CHANNEL parameter of tony_accel."""
PER_CHANNEL_BITS = {"none": 0, "shift": isa.COMPUTE_FIELDS["shift"].bits,
                    "mult": isa.COMPUTE_FIELDS["shift"].bits + isa.COMPUTE_FIELDS["mult"].bits}
"""Bits per lane above the bias in a bias word (docs/isa.md, 'Bias words')."""


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
    per_channel: str = ""    # per-channel requantization in the bias words: "none", "shift" (a shift per
                             # lane), "mult" (a mult and a shift per lane); "": sized by the compiler to the model
    abuf_split: int = 0      # first word of the activation buffer's bank 1 (0: one bank); with an activation
                             # buffer sized by the compiler (abuf_words 0), chosen by it (docs/architecture.md)
    smx_n: int = -1          # the Softmax unit's longest row (SOFTMAX, docs/isa.md): 0 no unit; -1: sized by the
                             # compiler to the model (its longest device Softmax row, no unit without one)
    ln_n: int = -1           # the LayerNorm unit's longest row (NORM, docs/isa.md): 0 no unit; -1: sized by the
                             # compiler to the model (its longest device LayerNorm row, no unit without one)

    def beats(self, bits: int) -> int:
        return -(-bits // self.mem_bits)

    @property
    def act_beats(self) -> int:
        return self.beats(self.cols * self.a_bits)

    @property
    def wgt_beats(self) -> int:
        return self.beats(self.cols * self.w_bits)

    @property
    def pc_lane_bits(self) -> int:
        """Bits per lane that a bias word holds above its bias: the lane's shift (and mult)."""
        return PER_CHANNEL_BITS[self.per_channel or "none"]

    @property
    def bias_bits(self) -> int:
        """One bias-buffer word: COLS biases, then COLS shifts and COLS mults when per-channel."""
        return self.cols * (self.acc_bits + self.pc_lane_bits)

    @property
    def bias_beats(self) -> int:
        return self.beats(self.bias_bits)

    @property
    def instr_beats(self) -> int:
        return isa.INSTR_BITS // self.mem_bits

    @property
    def gb_beats(self) -> int:
        """Beats of one word of the LayerNorm unit's gamma/beta memory (LOAD gb)."""
        from ..rtl.layernorm_unit import gb_bits

        return self.beats(gb_bits())

    def buf_beats(self, buf: int) -> int:
        return {isa.B_ACT: self.act_beats, isa.B_WGT: self.wgt_beats, isa.B_BIAS: self.bias_beats,
                isa.B_IMEM: self.instr_beats, isa.B_TAB: self.act_beats, isa.B_GB: self.gb_beats}[buf]

    def buf_words(self, buf: int) -> int:
        """Depth of a buffer (the HDL parameter; IMEM_WORDS for the instruction memory, which a page's
        LOAD fills; 2^A_BITS words for the table memory; the LayerNorm unit's longest row for its
        gamma/beta memory)."""
        return {isa.B_ACT: self.abuf_words, isa.B_WGT: self.wbuf_words, isa.B_BIAS: self.bbuf_words,
                isa.B_IMEM: self.imem_words, isa.B_TAB: isa.tab_words(self.a_bits),
                isa.B_GB: max(self.ln_n, 0)}.get(buf, 0)

    def hdl_params(self) -> dict:
        return {"ROWS": self.rows, "COLS": self.cols, "A_BITS": self.a_bits, "W_BITS": self.w_bits,
                "ACC_BITS": self.acc_bits, "MEM_BITS": self.mem_bits, "ABUF_WORDS": self.abuf_words,
                "WBUF_WORDS": self.wbuf_words, "BBUF_WORDS": self.bbuf_words, "IMEM_WORDS": self.imem_words,
                "PER_CHANNEL": PER_CHANNEL_CODES[self.per_channel or "none"], "ABUF_SPLIT": self.abuf_split,
                "SMX_N": max(self.smx_n, 0), "LN_N": max(self.ln_n, 0)}


@dataclass(frozen=True)
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

    def at(self, base: int) -> "Stored":
        return replace(self, base=base)


@dataclass(frozen=True)
class Ext:
    """A symbolic external-memory address: `offset` beats into region (`kind`, `key`).

    Regions: ("bias", 0), ("w", i) the i-th CONV's weight block, ("tab", i) the i-th table image,
    ("gb", i) the i-th NORM's gamma/beta words,
    ("in", tensor) a device input, ("spill", tensor) a spilled or banded tensor, ("out", tensor) a
    device output."""

    kind: str
    key: object
    offset: int = 0

    @property
    def region(self) -> tuple:
        return (self.kind, self.key)

    def __add__(self, beats: int) -> "Ext":
        return replace(self, offset=self.offset + beats)


Value = Union[int, Ext]


@dataclass(frozen=True)
class ExtBlock:
    """A CONV's weight block that is already in external memory as activation words: `words`
    words from `src` (a PixelMatMul's second operand in the input region; docs/isa.md,
    'Activations as weights'). Linking loads it like a weight block of the image."""

    src: Ext
    words: int
    cols: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.words, self.cols)


@dataclass(frozen=True, eq=False)
class Instr:
    """One instruction before encoding: the opcode and its fields (isa.encode's keywords).
    A CONV carries its weight block ([klen, COLS]); linking places it and sets `wbase`."""

    op: int
    fields: dict
    block: np.ndarray | None = None

    def with_fields(self, **f: Value) -> "Instr":
        return replace(self, fields={**self.fields, **f})


def instr(op: int, flags: int = 0, sync: int = 0, block=None, **f: Value) -> Instr:
    return Instr(op, dict(flags=flags, sync=sync, **f), block)


def sync(mask: int) -> Instr:
    return instr(isa.SYNC, sync=mask)


def dma(op: int, buf: int, baddr: int, eaddr: Value, nwords: int) -> Instr:
    return Instr(op, dict(buf=buf, baddr=baddr, eaddr=eaddr, nwords=nwords))


@dataclass(frozen=True)
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


@dataclass(frozen=True)
class Program:
    cfg: AccelConfig
    words: list            # instruction words
    text: list             # one line per instruction
    image: list            # external memory, beats
    prog_addr: int
    inputs: dict           # tensor name -> {"ext": beat address, "stored": Stored, "beats": n}
    outputs: dict          # tensor name -> {"ext": ..., "stored": ..., "beats": n, "signed": bool, "shape": logical shape}
    layers: list
    batch: int
    boot_len: int = 0      # instructions the host boots (prog_len_i): the first page; 0: all of them

    @property
    def boot_words(self) -> int:
        """How many instructions the controller loads at start: the whole program, or its first page
        when the program is longer than the instruction memory (docs/isa.md, 'Pages')."""
        return self.boot_len or len(self.words)
