"""Transformer encoders exported by torch and quantized by onnxruntime's own quantize_static (QDQ,
per tensor): the LayerNorm and GELU chains with Q/DQ pairs inside match as one integer op each
(tony.frontend.patterns), the model lowers in multiplier mode, and runs bit-exactly through
Verilator (and the HLS C simulation, slow) against Tony's reference.

Golden values: the reference for the hardware; onnxruntime's unoptimized Q/DQ path
(ORT_DISABLE_ALL) for the agreement figures. Where the integer LayerNorm replaces onnxruntime's
float chain with its interior quantizations the two differ; the tests print the figures that
docs/transformer.md ('onnxruntime QDQ encoders') quotes (`pytest -s tests/test_ort_transformer.py
-k agrees`) and hold them to bounds."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

from _ort_helpers import calibration_reader, ort_run
from test_transformer import _data, _encoder, _export
from tony import ir
from tony.api import load_ir, run_reference
from tony.frontend.load import load_model
from tony.frontend.patterns import match
from tony.ref.kernels import KERNELS

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

# key -> (opset, symmetric int8 activations, weights per channel); asymmetric uint8 (zero points)
# is onnxruntime's classic choice, symmetric int8 the one whose zero points (0) the accelerator takes
VARIANTS = {"13s": (13, True, False), "17s": (17, True, False), "13a": (13, False, False),
            "17a": (17, False, False), "13c": (13, True, True), "17c": (17, True, True)}


def _ort_quantize(f, out, symmetric: bool, per_channel: bool, calib: int = 8):
    """onnxruntime.quantization.quantize_static, QDQ, activations per tensor, int8 weights (per
    tensor or per channel), `calib` seeded samples."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    act = QuantType.QInt8 if symmetric else QuantType.QUInt8
    quantize_static(str(f), str(out), calibration_reader(_data(calib, seed=0), "x", add_batch_axis=False),
                    quant_format=QuantFormat.QDQ, per_channel=per_channel, activation_type=act,
                    weight_type=QuantType.QInt8, extra_options={"ActivationSymmetric": symmetric})
    return out


@pytest.fixture(scope="module")
def ort_encoders(tmp_path_factory):
    """The 1-layer encoder of test_transformer (d = 32, 2 heads, FFN 64, 8 tokens) at opsets 13
    (LayerNorm and GELU decomposed) and 17 (LayerNormalization), each quantized by onnxruntime."""
    d = tmp_path_factory.mktemp("ort_enc")
    out = {}
    for key, (opset, sym, per_channel) in VARIANTS.items():
        f = d / f"float{opset}.onnx"
        if not f.exists():
            _export(_encoder(), f, opset)
        out[key] = (f, _ort_quantize(f, d / f"q{key}.onnx", sym, per_channel))
    return out


def _ort_x(path, x, extra=()):
    """onnxruntime's unoptimized Q/DQ path on samples x, with the graph values `extra` as outputs too."""
    m = onnx.load(path)
    for name, elem in extra:
        m.graph.output.append(helper.make_tensor_value_info(name, elem, None))
    return ort_run(m, list(x), name="x")


@pytest.mark.parametrize("key", list(VARIANTS))
def test_chains_with_interior_qdq_lower_to_one_integer_op_each(ort_encoders, key):
    """3 LayerNorms and 1 GELU; at opset 13 each LayerNorm chain holds 4 interior quantization
    points (variance, + eps, the normalized value, times gamma) and at both opsets the GELU 3
    (erf, + 1, times x): all inside the groups, none of their nodes lowered on its own."""
    opset = VARIANTS[key][0]
    q = ort_encoders[key][1]
    groups = match(load_model(q))
    assert [gr.kind for gr in groups] == ["layernorm", "layernorm", "gelu", "layernorm"]
    assert [len(gr.interior) for gr in groups] == ([4, 4, 3, 4] if opset == 13 else [0, 0, 3, 0])
    g = load_ir(q)
    kinds = [(type(op).__name__, getattr(op, "function", "")) for op in g.ops]
    assert kinds.count(("LayerNorm", "")) == 3 and kinds.count(("Table", "Gelu")) == 1
    assert [k for k in kinds if k[0] == "FloatIsland"] == [("FloatIsland", "Softmax")]  # onnxruntime's 1/255 or 1/127 grid
    interior = {name for gr in groups for name in gr.interior}
    assert not any(set(op.outputs) & interior or op.origin in interior for op in g.ops)


def _group_ints(q_path, groups):
    """The onnxruntime names of each group's integer input (the Q before its DequantizeLinear) and
    integer output (the Q after it), with their ONNX element types."""
    m = onnx.load(q_path)
    producer = {o: n for n in m.graph.node for o in n.output}
    readers = {}
    for n in m.graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    inits = {i.name: i.data_type for i in m.graph.initializer}
    out = []
    for gr in groups:
        qin = producer[producer[gr.x].input[0]]
        qout = next(n for n in readers[gr.y] if n.op_type == "QuantizeLinear")
        out.append(tuple((q.output[0], inits[q.input[2]]) for q in (qin, qout)))
    return out


@pytest.mark.parametrize("key", list(VARIANTS))
def test_each_layernorm_and_gelu_agrees_with_onnxruntimes_chain_on_its_input(ort_encoders, key):
    """Each integer op run by the reference's kernel on onnxruntime's own integer input, against
    onnxruntime's integer output of the chain (unoptimized Q/DQ path, 32 samples): the GELU table
    tabulates the chain as written, interior quantizations included, so it equals onnxruntime
    everywhere but where float32 erf rounding straddles a quantization tie; the LayerNorm computes
    exactly what the chain quantizes on its way (bounds: docs/transformer.md)."""
    q = ort_encoders[key][1]
    groups = match(load_model(q))
    names = _group_ints(q, groups)
    vals = _ort_x(q, _data(32, seed=11), [p for pair in names for p in pair])
    got_vals = dict(zip([p[0] for pair in names for p in pair], vals[1:]))
    g = load_ir(q)
    for gr, ((qin, _), (qout, _)) in zip(groups, names):
        last = next(n for n in gr.nodes if gr.y in n.output)
        op = next(o for o in g.ops if o.origin == last.name and isinstance(o, (ir.LayerNorm, ir.Table)))
        x, want = got_vals[qin].astype(np.int64), got_vals[qout].astype(np.int64)
        got = KERNELS[type(op)](op, g, x, *(g.constants[c] for c in op.inputs[1:]))
        diff = np.abs(got - want)
        exact = _exact(gr, g.tensors[op.inputs[0]], g.tensors[op.outputs[0]], x)
        e_tony, e_ort = np.abs(got - exact), np.abs(want - exact)
        print(f"{key} {gr.kind} {last.name}: against onnxruntime max |diff| {diff.max()} LSB, mean {diff.mean():.4f}, "
              f"equal {np.mean(diff == 0):.4f} of {diff.size}; against float max {e_tony.max():.3f} "
              f"(onnxruntime's {e_ort.max():.3f}), mean {e_tony.mean():.4f} (onnxruntime's {e_ort.mean():.4f})")
        if gr.kind == "gelu":
            assert diff.max() <= 1 and np.mean(diff == 0) >= 0.999
        elif gr.interior:   # the integer LayerNorm: rounded once, within an LSB of float
            assert diff.max() <= 8 and np.mean(diff == 0) >= 0.6
            assert e_tony.max() <= 0.51 and e_tony.mean() < e_ort.mean()
        else:   # LayerNormalization: onnxruntime's float kernel, rounded once
            assert diff.max() <= 1 and np.mean(diff == 0) >= 0.98


def _exact(gr, xt: ir.Tensor, yt: ir.Tensor, x):
    """The group's float function (float64: LayerNorm with the model's eps, gamma and beta, or
    GELU) of the dequantized input, on the output's integer grid before rounding."""
    import math

    xf = (x - xt.zero_point) * xt.scale
    if gr.kind == "gelu":
        y = 0.5 * xf * (1 + np.vectorize(math.erf)(xf / math.sqrt(2)))
    else:
        p = gr.params
        v = (xf - xf.mean(-1, keepdims=True)) / np.sqrt(xf.var(-1, keepdims=True) + p["eps"])
        y = v * (1 if p["gamma"] is None else p["gamma"]) + (0 if p["beta"] is None else p["beta"])
    return np.clip(y / yt.scale + yt.zero_point, yt.dtype.min, yt.dtype.max)


@pytest.mark.parametrize("key", list(VARIANTS))
def test_reference_agrees_with_onnxruntime_and_is_nearer_float(ort_encoders, key):
    """The whole encoder (24 inputs, 4 logits each) in the reference against onnxruntime's
    unoptimized Q/DQ path on the same model, and both against the float model."""
    f, q = ort_encoders[key]
    x = _data(24, seed=5)
    g = load_ir(q)
    got = np.asarray(run_reference(g, x)[0]).reshape(24, 1, 4)
    qdq = _ort_x(q, x)[0].reshape(got.shape)
    flt = _ort_x(f, x)[0].reshape(got.shape)
    s = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    d = np.rint(np.abs(got - qdq) / s)
    err_tony, err_ort = np.abs(got - flt).mean() / s, np.abs(qdq - flt).mean() / s
    print(f"{key}: against onnxruntime max |diff| {d.max():.0f} LSB, equal {np.mean(d == 0):.3f}; mean error "
          f"against float {err_tony:.3f} LSB (onnxruntime's {err_ort:.3f})")
    opset = VARIANTS[key][0]
    assert d.max() <= (5 if opset == 13 else 2)
    assert np.mean(d == 0) >= (0.2 if opset == 13 else 0.8)
    assert err_tony <= err_ort + 0.25


def _compile_and_sim(tony_cli, q, out, inputs):
    r = tony_cli("compile", q, "-o", out, "--array", "8x8", "--requant", "multiplier", "--inputs", inputs)
    assert r.returncode == 0, r.stderr
    assert "100.00% of" in r.stdout
    return r


@pytest.mark.sim
@pytest.mark.parametrize("key", ["13s", "17s"])
def test_ort_quantized_encoder_bit_exact_on_verilator_with_predicted_cycles(ort_encoders, key, tmp_path, tony_cli):
    """`tony compile --requant multiplier --array 8x8` and `tony sim` on inputs other than the
    calibration samples: every MAC on the array, bit-exact against the reference, the cycles of
    the cycle model."""
    np.save(tmp_path / "inputs.npy", _data(2, seed=9))
    _compile_and_sim(tony_cli, ort_encoders[key][1], tmp_path / "b", tmp_path / "inputs.npy")
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 2 * 4


@pytest.mark.slow
@pytest.mark.sim
def test_ort_quantized_encoder_bit_exact_in_hls_csim(ort_encoders, tmp_path, tony_cli):
    """`tony compile --backend hls` and `tony csim` of the opset-13 model: bit-exact."""
    np.save(tmp_path / "inputs.npy", _data(2, seed=9))
    r = tony_cli("compile", ort_encoders["13s"][1], "-o", tmp_path / "h", "--backend", "hls", "--requant",
                 "multiplier", "--inputs", tmp_path / "inputs.npy")
    assert r.returncode == 0, r.stderr
    r = tony_cli("csim", tmp_path / "h")
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_chain_neither_matched_nor_run_is_refused_in_one_line_naming_the_node(ort_encoders, tmp_path, capsys):
    """A LayerNorm chain whose square is a cube (Pow 3) is no LayerNorm, and its float nodes have
    no integer form: the first one is named, with its op type, in one line."""
    from tony.cli import main

    m = onnx.load(ort_encoders["13s"][1])
    pow_ = next(n for n in m.graph.node if n.op_type == "Pow")
    const = next(n for n in m.graph.node if n.op_type == "Constant" and n.output[0] == pow_.input[1])
    const.attribute[0].t.CopyFrom(onnx.numpy_helper.from_array(np.array(3.0, np.float32)))
    onnx.save(m, tmp_path / "cube.onnx")
    assert main(["ir", str(tmp_path / "cube.onnx")]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert 'node "/blocks.0/ln1/ReduceMean" (ReduceMean)' in err[0] and 'feeds Sub "/blocks.0/ln1/Sub"' in err[0]


def _qdq(nodes, inits, x, name, scale=0.05):
    """x -> QuantizeLinear -> DequantizeLinear (int8 at `scale`): the DequantizeLinear's output."""
    inits += [onnx.numpy_helper.from_array(np.array(scale, np.float32), f"{name}_s"),
              onnx.numpy_helper.from_array(np.array(0, np.int8), f"{name}_z")]
    nodes += [helper.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
              helper.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                               name=f"{name}_DQ")]
    return f"{name}_dq"


@pytest.mark.parametrize("interior", [False, True])
def test_a_qdq_pair_after_a_chain_without_interior_points_ends_the_layernorm(interior):
    """An opset-13 LayerNorm without gamma and beta, then a Q/DQ pair, then Mul by a constant: the
    pair is the LayerNorm's output point when the chain holds no Q/DQ pair inside (Tony's
    quantizer), and the Mul is a layer of its own; when the chain was quantized inside (as
    onnxruntime does, here after the variance), the Mul is its gamma."""
    from onnx import TensorProto

    nodes, inits = [], [onnx.numpy_helper.from_array(np.array(v, np.float32), k)
                        for k, v in (("two", 2.0), ("eps", 1e-5), ("c", 1.5))]
    x = _qdq(nodes, inits, "x", "in")
    nodes += [helper.make_node("ReduceMean", [x], ["m"], axes=[-1], name="rm"),
              helper.make_node("Sub", [x, "m"], ["d"], name="sub"),
              helper.make_node("Pow", ["d", "two"], ["p"], name="pow"),
              helper.make_node("ReduceMean", ["p"], ["v"], axes=[-1], name="rm2")]
    v = _qdq(nodes, inits, "v", "var") if interior else "v"
    nodes += [helper.make_node("Add", [v, "eps"], ["ve"], name="add"),
              helper.make_node("Sqrt", ["ve"], ["r"], name="sqrt"),
              helper.make_node("Div", ["d", "r"], ["n"], name="div")]
    nq = _qdq(nodes, inits, "n", "norm")
    nodes.append(helper.make_node("Mul", [nq, "c"], ["y"], name="mul"))
    _qdq(nodes, inits, "y", "out")
    g = helper.make_graph(nodes, "ln", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
                          [helper.make_tensor_value_info("out_dq", TensorProto.FLOAT, [1, 4, 8])], inits)
    (grp,) = match(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert grp.y == ("y" if interior else "n") and grp.interior == (("v", "n") if interior else ())
    assert (grp.params["gamma"] is not None) == interior


def test_asymmetric_activations_are_refused_by_the_accelerator_naming_the_zero_point(ort_encoders, tmp_path, capsys):
    """uint8 activations with zero points lower and run in the reference, but the accelerator
    needs zero point 0: `tony compile` says so in one line, naming the first op of a kind it
    runs (the first LayerNorm, which the LayerNorm unit runs) and its zero point, not a 'no
    accelerator mapping'."""
    from tony.cli import main

    assert main(["compile", str(ort_encoders["13a"][1]), "-o", str(tmp_path / "b"), "--requant", "multiplier"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no operator that runs on the device" in err[0]
    assert "has zero point" in err[0] and "(the accelerator needs 0)" in err[0]
    assert "no accelerator mapping" not in err[0]


@pytest.mark.parametrize("opset,heads,tokens", [(13, 4, 5), (17, 1, 11)])
def test_other_head_and_token_counts_lower_and_agree_with_onnxruntime(opset, heads, tokens, tmp_path):
    """Shapes other than the fixture's: 4 heads of 8 (the scores divided by sqrt 8, not a power of
    two, a requantization after onnxruntime's Q/DQ pair) over 5 tokens, or 1 head of 32 over 11;
    quantized by onnxruntime on 8 samples, the reference on 16 others within the end-to-end bounds
    of the fixture's models."""
    from _ort_helpers import calibration_reader as reader
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    f = _export(_encoder(heads=heads, seed=4), tmp_path / "f.onnx", opset, tokens=tokens)
    rng = np.random.default_rng(21)
    calib, x = (rng.standard_normal((n, 1, tokens, 32)).astype(np.float32) for n in (8, 16))
    q = tmp_path / "q.onnx"
    quantize_static(str(f), str(q), reader(calib, "x", add_batch_axis=False), quant_format=QuantFormat.QDQ,
                    per_channel=False, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})
    g = load_ir(q)
    assert sum(isinstance(op, ir.LayerNorm) for op in g.ops) == 3
    assert sum(getattr(op, "function", "") == "Gelu" for op in g.ops) == 1
    got = np.asarray(run_reference(g, x)[0]).reshape(16, 1, 4)
    want = _ort_x(q, x)[0].reshape(got.shape)
    s = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    d = np.rint(np.abs(got - want) / s)
    print(f"opset {opset}, {heads} heads, {tokens} tokens: max |diff| {d.max():.0f} LSB, equal {np.mean(d == 0):.3f}")
    assert d.max() <= (5 if opset == 13 else 2)


@pytest.mark.parametrize("train", [False, True])
def test_tony_quantize_refuses_an_already_quantized_encoder_in_one_line(ort_encoders, tmp_path, capsys, train):
    """Calibration and threshold training start from the float model: onnxruntime's QDQ encoder
    given to `tony quantize` (with or without --train-data) is named as already quantized."""
    from tony.cli import main

    np.save(tmp_path / "calib.npy", _data(4, seed=0))
    np.savez(tmp_path / "train.npz", x=_data(8, seed=2), y=np.arange(8) % 4)
    extra = ["--train-data", str(tmp_path / "train.npz"), "--epochs", "1"] if train else []
    assert main(["quantize", str(ort_encoders["13s"][1]), "--calib", str(tmp_path / "calib.npy"), "-o",
                 str(tmp_path / "q.onnx"), *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already quantized" in err[0] and "(DequantizeLinear)" in err[0]
    assert not (tmp_path / "q.onnx").exists()
