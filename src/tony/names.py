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
