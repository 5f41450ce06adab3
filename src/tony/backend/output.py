"""Build folders appear whole or not at all: written to a hidden sibling, then moved into place."""
from __future__ import annotations

import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from ..errors import InputError

MANIFEST = "manifest.json"


@contextmanager
def staged_output(out_dir):
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on any error it
    is removed. Refuses to replace an existing non-empty folder that is not a Tony build."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).exists())):
        raise InputError(f"output folder {out} exists and is not a Tony build; refusing to overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
