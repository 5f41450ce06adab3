"""Every Verilog template renders to lint-clean Verilog (`verilator --lint-only -Wall`)."""
from __future__ import annotations

import pytest

from tony.rtl import MODULES, list_modules, render, render_to

# A couple of parameter sets per module: defaults, plus small/odd/wide corners.
PARAM_SETS = {
    "tony_pe": [{}, {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 12}, {"A_BITS": 17, "W_BITS": 16, "ACC_BITS": 48}],
    "tony_systolic_array": [
        {},
        {"ROWS": 1, "COLS": 1},
        {"ROWS": 4, "COLS": 3},
        {"ROWS": 2, "COLS": 7, "A_BITS": 4, "W_BITS": 4, "ACC_BITS": 16},
        {"ROWS": 16, "COLS": 16},
    ],
    "tony_core": [{}, {"ROWS": 2, "COLS": 3, "ROUND_MODE": 2}, {"ROWS": 1, "COLS": 1}],
    "tony_mac": [{}, {"A_BITS": 5, "W_BITS": 4, "ACC_BITS": 12}],
    "tony_os_array": [{}, {"ROWS": 1, "COLS": 1}, {"ROWS": 3, "COLS": 5}],
    "tony_agu": [{}, {"ROWS": 1, "COLS": 8}, {"ROWS": 16, "COLS": 1}, {"ROWS": 5, "COLS": 12}],
    "tony_accel": [
        {},
        {"ROWS": 1, "COLS": 3, "MEM_BITS": 32, "ROUND_MODE": 1},
        {"ROWS": 8, "COLS": 8, "ABUF_WORDS": 8192, "WBUF_WORDS": 1152, "BBUF_WORDS": 51, "IMEM_WORDS": 159},
        {"ROWS": 16, "COLS": 16, "ROUND_MODE": 2},
        {"ROWS": 5, "COLS": 12, "MEM_BITS": 32},
    ],
    "tony_ppu": [
        {},
        {"LANES": 1, "ROUND_MODE": 1},
        {"LANES": 3, "ROUND_MODE": 2, "ACC_BITS": 20, "OUT_BITS": 6, "SHIFT_BITS": 6, "MULT_BITS": 12},
        {"LANES": 8, "ACC_BITS": 24, "OUT_BITS": 16, "SHIFT_BITS": 8, "MULT_BITS": 16},
    ],
    "tony_axil_regs": [{}, {"ADDR_BITS": 8, "ROWS": 16, "COLS": 16, "MEM_BITS": 32, "MAX_BURST": 256}],
    "tony_axi_master": [
        {},
        {"MEM_BITS": 32, "AXI_DATA_BITS": 128, "MAX_BURST": 256, "WFIFO_DEPTH": 512, "AXI_ADDR_BITS": 40},
        {"MEM_BITS": 64, "AXI_DATA_BITS": 128, "MAX_BURST": 1, "WFIFO_DEPTH": 2, "MAX_READS": 2, "AXI_ID_BITS": 4},
    ],
    "tony_axi_top": [{}, {"ROWS": 2, "COLS": 8, "MEM_BITS": 32, "AXI_DATA_BITS": 128, "AXI_ADDR_BITS": 40}],
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
        render("tony_pe", ROWS=4)


def test_render_to_adds_instantiated_modules(tmp_path):
    paths = render_to(tmp_path, ["tony_systolic_array"], ROWS=2)
    assert [p.name for p in paths] == ["tony_pe.v", "tony_systolic_array.v"]


@pytest.mark.sim
@pytest.mark.parametrize(
    "module,params",
    [(m, p) for m in sorted(PARAM_SETS) for p in PARAM_SETS[m]],
    ids=lambda v: v if isinstance(v, str) else "_".join(f"{k}{x}" for k, x in v.items()) or "defaults",
)
def test_template_lint_clean(module, params, tmp_path):
    from tony.sim import lint

    # once with the parameters baked into the rendered defaults, once overridden with -G
    sources = render_to(tmp_path / "baked", [module], **params)
    lint(sources, module)
    sources = render_to(tmp_path / "plain", [module])
    lint(sources, module, params)


@pytest.mark.sim
def test_prefixed_modules_lint_clean(tmp_path):
    from tony.sim import lint

    sources = render_to(tmp_path, ["tony_systolic_array", "tony_ppu"], prefix="acc0_")
    assert {p.name for p in sources} == {"acc0_tony_pe.v", "acc0_tony_systolic_array.v", "acc0_tony_ppu.v"}
    lint(sources[:2], "acc0_tony_systolic_array")
    lint(sources[2:], "acc0_tony_ppu")


def test_module_specs_are_consistent():
    for name, spec in MODULES.items():
        for dep in spec.requires:
            assert dep in MODULES, (name, dep)
