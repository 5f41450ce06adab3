"""The verilated-design cache's housekeeping (tony.sim.designcache): slimming a finished design and
pruning the least recently used ones past the size limit."""
from __future__ import annotations

import fcntl
import os

import pytest

from tony.sim import designcache
from tony.sim.errors import BuildFailed

NOW = 1_000_000.0


def _design(base, name, size, used):
    d = base / name
    d.mkdir()
    (d / "Vtop").write_bytes(b"x" * size)
    (d / ".complete").touch()
    (d / designcache.USED).touch()
    os.utime(d / designcache.USED, (used, used))
    return d


def test_prune_removes_least_recently_used_until_under_the_limit(tmp_path):
    a = _design(tmp_path, "a", 400, NOW - 9000)
    b = _design(tmp_path, "b", 400, NOW - 8000)
    c = _design(tmp_path, "c", 400, NOW - 7000)
    d = _design(tmp_path, "d", 400, NOW - 6000)
    removed = designcache.prune(tmp_path, limit=900, now=NOW)
    assert removed == [a, b]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "d"]
    assert (c / "Vtop").stat().st_size == 400 and d.is_dir()


def test_prune_keeps_the_new_design_recent_ones_and_locked_ones(tmp_path):
    old = _design(tmp_path, "old", 500, NOW - 9000)
    locked = _design(tmp_path, "locked", 500, NOW - 8000)
    _design(tmp_path, "recent", 500, NOW - 60)               # within the grace period
    new = _design(tmp_path, "new", 500, NOW - 99999)          # the one just built (keep)
    with open(locked / ".lock", "w") as lock:                 # another process building it
        fcntl.flock(lock, fcntl.LOCK_EX)
        removed = designcache.prune(tmp_path, keep=new, limit=100, now=NOW)
    assert removed == [old]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["locked", "new", "recent"]
    assert designcache.prune(tmp_path, keep=new, limit=100, now=NOW) == [locked]


def test_prune_under_the_limit_or_off_removes_nothing(tmp_path, monkeypatch):
    _design(tmp_path, "a", 100, NOW - 9000)
    assert designcache.prune(tmp_path, limit=1000, now=NOW) == []
    monkeypatch.setenv("TONY_CACHE_MAX_GB", "0")
    assert designcache.max_bytes() is None
    assert designcache.prune(tmp_path, now=NOW) == []
    assert designcache.prune(tmp_path / "missing", limit=1) == []
    monkeypatch.setenv("TONY_CACHE_MAX_GB", "0.5")
    assert designcache.max_bytes() == 500_000_000
    monkeypatch.setenv("TONY_CACHE_MAX_GB", "lots")
    with pytest.raises(BuildFailed, match="TONY_CACHE_MAX_GB"):
        designcache.max_bytes()


def test_slim_drops_precompiled_headers_only(tmp_path):
    for name in ("Vtop__pch.h.fast.gch", "Vtop__pch.h.slow.gch", "Vtop", "Vtop__ALL.a", "Vtop.cpp"):
        (tmp_path / name).write_text(name)
    designcache.slim(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Vtop", "Vtop.cpp", "Vtop__ALL.a"]
