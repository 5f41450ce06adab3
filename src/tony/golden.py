"""Golden vectors: the reference run on a set of inputs, every tensor as $readmemh hex and .npy (docs/golden.md)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


_HEX_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8)
_HEX_BLOCK = 1 << 16
_HEX_WRITE_BLOCK = 1 << 18
_HEX_PAIRS = np.frombuffer("".join(f"{i:02x}" for i in range(256)).encode(), "<u2")  # byte -> its two digits


def hex_text(arr, bits: int) -> str:
    """One two's-complement value per line (each line ending in a newline), ceil(bits/4) lower-case
    hex digits, row-major order: "".join(v + "\n" for v in to_hex_lines(arr, bits)), vectorized
    (hex_lines)."""
    return hex_bytes(arr, bits).decode("ascii")


def hex_bytes(arr, bits: int) -> bytes:
    """hex_text(arr, bits) as ASCII bytes."""
    return hex_lines(arr, bits).tobytes()


def hex_lines(arr, bits: int) -> np.ndarray:
    """hex_text(arr, bits) as a uint8 array (written to a file as it is): one pass per byte of the
    values (in the narrowest unsigned type that holds them), each byte's two digits looked up at
    once, and one for a leading odd digit."""
    a = np.asarray(arr).reshape(-1)
    if not 1 <= bits <= 64:
        raise ValueError(f"{bits}-bit values: hex text holds 1 to 64 bits")
    if a.dtype.kind == "O":
        a = np.asarray([int(v) & ((1 << bits) - 1) for v in a], dtype=np.uint64)
    elif a.dtype.kind not in "iu":
        a = a.astype(np.int64)
    dt = next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64) if np.dtype(t).itemsize * 8 >= bits)
    v = a.astype(dt)  # integer casts wrap: the low bits, two's complement for negative values
    if bits < np.dtype(dt).itemsize * 8:
        v &= dt((1 << bits) - 1)
    width = (bits + 3) // 4
    lead = width % 2  # an odd digit count: the first digit alone
    pairs = [f"p{i}" for i in range(width // 2)]
    line = np.dtype({"names": ["d"] * lead + pairs + ["nl"], "formats": ["u1"] * lead + ["<u2"] * len(pairs) + ["u1"],
                     "offsets": [0] * lead + [lead + 2 * i for i in range(len(pairs))] + [width], "itemsize": width + 1})
    lines = np.empty(len(v), line)
    for s0 in range(0, len(v), _HEX_BLOCK):  # blocks: the lookups' index arrays stay in cache
        vb, lb = v[s0:s0 + _HEX_BLOCK], lines[s0:s0 + _HEX_BLOCK]
        if lead:
            lb["d"] = _HEX_DIGITS[(vb >> dt(4 * (width - 1))) & dt(15)]
        for i, name in enumerate(pairs):
            shift = 4 * (width - lead - 2 * i - 2)  # the pair's low digit
            lb[name] = np.take(_HEX_PAIRS, vb if shift == 0 and dt is np.uint8 else (vb >> dt(shift)) & dt(255))
    lines["nl"] = ord("\n")
    return lines.view(np.uint8)


def to_hex_lines(arr, bits: int) -> list[str]:
    """One two's-complement value per line, ceil(bits/4) hex digits, row-major order."""
    return hex_text(arr, bits).splitlines()


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


def storage_dtype(lo: int, hi: int) -> np.dtype:
    """The narrowest numpy integer type holding every value of [lo, hi] (int8 for an int8 tensor,
    uint8 for a uint8 one, int32 for an accumulator): the .npy files' element type."""
    for t in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64):
        info = np.iinfo(t)
        if info.min <= lo and hi <= info.max:
            return np.dtype(t)
    return np.dtype(np.int64)


def write_tensor(base: Path, arr, bits: int, *, comment: str = "", dtype=np.int64) -> dict:
    """Write base.npy (as `dtype`) and base.hex; return the file names relative to base's folder."""
    base.parent.mkdir(parents=True, exist_ok=True)
    arr = np.asarray(arr)
    info = np.iinfo(dtype)
    if arr.size and (int(arr.min()) < info.min or int(arr.max()) > info.max):
        dtype = np.int64  # values outside their type are kept as they are, never wrapped
    # C order: np.save writes a C-contiguous array in one call (other layouts element by element),
    # and the file's bytes are the same for any layout
    arr = np.asarray(arr, dtype=dtype, order="C")
    np.save(base.with_suffix(".npy"), arr)
    with open(base.with_suffix(".hex"), "wb") as f:
        f.write(f"// {comment}\n".encode() if comment else b"")
        flat = arr.reshape(-1)
        for s0 in range(0, flat.size, _HEX_WRITE_BLOCK):  # block by block: no text of the whole tensor in memory
            f.write(hex_lines(flat[s0:s0 + _HEX_WRITE_BLOCK], bits))
        if not arr.size:
            f.write(b"\n")
    return {"npy": base.with_suffix(".npy").name, "hex": base.with_suffix(".hex").name}


def tensor_keys(g) -> dict[str, str]:
    """Every tensor of the graph (inputs, op outputs) -> a file- and identifier-safe unique key."""
    from .names import safe_id

    used: set[str] = set()
    names = list(g.inputs) + [o for op in g.ops for o in op.outputs]
    return {n: safe_id(n, used) for n in names}


def default_inputs(g, n: int, seed: int) -> dict:
    """Seeded random inputs spanning each input quantizer's range (integers for integer inputs)."""
    from . import ir
    from .budget import check_ir

    check_ir(g, n)   # the inputs, and the reference's run on them, fit in memory
    rng = np.random.default_rng(seed)
    feeds = {}
    for name in g.inputs:
        t = g.tensors[name]
        q = next((op for op in g.ops if isinstance(op, ir.Quantize) and op.inputs[0] == name), None)
        if q is not None:
            lo, hi = (q.dtype.min - q.zero_point) * q.scale, (q.dtype.max - q.zero_point) * q.scale
            x = rng.uniform(lo, hi, size=(n,) + t.shape[1:]).astype(np.float32)
        elif t.dtype.bits > 32:  # indices (a Gather from a table): small, valid for any table
            x = rng.integers(0, 2, size=(n,) + t.shape[1:])
        else:
            x = rng.integers(t.dtype.min, t.dtype.max + 1, size=(n,) + t.shape[1:])
        feeds[name] = x
    return feeds


def write_golden(g, feeds: dict, folder: Path, keys: dict[str, str]) -> tuple[dict, dict]:
    """Run the reference on `feeds` and write every tensor as golden vectors (integers: .npy and
    .hex; floats at the host boundary: .npy). Returns (files by key, the reference's environment)."""
    from .ref import execute

    env = execute(g, feeds, keep_all=True)
    files = {}
    for name, key in keys.items():
        t = g.tensors[name]
        arr = env[name]
        if t.dtype.is_float:
            folder.mkdir(parents=True, exist_ok=True)
            np.save(folder / f"{key}.npy", np.asarray(arr, np.float32))
            files[key] = {"npy": f"{key}.npy"}
        else:
            files[key] = write_tensor(folder / key, arr, t.dtype.bits, comment=f"{key}: {t.dtype} {list(t.shape)}",
                                      dtype=storage_dtype(t.dtype.min, t.dtype.max))
        files[key].update(dtype=t.dtype.name, shape=list(t.shape), tensor=name)
    return files, env
