"""Per-channel weight scales on the accelerator and in the HLS back end.

A CNN with a residual Add (the bundled digits-cnn) quantized by onnxruntime's own
`quantize_static(per_channel=True)` to QDQ (int8 symmetric activations: what the accelerator
takes) runs in multiplier mode with a multiplier and a shift per output channel; the same model
snapped to powers of two (tony.quant.snap) runs in pow2 mode with a shift per output channel.
Golden values: onnxruntime's unoptimized Q/DQ path for the reference, the reference for the
instruction-level model, Verilator and the HLS C simulation.
"""
import numpy as np
import onnx
import pytest
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from _ort_helpers import calibration_reader, ort_run
from tony import ir
from tony.accel.compiler import compile_program, per_channel_need, run_partitioned
from tony.accel.program import AccelConfig
from tony.api import load_ir, run_reference
from tony.compiler import accel_partition, compile_model
from tony.errors import UnsupportedError
from tony.ref import execute

MODES = {"mult": "multiplier", "pow2": "pow2"}


@pytest.fixture(scope="module")
def pc_models(tmp_path_factory):
    from tony.models import build_example
    from tony.quant.snap import snap_pow2

    d = tmp_path_factory.mktemp("per_channel")
    build_example("digits-cnn", d / "digits-cnn")
    calib = np.load(d / "digits-cnn" / "calib.npy")[:64]
    x = np.load(d / "digits-cnn" / "inputs.npy")[:100]          # [N, 1, 1, 8, 8]: one sample per feed
    quantize_static(str(d / "digits-cnn" / "float.onnx"), str(d / "mult.onnx"),
                    calibration_reader(calib, add_batch_axis=False), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                    extra_options={"ActivationSymmetric": True})
    snapped, changed = snap_pow2(onnx.load(d / "mult.onnx"))
    assert changed
    onnx.save(snapped, d / "pow2.onnx")
    return {"mult": d / "mult.onnx", "pow2": d / "pow2.onnx"}, x


def _graph(pc_models, mode):
    paths, x = pc_models
    return load_ir(paths[mode], requant=MODES[mode]), x.reshape(len(x), 1, 8, 8)


@pytest.mark.parametrize("mode", list(MODES))
def test_reference_equals_onnxruntime_per_channel(pc_models, mode):
    """onnxruntime's unoptimized Q/DQ path (the same on every CPU), element for element"""
    paths, x = pc_models
    got = ort_run(str(paths[mode]), list(x))[0]
    ref = run_reference(paths[mode], x, requant=MODES[mode])[0].reshape(got.shape)
    assert np.array_equal(ref, got), f"{int((ref != got).sum())} of {ref.size} elements differ"


@pytest.mark.parametrize("mode", list(MODES))
def test_weights_are_requantized_per_channel(pc_models, mode):
    g, _ = _graph(pc_models, mode)
    macs = [op for op in g.ops if isinstance(op, (ir.Conv, ir.Dense))]
    assert len(macs) == 4 and all(op.requant.per_channel for op in macs)
    assert per_channel_need(g) == {"mult": "mult", "pow2": "shift"}[mode]
    if mode == "pow2":
        assert all(op.requant.is_pow2 for op in macs)
        # the shifts differ between channels (else a per-tensor shift would do)
        assert any(len(set(op.requant.shift)) > 1 for op in macs)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("cfg", [AccelConfig(4, 4), AccelConfig(3, 5, mem_bits=32)], ids=["4x4", "3x5-mem32"])
def test_instruction_model_equals_reference(pc_models, mode, cfg):
    """every MAC layer on the device; the instruction-level model (per-lane scales read back from
    the memory image's bias words) equals the reference on every tensor it computes"""
    g, x = _graph(pc_models, mode)
    x = x[:6]
    p = accel_partition(g, cfg)
    on_device = {op.outputs[0] for s in p.segments if s.device for op in s.ops}
    assert all(op.outputs[0] in on_device for op in g.ops if isinstance(op, (ir.Conv, ir.Dense)))
    env, cycles = run_partitioned(g, cfg, {g.inputs[0]: x}, p, batch=2)
    want = execute(g, {g.inputs[0]: x}, keep_all=True)
    computed = [n for s in p.segments if s.device for n in s.outputs]
    assert computed and cycles > 0
    for n in computed:
        assert np.array_equal(np.asarray(env[n]), np.asarray(want[n])), n


def test_per_tensor_layers_in_a_per_channel_build(pc_models):
    """A per-tensor model in an accelerator built with mults per lane: its CONVs carry their own
    mult (never 0), the lanes' values are ignored, the outputs are the reference's; only the
    bias LOADs are longer. Sized to the model, the build has no per-channel scales at all."""
    from tony.accel import model
    from tony.accel.layout import input_beats, read_outputs

    paths, x = pc_models
    g = load_ir(paths["mult"].parent / "digits-cnn" / "model.onnx", requant="pow2")
    x = x[:1].reshape(1, 1, 8, 8)
    feeds = {g.inputs[0]: x}
    assert per_channel_need(g) == "none"
    auto = compile_program(g, AccelConfig(4, 4))
    assert auto.cfg.per_channel == "none" and auto.cfg.hdl_params()["PER_CHANNEL"] == 0
    plain = compile_program(g, AccelConfig(4, 4, per_channel="none"))
    assert plain.image == auto.image and model.cycles(plain).total == model.cycles(auto).total
    wide = compile_program(g, AccelConfig(4, 4, per_channel="mult"))
    assert (wide.cfg.bias_beats, plain.cfg.bias_beats) == (5, 2)   # 4 x 72 bits, 4 x 32 bits in 64-bit beats
    env = execute(g, feeds, keep_all=True)
    for prog in (plain, wide):
        got = read_outputs(prog, model.run(prog, input_beats(prog, {n: env[n] for n in prog.inputs})))
        for n, y in got.items():
            assert np.array_equal(y, env[n]), n


def test_accelerator_without_per_channel_scales_runs_them_on_the_host(pc_models, tmp_path):
    g, _ = _graph(pc_models, "mult")
    for cfg, why in [(AccelConfig(4, 4, per_channel="none"), "no per-channel scales"),
                     (AccelConfig(4, 4, per_channel="shift"), "per-channel multipliers")]:
        p = accel_partition(g, cfg)
        convs = [pl.reason for pl in p.placement if isinstance(pl.op, (ir.Conv, ir.Dense)) and not pl.device]
        assert len(convs) == 4 and all(why in r for r in convs), convs
    gp, _ = _graph(pc_models, "pow2")
    p = accel_partition(gp, AccelConfig(4, 4, per_channel="shift"))
    assert all(pl.device for pl in p.placement if isinstance(pl.op, (ir.Conv, ir.Dense)))
    paths, x = pc_models
    with pytest.raises(UnsupportedError, match="no per-channel scales.*--device-only"):
        compile_model(paths["mult"], tmp_path / "b", config=AccelConfig(4, 4, per_channel="none"),
                      requant="multiplier", inputs=x[:1].reshape(1, 1, 8, 8), device_only=True)


@pytest.mark.sim
@pytest.mark.parametrize("mode,arr", [("mult", (4, 4)), pytest.param("pow2", (3, 5), marks=pytest.mark.slow)],
                         ids=["mult-4x4", "pow2-3x5"])
def test_per_channel_cnn_on_verilator(pc_models, tmp_path, mode, arr):
    """bit-exact against the reference, cycles equal to the cycle model's, per run and per layer"""
    from tony.sim.accel import simulate

    paths, x = pc_models
    out = tmp_path / f"{mode}_{arr[0]}x{arr[1]}"
    m = compile_model(paths[mode], out, config=AccelConfig(*arr), requant=MODES[mode],
                      inputs=x[:3].reshape(3, 1, 8, 8))
    assert m["accel"]["per_channel"] == {"mult": "mult", "pow2": "shift"}[mode]
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["samples"] == 3 and rep["compared"] > 0
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert all(l["cycles"] == l["predicted"] for l in rep["layers"])
    assert sum(l["op"] in ("conv", "dense") for l in rep["layers"]) == 4


@pytest.mark.sim
@pytest.mark.slow
def test_per_channel_cnn_through_axi(pc_models, tmp_path):
    """tony_axi_top of a per-channel build carries PER_CHANNEL: bit-exact under AXI stalls"""
    from tony.sim.accel import simulate

    paths, x = pc_models
    out = tmp_path / "b"
    compile_model(paths["mult"], out, config=AccelConfig(4, 4), requant="multiplier", inputs=x[:2].reshape(2, 1, 8, 8))
    tops = sorted(out.glob("seg*/rtl_axi/tony_axi_top.v"))
    assert tops and all("PER_CHANNEL=2" in t.read_text().splitlines()[1] for t in tops)
    rep = simulate(out, axi_stall=0.3, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]


@pytest.mark.parametrize("mode", list(MODES))
def test_per_channel_cnn_hls_csim_equals_reference(pc_models, tmp_path, mode):
    import tony

    paths, x = pc_models
    x = x[:8].reshape(8, 1, 8, 8)
    m = tony.compile(paths[mode], backend="hls", output_dir=tmp_path / "b", requant=MODES[mode], samples=6)
    assert m.csim()["bit_exact"]
    want = run_reference(paths[mode], x, requant=MODES[mode])
    assert all(np.array_equal(a, b) for a, b in zip(m.predict(x), want))


def test_overlay_with_per_channel_mults_and_a_small_bias_buffer(pc_models, tmp_path):
    """An overlay fixes per_channel in HW.toml: with "mult" and a 2-word bias buffer (windows of
    bias words reloaded between CONVs, each word 4 x 72 bits) the model runs its MAC layers on the
    device, bit-exact in the instruction-level model; a value other than none/shift/mult is
    refused in one line."""
    from tony.compiler import compile_model
    from tony.errors import InputError
    from tony.hw import from_toml, open_overlay, render_overlay

    paths, x = pc_models
    toml = tmp_path / "pc.toml"
    toml.write_text('rows = 4\ncols = 4\nabuf_words = 512\nwbuf_words = 256\nbbuf_words = 2\nimem_words = 512\n'
                    'per_channel = "mult"\n')
    ov = from_toml(toml)
    assert ov.cfg.per_channel == "mult" and ov.hdl_params()["PER_CHANNEL"] == 2
    render_overlay(ov, tmp_path / "hw")
    assert open_overlay(tmp_path / "hw").overlay.cfg.per_channel == "mult"
    x1 = x[:2].reshape(2, 1, 8, 8)
    m = compile_model(paths["mult"], tmp_path / "b", hw=tmp_path / "hw", requant="multiplier", inputs=x1)
    assert m["accel"]["per_channel"] == "mult"
    g = load_ir(paths["mult"], requant="multiplier")
    cfg = ov.cfg
    p = accel_partition(g, cfg)
    assert all(pl.device for pl in p.placement if isinstance(pl.op, (ir.Conv, ir.Dense)))
    env, _ = run_partitioned(g, cfg, {g.inputs[0]: x1}, p)
    want = execute(g, {g.inputs[0]: x1})
    assert all(np.array_equal(np.asarray(env[n]), np.asarray(want[n])) for n in g.outputs)
    toml.write_text(toml.read_text().replace('"mult"', '"per-lane"'))
    with pytest.raises(InputError, match="per_channel = 'per-lane'"):
        from_toml(toml)
    plain = tmp_path / "plain.toml"
    plain.write_text('preset = "ecp5-85k"\n')
    assert from_toml(plain).cfg.per_channel == "none"
