"""A build folder: what `tony compile` writes and what every later command (sim, csim, report,
compare, synth) reads. `Build` is the one reader; `staged_output` and the `write_*` helpers are the
one way files are written (whole or not at all).

Layout (docs/golden.md): manifest.json (what was built and how), model.onnx and ir.txt, golden/
(reference vectors), and per back end: rtl/, mem/ (image and per-run inputs), program.txt,
rtl_axi/, bringup/ (accelerator) or model.cpp, tb.cpp, ... (HLS).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import InputError

MANIFEST = "manifest.json"
KINDS = {"accel": "`tony compile`", "hls": "`tony compile --backend hls`"}
FIELDS = {  # what every command may read from a build of each kind, and its JSON type
    "accel": {"model": str, "accel": dict, "golden": dict, "inputs": list, "outputs": list, "layers": list,
              "rtl": list, "program": dict, "batch": int, "runs": int, "device_outputs": list},
    "hls": {"model": str, "hls": dict, "golden": dict, "device_inputs": list, "device_outputs": list,
            "layers": list, "sources": list},
}
SEGMENTED = {"model": str, "golden": dict, "segments": list}
"""a partitioned build's top folder (either kind): its device segments are builds of their own in seg<k>/"""


# ---- writing: whole files or nothing --------------------------------------------------------------

class _Refused:
    """Turns an OSError of preparing an output path into an InputError naming the path the user
    gave (not a hidden temporary beside it) and, when one of its parents exists but is not a
    folder, that parent: a path under a file, in a folder without write permission, or in a
    read-only or virtual file system."""

    def __init__(self, target: Path, *, folder: bool = False):
        self.target, self.folder = target, folder   # folder: the target itself must be a folder

    def __enter__(self):
        return self

    def __exit__(self, typ, e, tb):
        if not isinstance(e, OSError):
            return False
        places = [self.target] * self.folder + list(self.target.parents)
        blocker = next((q for q in places if q.exists() and not q.is_dir()), None)
        why = f"{blocker} is not a folder" if blocker else e.strerror or type(e).__name__
        raise InputError(f"cannot write {self.target} ({why})",
                         hint="give a path in a writable folder, under folders only (no file in the way)") from None


def make_folder(path) -> Path:
    """Create the output folder `path` (and its parents) or refuse it in one line (`_Refused`)."""
    p = Path(path)
    with _Refused(p, folder=True):
        p.mkdir(parents=True, exist_ok=True)
    return p


def _sibling(target: Path, make):
    """`make(prefix=..., dir=...)` (tempfile.mkstemp or mkdtemp) of a hidden temporary beside
    `target`, its folder created first; a path the file system refuses is refused in one line."""
    with _Refused(target):
        target.parent.mkdir(parents=True, exist_ok=True)
        return make(prefix=f".{target.name}.", dir=target.parent)


def _atomic(path, write) -> None:
    """Write `path` through a hidden temporary sibling moved into place only when `write(tmp)` returns."""
    p = Path(path)
    fd, tmp = _sibling(p, lambda **kw: tempfile.mkstemp(suffix=".tmp", **kw))
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(path, text: str) -> None:
    _atomic(path, lambda t: t.write_text(text))


def write_json(path, data) -> None:
    write_text(path, json.dumps(data, indent=1) + "\n")


def write_npy(path, arr) -> None:
    def save(t: Path):
        with open(t, "wb") as f:
            np.save(f, arr)
    _atomic(path, save)


def write_onnx(path, model) -> None:
    import onnx

    _atomic(path, lambda t: onnx.save(model, str(t)))


@contextmanager
def staged_output(out_dir, marker: str = MANIFEST):
    """Yield a temporary folder beside `out_dir`; on success it replaces `out_dir`, on any error it
    is removed. Refuses to replace an existing non-empty folder that is not a Tony build (has no
    `marker` file: manifest.json, or hw.json for an overlay)."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / marker).exists())):
        what = "a Tony build" if marker == MANIFEST else f"a Tony folder with {marker}"
        raise InputError(f"output folder {out} exists and is not {what}; refusing to overwrite it")
    tmp = Path(_sibling(out, tempfile.mkdtemp))
    try:
        yield tmp
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# ---- shared folders: one writer at a time --------------------------------------------------------

DONE = ".complete"
"""the stamp `fill_once` leaves in a folder whose contents are finished"""


@contextmanager
def exclusive(lock_file, wait: bool = True):
    """Hold an exclusive lock on `lock_file` (created if missing) for the with-block: processes
    that share a cache (parallel test workers, two `tony` commands) take turns. Advisory (flock);
    without fcntl (not POSIX) the block runs unlocked. Yields whether the lock is held: always with
    `wait`; without it, False at once where another process holds the lock (or there is no flock)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield wait
        return
    with open(lock_file, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def fill_once(folder, make, *, lock_file=None, fresh: bool = False) -> bool:
    """Run `make()` to fill the shared `folder` (created first) unless a finished fill is there
    (its `DONE` stamp), one process at a time (`exclusive` on `lock_file`, default
    `folder/.lock`); returns whether it ran. fresh: empty what an unfinished fill left in `folder`
    first (the lock file must then be outside it)."""
    folder = Path(folder)
    if lock_file is None:
        if fresh:
            raise ValueError("fill_once(fresh=True) needs a lock file outside the folder")
        folder.mkdir(parents=True, exist_ok=True)
        lock_file = folder / ".lock"
    with exclusive(lock_file):
        if (folder / DONE).exists():
            return False
        if fresh:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True, exist_ok=True)
        make()
        (folder / DONE).touch()
        return True


# ---- reading ---------------------------------------------------------------------------------------

@dataclass
class Build:
    """A build folder and its manifest."""

    path: Path
    manifest: dict

    @classmethod
    def open(cls, path, kind: str | None = None) -> "Build":
        """Read the build at `path`; with `kind` ("accel" or "hls"), refuse a build of another kind."""
        p = Path(path)
        mf = p / MANIFEST
        if not mf.is_file():
            raise InputError(f"{p} is not a Tony build (no {MANIFEST})",
                             hint=f"run {KINDS.get(kind or 'accel')} MODEL -o DIR first")
        try:
            m = json.loads(mf.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{mf} is not valid JSON ({type(e).__name__})",
                             hint="compile the build again") from None
        if not isinstance(m, dict) or m.get("kind") not in KINDS:
            raise InputError(f"{p} was written by another version of Tony (no build kind in {MANIFEST})",
                             hint="compile it again")
        for key, typ in (SEGMENTED if "segments" in m else FIELDS[m["kind"]]).items():
            if not isinstance(m.get(key), typ) or isinstance(m.get(key), bool):
                raise InputError(f"{mf} is incomplete: '{key}' is missing or not a JSON {typ.__name__}",
                                 hint="compile the build again")
        if kind is not None and m["kind"] != kind:
            raise InputError(f"{p} is a{'n' if m['kind'][0] in 'aeiou' else ''} {m['kind']} build, not {kind}",
                             hint=f"compile it with {KINDS[kind]}")
        return cls(p, m)

    def single(self, what: str) -> "Build":
        """This build, refused when it is partitioned into several device segments (each a build
        of its own in seg<k>/) for a command that reads one program."""
        segs = [s for s in self.manifest.get("segments", []) if s.get("kind") == "device"]
        if segs:
            raise InputError(f"{self.path} is a partitioned build with {len(segs)} device segments",
                             hint=f"run {what} on one of them: " + ", ".join(str(self.path / s["build"]) for s in segs))
        return self

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def file(self, rel: str) -> Path:
        """A file the manifest names, checked to exist inside the build."""
        f = (self.path / rel).resolve()
        if self.path.resolve() not in f.parents or not f.is_file():
            raise InputError(f"{self.path} is incomplete: {rel} is missing", hint="compile the build again")
        return f

    def load_npy(self, rel: str) -> np.ndarray:
        f = self.file(rel)
        try:
            return np.load(f, allow_pickle=False)
        except Exception as e:
            raise InputError(f"{rel} is not a .npy array ({type(e).__name__})", where=str(self.path),
                             hint="compile the build again") from None

    def golden(self, key: str, folder: str = "golden") -> np.ndarray:
        """The golden vectors of one tensor (all samples), by the manifest's key; integer tensors as
        int64 whatever the width they are stored in."""
        entry = self.manifest["golden"].get(key)
        if entry is None:
            raise InputError(f"no golden tensor {key!r}; the build has {sorted(self.manifest['golden'])}",
                             where=str(self.path))
        arr = self.load_npy(f"{folder}/{entry['npy']}")
        return arr.astype(np.int64) if arr.dtype.kind in "iu" else arr

    def graph(self):
        """The build's IR graph, lowered again from its model.onnx with the build's settings."""
        from .api import load_ir

        self.file("model.onnx")
        m = self.manifest
        return load_ir(self.path / "model.onnx", requant=m["requant"], rounding=m["rounding"])

    def write_json(self, rel: str, data) -> None:
        write_json(self.path / rel, data)
