"""`tony compare`: check a hardware memory dump against the golden vectors of a build.

Dump formats (docs/golden.md, 'Comparing a hardware dump'):
- hex: one value per line, two's complement in the tensor's bit width ($readmemh style; `//`
  comments and `@address` lines are skipped), exactly like the golden .hex files;
- raw binary: the tensor's values back to back, each in ceil(bits/8) little-endian bytes,
  optionally starting at --offset bytes into the file (a whole-memory dump).
Values cover every sample of the build, sample after sample, each in row-major order.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..ir.types import dtype as parse_dtype
from .memfile import from_hex_lines
from .output import MANIFEST


def _read_manifest(build: Path) -> dict:
    p = build / MANIFEST
    if not p.is_file():
        raise InputError(f"{build} is not a Tony build (no {MANIFEST})", hint="run `tony compile MODEL -o DIR` first")
    return json.loads(p.read_text())


_HEX_LINE = re.compile(r"^\s*(?:[0-9a-fA-F]+|@[0-9a-fA-F]+|//.*)?\s*$")


def _looks_like_hex(data: bytes) -> bool:
    try:
        lines = data[:65536].decode("ascii").splitlines()
    except UnicodeDecodeError:
        return False
    return bool(lines) and all(_HEX_LINE.match(ln) for ln in lines[:-1] or lines)


def read_dump(path: Path, dt, count: int, fmt: str = "auto", offset: int = 0) -> np.ndarray:
    """Values of a dump file as int64, in the dtype's signedness."""
    if not path.is_file():
        raise InputError("no such file", where=f"--hw-dump {path}")
    data = path.read_bytes()
    if fmt == "auto":
        fmt = "hex" if _looks_like_hex(data) else "bin"
    if fmt == "hex":
        try:
            vals = from_hex_lines(data.decode("ascii").splitlines(), dt.bits, dt.signed)
        except ValueError as e:
            raise InputError(f"not a hex dump ({e})", where=f"--hw-dump {path}") from None
    else:
        width = (dt.bits + 7) // 8
        raw = data[offset:offset + count * width]
        if len(raw) < count * width:
            raise InputError(f"dump holds {len(raw) // width} values after offset {offset}, the tensor needs {count}",
                             where=f"--hw-dump {path}")
        u = np.frombuffer(raw, dtype=f"<u{width}").astype(np.int64) & ((1 << dt.bits) - 1)
        vals = np.where(dt.signed & (u >= (1 << (dt.bits - 1))), u - (1 << dt.bits), u) if dt.signed else u
    return np.asarray(vals, np.int64)


def compare(build_dir, dump, *, tensor: str | None = None, fmt: str = "auto", offset: int = 0,
            limit: int = 20) -> dict:
    build = Path(build_dir)
    m = _read_manifest(build)
    golden = m["golden"]
    key = tensor or (m.get("device_outputs") or [None])[-1]
    if key not in golden or "hex" not in golden[key]:
        ints = [k for k, v in golden.items() if "hex" in v]
        raise InputError(f"no integer golden tensor {key!r} in this build; choose one of: {', '.join(ints)}",
                         where="--tensor")
    info = golden[key]
    want = np.load(build / "golden" / info["npy"]).reshape(-1)
    dt = parse_dtype(info["dtype"])
    got = read_dump(Path(dump), dt, want.size, fmt, offset)
    if got.size < want.size:
        raise InputError(f"dump holds {got.size} values, tensor {key} has {want.size}", where=f"--hw-dump {dump}")
    got = got[: want.size]
    bad = np.flatnonzero(got != want)
    per_sample = int(np.prod(info["shape"][1:])) if len(info["shape"]) > 1 else 1
    shape = tuple(info["shape"][1:])
    rows = []
    for flat in bad[:limit]:
        sample, rest = divmod(int(flat), per_sample)
        idx = (sample,) + tuple(int(i) for i in np.unravel_index(rest, shape)) if shape else (sample,)
        rows.append({"index": list(idx), "flat": int(flat), "expected": int(want[flat]), "got": int(got[flat]),
                     "xor": int((int(want[flat]) ^ int(got[flat])) & ((1 << dt.bits) - 1))})
    return {"tensor": key, "onnx_name": info.get("tensor"), "dtype": dt.name, "compared": int(want.size),
            "mismatches": int(bad.size), "first": rows}


def print_compare(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    if rep["mismatches"] == 0:
        c.print(f"[bold green]PASS[/] {rep['compared']} values of {rep['tensor']} ({rep['dtype']}) equal the golden vectors")
        return
    t = Table(title=f"{rep['mismatches']} of {rep['compared']} values of {rep['tensor']} differ")
    for col in ("index (sample, ...)", "flat", "expected", "got", "bits flipped"):
        t.add_column(col, justify="right")
    for r in rep["first"]:
        t.add_row(str(tuple(r["index"])), str(r["flat"]), str(r["expected"]), str(r["got"]), f"{r['xor']:#x}")
    c.print(t)
    c.print(f"[bold red]FAIL[/] tensor {rep['tensor']} (ONNX {rep['onnx_name']!r})")
