"""Jinja2 templates of the accelerator's Verilog (templates/*.v.j2) and a tiny renderer.

The templates are plain Verilog-2005 with parameters; jinja only writes the header, the
parameter defaults, an optional module-name prefix and the instruction-field port lists
(generated from tony.accel.isa). Numbers live here, in `MODULES`; the instruction set's field
positions and widths in one generated include file, tony_isa.vh (`HEADERS`).

    from tony.rtl import render, render_to, list_modules
    text = render("tony_ppu", LANES=8)
    paths = render_to(out_dir, ["tony_os_array"], ROWS=8, COLS=8)   # + tony_mac.v
"""
from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2


@dataclass(frozen=True)
class ModuleSpec:
    """One template: its HDL parameters with their default values, and the modules it instantiates."""

    params: dict[str, int]
    requires: tuple[str, ...] = ()
    doc: str = ""
    includes: tuple[str, ...] = ()
    """Generated include files (HEADERS) the module's source `include`s."""
    baked: tuple[str, ...] = ()
    """Parameters fixed when the template is rendered (localparams in the Verilog: constants computed
    from them, such as a ROM's contents, are written into the source), so no -G can override them."""
    optional: dict[str, str | tuple[str, ...]] = field(default_factory=dict)
    """Modules instantiated only where a parameter is not 0: module -> that parameter (or parameters:
    where any of them is not 0)."""
    structural: tuple[str, ...] = ()
    """Parameters that decide which modules the template instantiates (`optional`): rendered into the
    source, and handed down by render_to to the modules it pulls in that declare them (a module pulled
    in otherwise keeps its defaults), so that a parent and its children agree on them."""
    context: Callable[[dict[str, int]], dict] | None = None
    """Template variables computed in Python from the parameter values (numbers in Python, logic in the
    template); it raises ValueError for values the module cannot take."""


def _softmax_context(values: dict[str, int]) -> dict:
    from .softmax import template_context

    return template_context(values)


def _layernorm_context(values: dict[str, int]) -> dict:
    from .layernorm_unit import template_context

    return template_context(values)


def _accel_context(values: dict[str, int]) -> dict:
    """The LayerNorm unit's widths that tony_accel hands it and its gamma/beta words (NORM): the
    unit's defaults (tony.rtl.layernorm_unit.accel_unit_params)."""
    if not values.get("LN_N"):
        return {"ln": {}}
    from .layernorm_unit import accel_unit_params

    return {"ln": accel_unit_params(values["LN_N"], values["A_BITS"])}


PPU_LATENCY = 11
"""tony_ppu's pipeline depth: valid_i high in cycle t gives valid_o high in cycle t + PPU_LATENCY, for
every parameter value. The templates that instantiate it (tony_post, tony_layernorm) and the cycle model
(tony.accel.model, tony.rtl.layernorm_unit) read it from here."""

MACROS: tuple[str, ...] = ("_mult18x18d.j2",)
"""Template files of Jinja macros that the module templates import (not modules of their own)."""

HEADERS: dict[str, str] = {
    "tony_isa.vh": "instruction field positions and widths, opcodes, buffer ids, flag and SYNC bits (tony.accel.isa)",
}
"""Generated Verilog include files: file name -> what it holds. render_to writes the ones its modules
include next to them; give a simulator or linter the directory as an include path (-I / +incdir+)."""


MODULES: dict[str, ModuleSpec] = {
    "tony_ppu": ModuleSpec(
        params={"LANES": 4, "ACC_BITS": 32, "OUT_BITS": 8, "SHIFT_BITS": 7, "MULT_BITS": 32, "ROUND_MODE": 0,
                "PER_LANE": 0},
        doc="post-processing: bias, multiplier, rounding shift, clamp/saturate",
    ),
    "tony_mac": ModuleSpec(
        params={"A_BITS": 9, "W_BITS": 8, "ACC_BITS": 32},
        doc="multiply-accumulate PE with a shadow result register (tiles back to back)",
    ),
    "tony_os_array": ModuleSpec(
        params={"ROWS": 4, "COLS": 4, "A_BITS": 9, "W_BITS": 8, "ACC_BITS": 32},
        requires=("tony_mac",),
        doc="output-stationary array of tony_mac: tiles stream back to back, rows drain from the shadows",
    ),
    "tony_agu": ModuleSpec(
        params={"ROWS": 4, "COLS": 4},
        includes=("tony_isa.vh",),
        doc="implicit-im2col address generator (pixel walker, tap walker) of the accelerator",
    ),
    "tony_decoder": ModuleSpec(
        params={},
        includes=("tony_isa.vh",),
        doc="instruction decoder: the only module that slices an instruction word (fields from tony_isa.vh)",
    ),
    "tony_controller": ModuleSpec(
        params={"ABUF_WORDS": 1024, "WBUF_WORDS": 1024, "BBUF_WORDS": 64, "IMEM_WORDS": 256, "TBUF_WORDS": 256,
                "ABUF_SPLIT": 0, "HAS_SMX": 0, "HAS_NORM": 0, "GB_WORDS": 1},
        includes=("tony_isa.vh",),
        requires=("tony_decoder",),
        doc="controller: program boot, fetch, issue rules, SYNC waits, illegal instructions; the instruction memory",
    ),
    "tony_dma": ModuleSpec(
        params={"MEM_BITS": 64, "ACT_BITS": 32, "WGT_BITS": 32, "BIAS_BITS": 128, "GB_BITS": 56},
        includes=("tony_isa.vh",),
        doc="DMA engine: LOAD/STORE and the program boot over the valid/ready memory port",
    ),
    "tony_act_buf": ModuleSpec(
        params={"WORD_BITS": 32, "WORDS": 1024, "N_RD": 7, "AW": 20, "SPLIT": 0},
        doc="activation buffer: N_RD registered read ports, a write port per bank (one, or two with SPLIT > 0) "
            "arbitrated between PPU and DMA",
    ),
    "tony_conv_unit": ModuleSpec(
        params={"ROWS": 4, "COLS": 4, "A_BITS": 8, "W_BITS": 8, "ACC_BITS": 32, "WBUF_WORDS": 1024,
                "BBUF_WORDS": 64, "BIAS_BITS": 128, "GB_BITS": 56},
        requires=("tony_agu", "tony_os_array"),
        includes=("tony_isa.vh",),
        doc="CONV engine: address generator, weight/bias buffers, operand pipeline, array, tile descriptor FIFO",
    ),
    "tony_vec_unit": ModuleSpec(
        params={"COLS": 4, "A_BITS": 8, "ACC_BITS": 32},
        requires=("tony_agu",),
        includes=("tony_isa.vh",),
        doc="vector unit: POOL (max/sum), EWISE (shifted add) and table lookups (per-lane table memory) over COLS lanes",
    ),
    "tony_post": ModuleSpec(
        params={"COLS": 4, "A_BITS": 8, "ACC_BITS": 32, "ROUND_MODE": 0, "PER_CHANNEL": 0},
        requires=("tony_ppu",),
        includes=("tony_isa.vh",),
        doc="post-processing stage: CONV/vector row select, tony_ppu, activation write-back",
    ),
    "tony_row_io": ModuleSpec(
        params={"COLS": 4, "A_BITS": 8, "IN_BITS": 9, "OUT_BITS": 8},
        includes=("tony_isa.vh",),
        doc="rows of activation words to one element per cycle (serializer) and results back to words (packer)",
    ),
    "tony_accel": ModuleSpec(
        params={"ROWS": 4, "COLS": 4, "A_BITS": 8, "W_BITS": 8, "ACC_BITS": 32, "MEM_BITS": 64,
                "ABUF_WORDS": 1024, "WBUF_WORDS": 1024, "BBUF_WORDS": 64, "IMEM_WORDS": 256, "ROUND_MODE": 0,
                "PER_CHANNEL": 0, "ABUF_SPLIT": 0, "SMX_N": 0, "LN_N": 0},
        requires=("tony_controller", "tony_decoder", "tony_dma", "tony_conv_unit", "tony_vec_unit", "tony_post",
                  "tony_act_buf"),
        optional={"tony_row_io": ("SMX_N", "LN_N"), "tony_softmax": "SMX_N", "tony_layernorm": "LN_N"},
        structural=("SMX_N", "LN_N"),
        context=_accel_context,
        includes=("tony_isa.vh",),
        doc="the instruction-driven accelerator: wires controller, decoder, DMA, CONV engine, vector unit, "
            "post-processing and activation buffer",
    ),
    "tony_layernorm": ModuleSpec(
        params={"N_MAX": 1024, "IN_BITS": 8, "OUT_BITS": 8, "GAMMA_BITS": 16, "BETA_BITS": 40, "EPS_BITS": 32,
                "NORM_BITS_MAX": 16, "SHIFT_BITS": 7},
        requires=("tony_ppu",),
        doc="LayerNorm over a streamed row: exact sums, radix-4 digit-by-digit square root and radix-4 reciprocal, "
            "per-element normalize and gamma/beta (two tony_ppu) (tony.rtl.layernorm_unit)",
        context=_layernorm_context,
    ),
    "tony_axil_regs": ModuleSpec(
        params={"ADDR_BITS": 12, "ROWS": 4, "COLS": 4, "A_BITS": 8, "W_BITS": 8, "ACC_BITS": 32, "MEM_BITS": 64,
                "ROUND_MODE": 0, "PER_CHANNEL": 0, "ABUF_WORDS": 1024, "WBUF_WORDS": 1024, "BBUF_WORDS": 64,
                "IMEM_WORDS": 256, "AXI_DATA_BITS": 64, "AXI_ADDR_BITS": 32, "MAX_BURST": 16, "BUILD_ID": 0},
        doc="AXI4-Lite control/status registers and run state machine (docs/registers.md)",
    ),
    "tony_axi_master": ModuleSpec(
        params={"MEM_BITS": 64, "AXI_DATA_BITS": 64, "AXI_ADDR_BITS": 32, "AXI_ID_BITS": 1, "MAX_BURST": 16,
                "WFIFO_DEPTH": 32, "MAX_READS": 32},
        doc="AXI4 master bridge for the accelerator's memory port: INCR bursts, narrow transfers, error flags",
    ),
    "tony_axi_top": ModuleSpec(
        params={"ROWS": 4, "COLS": 4, "A_BITS": 8, "W_BITS": 8, "ACC_BITS": 32, "MEM_BITS": 64,
                "ABUF_WORDS": 1024, "WBUF_WORDS": 1024, "BBUF_WORDS": 64, "IMEM_WORDS": 256, "ROUND_MODE": 0,
                "PER_CHANNEL": 0, "ABUF_SPLIT": 0, "SMX_N": 0, "LN_N": 0, "AXIL_ADDR_BITS": 12, "AXI_DATA_BITS": 64, "AXI_ADDR_BITS": 32, "AXI_ID_BITS": 1,
                "MAX_BURST": 16, "WFIFO_DEPTH": 32, "MAX_READS": 32, "BUILD_ID": 0},
        requires=("tony_axil_regs", "tony_accel", "tony_axi_master"),
        structural=("SMX_N", "LN_N"),
        doc="tony_accel as an SoC IP block: AXI4-Lite registers (s_axil_*), AXI4 master (m_axi_*), irq_o",
    ),
    "tony_softmax": ModuleSpec(
        params={"MAX_N": 64, "IN_BITS": 8, "OUT_BITS": 8, "FRAC_BITS": 6, "TABLE_BITS": 15, "SHIFT_BITS": 6},
        baked=("FRAC_BITS", "TABLE_BITS"),
        context=_softmax_context,
        doc="softmax over rows of up to MAX_N elements, bit-exact with tony.ref.nonlinear.softmax: row max, "
            "base-2 exponent table, row sum, one division per row, a multiply and a rounding shift per element",
    ),
    "tony_sim_mem": ModuleSpec(
        params={"MEM_BITS": 64, "WORDS": 1024, "LATENCY": 2},
        doc="simulation only: the external memory the cycle model assumes (fixed read latency), loaded and "
            "dumped through $readmemh/$writememh files",
    ),
    "tony_sim_top": ModuleSpec(
        params={"ROWS": 4, "COLS": 4, "A_BITS": 8, "W_BITS": 8, "ACC_BITS": 32, "MEM_BITS": 64,
                "ABUF_WORDS": 1024, "WBUF_WORDS": 1024, "BBUF_WORDS": 64, "IMEM_WORDS": 256, "ROUND_MODE": 0,
                "PER_CHANNEL": 0, "ABUF_SPLIT": 0, "SMX_N": 0, "LN_N": 0, "MEM_WORDS": 1024, "MEM_LATENCY": 2, "N_INSTR": 256, "CLOCK": 2,
                "HALF_PERIOD": 5, "BURST": 4096},
        requires=("tony_accel", "tony_sim_mem"),
        structural=("SMX_N", "LN_N"),
        doc="simulation only: tony_accel with tony_sim_mem on its memory port, a trace of issue cycles, a run "
            "sequencer and its own clock",
    ),
}

ROUND_MODES = {"half_even": 0, "half_up": 1, "floor": 2}
"""Values of the tony_ppu ROUND_MODE parameter."""

def _bytecode_cache():
    """Compiled templates kept between processes ($TONY_CACHE_DIR or ~/.cache/tony, under jinja/):
    compiling the templates is most of the renderer's time. None where the folder can't be made."""
    base = Path(os.environ.get("TONY_CACHE_DIR") or Path.home() / ".cache" / "tony") / "jinja"
    try:
        base.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return jinja2.FileSystemBytecodeCache(str(base))


_env = jinja2.Environment(
    loader=jinja2.PackageLoader("tony.rtl", "templates"),
    undefined=jinja2.StrictUndefined,
    keep_trailing_newline=True,
    bytecode_cache=_bytecode_cache(),
)


def _isa_fields():
    from ..accel import isa

    return isa.FIELDS


_env.globals["F"] = _isa_fields()


AGU_FIELDS = ("ibase", "obase", "npix", "ow", "oh", "oy0", "sw", "sh", "ixs", "iys", "ix0", "iy0", "rjump",
              "sjump", "h", "w", "kh", "kw", "dh", "dw", "dhw", "lane0", "cstride", "klen", "period")
"""The compute fields tony_agu takes (as <field>_i ports, c_<field> in tony.accel.isa.FIELDS)."""


def _isa_globals() -> dict:
    from ..accel import isa

    ops = {n: getattr(isa, n) for n in ("END", "SYNC", "LOAD", "STORE", "CONV", "POOL", "EWISE", "SOFTMAX", "NORM",
                                         "B_ACT", "B_WGT", "B_BIAS", "B_IMEM", "B_TAB", "B_GB")}
    return {
        "ops": ops,
        "opnames": [isa.OPNAMES[k] for k in sorted(isa.OPNAMES)],
        "bufnames": [f"B_{isa.BUFNAMES[k].upper()}" for k in sorted(isa.BUFNAMES)],
        "flag_bits": {n: getattr(isa, n).bit_length() - 1 for n in ("F_A_SIGNED", "F_B_SIGNED", "F_HAS_B", "F_MAX",
                                                                          "F_DEPTHWISE", "F_TABLE", "F_MERGE")},
        "sync_bits": {n: getattr(isa, n).bit_length() - 1 for n in ("S_DMA", "S_STREAM", "S_COMPUTE")},
        "agu_fields": list(AGU_FIELDS),
        "used_bits": max(f.lo + f.bits for f in isa.FIELDS.values()),
        "INSTR_BITS": isa.INSTR_BITS,
        "AW": isa.ADDR_BITS,
    }


_env.globals.update(_isa_globals())
_env.globals["PPU_LATENCY"] = PPU_LATENCY


def list_modules() -> list[str]:
    """Names of the available Verilog modules (one template each)."""
    return sorted(MODULES)


def _spec(name: str) -> ModuleSpec:
    try:
        return MODULES[name]
    except KeyError:
        raise KeyError(f"no Verilog template {name!r}; available: {', '.join(list_modules())}") from None


def _header(name: str, prefix: str, shown: str) -> str:
    return (
        f"// {prefix}{name}.v: generated by Tony from tony/rtl/templates/{name}.v.j2\n"
        f"// parameters: {shown or '(none)'}" + (f"; module prefix: {prefix!r}" if prefix else "") + "\n"
        "// Do not edit: change the template (or the parameters) and render again."
    )


def render_include(name: str, *, prefix: str = "") -> str:
    """Render one generated include file (a key of HEADERS, e.g. "tony_isa.vh")."""
    if name not in HEADERS:
        raise KeyError(f"no include file {name!r}; available: {', '.join(sorted(HEADERS))}")
    header = (
        f"// {name}: generated by Tony from tony/rtl/templates/{name}.j2 and tony.accel.isa\n"
        "// Do not edit: change tony/accel/isa.py (or the template) and render again."
    )
    return _env.get_template(f"{name}.j2").render(header=header, prefix=prefix)


def render(template_name: str, *, prefix: str = "", **params: int) -> str:
    """Render one module. `params` override the HDL parameters' default values.

    `prefix` is put in front of every module name (this one and those it instantiates),
    so two differently configured accelerators can live in one design.
    """
    name = template_name.removesuffix(".v.j2").removesuffix(".v")
    spec = _spec(name)
    unknown = sorted(set(params) - set(spec.params))
    if unknown:
        raise KeyError(f"{name} has no parameter(s) {', '.join(unknown)}; it has {', '.join(spec.params)}")
    values = {**spec.params, **{k: int(v) for k, v in params.items()}}
    shown = ", ".join(f"{k}={v}" for k, v in values.items())
    header = _header(name, prefix, shown)
    extra = spec.context(values) if spec.context else {}
    return _env.get_template(f"{name}.v.j2").render(header=header, prefix=prefix, **values, **extra)


def _with_requirements(names: list[str], params: dict | None = None) -> list[str]:
    """`names` and the modules they instantiate, children first; an optional child only where its
    parameter (in `params`, else the parent's default) is not 0."""
    order: list[str] = []
    params = params or {}

    def visit(n: str) -> None:
        spec = _spec(n)
        for dep in spec.requires + tuple(d for d, k in spec.optional.items()
                                         if any(int(params.get(p, spec.params.get(p, 0)))
                                                for p in ((k,) if isinstance(k, str) else k))):
            visit(dep)
        if n not in order:
            order.append(n)

    for n in names:
        visit(n)
    return order


def render_to(directory: str | os.PathLike[str], names, *, prefix: str = "", **params: int) -> list[Path]:
    """Render `names` (a name or a list) and the modules they instantiate into `directory`.

    Each module named in `names` gets the parameters it declares (a parameter none of them
    declares is an error); modules pulled in only because they are instantiated keep their
    defaults, since the parent overrides their parameters. Returns the written paths: the
    generated include files the modules need first (*.vh, found through the directory as an
    include path), then the modules, instantiated ones before their parents.
    """
    if isinstance(names, str):
        names = [names]
    names = [n.removesuffix(".v.j2").removesuffix(".v") for n in names]
    order = _with_requirements(names, params)
    known = set().union(*(_spec(n).params for n in names))
    unknown = sorted(set(params) - known)
    if unknown:
        raise KeyError(f"no module among {', '.join(names)} has parameter(s) {', '.join(unknown)}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for inc in sorted({i for n in order for i in MODULES[n].includes}):
        path = out / inc
        path.write_text(render_include(inc, prefix=prefix))
        paths.append(path)
    for n in order:
        own = {k: v for k, v in params.items()
               if k in MODULES[n].params and (n in names or k in MODULES[n].structural)}
        path = out / f"{prefix}{n}.v"
        path.write_text(render(n, prefix=prefix, **own))
        paths.append(path)
    return paths


__all__ = ["AGU_FIELDS", "HEADERS", "MODULES", "ModuleSpec", "ROUND_MODES", "list_modules", "render", "render_include", "render_to"]
