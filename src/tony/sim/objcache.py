"""A cache of Verilator's runtime objects (verilated.o and friends) shared between builds.

Every verilated build compiles the same Verilator runtime files (about 9 CPU seconds with
g++ -Os) although they do not depend on the design. After Verilator has written the
makefiles, `restore` copies cached objects into the build folder (stamped newer than the
makefiles, so make keeps them); after make, `save` stores them. The cache key holds
everything that reaches their compile command: the generated VM_* settings, make
variables, compiler version and flag variables. Location: $TONY_CACHE_DIR (default
~/.cache/tony)/verilated-runtime/. TONY_NO_OBJCACHE=1 disables it.

Run as `python -m tony.sim.objcache {restore|save} BUILD_DIR [VAR=VALUE ...]` between the
Verilator and make steps of a build (see runner.py).
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIME = ("verilated", "verilated_vpi", "verilated_dpi", "verilated_threads")
PREFIX = "Vtop"
_FLAG_VARS = ("CXX", "CXXFLAGS", "CPPFLAGS", "OPT", "OPT_FAST", "OPT_SLOW", "OPT_GLOBAL", "OBJCACHE", "VERILATOR_ROOT")


def _enabled() -> bool:
    return os.environ.get("TONY_NO_OBJCACHE", "") in ("", "0")


def cache_dir(build_dir: Path, make_vars: list[str]) -> Path | None:
    """The cache folder for this build's runtime objects, or None if the key can't be formed."""
    try:
        top_mk = (build_dir / f"{PREFIX}.mk").read_text()
        classes_mk = (build_dir / f"{PREFIX}_classes.mk").read_text()
    except OSError:
        return None
    settings = top_mk.split("# User .cpp files", 1)[0]
    vm_lines = [line for line in classes_mk.splitlines() if re.match(r"VM_\w+ = ", line) and "PARALLEL" not in line]
    cxx = os.environ.get("CXX", "c++")
    try:
        cxx_version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    except OSError:
        return None
    from .verilator import machine_id

    native = machine_id() if "native" in settings else ""  # objects built with -march=native
    key = repr((settings, vm_lines, sorted(make_vars), cxx_version, [(v, os.environ.get(v)) for v in _FLAG_VARS],
                native))
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    base = Path(os.environ.get("TONY_CACHE_DIR") or Path.home() / ".cache" / "tony")
    return base / "verilated-runtime" / digest


def restore(build_dir: Path, make_vars: list[str]) -> bool:
    """Copy cached runtime objects into build_dir; True if it had them all."""
    cached = cache_dir(build_dir, make_vars) if _enabled() else None
    if cached is None or not all((cached / f"{n}.o").is_file() for n in RUNTIME):
        return False
    for n in RUNTIME:
        for ext in (".o", ".d"):
            src = cached / f"{n}{ext}"
            if src.is_file():
                dst = build_dir / src.name
                shutil.copyfile(src, dst)
                os.utime(dst)  # newer than the makefiles Verilator just wrote
    return True


def save(build_dir: Path, make_vars: list[str]) -> None:
    """Store build_dir's runtime objects unless the cache has them already (atomic rename)."""
    cached = cache_dir(build_dir, make_vars) if _enabled() else None
    if cached is None or cached.is_dir() or not all((build_dir / f"{n}.o").is_file() for n in RUNTIME):
        return
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cached.parent, prefix=".tmp-"))
        for n in RUNTIME:
            for ext in (".o", ".d"):
                src = build_dir / f"{n}{ext}"
                if src.is_file():
                    shutil.copyfile(src, tmp / src.name)
        try:
            os.rename(tmp, cached)
        except OSError:  # another build stored them first
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError:
        pass  # only an optimisation


def main(argv: list[str]) -> int:
    action, build_dir, make_vars = argv[0], Path(argv[1]), argv[2:]
    try:
        if action == "restore":
            restore(build_dir, make_vars)
        elif action == "save":
            save(build_dir, make_vars)
        else:
            print(f"usage: python -m {__spec__.name if __spec__ else 'objcache'} {{restore|save}} BUILD_DIR [VAR=VALUE ...]")
            return 2
    except Exception as exc:  # never fail a build because of the cache
        print(f"objcache {action}: {exc} (ignored)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
