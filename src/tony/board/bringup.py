"""Board bring-up files for the AXI build (tony_axi_top): the register map as data, a C header
with the registers and the build's memory layout, and a Python driver for PYNQ-style boards.

REGISTERS is the one description of the register block (tony/rtl/templates/tony_axil_regs.v.j2
implements it; docs/registers.md shows it; the unit bench reads its offsets from here).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from pathlib import Path

from ..names import comment_text, safe_id

REG_ID = 0x544F4E59          # "TONY"
REG_VERSION = 0x00010001     # register map 1.1 (1.0 without CFG_PPU)
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
    Reg("VERSION", 0x04, "RO", "0x00010001", "register map version (major << 16 | minor)"),
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
    Reg("PROG_LEN", 0x24, "RW", "0", "instructions loaded at start (bits 15:0): the program, or its first page"),
    Reg("BASE_LO", 0x28, "RW", "0", "byte address of beat 0 of the memory image, bits 31:0 (beat aligned)"),
    Reg("BASE_HI", 0x2C, "RW", "0", "byte address of beat 0, bits 63:32"),
    Reg("CFG_ARRAY", 0x30, "RO", "build", "array", (
        Field("ROWS", 0, 8, ""), Field("COLS", 8, 8, ""), Field("A_BITS", 16, 8, ""), Field("W_BITS", 24, 8, ""))),
    Reg("CFG_MEM", 0x34, "RO", "build", "arithmetic and memory port", (
        Field("ACC_BITS", 0, 8, ""), Field("ROUND_MODE", 8, 8, "0 half-even, 1 half-up, 2 floor"),
        Field("MEM_BITS", 16, 16, "beat width of the memory image"))),
    Reg("CFG_AXI", 0x38, "RO", "build", "AXI4 master", (
        Field("DATA_BITS", 0, 16, ""), Field("ADDR_BITS", 16, 7, ""), Field("MAX_BURST_M1", 23, 9, "MAX_BURST - 1"))),
    Reg("BUILD_ID", 0x3C, "RO", "build", "CRC-32 of the build's HDL parameters (tony.board.bringup.build_id)"),
    Reg("IMEM_WORDS", 0x40, "RO", "build", "instruction memory size (the longest program page)"),
    Reg("ABUF_WORDS", 0x44, "RO", "build", "activation buffer words"),
    Reg("WBUF_WORDS", 0x48, "RO", "build", "weight buffer words"),
    Reg("BBUF_WORDS", 0x4C, "RO", "build", "bias buffer words"),
    Reg("ERR_INFO", 0x50, "RO", "0", "PC (bits 15:0) when the last error stopped the run; "
        "for code 3 the illegal instruction's index"),
    Reg("CFG_PPU", 0x54, "RO", "build", "post-processing", (
        Field("PER_CHANNEL", 0, 8, "per-channel requantization in the bias words: 0 none, 1 shift, 2 mult "
              "(docs/isa.md, 'Bias words')"),)),
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
        cell = "<br>".join(parts).replace("|", "\\|")
        rows.append(f"| 0x{r.offset:02X} | {r.name} | {r.access} | {r.reset} | {cell} |")
    return "\n".join(rows) + "\n"


# ---- the SoC wrapper's parameters and timing ------------------------------------------------------

AXI_READ_LATENCY = 4
"""Cycles from a read accepted by tony_axi_master to its response, with a slave that never stalls
(the bridge registers AR and R; cocotbext-axi's AxiRam drives R two cycles after it takes AR).
The cycle model predicts a run through tony_axi_top exactly with this memory latency."""

AXI_DEFAULTS = {"AXIL_ADDR_BITS": 12, "AXI_DATA_BITS": 64, "AXI_ADDR_BITS": 32, "AXI_ID_BITS": 1,
                "MAX_BURST": 16, "WFIFO_DEPTH": 32, "MAX_READS": 32}


def axi_top_params(m: dict, **axi) -> dict:
    """HDL parameters of tony_axi_top for a build's manifest (BUILD_ID included)."""
    from ..accel.program import PER_CHANNEL_CODES
    from ..ir.types import Rounding

    a = m["accel"]
    p = {"ROWS": a["rows"], "COLS": a["cols"], "A_BITS": a["a_bits"], "W_BITS": a["w_bits"],
         "ACC_BITS": a["acc_bits"], "MEM_BITS": a["mem_bits"], "ABUF_WORDS": a["abuf_words"],
         "WBUF_WORDS": a["wbuf_words"], "BBUF_WORDS": a["bbuf_words"], "IMEM_WORDS": a["imem_words"],
         "ROUND_MODE": Rounding(m["rounding"]).code, **AXI_DEFAULTS, **axi}
    pc = PER_CHANNEL_CODES[a.get("per_channel") or "none"]
    if pc:   # only where set, so that a build without per-channel scales keeps its BUILD_ID
        p["PER_CHANNEL"] = pc
    if a.get("abuf_split"):   # likewise for a one-bank activation buffer
        p["ABUF_SPLIT"] = a["abuf_split"]
    if a.get("smx_n", 0) > 0:   # likewise for a build without the Softmax unit
        p["SMX_N"] = a["smx_n"]
    if a.get("ln_n", 0) > 0:    # ... or without the LayerNorm unit
        p["LN_N"] = a["ln_n"]
    if p["AXI_DATA_BITS"] < p["MEM_BITS"]:
        p["AXI_DATA_BITS"] = p["MEM_BITS"]
    p["BUILD_ID"] = build_id(p)
    return p


# ---- files written by `tony compile` -------------------------------------------------------------

AXI_MODULES = ("tony_axil_regs", "tony_axi_master", "tony_axi_top")


def memory_layout(m: dict, image_beats: int) -> list[dict]:
    """Regions of the memory image, in beats: program, parameters (biases and weights), device
    inputs and outputs (what the host writes before a run and reads after it)."""
    from ..accel.isa import INSTR_BITS

    mem_bits = m["accel"]["mem_bits"]
    prog = m["program"]
    prog_beats = prog["length"] * (INSTR_BITS // mem_bits)
    first_io = min([r["ext"] for r in m["inputs"] + m["outputs"]], default=image_beats)
    regions = [{"name": "PROGRAM", "kind": "program", "beat": prog["addr"], "beats": prog_beats},
               {"name": "PARAMS", "kind": "params", "beat": prog["addr"] + prog_beats,
                "beats": first_io - prog["addr"] - prog_beats}]
    for kind, rows in (("input", m["inputs"]), ("output", m["outputs"])):
        for r in rows:
            regions.append({"name": f"{kind.upper()}_{safe_id(r['key']).upper()}", "kind": kind, "key": r["key"],
                            "beat": r["ext"], "beats": r["beats"]})
    return regions


def write_axi_rtl(out: Path, params: dict) -> list[str]:
    """The SoC wrapper's own modules into OUT/rtl_axi (the accelerator's are in OUT/rtl with the
    build's parameters as defaults; tony_axi_top passes the same values down). Returns their
    paths relative to OUT."""
    from ..rtl import MODULES, render

    d = out / "rtl_axi"
    d.mkdir(exist_ok=True)
    paths = []
    for n in AXI_MODULES:
        own = {k: v for k, v in params.items() if k in MODULES[n].params}
        (d / f"{n}.v").write_text(render(n, **own))
        paths.append(f"rtl_axi/{n}.v")
    return paths


def c_header(m: dict, params: dict, image_beats: int) -> str:
    guard = f"TONY_{safe_id(m['model']).upper()}_H"
    mb = m["accel"]["mem_bits"] // 8
    lines = [
        f"/* Tony build of model '{comment_text(m['model'])}' for tony_axi_top: register map (docs/registers.md) and the",
        " * memory layout of the compiled image (mem/image.npy or mem/image.hex: beats of TONY_MEM_BYTES bytes).",
        " * Offsets of regions are in bytes from the image base (the value written to BASE_LO/BASE_HI).",
        " * Generated by `tony compile`; do not edit. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        "#include <stdint.h>",
        "",
        "/* registers (byte offsets in the AXI4-Lite window) */",
    ]
    for r in REGISTERS:
        lines.append(f"#define TONY_REG_{r.name:<12} 0x{r.offset:02X}u  /* {r.access}: {r.doc} */")
        for f in r.fields:
            lines.append(f"#define TONY_{r.name}_{f.name}_SHIFT {f.lo}u")
            lines.append(f"#define TONY_{r.name}_{f.name}_MASK  0x{f.mask:08X}u")
    lines += ["", f"#define TONY_ID_VALUE       0x{REG_ID:08X}u", f"#define TONY_VERSION_VALUE  0x{REG_VERSION:08X}u"]
    for name, code in ERR_CODES.items():
        lines.append(f"#define TONY_ERR_{name.upper():<8} {code}u")
    lines += ["", "/* this build (compare with CFG_* and BUILD_ID before running) */"]
    for k, v in params.items():
        lines.append(f"#define TONY_{k:<15} {int(v)}u")
    lines += ["", "/* memory image */", f"#define TONY_MEM_BYTES       {mb}u",
              f"#define TONY_IMAGE_BEATS     {image_beats}u", f"#define TONY_IMAGE_BYTES     {image_beats * mb}u",
              f"#define TONY_PROG_ADDR       {m['program']['addr']}u  /* beats: write to PROG_ADDR */",
              f"#define TONY_PROG_LEN        {m['program'].get('boot', m['program']['length'])}u"
              "  /* instructions at start (the first page): write to PROG_LEN */",
              f"#define TONY_BATCH           {m['batch']}u  /* samples per run */"]
    for reg in memory_layout(m, image_beats):
        lines.append(f"#define TONY_{reg['name']}_OFFSET {reg['beat'] * mb}u  /* {reg['kind']}"
                     + (f" {reg['key']}" if "key" in reg else "") + " */")
        lines.append(f"#define TONY_{reg['name']}_BYTES  {reg['beats'] * mb}u")
    lines += ["", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


DRIVER = '''"""PYNQ driver for the Tony build of '{model}' on tony_axi_top (generated by `tony compile`).

Runs the compiled program on the board and writes a whole-memory dump for the golden check:

    python3 tony_driver.py --bitfile design.bit --build OUT --dump hw_memory.bin
    tony compare OUT --hw-dump hw_memory.bin --memory       # on any machine with Tony

The build folder OUT (from `tony compile`) must be on the board: the driver reads
OUT/mem/image.npy (program, weights, biases) and OUT/mem/runs.npy (the golden inputs, one row of
beats per run). The dump holds the memory image after each run, back to back (docs/golden.md,
'Whole-memory dumps'). Needs numpy and pynq only; pynq.Overlay loads the bitstream, the register
block is reached with pynq.MMIO, the image lives in a pynq.allocate buffer (physically
contiguous, so its physical address is what BASE_LO/BASE_HI take).
"""
import argparse
import time

import numpy as np

REG = {regs}
ID_VALUE = 0x{id:08X}
BUILD_ID = 0x{build_id:08X}
CONFIG = {config}
MEM_BYTES = {mb}
PROG_ADDR = {prog_addr}
PROG_LEN = {prog_len}
INPUTS = {inputs}    # (name, beat offset in the image, beats, offset of its beats in a runs.npy row)
OUTPUTS = {outputs}  # (name, beat offset in the image, beats)
ERRORS = {errors}


class TonyAccel:
    """tony_axi_top on a PYNQ board: load the image, run, poll STATUS, read CYCLES."""

    def __init__(self, bitfile, build, ip=None, mmio_base=None):
        import pynq

        self.overlay = pynq.Overlay(bitfile)
        if mmio_base is None:
            names = [n for n in self.overlay.ip_dict if ip is None or n == ip]
            if not names:
                raise SystemExit("no IP named %r in the overlay; pass --ip or --mmio-base" % ip)
            mmio_base = self.overlay.ip_dict[names[0]]["phys_addr"]
        self.mmio = pynq.MMIO(mmio_base, 0x100)
        self.image = np.load(f"{{build}}/mem/image.npy").astype(np.uint64)
        self.runs = np.load(f"{{build}}/mem/runs.npy").astype(np.uint64)
        dtype = {{4: np.uint32, 8: np.uint64}}[MEM_BYTES]
        self.buf = pynq.allocate(shape=(len(self.image),), dtype=dtype)
        self.check_build()

    def rd(self, name):
        return self.mmio.read(REG[name])

    def wr(self, name, value):
        self.mmio.write(REG[name], int(value))

    def check_build(self):
        if self.rd("ID") != ID_VALUE:
            raise SystemExit("no Tony accelerator at this address (ID 0x%08x)" % self.rd("ID"))
        got = self.rd("BUILD_ID")
        if got != BUILD_ID:
            raise SystemExit("bitstream build 0x%08x (%s), program compiled for 0x%08x (CONFIG %s)"
                             % (got, self.bitstream_config(), BUILD_ID, CONFIG))

    def bitstream_config(self):
        """The bitstream's own parameters, from the CFG_* registers (docs/registers.md)."""
        a, m, p = self.rd("CFG_ARRAY"), self.rd("CFG_MEM"), self.rd("CFG_PPU")
        return ("ROWS=%d COLS=%d A_BITS=%d W_BITS=%d ACC_BITS=%d ROUND_MODE=%d MEM_BITS=%d PER_CHANNEL=%d"
                % (a & 0xFF, a >> 8 & 0xFF, a >> 16 & 0xFF, a >> 24, m & 0xFF, m >> 8 & 0xFF, m >> 16, p & 0xFF))

    def run(self, r, timeout=10.0):
        """Run the program on the inputs of run r; returns the cycle count."""
        self.buf[:] = self.image
        for _, beat, n, off in INPUTS:
            self.buf[beat:beat + n] = self.runs[r][off:off + n]
        self.buf.flush()
        base = self.buf.device_address
        self.wr("BASE_LO", base & 0xFFFFFFFF)
        self.wr("BASE_HI", base >> 32)
        self.wr("PROG_ADDR", PROG_ADDR)
        self.wr("PROG_LEN", PROG_LEN)
        self.wr("ISR", 3)
        self.wr("CTRL", 1)
        t0 = time.time()
        while True:
            st = self.rd("STATUS")
            if not st & 1:
                break
            if time.time() - t0 > timeout:
                self.wr("CTRL", 2)  # abort: the core stops once its bursts are answered
                raise SystemExit("run %d timed out at PC %d" % (r, self.rd("PC")))
        if st & 4:
            code = (st >> 8) & 0xF
            raise SystemExit("run %d stopped: %s (AXI resp %d) at PC %d" % (r, ERRORS.get(code, code), (st >> 12) & 3,
                                                                            self.rd("ERR_INFO")))
        self.buf.invalidate()
        return self.rd("CYCLES")

    def memory(self):
        return np.array(self.buf, copy=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bitfile", required=True)
    ap.add_argument("--build", required=True, help="the build folder written by tony compile")
    ap.add_argument("--ip", help="name of tony_axi_top in the overlay (default: the first IP)")
    ap.add_argument("--mmio-base", type=lambda s: int(s, 0), help="register window address instead of --ip")
    ap.add_argument("--runs", type=int, help="number of runs (default: every golden run)")
    ap.add_argument("--dump", default="hw_memory.bin", help="whole-memory dump for tony compare --memory")
    a = ap.parse_args()
    acc = TonyAccel(a.bitfile, a.build, a.ip, a.mmio_base)
    n = a.runs or len(acc.runs)
    with open(a.dump, "wb") as f:
        for r in range(n):
            cycles = acc.run(r)
            f.write(acc.memory().astype("<u%d" % MEM_BYTES).tobytes())
            print("run %d: %d cycles" % (r, cycles))
    print("wrote %s (%d runs); check it with: tony compare %s --hw-dump %s --memory" % (a.dump, n, a.build, a.dump))


if __name__ == "__main__":
    main()
'''


def driver(m: dict, params: dict) -> str:
    config = {k: int(v) for k, v in params.items() if k != "BUILD_ID"}
    return DRIVER.format(
        model=comment_text(m["model"]), regs=repr({r.name: r.offset for r in REGISTERS}), id=REG_ID,
        build_id=params["BUILD_ID"], config=repr(config), mb=m["accel"]["mem_bits"] // 8,
        prog_addr=m["program"]["addr"], prog_len=m["program"].get("boot", m["program"]["length"]),
        inputs=repr([(i["key"], i["ext"], i["beats"], i["offset"]) for i in m["inputs"]]),
        outputs=repr([(o["key"], o["ext"], o["beats"]) for o in m["outputs"]]),
        errors=repr({v: ERR_TEXT[v] for v in ERR_CODES.values()}))


def write_bringup(out: Path, m: dict, image_beats: int) -> dict:
    """Write the AXI wrapper's RTL (OUT/rtl_axi), OUT/bringup/tony_<model>.h and OUT/bringup/tony_driver.py;
    returns the manifest entries that describe them."""
    params = axi_top_params(m)
    rtl = write_axi_rtl(out, params)
    d = out / "bringup"
    d.mkdir(exist_ok=True)
    header = f"tony_{safe_id(m['model']).lower()}.h"
    (d / header).write_text(c_header(m, params, image_beats))
    (d / "tony_driver.py").write_text(driver(m, params))
    return {"axi": {"toplevel": "tony_axi_top", "rtl": rtl, "params": params, "build_id": params["BUILD_ID"]},
            "bringup": {"header": f"bringup/{header}", "driver": "bringup/tony_driver.py",
                        "layout": memory_layout(m, image_beats)}}
