"""Running the YoWASP tools (Yosys and nextpnr compiled to WebAssembly, from PyPI) with a spinner.

The tools are found beside the running Python (the virtual environment's bin/ or Scripts/), not on
PATH, so `tony synth` uses the tools installed with `pip install tony[synth]`; where a console
script is missing the package's Python entry point is run with this interpreter instead.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from ..errors import TonyError


class SynthError(TonyError):
    """Synthesis or place and route could not run or failed (the message names the log)."""




def find_tool(name: str) -> list[str]:
    """The command line that runs console script `name` of this Python's environment."""
    bindir = Path(sys.executable).parent
    for cand in (bindir / name, bindir / f"{name}.exe"):
        if cand.is_file() and os.access(cand, os.X_OK):
            return [str(cand)]
    try:
        from importlib import metadata

        eps = [ep for ep in metadata.entry_points(group="console_scripts") if ep.name == name]
        if eps:
            mod, _, fn = eps[0].value.partition(":")
            return [sys.executable, "-c", f"import sys, {mod} as m; sys.exit(m.{fn}())"]
    except Exception:  # pragma: no cover - broken metadata
        pass
    raise SynthError(f"{name} is not installed in {sys.prefix}",
                     hint=f"pip install 'tony[synth]' (or pip install {name})")


def have_tool(name: str) -> bool:
    try:
        find_tool(name)
        return True
    except SynthError:
        return False


_YOSYS_STEP = re.compile(r"^([\d.]+)\s+Executing (.+?)(?: pass)?(?: \(.*)?\.?$")
_NEXTPNR_STEP = re.compile(r"^Info: (Running|Packing|Placing|Routing|Checksum|Critical|Max frequency|Program finished|"
                           r"Placed|Routed|Finished|Running main|Setting up|Preparing|Legalis|Logic utilisation)(.*)$")


def _last_step(log: Path, kind: str, pos: int, last: str) -> tuple[int, str]:
    """Read what the tool appended to its log since `pos`; return the new position and current step."""
    try:
        with open(log, "rb") as f:
            f.seek(pos)
            chunk = f.read()
    except OSError:
        return pos, last
    if not chunk:
        return pos, last
    cut = chunk.rfind(b"\n") + 1
    for line in chunk[:cut].decode("utf-8", "replace").splitlines():
        if kind == "yosys":
            m = _YOSYS_STEP.match(line)
            if m:
                last = m.group(2).strip().rstrip(".")
        else:
            m = _NEXTPNR_STEP.match(line)
            if m:
                last = (m.group(1) + m.group(2)).strip()[:60]
    return pos + cut, last


class Spinner:
    """A one-line rich spinner: the step (synth, pnr), the tool's current pass and the elapsed time."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.progress = None

    def __enter__(self):
        if self.enabled:
            from rich.console import Console
            from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                     console=Console(stderr=True), transient=True)
            self.progress.__enter__()
        return self

    def task(self, description: str):
        return self.progress.add_task(description, total=None) if self.progress else None

    def update(self, task, description: str) -> None:
        if self.progress is not None and task is not None:
            self.progress.update(task, description=description)

    def done(self, task, line: str) -> None:
        if self.progress is not None:
            if task is not None:
                self.progress.remove_task(task)
            self.progress.console.print(line)

    def __exit__(self, *exc):
        if self.progress is not None:
            self.progress.__exit__(*exc)


def run_tool(name: str, cmd: list[str], *, log: Path, kind: str, step: str, cwd: Path, spinner: Spinner,
             timeout: float | None = None) -> float:
    """Run one tool to completion with its output in files beside `log`; returns the seconds it took.

    Raises SynthError (one line, with the log's path) when it fails, times out or cannot start."""
    out = log.with_suffix(".stdout")
    task = spinner.task(step)
    t0 = time.monotonic()
    stop = threading.Event()

    def poll():
        pos, cur = 0, ""
        while not stop.wait(0.5):
            pos, cur = _last_step(log, kind, pos, cur)
            spinner.update(task, f"{step}: {cur}" if cur else step)

    th = threading.Thread(target=poll, daemon=True)
    try:
        with open(out, "wb") as fo:
            try:
                proc = subprocess.Popen(cmd, cwd=cwd, stdout=fo, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            except OSError as e:
                raise SynthError(f"cannot start {name} ({e.strerror or e})", where=step) from None
            th.start()
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise SynthError(f"{name} ran longer than {timeout:.0f} s", where=step,
                                 hint=f"log: {log}") from None
            except BaseException:
                proc.kill()
                proc.wait()
                raise
    finally:
        stop.set()
        if th.is_alive():
            th.join()
    dt = time.monotonic() - t0
    if rc != 0:
        raise SynthError(f"{name} failed (exit {rc}): {_first_error(log, out)}", where=step,
                         hint=f"log: {log}")
    spinner.done(task, f"{step}: done in {dt:.0f} s (log: {log})")
    return dt


def _first_error(*files: Path) -> str:
    """The first ERROR line of a tool's log or output, e.g. `tony_mac.v:1: syntax error, ...`."""
    for f in files:
        try:
            for line in f.read_text(errors="replace").splitlines():
                s = line.strip()
                for tag in ("ERROR:", "Error:"):
                    if tag in s:
                        where, _, msg = s.partition(tag)
                        where = where.strip().rstrip(":")
                        where = f"{Path(where.rsplit(':', 1)[0]).name}:{where.rsplit(':', 1)[1]}: " \
                            if ":" in where else (f"{where}: " if where else "")
                        return (where + msg.strip())[:240]
        except OSError:
            continue
    return "no ERROR line in its log"
