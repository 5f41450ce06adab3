"""`tony hw`: one accelerator for a board, rendered once (an overlay); `tony compile --hw` then
compiles any number of models into programs for it without touching the Verilog (docs/overlay.md).

An overlay is an `AccelConfig` with every buffer depth fixed, a rounding mode (the ROUND_MODE of the
post-processing unit) and, for a preset, the FPGA it was sized for. `PRESETS` holds one per part;
a HW.toml gives the same fields (optionally on top of a preset). `render_overlay` writes the folder:

    HW/hw.json          the configuration, the part and its resource estimate, the rendered files' hashes
    HW/rtl/, rtl_axi/   the accelerator's Verilog and its AXI4 SoC wrapper (what a build has)
    HW/tony_accel.core, filelist.f, filelist_axi.f   FuseSoC core and file lists

`open_overlay` reads it back and refuses a folder whose Verilog is not what this version of Tony
renders for its hw.json (templates changed since, or a file edited): a program compiled for it
would not match the hardware.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import tomllib
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from . import __version__
from .accel import isa
from .accel.emit import LN_MAX_N, SMX_MAX_N
from .accel.program import PER_CHANNEL_CODES, AccelConfig
from .build import staged_output, write_json
from .errors import InputError, not_a_file
from .ir.types import Rounding

HW_JSON = "hw.json"


# ---- parts -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Part:
    """An FPGA's budget: what an overlay is sized against."""

    device: str
    boards: str
    family: str             # ecp5 | ice40 | xc7 (the resource model below)
    luts: int
    dsps: int
    dsp_cell: str
    brams: int
    bram_cell: str
    synth_target: str       # `tony synth --target`


PARTS: dict[str, Part] = {
    "ecp5-85k": Part("LFE5U-85F", "ULX3S 85F, OrangeCrab 85F", "ecp5", 83_640, 156, "MULT18X18D", 208, "DP16KD",
                     "ecp5-85k"),
    "ecp5-25k": Part("LFE5U-25F", "ULX3S 25F, OrangeCrab 25F", "ecp5", 24_288, 28, "MULT18X18D", 56, "DP16KD",
                     "ecp5-25k"),
    "ice40-up5k": Part("iCE40UP5K", "iCEBreaker, UPduino", "ice40", 5_280, 8, "SB_MAC16", 30, "SB_RAM40_4K",
                       "ice40-up5k"),
    "zynq-7020": Part("XC7Z020", "PYNQ-Z2", "xc7", 53_200, 220, "DSP48E1", 140, "RAMB36E1", "xc7"),
}

BRAM_SHAPES = {  # (depth, width) of one block RAM with one write and one read port
    "ecp5": ((16384, 1), (8192, 2), (4096, 4), (2048, 9), (1024, 18), (512, 36)),
    "ice40": ((2048, 2), (1024, 4), (512, 8), (256, 16)),
    "xc7": ((32768, 1), (16384, 2), (8192, 4), (4096, 9), (2048, 18), (1024, 36), (512, 72)),
}
PPU_DSPS_PER_LANE = {"ecp5": 4, "ice40": 4, "xc7": 4}   # the 32 x 32-bit requantization multiplier
OTHER_DSPS = {"ecp5": 2, "ice40": 0, "xc7": 1}          # measured (docs/synthesis.md)


def bram_cells(family: str, depth: int, width: int) -> int:
    """Block RAMs for one depth x width memory: the cheapest tiling of the part's RAM shapes."""
    return min(-(-depth // d) * -(-width // w) for d, w in BRAM_SHAPES[family])


def buffers(cfg: AccelConfig) -> dict:
    """The four buffers of tony_accel: depth, width and copies (the activation buffer's
    max(ROWS, 2) + 1 read ports -- one per CONV row, the vector unit sharing the first two, and the
    DMA's STORE -- are as many copies, every write going to each; tony_act_buf)."""
    return {
        "activation": (cfg.abuf_words, cfg.cols * cfg.a_bits, max(cfg.rows, 2) + 1),
        "weight": (cfg.wbuf_words, cfg.cols * cfg.w_bits, 1),
        "bias": (cfg.bbuf_words, cfg.bias_bits, 1),
        "instruction": (cfg.imem_words, isa.INSTR_BITS, 1),
    }


def estimate(cfg: AccelConfig, part: Part) -> dict:
    """Block RAMs per buffer and DSPs against the part's budget (an estimate: `tony synth` on any
    build compiled for the overlay measures it)."""
    bram = {name: copies * bram_cells(part.family, depth, width)
            for name, (depth, width, copies) in buffers(cfg).items()}
    split = cfg.abuf_split
    if 0 < split < cfg.abuf_words:   # two banks per copy (tony_act_buf): each rounds up to whole cells
        depth, width, copies = buffers(cfg)["activation"]
        bram["activation"] = copies * (bram_cells(part.family, split, width)
                                       + bram_cells(part.family, depth - split, width))
    # the vector unit's table memory: a block RAM per lane, 2^A_BITS entries of A_BITS bits
    bram["table"] = cfg.cols * bram_cells(part.family, 1 << cfg.a_bits, cfg.a_bits)
    dsp = {"array": cfg.rows * cfg.cols, "post-processing": cfg.cols * PPU_DSPS_PER_LANE[part.family],
           "other": OTHER_DSPS[part.family]}
    used = {"bram": sum(bram.values()), "dsp": sum(dsp.values())}
    avail = {"bram": part.brams, "dsp": part.dsps}
    return {"bram": {"cell": part.bram_cell, "per_buffer": bram, "used": used["bram"], "available": part.brams},
            "dsp": {"cell": part.dsp_cell, "per_unit": dsp, "used": used["dsp"], "available": part.dsps},
            "over": [k for k in used if used[k] > avail[k]]}


# ---- overlays --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overlay:
    """One accelerator for a part: its configuration (every buffer fixed) and rounding mode."""

    name: str
    cfg: AccelConfig
    rounding: str = "half_even"
    part: str | None = None   # a key of PARTS, or None (no budget)

    @property
    def round_mode(self) -> int:
        return Rounding(self.rounding).code

    def hdl_params(self) -> dict:
        return {**self.cfg.hdl_params(), "ROUND_MODE": self.round_mode}


def _cfg(rows, cols, abuf, wbuf, bbuf, imem, mem_bits=64) -> AccelConfig:
    return AccelConfig(rows, cols, mem_bits=mem_bits, abuf_words=abuf, wbuf_words=wbuf, bbuf_words=bbuf,
                       imem_words=imem, per_channel="none", smx_n=0, ln_n=0)


PRESETS: dict[str, Overlay] = {
    # 8x8: 98 of 156 MULT18X18D; block RAM 72 (activation, 9 copies) + 8 + 8 + 57 + 8 (table) = 153 of 208 DP16KD
    "ecp5-85k": Overlay("ecp5-85k", _cfg(8, 8, 2048, 2048, 512, 2048), part="ecp5-85k"),
    # 2x4 (a 4x4 array needs 34 of 28 MULT18X18D): 26 DSP; block RAM 6 + 2 + 4 + 29 + 4 (table) = 45 of 56
    "ecp5-25k": Overlay("ecp5-25k", _cfg(2, 4, 1024, 1024, 512, 1024, mem_bits=32), part="ecp5-25k"),
    # 2x4 on the 8 SB_MAC16 (the post-processing multipliers and the 512-bit instruction memory do not fit)
    "ice40-up5k": Overlay("ice40-up5k", _cfg(2, 4, 256, 256, 256, 256, mem_bits=32), part="ice40-up5k"),
    # 16x8: 161 of 220 DSP48E1; block RAM 68 (17 copies) + 4 + 4 + 29 + 8 (table) = 113 of 140 RAMB36E1
    "zynq-7020": Overlay("zynq-7020", _cfg(16, 8, 2048, 2048, 512, 2048), part="zynq-7020"),
}

LIMITS = {  # field -> (lowest, highest, why)
    "rows": (1, 64, "array rows"), "cols": (1, 64, "array columns"),
    "a_bits": (8, 8, "activations are 8-bit"), "w_bits": (8, 8, "weights are 8-bit"),
    "acc_bits": (16, 32, "accumulator bits"),
    "abuf_words": (64, 1 << isa.ADDR_BITS, "activation-buffer words"),
    "wbuf_words": (16, 1 << isa.COMPUTE_FIELDS["wbase"].bits, "weight-buffer words"),
    "bbuf_words": (1, 1 << isa.COMPUTE_FIELDS["bbase"].bits, "bias-buffer words"),
    "imem_words": (16, 1 << 16, "instruction words (PROG_LEN is 16 bits)"),
    "smx_n": (0, SMX_MAX_N, "the Softmax unit's longest row (0: no unit)"),
    "ln_n": (0, LN_MAX_N, "the LayerNorm unit's longest row (0: no unit)"),
}
TOML_KEYS = ("preset", "name", "part", "rounding", "mem_bits", "per_channel", "abuf_split") + tuple(LIMITS)


def validate(ov: Overlay, where: str) -> Overlay:
    """Refuse, in one line, a configuration the hardware cannot be rendered with."""
    if ov.cfg.per_channel == "":    # an overlay is fixed hardware: no per-channel scales unless asked for
        ov = replace(ov, cfg=replace(ov.cfg, per_channel="none"))
    if ov.cfg.smx_n == -1:          # ... and no Softmax unit unless asked for (smx_n = its longest row)
        ov = replace(ov, cfg=replace(ov.cfg, smx_n=0))
    if ov.cfg.ln_n == -1:           # ... nor a LayerNorm unit (ln_n = its longest row)
        ov = replace(ov, cfg=replace(ov.cfg, ln_n=0))
    for key, (lo, hi, what) in LIMITS.items():
        v = getattr(ov.cfg, key)
        if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
            raise InputError(f"{key} = {v!r}: {what} must be an integer from {lo} to {hi}", where=where)
    if not isinstance(ov.cfg.per_channel, str) or ov.cfg.per_channel not in PER_CHANNEL_CODES:
        raise InputError(f"per_channel = {ov.cfg.per_channel!r}: choose {', '.join(map(repr, PER_CHANNEL_CODES))} "
                         "(per-channel requantization: none, a shift per channel, a multiplier and a shift)",
                         where=where)
    split = ov.cfg.abuf_split
    if not isinstance(split, int) or isinstance(split, bool) or not 0 <= split < ov.cfg.abuf_words:
        raise InputError(f"abuf_split = {split!r}: the first word of the activation buffer's bank 1 must be an "
                         f"integer from 0 (one bank) to abuf_words - 1 = {ov.cfg.abuf_words - 1}", where=where)
    if not isinstance(ov.cfg.mem_bits, int) or ov.cfg.mem_bits not in (32, 64):
        raise InputError(f"mem_bits = {ov.cfg.mem_bits!r}: the memory port is 32 or 64 bits", where=where)
    if not isinstance(ov.rounding, str) or ov.rounding not in [r.value for r in Rounding]:
        raise InputError(f"rounding = {ov.rounding!r}: choose {', '.join(r.value for r in Rounding)}", where=where)
    if ov.part is not None and (not isinstance(ov.part, str) or ov.part not in PARTS):
        raise InputError(f"part = {ov.part!r}: choose {', '.join(PARTS)}", where=where)
    if not isinstance(ov.name, str) or not ov.name:
        raise InputError("name must be a non-empty string", where=where)
    return ov


def preset(name: str, where: str = "--preset") -> Overlay:
    if not isinstance(name, str) or name not in PRESETS:
        raise InputError(f"no preset {name!r}; choose {', '.join(PRESETS)}", where=where)
    return PRESETS[name]


def from_toml(path) -> Overlay:
    """An overlay from HW.toml: the fields of `Overlay`/`AccelConfig` (`preset = "NAME"` starts from
    a preset and the other keys override it)."""
    p = Path(path)
    where = f"--config {p}"
    if not p.is_file():
        raise not_a_file(p, where)
    try:
        data = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise InputError(f"not a TOML file ({str(e).splitlines()[0]})", where=where) from None
    unknown = sorted(set(data) - set(TOML_KEYS))
    if unknown:
        raise InputError(f"unknown key(s) {', '.join(unknown)}; known: {', '.join(TOML_KEYS)}", where=where)
    base = preset(data["preset"], where) if "preset" in data else None
    required = ("rows", "cols", "abuf_words", "wbuf_words", "bbuf_words", "imem_words")
    missing = [k for k in required if base is None and k not in data]
    if missing:
        raise InputError(f"missing key(s) {', '.join(missing)} (or start from a preset: preset = \"NAME\")",
                         where=where)
    base = base or Overlay(p.stem, AccelConfig())
    cfg_keys = {f.name for f in fields(AccelConfig)} & set(data)
    ov = Overlay(data.get("name", p.stem), replace(base.cfg, **{k: data[k] for k in cfg_keys}),
                 data.get("rounding", base.rounding), data.get("part", base.part))
    return validate(ov, where)


# ---- the folder ------------------------------------------------------------------------------------

def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def templates_sha256() -> str:
    """One hash over every Verilog template (names and contents) this Tony renders from."""
    from .rtl import HEADERS, MACROS, MODULES, _env

    h = hashlib.sha256()
    for name in sorted([f"{m}.v.j2" for m in MODULES] + [f"{i}.j2" for i in HEADERS] + list(MACROS)):
        src = _env.loader.get_source(_env, name)[0]
        h.update(name.encode() + b"\0" + src.encode() + b"\0")
    return h.hexdigest()


def _render_files(ov: Overlay, out: Path) -> dict:
    """The overlay's Verilog, wrapper and FuseSoC core into `out`; returns the hw.json entries."""
    from .board.bringup import axi_top_params, write_axi_rtl
    from .rtl import render_to
    from .rtl.fusesoc import write_core

    rtl = render_to(out / "rtl", ["tony_accel"], **ov.hdl_params())
    m = {"accel": asdict(ov.cfg), "rounding": ov.rounding}
    axi = axi_top_params(m)
    axi_rtl = write_axi_rtl(out, axi)
    core = write_core(out, model=f"overlay_{ov.name}", version=__version__, toplevel="tony_accel",
                      rtl=[p.name for p in rtl], params=ov.cfg.hdl_params(),
                      description="Tony instruction-driven systolic accelerator, overlay (generated)",
                      axi={"toplevel": "tony_axi_top", "rtl": axi_rtl, "params": axi})
    return {"rtl": [p.name for p in rtl], "axi": {"toplevel": "tony_axi_top", "rtl": axi_rtl, "params": axi,
                                                  "build_id": axi["BUILD_ID"]}, "fusesoc": core}


def _hashes(out: Path, files: list[str]) -> dict:
    return {f: _sha256((out / f).read_bytes()) for f in files}


def _files(entries: dict) -> list[str]:
    return [f"rtl/{f}" for f in entries["rtl"]] + list(entries["axi"]["rtl"])


def render_overlay(ov: Overlay, out_dir) -> dict:
    """Write the overlay folder (whole or not at all); returns hw.json's content."""
    ov = validate(ov, "overlay")
    with staged_output(out_dir, marker=HW_JSON) as out:
        entries = _render_files(ov, out)
        part = PARTS.get(ov.part) if ov.part else None
        info = {
            "kind": "hw",
            "tony_version": __version__,
            "name": ov.name,
            "part": {"name": ov.part, **asdict(part)} if part else None,
            "accel": asdict(ov.cfg),
            "rounding": ov.rounding,
            "hdl_params": ov.hdl_params(),
            "templates_sha256": templates_sha256(),
            **entries,
            "files_sha256": _hashes(out, _files(entries)),
            "estimate": estimate(ov.cfg, part) if part else None,
        }
        write_json(out / HW_JSON, info)
    return info


@dataclass(frozen=True)
class HwFolder:
    """An overlay folder as read back: where it is, its overlay and hw.json (with its hash)."""

    path: Path
    overlay: Overlay
    info: dict
    sha256: str

    def copy_rtl(self, out: Path) -> None:
        """The overlay's Verilog into a build folder, byte for byte (rtl/ and rtl_axi/)."""
        for rel in _files(self.info):
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.path / rel, out / rel)


def open_overlay(path) -> HwFolder:
    """Read HW/hw.json; refuse a folder that is not an overlay, or whose Verilog is not what this
    Tony renders for it (the cycle model and the programs would not match the hardware)."""
    p = Path(path)
    where = f"--hw {p}"
    f = p / HW_JSON
    if not f.is_file():
        raise InputError(f"not an overlay folder (no {HW_JSON})", where=where, hint="render one with `tony hw`")
    raw = f.read_bytes()
    try:
        info = json.loads(raw)
        ov = Overlay(info["name"], AccelConfig(**{"per_channel": "none", "smx_n": 0, "ln_n": 0, **info["accel"]}), info["rounding"],
                     (info.get("part") or {}).get("name"))
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise InputError(f"{HW_JSON} is not an overlay description ({type(e).__name__})", where=where,
                         hint="render the overlay again with `tony hw`") from None
    validate(ov, where)
    with tempfile.TemporaryDirectory() as tmp:
        fresh = _render_files(ov, Path(tmp))
        want = _hashes(Path(tmp), _files(fresh))
    have = {rel: _sha256((p / rel).read_bytes()) if (p / rel).is_file() else None for rel in want}
    changed = [rel for rel in want if have[rel] != want[rel]]
    if changed or fresh["rtl"] != info.get("rtl"):
        raise InputError(f"{changed[0] if changed else 'rtl/'} is not what this Tony ({__version__}) renders for "
                         f"{HW_JSON} (the Verilog templates changed since the overlay was rendered, or a file was "
                         "edited)", where=where, hint="render the overlay again with `tony hw` (and rebuild the bitstream)")
    return HwFolder(p, ov, info, _sha256(raw))
