"""Model names never reach generated files, Makefiles or shell commands unsanitized."""
from __future__ import annotations

import re

_BAD = re.compile(r"[^A-Za-z0-9_]+")


def safe_id(name: str, used: set[str] | None = None, *, prefix: str = "t", max_len: int = 40) -> str:
    """A C/Verilog/file-safe identifier derived from `name`, unique within `used` (which it updates)."""
    s = re.sub("_+", "_", _BAD.sub("_", name))[:max_len].strip("_") or prefix
    if not (s[0].isalpha()):
        s = f"{prefix}_{s}"
    base, k = s, 1
    while used is not None and s.lower() in used:
        k += 1
        s = f"{base}_{k}"
    if used is not None:
        used.add(s.lower())
    return s


_PLAIN = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 _-.,:;+=()[]@")


def comment_text(name: str, max_len: int = 80) -> str:
    """`name` for a comment or docstring in any generated language (C/C++, Verilog, Python, Tcl,
    Make, YAML, shell): letters, digits and a few harmless marks stay, every other character is
    written as \\xHH / \\uHHHH, so no comment terminator, quote, newline or line continuation
    can come through. Long names are cut with '...'."""
    out = "".join(ch if ch in _PLAIN else (f"\\x{ord(ch):02x}" if ord(ch) < 256 else f"\\u{ord(ch):04x}"
                                          if ord(ch) < 65536 else f"\\U{ord(ch):08x}") for ch in str(name))
    return out if len(out) <= max_len else out[:max_len - 3] + "..."
