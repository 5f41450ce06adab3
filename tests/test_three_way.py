"""The same inputs through RTL simulation, HLS C simulation and the reference: all three equal."""
import numpy as np
import pytest

from tony.api import load_ir, normalize_inputs
from tony.ref import arith, execute

pytestmark = pytest.mark.sim


def test_rtl_hls_and_reference_agree_on_digits_mlp(tmp_path, digits_mlp):
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.hls.backend import run_csim
    from tony.sim.accel import simulate

    model = digits_mlp / "model.onnx"
    x = np.load(digits_mlp / "inputs.npy")[200:221]
    compile_model(model, tmp_path / "rtl", config=AccelConfig(3, 4), inputs=x)
    rep = simulate(tmp_path / "rtl", progress=False)
    compile_model(model, tmp_path / "hls", backend="hls", inputs=x)
    hls = run_csim(tmp_path / "hls", x)[0]

    g = load_ir(model, requant="pow2")
    feeds, _ = normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    ref_int, ref_out = env["logits_q"], env["logits"]
    rtl_int = np.load(tmp_path / "rtl" / "sim" / "hw_logits_q.npy")
    t = g.tensors["logits_q"]

    assert rep["bit_exact"]
    assert np.array_equal(rtl_int, ref_int)
    assert np.array_equal(hls.reshape(ref_out.shape), ref_out)
    assert np.array_equal(arith.dequantize(rtl_int, t.scale, t.zero_point), hls.reshape(ref_out.shape))
