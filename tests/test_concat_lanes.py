"""Concat inputs that start inside a channel group (at a channel that is not a multiple of the
array's columns) are merged into the output by EWISE with the merge flag (docs/isa.md): the
instruction-level model equals the reference on branchy graphs at many array widths, Verilator
equals the reference with the cycles predicted, and an input that would need a requantization
there runs on the host, naming why."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tony import ir
from tony.accel import isa
from tony.accel.compiler import compile_program, run_partitioned
from tony.accel.program import AccelConfig
from tony.api import load_ir
from tony.compiler import accel_partition, compile_model
from tony.ref import execute


def branchy(chs, seed=0) -> onnx.ModelProto:
    """x [1, 2, 6, 6] -> one Conv-Relu branch per entry of `chs` (that many channels) -> Concat ->
    1x1 Conv; quantized to pow2 QDQ (the Concat's inputs share its scale)."""
    from tony.quant.qdq import quantize_static

    rng = np.random.default_rng(seed)
    inits, nodes, cat = [], [], []
    for i, c in enumerate(chs):
        inits += [numpy_helper.from_array(rng.normal(0, 0.4, (c, 2, 3, 3)).astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(rng.normal(0, 0.1, c).astype(np.float32), f"b{i}")]
        nodes += [helper.make_node("Conv", ["x", f"w{i}", f"b{i}"], [f"c{i}"], pads=[1] * 4),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        cat.append(f"r{i}")
    total = sum(chs)
    inits += [numpy_helper.from_array(rng.normal(0, 0.3, (5, total, 1, 1)).astype(np.float32), "wo")]
    nodes += [helper.make_node("Concat", cat, ["cat"], axis=1, name="cat"),
              helper.make_node("Conv", ["cat", "wo"], ["y"])]
    g = helper.make_graph(nodes, "branchy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, 6, 6])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    return quantize_static(m, rng.uniform(-1, 1, (8, 2, 6, 6)).astype(np.float32))


CASES = [((3, 5), (3, 4)), ((3, 5, 2), (2, 4)), ((1, 1, 1, 6), (2, 4)), ((7, 4, 9), (3, 5)), ((2, 13), (4, 8)),
         ((4, 6, 3), (2, 3)), ((5, 5, 5), (1, 7)), ((9, 2, 1), (2, 2))]


@pytest.mark.parametrize("chs,arr", CASES, ids=[f"{'-'.join(map(str, c))}@{a[0]}x{a[1]}" for c, a in CASES])
def test_instruction_model_equals_reference(chs, arr, tmp_path):
    g = load_ir(branchy(chs), requant="pow2")
    cfg = AccelConfig(*arr)
    p = accel_partition(g, cfg)
    cat = next(op for op in g.ops if isinstance(op, ir.Concat))
    assert all(pl.device for pl in p.placement if pl.op is cat)
    x = np.random.default_rng(1).uniform(-1, 1, (3, 2, 6, 6)).astype(np.float32)
    env, _ = run_partitioned(g, cfg, {g.inputs[0]: x}, p, batch=2)
    want = execute(g, {g.inputs[0]: x}, keep_all=True)
    for s in p.segments:
        for n in (s.outputs if s.device else ()):
            assert np.array_equal(np.asarray(env[n]), np.asarray(want[n])), n
    offs = np.cumsum([0] + [g.tensors[n].shape[1] for n in cat.inputs])[:-1]
    prog = compile_program(g, cfg)
    merges = [w for w in prog.words if isa.decode(w)["op"] == isa.EWISE and isa.decode(w)["flags"] & isa.F_MERGE]
    assert bool(merges) == any(o % arr[1] for o in offs)


def test_concat_cnn_at_3x5_on_verilator(tmp_path):
    """the residual/Concat CNN of the onnxruntime tests: its Concat's second input starts at channel
    8, inside the second 5-channel group; bit-exact and cycle-exact on Verilator"""
    from test_ort_quantized import concat_cnn
    from tony.quant.qdq import quantize_static
    from tony.sim.accel import simulate

    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    onnx.save(quantize_static(concat_cnn(), x), tmp_path / "model.onnx")
    out = tmp_path / "b"
    m = compile_model(tmp_path / "model.onnx", out, config=AccelConfig(3, 5), inputs=x)
    assert "segments" not in m
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert all(l["cycles"] == l["predicted"] for l in rep["layers"])
    assert "EWISE flags=" in (out / "program.txt").read_text()


test_concat_cnn_at_3x5_on_verilator = pytest.mark.sim(test_concat_cnn_at_3x5_on_verilator)


def _two_inputs(scales) -> onnx.ModelProto:
    """Concat of two QDQ inputs (3 channels each) at their own scales, output at scales[2]."""
    N = helper.make_node
    inits, nodes = [], []
    for i, s in enumerate(scales):
        inits += [numpy_helper.from_array(np.array(s, np.float32), f"s{i}"),
                  numpy_helper.from_array(np.array(0, np.int8), f"z{i}")]
    for i in range(2):
        nodes += [N("QuantizeLinear", [f"x{i}", f"s{i}", f"z{i}"], [f"q{i}"]),
                  N("DequantizeLinear", [f"q{i}", f"s{i}", f"z{i}"], [f"d{i}"])]
    nodes += [N("Concat", ["d0", "d1"], ["c"], axis=1, name="cat"),
              N("QuantizeLinear", ["c", "s2", "z2"], ["qc"]), N("DequantizeLinear", ["qc", "s2", "z2"], ["y"])]
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, [1, 3, 2, 2]) for i in range(2)]
    g = helper.make_graph(nodes, "two", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 2, 2])],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_a_merged_input_that_needs_a_requantization_runs_on_the_host():
    from tony.errors import UnsupportedError

    g = load_ir(_two_inputs([2 ** -4, 2 ** -5, 2 ** -4]), requant="pow2")
    # the Concat is the graph's only op: nothing would be left for the device
    with pytest.raises(UnsupportedError, match=r"cat.*starts at channel 3 \(inside a group of 4.*requantization"):
        accel_partition(g, AccelConfig(2, 4))
    # the same at the output's scale, or starting a channel group, runs on the device
    for scales, cols in (([2 ** -4] * 3, 4), ([2 ** -4, 2 ** -5, 2 ** -4], 3)):
        g = load_ir(_two_inputs(scales), requant="pow2")
        p = accel_partition(g, AccelConfig(2, cols))
        assert next(pl for pl in p.placement if isinstance(pl.op, ir.Concat)).device
        x = [np.random.default_rng(2).uniform(-4, 4, (2, 3, 2, 2)).astype(np.float32) for _ in range(2)]
        feeds = dict(zip(g.inputs, x))
        env, _ = run_partitioned(g, AccelConfig(2, cols), feeds, p)
        want = execute(g, feeds)
        assert all(np.array_equal(np.asarray(env[n]), np.asarray(want[n])) for n in g.outputs)
