"""Housekeeping of the verilated-design cache ($TONY_CACHE_DIR or ~/.cache/tony, under
verilated-designs/): one folder per design (runner._design_cache), reused by every later run.

Two things keep it from filling a disk:
  * `slim`: once a design's binary is built, its precompiled headers (Verilator's
    Vtop__pch.h.{fast,slow}.gch, about 160 MB of a tony_sim_top folder's 175 MB) go; make only
    needs them to compile the design again, which a finished design never is.
  * `prune`: after a new design is built, the least recently used finished designs go until the
    cache holds at most TONY_CACHE_MAX_GB gigabytes (default 20; 0 turns pruning off). A design
    used in the last GRACE_S seconds stays whatever the size (a run in another process may be
    about to start it), and so does one whose lock another process holds (it is being built).
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from ..build import exclusive

USED = ".used"
"""The stamp whose modification time is a design's last use (touched each time a run picks it)."""

GRACE_S = 3600.0
DEFAULT_MAX_GB = 20.0


def touch(folder: Path) -> None:
    """Mark `folder` as used now."""
    try:
        (folder / USED).touch()
    except OSError:
        pass


def slim(folder: Path) -> None:
    """Drop what a finished design no longer needs: its precompiled headers."""
    for f in folder.glob("*.gch"):
        f.unlink(missing_ok=True)


def max_bytes() -> int | None:
    """The cache's size limit in bytes from TONY_CACHE_MAX_GB (None: no limit)."""
    raw = os.environ.get("TONY_CACHE_MAX_GB", "").strip()
    try:
        gb = float(raw) if raw else DEFAULT_MAX_GB
    except ValueError:
        from .errors import BuildFailed

        raise BuildFailed(f"TONY_CACHE_MAX_GB is {raw!r}", where="environment",
                          hint="set it to a number of gigabytes (0: never prune the design cache)") from None
    return int(gb * 1e9) if gb > 0 else None


def _size(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total


def _last_use(folder: Path) -> float:
    for stamp in (folder / USED, folder):
        try:
            return stamp.stat().st_mtime
        except OSError:
            continue
    return 0.0


def prune(base: Path, keep: Path | None = None, limit: int | None = None, now: float | None = None,
          grace_s: float = GRACE_S) -> list[Path]:
    """Remove the least recently used designs under `base` (the verilated-designs folder) until
    the rest hold at most `limit` bytes (default: max_bytes()); never `keep`, a design used within
    `grace_s` seconds of `now`, or one locked by another process. Returns the folders removed."""
    limit = max_bytes() if limit is None else limit
    if limit is None or not base.is_dir():
        return []
    now = time.time() if now is None else now
    folders = [(d, _size(d), _last_use(d)) for d in base.iterdir() if d.is_dir() and not d.name.startswith(".")]
    total = sum(size for _d, size, _t in folders)
    removed: list[Path] = []
    for d, size, used in sorted(folders, key=lambda f: f[2]):
        if total <= limit:
            break
        if keep is not None and d.resolve() == keep.resolve() or now - used < grace_s:
            continue
        trash = base / f".trash-{d.name}-{os.getpid()}"
        try:
            with exclusive(d / ".lock", wait=False) as held:
                if not held:
                    continue
                # out of the way in one rename (a half-removed design is never picked: the name changes)
                d.rename(trash)
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)
        total -= size
        removed.append(d)
    return removed
