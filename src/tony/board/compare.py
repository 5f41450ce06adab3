"""`tony compare`: check a hardware memory dump against the golden vectors of a build.

Dump formats (docs/golden.md, 'Comparing a hardware dump'):
- hex: one value per line, two's complement in the tensor's bit width ($readmemh style; `//`
  comments and `@address` lines are skipped), exactly like the golden .hex files;
- raw binary: the tensor's values back to back, each in ceil(bits/8) little-endian bytes,
  optionally starting at --offset bytes into the file (a whole-memory dump).
Values cover every sample of the build, sample after sample, each in row-major order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..build import Build
from ..errors import InputError, not_a_file
from ..golden import from_hex_lines
from ..ir.types import dtype as parse_dtype


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
        raise not_a_file(path, f"--hw-dump {path}")
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
    build = Build.open(build_dir).single("`tony compare`")
    m = build.manifest
    golden = m["golden"]
    key = tensor or (m.get("device_outputs") or [None])[-1]
    if key not in golden or "hex" not in golden[key]:
        ints = [k for k, v in golden.items() if "hex" in v]
        raise InputError(f"no integer golden tensor {key!r} in this build; choose one of: {', '.join(ints)}",
                         where="--tensor")
    info = golden[key]
    want = build.golden(key).reshape(-1)
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


# ---- whole-memory dumps of the accelerator (docs/golden.md, 'Whole-memory dumps') -------------

def read_memory_dump(path: Path, mem_bits: int, fmt: str = "auto") -> list[int]:
    """Beats of a whole-memory dump: raw little-endian MEM_BITS/8-byte beats, or hex with one beat
    per line (like mem/image.hex; `//` comments and `@address` lines skipped)."""
    if not path.is_file():
        raise not_a_file(path, f"--hw-dump {path}")
    data = path.read_bytes()
    if fmt == "auto":
        fmt = "hex" if _looks_like_hex(data) else "bin"
    if fmt == "hex":
        beats = []
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise InputError("not a hex dump (bytes that are not ASCII text)", where=f"--hw-dump {path}") from None
        for ln in text.splitlines():
            ln = ln.split("//")[0].strip()
            if not ln or ln.startswith("@"):
                continue
            try:
                beats.append(int(ln, 16))
            except ValueError:
                raise InputError(f"not a hex memory dump (line {ln[:20]!r})", where=f"--hw-dump {path}") from None
        return beats
    mb = mem_bits // 8
    if len(data) % mb:
        raise InputError(f"{len(data)} bytes is not a whole number of {mb}-byte beats", where=f"--hw-dump {path}")
    return [int(v) for v in np.frombuffer(data, dtype=f"<u{mb}")]


def compare_memory(build_dir, dump, *, fmt: str = "auto", limit: int = 20) -> dict:
    """Check a dump of the accelerator's memory after each run (images back to back) against the
    golden vectors of every device output, and the program/parameter region against the image."""
    from ..accel.layout import beats_to_words, unpack_act

    build = Build.open(build_dir, kind="accel").single("`tony compare --memory`")
    m = build.manifest
    a = m["accel"]
    image = [int(v) for v in build.load_npy("mem/image.npy").astype(np.uint64)]
    beats = read_memory_dump(Path(dump), a["mem_bits"], fmt)
    n = len(image)
    if len(beats) < n or len(beats) % n:
        raise InputError(f"dump holds {len(beats)} beats; a memory image of this build is {n} beats "
                         f"(one image per run, back to back)", where=f"--hw-dump {dump}")
    runs = len(beats) // n
    if runs > m["runs"]:
        raise InputError(f"dump holds {runs} memory images, the build has {m['runs']} runs", where=f"--hw-dump {dump}")
    ro_end = min([r["ext"] for r in m["inputs"] + m["outputs"]], default=n)
    batch, rows, tensors, image_diff = m["batch"], [], {}, 0
    for r in range(runs):
        mem = beats[r * n:(r + 1) * n]
        image_diff += sum(1 for i in range(ro_end) if mem[i] != image[i])
        for o in m["outputs"]:
            want_all = build.golden(o["key"])
            lo, hi = r * batch, min((r + 1) * batch, want_all.shape[0])
            words = beats_to_words(mem[o["ext"]:o["ext"] + o["beats"]], a["cols"], a["a_bits"], a["mem_bits"])
            got = unpack_act(words, o["n"], o["c"], o["h"], o["w"], a["cols"], a["a_bits"], o["signed"])
            got = got.reshape((batch,) + tuple(o["shape"][1:]))[:hi - lo]
            want = want_all[lo:hi].reshape(got.shape)
            t = tensors.setdefault(o["key"], {"tensor": o["key"], "compared": 0, "mismatches": 0})
            t["compared"] += int(got.size)
            bad = np.argwhere(got != want)
            t["mismatches"] += int(len(bad))
            bits = parse_dtype(m["golden"][o["key"]]["dtype"]).bits
            for idx in bad[:max(0, limit - len(rows))]:
                e, g_ = int(want[tuple(idx)]), int(got[tuple(idx)])
                rows.append({"tensor": o["key"], "run": r, "index": [lo + int(idx[0])] + [int(i) for i in idx[1:]],
                             "expected": e, "got": g_, "xor": (e ^ g_) & ((1 << bits) - 1)})
    mism = sum(t["mismatches"] for t in tensors.values())
    return {"runs": runs, "tensors": list(tensors.values()), "compared": sum(t["compared"] for t in tensors.values()),
            "mismatches": mism, "image_mismatches": image_diff, "first": rows}


def print_compare_memory(rep: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    c = Console()
    ok = rep["mismatches"] == 0 and rep["image_mismatches"] == 0
    if rep["first"]:
        t = Table(title=f"{rep['mismatches']} of {rep['compared']} output values differ ({rep['runs']} run(s))")
        for col in ("tensor", "index (sample, ...)", "expected", "got", "bits flipped"):
            t.add_column(col, justify="right")
        for r in rep["first"]:
            t.add_row(r["tensor"], str(tuple(r["index"])), str(r["expected"]), str(r["got"]), f"{r['xor']:#x}")
        c.print(t)
    for tns in rep["tensors"]:
        c.print(f"  {tns['tensor']}: {tns['compared']} values, {tns['mismatches']} differ")
    if rep["image_mismatches"]:
        c.print(f"[bold red]{rep['image_mismatches']} beats of the program/parameter region differ from mem/image[/]")
    if ok:
        c.print(f"[bold green]PASS[/] {rep['compared']} output values of {rep['runs']} run(s) equal the golden vectors")
    else:
        c.print("[bold red]FAIL[/]")
