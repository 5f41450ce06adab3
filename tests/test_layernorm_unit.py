"""tony.rtl.layernorm_unit: the LayerNorm unit's port values for a spec and what it refuses.
(The unit's arithmetic and timing are held to the kernel and to the cycle functions by the cocotb
bench, testbench/test_layernorm.py.)"""
from __future__ import annotations

import pytest

from tony.errors import UnsupportedError
from tony.ref.nonlinear import layernorm_spec
from tony.rtl import MODULES, render_to
from tony.rtl.layernorm_unit import DEFAULTS, cycles_per_row, latency, port_values


def test_port_values_carry_the_spec():
    spec = layernorm_spec(48, -4, -5, gamma=[0.5 + i / 48 for i in range(48)], beta=[i / 96 - 0.25 for i in range(48)])
    ports = port_values(spec)
    assert (ports["n_i"], ports["eps_i"], ports["sqrt_bits_i"], ports["norm_bits_i"]) == \
        (48, spec.eps_int, spec.sqrt_bits, spec.norm_bits)
    assert (ports["shift_i"], ports["lo_i"], ports["hi_i"]) == (spec.shift, -128, 127)
    assert ports["gamma"] == list(spec.gamma) and ports["beta"] == list(spec.beta)


@pytest.mark.parametrize("spec_args,params,what", [
    ((100, -4, -5), {"N_MAX": 64}, "n = 100"),
    ((16, -4, -5), {"NORM_BITS_MAX": 8}, "norm_bits = 16"),
    ((16, -4, -5), {"OUT_BITS": 4}, "lo = -128"),
    ((16, -4, -5), {"GAMMA_BITS": 8}, "gamma[0] = 32767"),
    ((16, -4, -5), {"BETA_BITS": 8}, "beta[0] = "),
])
def test_port_values_refuse_what_the_unit_cannot_hold(spec_args, params, what):
    beta = [0.5] * spec_args[0]
    with pytest.raises(UnsupportedError) as e:
        port_values(layernorm_spec(*spec_args, beta=beta), **params)
    text = str(e.value)
    assert what in text and "tony_layernorm" in text and "\n" not in text


def test_port_values_refuse_a_square_root_argument_past_2_62():
    spec = layernorm_spec(16, -4, -5, in_bits=4)  # A chosen for 4-bit inputs
    port_values(spec, IN_BITS=4)
    with pytest.raises(UnsupportedError, match="2\\^62"):
        port_values(spec, IN_BITS=12)


def test_port_values_reject_unknown_parameters():
    with pytest.raises(KeyError, match="ROWS"):
        port_values(layernorm_spec(4, -4, -5), ROWS=4)


def test_unit_is_registered_with_its_ppus(tmp_path):
    assert DEFAULTS is MODULES["tony_layernorm"].params
    paths = render_to(tmp_path, "tony_layernorm", N_MAX=32)
    assert [p.name for p in paths] == ["tony_ppu.v", "tony_layernorm.v"]
    assert "parameter integer N_MAX         = 32" in paths[1].read_text()


def test_cycle_functions_grow_by_one_and_two_per_element():
    """Per row, one cycle per element in and one out; the rest does not depend on n."""
    for n in (1, 2, 64, 1024):
        assert latency(n + 1) - latency(n) == 1
        assert cycles_per_row(n + 1) - cycles_per_row(n) == 2
        assert cycles_per_row(n) == n + latency(n)


def test_gamma_beta_words_hold_gamma_low_and_beta_above_and_read_back():
    """LOAD gb's words (docs/isa.md, 'LayerNorm'): gamma two's complement in the low GAMMA_BITS,
    beta in the BETA_BITS above; gb_unpack reads them back, the extremes of both widths included."""
    from tony.rtl.layernorm_unit import gb_bits, gb_unpack, gb_words

    gb, bb = DEFAULTS["GAMMA_BITS"], DEFAULTS["BETA_BITS"]
    assert gb_bits() == gb + bb
    assert gb_words([-1, 2], [1, -2]) == [(1 << gb) - 1 + (1 << gb), 2 + (((1 << bb) - 2) << gb)]
    gamma = [-(1 << (gb - 1)), (1 << (gb - 1)) - 1, 0, -5, 12345]
    beta = [(1 << (bb - 1)) - 1, -(1 << (bb - 1)), -1, 0, 987654321]
    words = gb_words(gamma, beta)
    assert all(0 <= w < 1 << gb_bits() for w in words)
    assert gb_unpack(words) == (gamma, beta)
