"""Every Verilog template renders to lint-clean Verilog (`verilator --lint-only -Wall`)."""
from __future__ import annotations

import re

import pytest

from tony.rtl import MODULES, list_modules, render, render_to

# A couple of parameter sets per module: defaults, plus small/odd/wide corners.
PARAM_SETS = {
    "tony_mac": [{}, {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 12}],
    "tony_os_array": [{}, {"ROWS": 1, "COLS": 1}, {"ROWS": 3, "COLS": 5}],
    "tony_agu": [{}, {"ROWS": 1, "COLS": 8}, {"ROWS": 16, "COLS": 1}, {"ROWS": 5, "COLS": 12}],
    "tony_decoder": [{}],
    "tony_controller": [{}, {"HAS_SMX": 1, "HAS_NORM": 1, "GB_WORDS": 100}, {"ABUF_WORDS": 8192, "WBUF_WORDS": 1152, "BBUF_WORDS": 51, "IMEM_WORDS": 159},
                        {"ABUF_WORDS": 2, "WBUF_WORDS": 1, "BBUF_WORDS": 1, "IMEM_WORDS": 1},
                        {"ABUF_WORDS": 16384, "ABUF_SPLIT": 9216}, {"HAS_SMX": 1}],
    "tony_dma": [{}, {"MEM_BITS": 32, "GB_BITS": 56}, {"MEM_BITS": 32, "ACT_BITS": 24, "WGT_BITS": 24, "BIAS_BITS": 96},
                 {"ACT_BITS": 128, "WGT_BITS": 128, "BIAS_BITS": 512},
                 {"MEM_BITS": 64, "ACT_BITS": 96, "WGT_BITS": 96, "BIAS_BITS": 384}],
    "tony_act_buf": [{}, {"WORD_BITS": 8, "WORDS": 2, "N_RD": 1}, {"WORD_BITS": 96, "WORDS": 8192, "N_RD": 19},
                     {"WORDS": 1000, "N_RD": 4, "AW": 10}, {"WORDS": 16384, "N_RD": 9, "SPLIT": 9216},
                     {"WORD_BITS": 8, "WORDS": 3, "N_RD": 1, "SPLIT": 2}, {"WORDS": 1000, "N_RD": 4, "AW": 10, "SPLIT": 999}],
    "tony_conv_unit": [{}, {"ROWS": 1, "COLS": 3}, {"ROWS": 5, "COLS": 12, "WBUF_WORDS": 1152, "BBUF_WORDS": 51},
                       {"ROWS": 16, "COLS": 16}, {"ROWS": 2, "COLS": 7, "A_BITS": 4, "W_BITS": 4, "ACC_BITS": 16},
                       {"ROWS": 4, "COLS": 4, "BIAS_BITS": 4 * (32 + 40)}],
    "tony_vec_unit": [{}, {"COLS": 1}, {"COLS": 12}, {"COLS": 5, "A_BITS": 4, "ACC_BITS": 16}],
    "tony_post": [{}, {"COLS": 1, "ROUND_MODE": 1}, {"COLS": 12, "ROUND_MODE": 2}, {"COLS": 4, "PER_CHANNEL": 1},
                  {"COLS": 1, "PER_CHANNEL": 2, "ROUND_MODE": 1}, {"COLS": 12, "PER_CHANNEL": 2}],
    "tony_accel": [
        {},
        {"ROWS": 1, "COLS": 3, "MEM_BITS": 32, "ROUND_MODE": 1},
        {"ROWS": 8, "COLS": 8, "ABUF_WORDS": 8192, "WBUF_WORDS": 1152, "BBUF_WORDS": 51, "IMEM_WORDS": 159},
        {"ROWS": 16, "COLS": 16, "ROUND_MODE": 2},
        {"ROWS": 5, "COLS": 12, "MEM_BITS": 32},
        {"ROWS": 4, "COLS": 4, "PER_CHANNEL": 1},
        {"ROWS": 3, "COLS": 5, "MEM_BITS": 32, "PER_CHANNEL": 2},
        {"ROWS": 4, "COLS": 4, "ABUF_WORDS": 4096, "ABUF_SPLIT": 1200},
        {"ROWS": 4, "COLS": 4, "SMX_N": 40},
        {"ROWS": 1, "COLS": 3, "MEM_BITS": 32, "SMX_N": 1},
        {"ROWS": 16, "COLS": 16, "SMX_N": 1024},
        {"ROWS": 4, "COLS": 4, "LN_N": 24},
        {"ROWS": 1, "COLS": 3, "MEM_BITS": 32, "SMX_N": 5, "LN_N": 1},
        {"ROWS": 8, "COLS": 8, "SMX_N": 32, "LN_N": 64},
    ],
    "tony_row_io": [{}, {"COLS": 1}, {"COLS": 12, "A_BITS": 4, "IN_BITS": 5, "OUT_BITS": 3}],
    "tony_ppu": [
        {},
        {"LANES": 1, "ROUND_MODE": 1},
        {"LANES": 3, "ROUND_MODE": 2, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6, "MULT_BITS": 12},
        {"LANES": 8, "ACC_BITS": 24, "OUT_BITS": 16, "SHIFT_BITS": 8, "MULT_BITS": 16},
        {"LANES": 4, "PER_LANE": 1},
        {"LANES": 1, "PER_LANE": 1, "ROUND_MODE": 2, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6, "MULT_BITS": 12},
    ],
    "tony_layernorm": [{}, {"N_MAX": 1}, {"N_MAX": 3, "IN_BITS": 4, "OUT_BITS": 6, "EPS_BITS": 8},
                       {"N_MAX": 64, "NORM_BITS_MAX": 40, "BETA_BITS": 64, "SHIFT_BITS": 8},
                       {"N_MAX": 4096, "GAMMA_BITS": 8, "BETA_BITS": 24}],
    "tony_softmax": [{}, {"MAX_N": 1}, {"MAX_N": 300, "FRAC_BITS": 1, "TABLE_BITS": 8},
                     {"MAX_N": 130, "IN_BITS": 32, "OUT_BITS": 16, "FRAC_BITS": 8, "TABLE_BITS": 20},
                     {"MAX_N": 2, "IN_BITS": 2, "OUT_BITS": 1, "FRAC_BITS": 12, "TABLE_BITS": 24, "SHIFT_BITS": 8}],
    "tony_axil_regs": [{}, {"ADDR_BITS": 8, "ROWS": 16, "COLS": 16, "MEM_BITS": 32, "MAX_BURST": 256}],
    "tony_axi_master": [
        {},
        {"MEM_BITS": 32, "AXI_DATA_BITS": 128, "MAX_BURST": 256, "WFIFO_DEPTH": 512, "AXI_ADDR_BITS": 40},
        {"MEM_BITS": 64, "AXI_DATA_BITS": 128, "MAX_BURST": 1, "WFIFO_DEPTH": 2, "MAX_READS": 2, "AXI_ID_BITS": 4},
    ],
    "tony_axi_top": [{}, {"ROWS": 2, "COLS": 8, "MEM_BITS": 32, "AXI_DATA_BITS": 128, "AXI_ADDR_BITS": 40},
                     {"PER_CHANNEL": 2}, {"SMX_N": 64}, {"LN_N": 64}],
    "tony_sim_mem": [{}, {"LATENCY": 1, "WORDS": 1}, {"MEM_BITS": 32, "LATENCY": 5, "WORDS": 70000}],
    "tony_sim_top": [{}, {"ROWS": 3, "COLS": 5, "MEM_BITS": 32, "MEM_LATENCY": 1, "IMEM_WORDS": 1, "SMX_N": 7, "LN_N": 13},
                     {"ROWS": 8, "COLS": 8, "MEM_LATENCY": 3, "MEM_WORDS": 100000, "ABUF_WORDS": 8192}],
}


def test_every_template_has_lint_cases():
    assert set(PARAM_SETS) == set(list_modules())


def test_rendered_header_names_template_and_parameters():
    text = render("tony_ppu", LANES=3)
    first = text.splitlines()[:2]
    assert "tony/rtl/templates/tony_ppu.v.j2" in first[0]
    assert "LANES=3" in first[1] and "ROUND_MODE=0" in first[1]
    assert "parameter integer LANES      = 3" in text


def test_render_rejects_unknown_parameter():
    with pytest.raises(KeyError, match="ROWS"):
        render("tony_mac", ROWS=4)


def test_render_to_adds_instantiated_modules(tmp_path):
    paths = render_to(tmp_path, ["tony_os_array"], ROWS=2)
    assert [p.name for p in paths] == ["tony_mac.v", "tony_os_array.v"]
    paths = render_to(tmp_path / "conv", ["tony_conv_unit"], ROWS=2)
    assert [p.name for p in paths] == ["tony_isa.vh", "tony_agu.v", "tony_mac.v", "tony_os_array.v", "tony_conv_unit.v"]


def test_isa_include_matches_isa():
    """tony_isa.vh carries every field of tony.accel.isa, and only the decoder slices instructions."""
    import re

    from tony.accel import isa
    from tony.rtl import render_include

    text = render_include("tony_isa.vh")
    for name, f in isa.FIELDS.items():
        assert f"`define TONY_ISA_{name.upper()}_LO {f.lo}\n" in text
        assert f"`define TONY_ISA_{name.upper()}_W {f.bits}\n" in text
    for name in list_modules():
        if name == "tony_decoder":
            continue
        body = render(name)
        assert not re.search(r"TONY_ISA_\w+_LO\b", body), f"{name} uses a field position"
        assert not re.search(r"ir_q\[|instr_i\[", body), f"{name} slices an instruction"


@pytest.mark.sim
@pytest.mark.parametrize(
    "module,params",
    [(m, p) for m in sorted(PARAM_SETS) for p in PARAM_SETS[m]],
    ids=lambda v: v if isinstance(v, str) else "_".join(f"{k}{x}" for k, x in v.items()) or "defaults",
)
def test_template_lint_clean(module, params, tmp_path):
    from tony.sim import lint

    # once with the parameters baked into the rendered defaults, once overridden with -G (those
    # a module fixes when it is rendered, such as a ROM's size or which units it instantiates, are
    # baked both times)
    sources = render_to(tmp_path / "baked", [module], **params)
    lint(sources, module)
    fixed = MODULES[module].baked + MODULES[module].structural
    baked = {k: v for k, v in params.items() if k in fixed}
    sources = render_to(tmp_path / "plain", [module], **baked)
    lint(sources, module, {k: v for k, v in params.items() if k not in baked})


@pytest.mark.sim
def test_prefixed_modules_lint_clean(tmp_path):
    from tony.sim import lint

    sources = render_to(tmp_path, ["tony_os_array", "tony_ppu"], prefix="acc0_")
    assert {p.name for p in sources} == {"acc0_tony_mac.v", "acc0_tony_os_array.v", "acc0_tony_ppu.v"}
    lint(sources[:2], "acc0_tony_os_array")
    lint(sources[2:], "acc0_tony_ppu")
    # two differently configured accelerators in one design share the ISA header
    acc0 = render_to(tmp_path / "two", ["tony_accel"], prefix="acc0_", ROWS=2, COLS=3)
    acc1 = render_to(tmp_path / "two", ["tony_accel"], prefix="acc1_", ROWS=4, COLS=4)
    assert acc0[0].name == acc1[0].name == "tony_isa.vh"
    lint(acc0, "acc0_tony_accel")
    lint(acc0 + acc1[1:], "acc1_tony_accel")


def test_module_specs_are_consistent():
    for name, spec in MODULES.items():
        for dep in spec.requires:
            assert dep in MODULES, (name, dep)
        assert set(spec.baked) <= set(spec.params), name


def test_baked_parameters_are_localparams():
    """A parameter fixed at render time is a localparam with the rendered value (no -G reaches it);
    the softmax ROM is the reference's table for that F and P."""
    from tony.ref.nonlinear import softmax_table

    text = render("tony_softmax", FRAC_BITS=3, TABLE_BITS=10)
    assert "localparam integer FRAC_BITS  = 3;" in text and "localparam integer TABLE_BITS = 10;" in text
    assert "parameter integer FRAC_BITS" not in text
    rom = [int(v) for v in re.findall(r"3'd\d+: t6 = 11'd(\d+);", text)]
    assert rom == [int(v) for v in softmax_table(3, 10)]


@pytest.mark.parametrize("params,what", [({"FRAC_BITS": 13}, "FRAC_BITS=13"), ({"TABLE_BITS": 7}, "TABLE_BITS=7"),
                                         ({"OUT_BITS": 17}, "OUT_BITS=17"), ({"IN_BITS": 47}, "IN_BITS=47"),
                                         ({"MAX_N": 0}, "MAX_N=0")])
def test_softmax_rejects_parameters_it_cannot_take(params, what):
    with pytest.raises(ValueError, match=what):
        render("tony_softmax", **params)


def test_the_softmax_unit_is_rendered_only_where_smx_n_asks_for_it(tmp_path):
    """SMX_N = 0 (a model without a device Softmax): tony_accel and its files as without the unit;
    SMX_N > 0: tony_row_io and tony_softmax rendered and instantiated, also through tony_sim_top and
    tony_axi_top, which hand SMX_N down to the tony_accel they pull in."""
    names = {p.name for p in render_to(tmp_path / "none", ["tony_accel"])}
    assert "tony_softmax.v" not in names and "tony_row_io.v" not in names
    assert "tony_softmax #(" not in (tmp_path / "none" / "tony_accel.v").read_text()
    for top in ("tony_accel", "tony_sim_top", "tony_axi_top"):
        paths = render_to(tmp_path / top, [top], SMX_N=24)
        assert {"tony_softmax.v", "tony_row_io.v"} <= {p.name for p in paths}
        assert "tony_softmax #(" in (tmp_path / top / "tony_accel.v").read_text()


def test_the_layernorm_unit_is_rendered_only_where_ln_n_asks_for_it(tmp_path):
    """LN_N = 0 (a model without a device LayerNorm): no tony_layernorm, no tony_row_io; LN_N > 0:
    both rendered and instantiated (and tony_row_io once, beside the Softmax unit's, with SMX_N > 0
    too), also through tony_sim_top and tony_axi_top."""
    names = {p.name for p in render_to(tmp_path / "none", ["tony_accel"], SMX_N=8)}
    assert "tony_layernorm.v" not in names and "tony_layernorm #(" not in (tmp_path / "none" / "tony_accel.v").read_text()
    for top in ("tony_accel", "tony_sim_top", "tony_axi_top"):
        paths = [p.name for p in render_to(tmp_path / top, [top], LN_N=24, SMX_N=8)]
        assert {"tony_layernorm.v", "tony_row_io.v", "tony_softmax.v"} <= set(paths)
        assert paths.count("tony_row_io.v") == 1
        text = (tmp_path / top / "tony_accel.v").read_text()
        assert "tony_layernorm #(" in text and text.count("tony_row_io #(") == 2
