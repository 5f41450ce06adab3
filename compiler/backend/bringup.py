"""Board bring-up files for the AXI build (tony_axi_top): the register map as data, a C header
with the registers and the build's memory layout, and a Python driver for PYNQ-style boards.

REGISTERS is the one description of the register block (hw_templates/verilog/tony_axil_regs.v.j2
implements it; docs/registers.md shows it; the unit bench reads its offsets from here).
"""
from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from .names import safe_id

REG_ID = 0x544F4E59          # "TONY"
REG_VERSION = 0x00010000     # register map 1.0
ERR_CODES = {"none": 0, "read": 1, "write": 2, "illegal": 3, "abort": 4, "bad_len": 5}
ERR_TEXT = {0: "none", 1: "AXI read error response (RRESP SLVERR/DECERR)",
            2: "AXI write error response (BRESP SLVERR/DECERR)", 3: "illegal instruction",
            4: "aborted by the host (CTRL.ABORT)", 5: "PROG_LEN is 0 or above IMEM_WORDS"}


@dataclass(frozen=True)
class Field:
    name: str
    lo: int
    width: int
    doc: str

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lo


@dataclass(frozen=True)
class Reg:
    name: str
    offset: int
    access: str        # RO, RW, W1S (write 1 to act, reads 0), W1C (write 1 to clear)
    reset: str         # reset value (text: some are build parameters)
    doc: str
    fields: tuple[Field, ...] = field(default_factory=tuple)


REGISTERS: tuple[Reg, ...] = (
    Reg("ID", 0x00, "RO", "0x544F4E59", 'identification: "TONY"'),
    Reg("VERSION", 0x04, "RO", "0x00010000", "register map version (major << 16 | minor)"),
    Reg("CTRL", 0x08, "W1S", "0", "control; reads 0", (
        Field("START", 0, 1, "start a run (ignored unless idle)"),
        Field("ABORT", 1, 1, "stop a run: the core is held in reset until the bus is idle, then ERROR code 4"))),
    Reg("STATUS", 0x0C, "RO", "0", "run status", (
        Field("BUSY", 0, 1, "a run is in progress (includes DRAIN)"),
        Field("DONE", 1, 1, "the last run finished: END executed and every write answered"),
        Field("ERROR", 2, 1, "the last run stopped on an error (ERR_CODE)"),
        Field("DRAIN", 3, 1, "stopping: outstanding bursts are being finished"),
        Field("ERR_CODE", 8, 4, "0 none, 1 read error, 2 write error, 3 illegal instruction, 4 abort, 5 bad PROG_LEN"),
        Field("ERR_RESP", 12, 2, "the AXI response of a bus error (2 SLVERR, 3 DECERR)"))),
    Reg("IER", 0x10, "RW", "0", "interrupt enable", (
        Field("DONE", 0, 1, "interrupt when a run is done"), Field("ERROR", 1, 1, "interrupt on an error"))),
    Reg("ISR", 0x14, "W1C", "0", "interrupt status; irq = |(ISR & IER), a level", (
        Field("DONE", 0, 1, "a run finished"), Field("ERROR", 1, 1, "a run stopped on an error"))),
    Reg("CYCLES", 0x18, "RO", "0", "clock cycles of the last (or current) run, start to END"),
    Reg("PC", 0x1C, "RO", "0", "instruction being issued (live)"),
    Reg("PROG_ADDR", 0x20, "RW", "0", "beat offset of the program in the memory image"),
    Reg("PROG_LEN", 0x24, "RW", "0", "program length in instructions (bits 15:0)"),
    Reg("BASE_LO", 0x28, "RW", "0", "byte address of beat 0 of the memory image, bits 31:0 (beat aligned)"),
    Reg("BASE_HI", 0x2C, "RW", "0", "byte address of beat 0, bits 63:32"),
    Reg("CFG_ARRAY", 0x30, "RO", "build", "array", (
        Field("ROWS", 0, 8, ""), Field("COLS", 8, 8, ""), Field("A_BITS", 16, 8, ""), Field("W_BITS", 24, 8, ""))),
    Reg("CFG_MEM", 0x34, "RO", "build", "arithmetic and memory port", (
        Field("ACC_BITS", 0, 8, ""), Field("ROUND_MODE", 8, 8, "0 half-even, 1 half-up, 2 floor"),
        Field("MEM_BITS", 16, 16, "beat width of the memory image"))),
    Reg("CFG_AXI", 0x38, "RO", "build", "AXI4 master", (
        Field("DATA_BITS", 0, 16, ""), Field("ADDR_BITS", 16, 7, ""), Field("MAX_BURST_M1", 23, 9, "MAX_BURST - 1"))),
    Reg("BUILD_ID", 0x3C, "RO", "build", "CRC-32 of the build's HDL parameters (tony.backend.bringup.build_id)"),
    Reg("IMEM_WORDS", 0x40, "RO", "build", "instruction memory size (the longest program)"),
    Reg("ABUF_WORDS", 0x44, "RO", "build", "activation buffer words"),
    Reg("WBUF_WORDS", 0x48, "RO", "build", "weight buffer words"),
    Reg("BBUF_WORDS", 0x4C, "RO", "build", "bias buffer words"),
    Reg("ERR_INFO", 0x50, "RO", "0", "PC (bits 15:0) when the last error stopped the run"),
)


def decode_status(value: int) -> dict:
    return {"busy": bool(value & 1), "done": bool(value >> 1 & 1), "error": bool(value >> 2 & 1),
            "draining": bool(value >> 3 & 1), "code": value >> 8 & 0xF, "resp": value >> 12 & 0x3}


def build_id(params: dict) -> int:
    """32-bit identifier of an accelerator build: CRC-32 of its sorted HDL parameters (BUILD_ID
    itself excluded), so a driver can check that the bitstream matches the compiled program."""
    text = ",".join(f"{k}={int(v)}" for k, v in sorted(params.items()) if k != "BUILD_ID")
    return zlib.crc32(text.encode())


def markdown_table() -> str:
    rows = ["| offset | name | access | reset | fields / meaning |", "| --- | --- | --- | --- | --- |"]
    for r in REGISTERS:
        parts = [r.doc] + [f"[{f.lo + f.width - 1}:{f.lo}] {f.name}" + (f": {f.doc}" if f.doc else "")
                           if f.width > 1 else f"[{f.lo}] {f.name}" + (f": {f.doc}" if f.doc else "") for f in r.fields]
        rows.append(f"| 0x{r.offset:02X} | {r.name} | {r.access} | {r.reset} | {'<br>'.join(parts)} |")
    return "\n".join(rows) + "\n"
