"""The onnx wheel's light models (squeezenet 1.1, inception v1, shufflenet, densenet121) with
seeded weights (tony.models.light), quantized by Tony's quantizer to pow2 QDQ: the reference equals
onnxruntime's unoptimized Q/DQ path; the partitioned graph (device segments compiled for the
accelerator and executed by the instruction-level model, host segments in the reference) equals
the reference; `tony ir` and `tony compile` on the float and quantized files succeed or refuse in
one line. Reduced input sizes in the default suite, 224 x 224 on a 16x16 array behind slow."""
from dataclasses import replace
from fractions import Fraction

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from tony import ir
from tony.accel.compiler import run_partitioned
from tony.accel.program import AccelConfig
from tony.api import load_ir
from tony.compiler import accel_partition
from tony.ir.partition import report
from tony.models.light import light_model
from tony.quant.qdq import quantize_static
from tony.ref import execute
from tony.ref.feeds import normalize_inputs

# the smallest input at which every pool still has a window (inception's stride-2 pools without
# padding need 64)
SMALL = {"squeezenet": 32, "inception_v1": 64, "shufflenet": 32, "densenet121": 32}


def _quantized(name, size, seed=0):
    m = light_model(name, size=size, seed=seed)
    rng = np.random.default_rng(seed + 1)
    x = rng.standard_normal((3, 1, 3, size, size)).astype(np.float32)
    q = quantize_static(m, x[:2].reshape(2, 3, size, size), sequential=False)
    return m, q, x


def _ort(m):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])


def exact_pools(g):
    """`g` with every average pool dividing exactly (as onnxruntime's float pool does) instead of
    by the accelerator's 8-bit reciprocal (docs/arithmetic.md, 'Pooling'): where the reference
    and onnxruntime differ, this graph must agree with onnxruntime, which shows that the 8-bit
    reciprocal, and nothing else, made the difference."""
    ops = []
    for op in g.ops:
        if isinstance(op, ir.AvgPool) and not op.partial and op.requant.mult != 1:
            x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
            area = op.kernel[0] * op.kernel[1]
            f = Fraction(x.scale / y.scale) / area
            op = replace(op, partial=((area, f.numerator, f.denominator),))
        ops.append(op)
    return replace(g, ops=tuple(ops))


def _check(name, size, array, capsys=None):
    _, q, x = _quantized(name, size)
    g = load_ir(q, requant="pow2")
    sess = _ort(q)
    inp = sess.get_inputs()[0].name
    for xi in x[1:]:  # an input the calibration did not see, and one it did
        want = sess.run(None, {inp: xi})[0]
        got = execute(g, normalize_inputs(g, xi)[0])[g.outputs[0]].reshape(want.shape)
        if not np.array_equal(got, want):
            exact = execute(exact_pools(g), normalize_inputs(g, xi)[0])[g.outputs[0]].reshape(want.shape)
            sm = [op for op in g.ops if isinstance(op, ir.Softmax)]
            if sm:
                # the graph ends in the integer Softmax (docs/transformer.md): within one LSB of
                # onnxruntime's float Softmax, and with a float island in its place equal to it
                assert np.abs(exact - want).max() <= g.tensors[sm[-1].outputs[0]].scale, name
                island = replace(exact_pools(g), ops=tuple(
                    ir.FloatIsland(op.inputs, op.outputs, origin=op.origin, function="Softmax",
                                   params=(("axis", op.axis % len(g.tensors[op.inputs[0]].shape)),))
                    if isinstance(op, ir.Softmax) else op for op in exact_pools(g).ops))
                got_f = execute(island, normalize_inputs(g, xi)[0])[g.outputs[0]].reshape(want.shape)
                assert np.array_equal(got_f, want), name
                continue
            assert np.array_equal(exact, want), name
            print(f"{name}: {int(np.sum(got != want))} output values differ from onnxruntime through the 8-bit "
                  "reciprocal of the average pools (exact division agrees)")
    cfg = AccelConfig(array, array)
    p = accel_partition(g, cfg)
    feeds, _ = normalize_inputs(g, x[2])
    env, cycles = run_partitioned(g, cfg, feeds, p)
    want = execute(g, feeds)
    assert all(np.array_equal(env[o], want[o]) for o in g.outputs)
    r = report(g, p)
    host = [o for o in r["ops"] if o["where"] == "host"]
    print(f"{name} {size}x{size} on {array}x{array}: {len(p.segments)} segments "
          f"({sum(s.device for s in p.segments)} device), {len(host)} host ops "
          f"({sorted({o['op'] for o in host})}), {len(r['ops']) - len(host)} device ops, "
          f"{100 * r['device_mac_share']:.2f}% of {r['device_macs'] + r['host_macs']:,} MACs on the device, "
          f"{cycles:,} predicted cycles")
    assert all(o["reason"] for o in host)
    return r


@pytest.mark.parametrize("name", sorted(SMALL))
def test_light_model_reduced_equals_onnxruntime_and_runs_partitioned(name):
    r = _check(name, SMALL[name], 8)
    assert r["device_mac_share"] > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(SMALL))
def test_light_model_full_size_on_a_16x16_array(name):
    _check(name, 224, 16)


def test_light_models_through_the_command_line(tmp_path, capsys):
    """`tony ir` / `tony compile` on the float light model (refused in one line: not quantized) and
    on the quantized one: squeezenet compiles as one program (its classifier Softmax on the Softmax
    unit), shufflenet in segments whose report names every host op."""
    from tony.cli import main

    for name in ("squeezenet", "shufflenet"):
        m, q, x = _quantized(name, 32)
        onnx.save(m, tmp_path / f"{name}_float.onnx")
        onnx.save(q, tmp_path / f"{name}.onnx")
        rc = main(["ir", str(tmp_path / f"{name}_float.onnx")])
        err = capsys.readouterr().err.strip()
        assert rc == 1 and len(err.splitlines()) == 1 and "quantize" in err
        assert main(["ir", str(tmp_path / f"{name}.onnx")]) == 0
        capsys.readouterr()
        assert main(["compile", str(tmp_path / f"{name}.onnx"), "-o", str(tmp_path / name), "--samples", "1"]) == 0
        out = capsys.readouterr().out
        if name == "squeezenet":
            assert "instructions for a 8x8 accelerator" in out and "host:" not in out, out
        else:
            assert "of" in out and "MACs per sample on the device" in out and "host:" in out
