"""What a sweep is made of: models, hardware configurations, the points (model x configuration)
and the synthesis jobs (one per distinct overlay), each identified by a stable key so that an
interrupted sweep resumes where it stopped."""
from __future__ import annotations

import hashlib
import itertools
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import InputError


@dataclass(frozen=True)
class Model:
    """One model of a sweep: a label for the tables, its ONNX bytes and their digest."""

    label: str
    sha: str
    source: str       # the path or example name it came from

    @classmethod
    def from_bytes(cls, label: str, data: bytes, source: str) -> "Model":
        return cls(label, hashlib.sha256(data).hexdigest()[:12], source)


@dataclass(frozen=True)
class Hardware:
    """One accelerator configuration of the grid (buffers: 0 = sized to each model)."""

    rows: int
    cols: int
    abuf_words: int = 0
    mem_bits: int = 64

    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def key(self) -> str:
        return f"{self.rows}x{self.cols}/a{self.abuf_words}/m{self.mem_bits}"


@dataclass(frozen=True)
class Point:
    """One compile (and optionally simulation) of a model on a configuration with a batch size."""

    model: Model
    hw: Hardware
    batch: int = 1
    sim: int = 0      # samples simulated on Verilator (0: cycle model only)

    @property
    def key(self) -> str:
        return f"{self.model.label}@{self.model.sha}|{self.hw.key}|b{self.batch}|s{self.sim}"


@dataclass(frozen=True)
class Overlay:
    """A hardware configuration with every buffer as deep as the deepest need of the sweep's points
    on it: the one bitstream that runs all of them, synthesized once."""

    rows: int
    cols: int
    mem_bits: int
    abuf_words: int
    wbuf_words: int
    bbuf_words: int
    imem_words: int

    @property
    def key(self) -> str:
        return (f"{self.rows}x{self.cols}/m{self.mem_bits}/a{self.abuf_words}/w{self.wbuf_words}"
                f"/b{self.bbuf_words}/i{self.imem_words}")

    def config(self):
        from ..accel.program import AccelConfig

        return AccelConfig(**asdict(self))


@dataclass(frozen=True)
class SynthJob:
    overlay: Overlay
    target: str
    pnr: bool

    @property
    def key(self) -> str:
        return f"{self.overlay.key}|{self.target}|{'pnr' if self.pnr else 'synth'}"


def parse_list(text: str, flag: str, parse=int) -> list:
    """'a,b,c' -> [parse(a), ...], refusing an empty list or a bad item in one line."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    if not items:
        raise InputError("needs at least one value", where=flag)
    out = []
    for t in items:
        try:
            out.append(parse(t))
        except (ValueError, InputError) as e:
            raise InputError(f"{t!r} is not a valid value ({e})", where=flag) from None
    return list(dict.fromkeys(out))


def grid(models: list[Model], arrays: list[tuple[int, int]], abuf_words=(0,), mem_bits=(64,), batches=(1,),
         sim: int = 0) -> list[Point]:
    """Every point of the sweep, models outermost, in a fixed order."""
    for b in batches:
        if b < 1:
            raise InputError(f"{b}: must be at least 1", where="--batch")
    for m in mem_bits:
        if m not in (32, 64):
            raise InputError(f"{m}: the memory port is 32 or 64 bits wide", where="--mem-bits")
    for a in abuf_words:
        if a < 0:
            raise InputError(f"{a}: must be 0 (sized to the model) or a positive depth", where="--abuf-words")
    if sim < 0:
        raise InputError("must be 0 or more samples", where="--sim")
    return [Point(m, Hardware(r, c, a, mb), b, sim)
            for m, (r, c), a, mb, b in itertools.product(models, arrays, abuf_words, mem_bits, batches)]


def unique_labels(sources: list[str]) -> list[str]:
    """Short table labels for model arguments: an example name as is, a file by its stem (or its
    folder's name for a generic model.onnx), made unique with a counter."""
    out, seen = [], set()
    for s in sources:
        p = Path(s)
        base = s if not s.endswith(".onnx") else (p.parent.name if p.stem == "model" and p.parent.name else p.stem)
        label, k = base, 1
        while label in seen:
            k += 1
            label = f"{base}~{k}"
        seen.add(label)
        out.append(label)
    return out
