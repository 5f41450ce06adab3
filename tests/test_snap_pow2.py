"""`tony quantize --snap-pow2` turns an onnxruntime-quantized model into a pow2 model, and
`tony compile` in pow2 mode refuses the unsnapped one, pointing to both ways out."""
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

from _ort_helpers import calibration_reader
from tony.api import load_ir, run_reference
from tony.ir.types import pow2_exponent
from tony.models.digits import digits_data, mlp_onnx, train_mlp
from tony.quant.snap import ceil_pow2


@pytest.fixture(scope="module")
def ort_mlp(tmp_path_factory):
    d = tmp_path_factory.mktemp("snap")
    layers, _ = train_mlp((32,), seed=0)
    xtr, _, xte, yte = digits_data(0)
    onnx.save(mlp_onnx(layers), d / "float.onnx")
    quantize_static(str(d / "float.onnx"), str(d / "q.onnx"), calibration_reader(xtr[:200]), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})
    np.save(d / "x.npy", xte[:, None, :])
    np.save(d / "y.npy", yte)
    return d


def test_ceil_pow2_is_the_next_power_of_two_up():
    s = np.array([0.0066, 0.5, 0.25000001, 3.0, 2.0**-20])
    assert ceil_pow2(s).tolist() == [2.0**-7, 0.5, 0.5, 4.0, 2.0**-20]


def test_compile_pow2_refuses_non_pow2_model_with_both_remedies(ort_mlp, tony_cli, tmp_path):
    r = tony_cli("compile", ort_mlp / "q.onnx", "-o", tmp_path / "build")
    assert r.returncode == 1
    assert "--requant multiplier" in r.stderr and "tony quantize --snap-pow2" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_snap_pow2_cli_writes_a_pow2_model_and_reports(ort_mlp, tony_cli):
    out = ort_mlp / "snapped.onnx"
    r = tony_cli("quantize", "--snap-pow2", ort_mlp / "q.onnx", "-o", out,
                 "--inputs", ort_mlp / "x.npy", "--labels", ort_mlp / "y.npy")
    assert r.returncode == 0, r.stderr
    print(r.stdout)
    assert "outputs changed:" in r.stdout and "accuracy:" in r.stdout
    m = onnx.load(out)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    scales = [inits[n.input[1]] for n in m.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert scales and all(pow2_exponent(float(v)) is not None for s in scales for v in np.ravel(s))
    g = load_ir(out, requant="pow2")          # now accepted in pow2 mode
    assert all(op.requant.is_pow2 for op in g.ops if getattr(op, "requant", None) is not None)
    x, y = np.load(ort_mlp / "x.npy"), np.load(ort_mlp / "y.npy")
    acc = (run_reference(out, x)[0].reshape(len(y), -1).argmax(1) == y).mean()
    assert acc > 0.9


def test_quantize_without_calib_or_snap_is_an_input_error(ort_mlp, tony_cli, tmp_path):
    r = tony_cli("quantize", ort_mlp / "q.onnx", "-o", tmp_path / "o.onnx")
    assert r.returncode == 1 and "--calib" in r.stderr
