"""The accelerator's instruction set: opcodes, field layout, encode/decode (docs/isa.md).

Every instruction is one INSTR_BITS-bit word. Bits [0, 16) are a header common to all
opcodes (op, flags, sync mask); the fields after it depend on the opcode's class: DMA (LOAD,
STORE) or COMPUTE (CONV, POOL, EWISE, SOFTMAX, NORM). The layout lives here once: the RTL template reads
the field positions from `FIELDS` (rendered as localparams), the compiler encodes with
`encode`, and the Python model decodes with `decode`.
"""
from __future__ import annotations

from dataclasses import dataclass

INSTR_BITS = 512
ADDR_BITS = 20  # activation-buffer address arithmetic (wraps modulo 2^20)

# opcodes
END, SYNC, LOAD, STORE, CONV, POOL, EWISE, SOFTMAX, NORM = range(9)
OPNAMES = {END: "END", SYNC: "SYNC", LOAD: "LOAD", STORE: "STORE", CONV: "CONV", POOL: "POOL", EWISE: "EWISE",
           SOFTMAX: "SOFTMAX", NORM: "NORM"}
COMPUTE_OPS = (CONV, POOL, EWISE, SOFTMAX, NORM)
"""The opcodes of the compute class (their fields are COMPUTE_FIELDS)."""
SOFTMAX_FIELDS = ("ibase", "obase", "npix", "klen", "cstride", "mult", "shift")
"""What SOFTMAX reads of the compute fields (docs/isa.md, 'Softmax'): rows `npix` at ibase + p
(source) and obase + p (destination), each `klen` elements long, lane l of channel group g at
+ g*cstride; the unit's shift s in `shift` and its log2e in `mult`."""
NORM_FIELDS = ("ibase", "obase", "npix", "klen", "cstride", "mult", "sa", "sb", "shift", "lo", "hi")
"""What NORM reads of the compute fields (docs/isa.md, 'NORM'): rows as SOFTMAX's; the LayerNorm
unit's spec: E in `mult`, A (sqrt fraction bits) in `sa`, F (norm bits) in `sb`, the output shift
in `shift`, the clamp in `lo`, `hi`; gamma and beta of channel c in word c of the gamma/beta memory
(LOAD gb)."""

# flags
F_A_SIGNED = 1 << 0   # input A (CONV/POOL/EWISE operand a) is signed
F_B_SIGNED = 1 << 1   # EWISE operand b is signed
F_HAS_B = 1 << 2      # EWISE: add operand b
F_MAX = 1 << 3        # POOL: max (else sum)
F_DEPTHWISE = 1 << 4  # CONV: depthwise mode, PE (r, c) multiplies lane c of row r's word (docs/isa.md)
F_TABLE = 1 << 5      # EWISE: lane l of A indexes lane l's table (F_B_SIGNED: the entries are signed)
F_MERGE = 1 << 7      # EWISE: rotate A by `rot` lanes; lanes below `mlo` from B (Concat at any channel)

# SYNC mask bits
S_DMA = 1 << 0        # the DMA engine is idle
S_STREAM = 1 << 1     # the compute engine has finished reading its operands (CONV streaming done)
S_COMPUTE = 1 << 2    # every compute result is written (array drained, post-processing empty)

# buffers a DMA addresses
B_ACT, B_WGT, B_BIAS, B_IMEM, B_TAB, B_GB = range(6)
BUFNAMES = {B_ACT: "act", B_WGT: "wgt", B_BIAS: "bias", B_IMEM: "imem", B_TAB: "tab", B_GB: "gb"}


def tab_words(a_bits: int) -> int:
    """Depth of the table memory: one word per input value of an A_BITS-bit lane (word e holds
    every lane's entry e; docs/isa.md, 'Tables')."""
    return 1 << a_bits


@dataclass(frozen=True)
class Field:
    name: str
    lo: int
    bits: int
    signed: bool = False


def _layout(start: int, spec) -> dict[str, Field]:
    out, pos = {}, start
    for name, bits, *s in spec:
        out[name] = Field(name, pos, bits, bool(s and s[0]))
        pos += bits
    assert pos <= INSTR_BITS, pos
    return out


HEADER = _layout(0, [("op", 4), ("flags", 8), ("sync", 4)])
DMA_FIELDS = _layout(16, [("buf", 3), ("baddr", 20), ("eaddr", 32), ("nwords", 20)])
COMPUTE_FIELDS = _layout(16, [
    ("ibase", ADDR_BITS), ("boff", ADDR_BITS), ("obase", ADDR_BITS), ("npix", 20),
    ("ow", 12), ("oh", 12), ("oy0", 12), ("sw", 8), ("sh", 8),
    ("ixs", 12, True), ("iys", 12, True), ("ix0", 12, True), ("iy0", 12, True),
    ("rjump", ADDR_BITS, True), ("sjump", ADDR_BITS, True),
    ("h", 12), ("w", 12), ("kh", 8), ("kw", 8), ("dh", 8), ("dw", 8), ("dhw", ADDR_BITS),
    ("nic", 16), ("lane0", 8), ("cstride", ADDR_BITS), ("klen", 16), ("period", 16),
    ("wbase", 16), ("bbase", 16),
    ("mult", 32), ("shift", 8, True), ("lo", 12, True), ("hi", 12, True), ("sa", 6), ("sb", 6),
    ("rot", 6), ("mlo", 7),
])

FIELDS = {**HEADER, **{f"d_{k}": v for k, v in DMA_FIELDS.items()}, **{f"c_{k}": v for k, v in COMPUTE_FIELDS.items()}}
"""Every field by its RTL name: header fields plain, DMA fields d_*, compute fields c_*."""


def _fields_of(op: int) -> dict[str, Field]:
    if op in (LOAD, STORE):
        return DMA_FIELDS
    if op in COMPUTE_OPS:
        return COMPUTE_FIELDS
    return {}


def encode(op: int, flags: int = 0, sync: int = 0, **values: int) -> int:
    """The instruction word as a Python int. Unknown fields and out-of-range values raise."""
    fields = _fields_of(op)
    word = 0
    for f, v in [(HEADER["op"], op), (HEADER["flags"], flags), (HEADER["sync"], sync)] + \
            [(fields[k], v) for k, v in values.items() if k in fields]:
        v = int(v)
        lo_ok = -(1 << (f.bits - 1)) if f.signed else 0
        hi_ok = (1 << (f.bits - 1)) - 1 if f.signed else (1 << f.bits) - 1
        if f.name in ("ibase", "boff", "obase", "rjump", "sjump", "dhw", "cstride"):
            v &= (1 << f.bits) - 1  # address arithmetic wraps
        elif not lo_ok <= v <= hi_ok:
            raise ValueError(f"{OPNAMES[op]}.{f.name} = {v} does not fit {f.bits} bits")
        word |= (v & ((1 << f.bits) - 1)) << f.lo
    unknown = set(values) - set(fields)
    if unknown:
        raise KeyError(f"{OPNAMES[op]} has no field(s) {sorted(unknown)}")
    return word


def decode(word: int) -> dict:
    """Field values of an instruction word (signed fields sign-extended); 'op' names the opcode."""
    def get(f: Field) -> int:
        v = (word >> f.lo) & ((1 << f.bits) - 1)
        if f.signed and v >> (f.bits - 1):
            v -= 1 << f.bits
        return v

    d = {k: get(f) for k, f in HEADER.items()}
    d.update({k: get(f) for k, f in _fields_of(d["op"]).items()})
    return d


def describe(word: int) -> str:
    """One line of assembly-like text for an instruction (the compiler writes program.txt)."""
    d = decode(word)
    op = d.pop("op")
    name = OPNAMES.get(op, f"op{op}")
    if op == SYNC:
        bits = [n for b, n in ((S_DMA, "dma"), (S_STREAM, "stream"), (S_COMPUTE, "compute")) if d["sync"] & b]
        return f"SYNC {'|'.join(bits)}"
    if op in (LOAD, STORE):
        return f"{name} {BUFNAMES[d['buf']]}[{d['baddr']}] {'<-' if op == LOAD else '->'} ext[{d['eaddr']}] x{d['nwords']}"
    if op == END:
        return "END"
    d.pop("sync")
    return name + " " + " ".join(f"{k}={v}" for k, v in d.items() if v)


def to_words(words: list[int], mem_bits: int) -> list[int]:
    """Split INSTR_BITS-bit instruction words into mem_bits-bit beats, low beat first."""
    per = INSTR_BITS // mem_bits
    mask = (1 << mem_bits) - 1
    return [(w >> (i * mem_bits)) & mask for w in words for i in range(per)]
