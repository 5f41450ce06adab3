"""Golden vectors and memory images: $readmemh hex and .npy (docs/golden.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def to_hex_lines(arr, bits: int) -> list[str]:
    """One two's-complement value per line, ceil(bits/4) hex digits, row-major order."""
    a = np.asarray(arr, dtype=np.int64).reshape(-1)
    mask = (1 << bits) - 1
    width = (bits + 3) // 4
    return [format(int(v) & mask, f"0{width}x") for v in a]


def from_hex_lines(lines, bits: int, signed: bool) -> np.ndarray:
    vals = []
    for ln in lines:
        ln = ln.split("//")[0].strip()
        if not ln or ln.startswith("@"):
            continue
        v = int(ln, 16)
        if signed and v >= 1 << (bits - 1):
            v -= 1 << bits
        vals.append(v)
    return np.asarray(vals, dtype=np.int64)


def write_tensor(base: Path, arr, bits: int, *, comment: str = "") -> dict:
    """Write base.npy and base.hex; return the file names relative to base's folder."""
    base.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr, dtype=np.int64)
    np.save(base.with_suffix(".npy"), arr)
    lines = to_hex_lines(arr, bits)
    head = f"// {comment}\n" if comment else ""
    base.with_suffix(".hex").write_text(head + "\n".join(lines) + "\n")
    return {"npy": base.with_suffix(".npy").name, "hex": base.with_suffix(".hex").name}
