"""Host/device partitioning (tony.ir.partition): segments, their inputs and outputs, the compile
report, --device-only, and a MobileNetV3 block (HardSwish, squeeze-excite with HardSigmoid and
Mul) end to end: reference = onnxruntime, accelerator segments on the instruction-level model and
on Verilator, HLS segments in C++, host segments in the reference between them. The HardSigmoid
gate runs on the array (a 1x1 depthwise Conv equal to its table); HardSwish and the output's
Sigmoid are table lookups (the accelerator's vector unit, an array read in HLS); the gate's Mul of
two activations stays on the host."""
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

import tony
from tony import ir
from tony.accel.compiler import run_partitioned
from tony.accel.program import AccelConfig
from tony.api import load_ir
from tony.compiler import accel_partition
from tony.errors import InputError, UnsupportedError
from tony.ir.partition import partition, report, subgraph
from tony.ir.types import Requant
from tony.ref import execute
from tony.ref.feeds import normalize_inputs


def _se_block(c=16, hw=8, seed=0):
    """Conv -> HardSwish -> depthwise Conv -> Relu -> squeeze-excite (GlobalAveragePool -> Conv ->
    Relu -> Conv -> HardSigmoid -> Mul) -> Conv -> Add (residual) -> Sigmoid, float."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
             h.make_node("HardSwish", ["c1"], ["hs1"], name="hswish1"),
             h.make_node("Conv", ["hs1", "wd", "bd"], ["dw"], name="dwconv", pads=[1, 1, 1, 1], group=c),
             h.make_node("Relu", ["dw"], ["dwr"], name="dwrelu"),
             h.make_node("GlobalAveragePool", ["dwr"], ["gap"], name="se_pool"),
             h.make_node("Conv", ["gap", "ws1", "bs1"], ["s1"], name="se_fc1"),
             h.make_node("Relu", ["s1"], ["s1r"], name="se_relu"),
             h.make_node("Conv", ["s1r", "ws2", "bs2"], ["s2"], name="se_fc2"),
             h.make_node("HardSigmoid", ["s2"], ["sig"], name="se_gate", alpha=1 / 6, beta=0.5),
             h.make_node("Mul", ["dwr", "sig"], ["se"], name="se_mul"),
             h.make_node("Conv", ["se", "w3", "b3"], ["c3"], name="project"),
             h.make_node("Add", ["c3", "x"], ["y0"], name="residual"),
             h.make_node("Sigmoid", ["y0"], ["y"], name="out_sig")]
    inits = [init("w1", (c, c, 3, 3), 0.1), init("b1", (c,), 0.1), init("wd", (c, 1, 3, 3), 0.3),
             init("bd", (c,), 0.1), init("ws1", (8, c, 1, 1), 0.3), init("bs1", (8,), 0.1),
             init("ws2", (c, 8, 1, 1), 0.3), init("bs2", (c,), 0.1), init("w3", (c, c, 1, 1), 0.2),
             init("b3", (c,), 0.1)]
    g = h.make_graph(nodes, "se_block", [h.make_tensor_value_info("x", T.FLOAT, [1, c, hw, hw])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, c, hw, hw])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 14)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def se(tmp_path_factory):
    """The block quantized by Tony's quantizer (pow2 QDQ), its file and inputs."""
    from tony.quant.qdq import quantize_static

    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 1, 16, 8, 8)).astype(np.float32)
    q = quantize_static(_se_block(), x.reshape(6, 16, 8, 8), sequential=False)
    d = tmp_path_factory.mktemp("se")
    onnx.save(q, d / "model.onnx")
    np.save(d / "x.npy", x)
    return d, q, x


def test_se_block_reference_equals_onnxruntime(se):
    _, q, x = se
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(q.SerializeToString(), so, providers=["CPUExecutionProvider"])
    for xi in x:
        assert np.array_equal(tony.run_reference(q, xi)[0], sess.run(None, {"x": xi})[0])


def test_segments_alternate_and_name_their_inputs_and_outputs(se):
    g = load_ir(se[1])
    p = accel_partition(g, AccelConfig())
    kinds = "".join("D" if s.device else "h" for s in p.segments)
    assert kinds == "hDhDh"
    host = [(pl.op.origin, pl.reason) for pl in p.host_ops()]
    assert [n for n, _ in host] == ["se_mul"]
    assert {pl.op.origin for pl in p.placement if pl.device and isinstance(pl.op, ir.Table)} == {"hswish1", "out_sig"}
    gate = next(op for op in g.ops if op.origin == "se_gate")
    assert isinstance(gate, ir.Conv) and gate.group == 16 and gate.op_type == "HardSigmoid"
    produced = set(g.inputs)
    for s in p.segments:  # every segment reads only what earlier segments (or the graph) produced
        assert set(s.inputs) <= produced
        produced |= {o for op in s.ops for o in op.outputs}
        later = {i for t in p.segments[p.segments.index(s) + 1:] for op in t.ops for i in op.inputs}
        assert set(s.outputs) == {o for op in s.ops for o in op.outputs if o in later or o in g.outputs}
    # the first device segment runs conv1, its HardSwish table and the SE branch, and hands back the
    # SE input and the gate (HardSigmoid on the device); the second starts from the gate's Mul
    d0, d1 = p.segments[1], p.segments[3]
    assert d0.inputs == ("x_q",) and "dwr_q" in d0.outputs and "sig_q" in d0.outputs and "hs1_q" not in d0.outputs
    assert d1.inputs == ("se_q", "x_q")
    r = report(g, p)
    assert r["device_mac_share"] == 1.0 and r["host_macs"] == 0
    assert {row["op"] for row in r["ops"] if row["where"] == "host"} == {"Mul"}


def _tiny(ops, tensors, inputs, outputs, constants=None):
    return ir.verify(ir.Graph("t", tensors=tensors, constants=constants or {}, ops=tuple(ops), inputs=inputs,
                              outputs=outputs))


def test_host_op_not_needed_by_the_device_waits_until_the_device_is_done():
    """conv1 -> (host transpose of conv1's output, a graph output) and conv2 on conv1's output: one
    device segment, the transpose after it."""
    t8 = lambda n, s=(1, 8, 2, 2): ir.Tensor(n, s, ir.INT8)  # noqa: E731
    w = np.ones((8, 8, 1, 1), np.int64)
    rq = Requant(shift=4, lo=-128, hi=127)
    tensors = {n: t8(n) for n in ("x", "a", "b", "c")}
    tensors.update(w=ir.Tensor("w", (8, 8, 1, 1), ir.INT8))
    ops = [ir.Conv(("x", "w"), ("a",), origin="conv1", requant=rq),
           ir.Transpose(("a",), ("b",), origin="sig", op_type="Transpose", perm=(0, 1, 3, 2)),
           ir.Conv(("a", "w"), ("c",), origin="conv2", requant=rq)]
    g = _tiny(ops, tensors, ("x",), ("b", "c"), {"w": w})
    p = partition(g)
    assert [(s.kind, [op.origin for op in s.ops]) for s in p.segments] == \
        [("device", ["conv1", "conv2"]), ("host", ["sig"])]
    assert p.segments[0].outputs == ("a", "c")
    sub = subgraph(g, p.segments[0])
    assert sub.inputs == ("x",) and sub.outputs == ("a", "c") and set(sub.constants) == {"w"}


def test_a_reshape_alone_between_host_ops_stays_on_the_host():
    t = {"x": ir.Tensor("x", (1, 4, 1, 1), ir.INT8), "a": ir.Tensor("a", (1, 4, 1, 1), ir.INT8),
         "b": ir.Tensor("b", (1, 4), ir.INT8), "c": ir.Tensor("c", (1, 4), ir.INT8),
         "w": ir.Tensor("w", (4, 4), ir.INT8)}
    ops = [ir.Transpose(("x",), ("a",), origin="t1", perm=(0, 1, 3, 2)),
           ir.Reshape(("a",), ("b",), origin="flat", shape=(1, 4)),
           ir.Dense(("b", "w"), ("c",), origin="fc", requant=Requant(shift=0, lo=-128, hi=127))]
    g = _tiny(ops, t, ("x",), ("c",), {"w": np.eye(4, dtype=np.int64)})
    assert [s.kind for s in partition(g).segments] == ["host", "device"]
    ops2 = ops[:2] + [ir.Transpose(("b",), ("c",), origin="t2", perm=(0, 1))]
    g2 = _tiny(ops2, t, ("x",), ("c",))
    with pytest.raises(UnsupportedError, match="no operator that runs on the device"):
        partition(g2)


def test_partitioned_graph_on_the_instruction_model_equals_the_reference(se):
    g = load_ir(se[1], requant="pow2")
    feeds, _ = normalize_inputs(g, se[2][:3])
    cfg = AccelConfig(4, 4)
    env, cycles = run_partitioned(g, cfg, feeds, accel_partition(g, cfg), batch=2)
    want = execute(g, feeds)
    assert cycles > 0 and all(np.array_equal(env[o], want[o]) for o in g.outputs)


def test_compile_reports_host_ops_and_device_only_refuses(se, tmp_path, tony_cli):
    d = se[0]
    res = tony_cli("compile", d / "model.onnx", "-o", tmp_path / "b", "--samples", "2")
    assert res.returncode == 0, res.stderr
    assert "host: se_mul (Mul, segment 2): no accelerator mapping" in res.stdout
    assert "100.00% of" in res.stdout and "2 device segment(s)" in res.stdout
    m = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert [s["kind"] for s in m["segments"]] == ["host", "device", "host", "device", "host"]
    assert m["placement"]["device_mac_share"] == 1.0
    for s in m["segments"]:
        if s["kind"] == "device":
            assert (tmp_path / "b" / s["build"] / "mem" / "image.hex").is_file()
    res = tony_cli("compile", d / "model.onnx", "-o", tmp_path / "c", "--device-only")
    err = res.stderr.strip()
    assert res.returncode == 1 and len(err.splitlines()) == 1
    assert 'node "se_mul" (Mul)' in err and "--device-only" in err and not (tmp_path / "c").exists()


@pytest.mark.parametrize("array", [(4, 4), (3, 5)])
def test_partitioned_manifest_counts_macs_and_cycles_per_run_of_a_batch(se, tmp_path, array):
    """A partitioned build's MACs per run, like its predicted cycles, are those of one run of a
    batch: the sum over its device segments, `batch` times the MACs of one sample on the device."""
    from tony.compiler import compile_model

    one, three = (compile_model(se[0] / "model.onnx", tmp_path / f"b{b}", config=AccelConfig(*array), batch=b,
                                samples=1) for b in (1, 3))
    assert one["macs_per_run"] == one["placement"]["device_macs"] > 0
    assert three["macs_per_run"] == 3 * one["macs_per_run"]
    for m in (one, three):
        device = [s for s in m["segments"] if s["kind"] == "device"]
        assert m["macs_per_run"] == sum(s["macs_per_run"] for s in device)
        assert m["predicted_cycles"] == sum(s["predicted_cycles"] for s in device)


def test_hls_runs_device_segments_in_cpp_and_host_segments_between(se, tmp_path):
    from tony.hls.backend import HlsConfig, HlsModel, compile_hls, csim

    g = load_ir(se[1])
    feeds, _ = normalize_inputs(g, se[2][:2])
    m = compile_hls(g, tmp_path / "h", config=HlsConfig(4, 4), feeds=feeds)
    assert sum(s["kind"] == "device" for s in m["segments"]) == 2
    rep = csim(tmp_path / "h", graph=g)
    assert rep["bit_exact"] and rep["compared"] > 0 and len(rep["segments"]) == 2
    other = se[2][3:6]  # inputs other than the build's
    got = HlsModel(tmp_path / "h", graph=g).predict(other)[0]
    assert np.array_equal(got, tony.run_reference(g, other)[0])


@pytest.mark.sim
def test_rtl_sim_runs_host_segments_between_device_programs(se, tmp_path):
    """Two device programs on Verilator (HardSwish and Sigmoid looked up in the vector unit), the
    second on the first one's simulated outputs passed through the host segment; the graph's
    output equals the reference of the whole graph."""
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    compile_model(se[0] / "model.onnx", tmp_path / "b", config=AccelConfig(4, 4), samples=2)
    rep = simulate(tmp_path / "b", progress=False)
    assert rep["bit_exact"] and rep["cycles_match"] and len(rep["segments"]) == 2
    assert rep["compared"] == 2 * 16 * 8 * 8
    # a run that stops at the second segment leaves no report of the first run behind
    segs = sorted(p.parent.name for p in (tmp_path / "b").glob("seg*/sim_report.json"))
    assert len(segs) == 2 and (tmp_path / "b" / "sim_report.json").is_file()
    (tmp_path / "b" / segs[1] / "manifest.json").unlink()
    with pytest.raises(InputError):
        simulate(tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "sim_report.json").exists()
    assert not (tmp_path / "b" / segs[1] / "sim_report.json").exists()


@pytest.fixture(scope="module")
def se_ort(tmp_path_factory):
    """The block quantized by onnxruntime's quantize_static (QDQ, symmetric int8 activations:
    zero points 0, arbitrary scales, so multiplier mode)."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    from _ort_helpers import calibration_reader

    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 1, 16, 8, 8)).astype(np.float32)
    d = tmp_path_factory.mktemp("se_ort")
    onnx.save(_se_block(), d / "float.onnx")
    quantize_static(str(d / "float.onnx"), str(d / "model.onnx"), calibration_reader(x[:3].reshape(3, 16, 8, 8), "x"),
                    quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                    extra_options={"ActivationSymmetric": True})
    return d, onnx.load(d / "model.onnx"), x


def test_se_block_quantized_by_onnxruntime_runs_partitioned_equal_to_onnxruntime(se_ort):
    """onnxruntime's QDQ block in multiplier mode: the reference equals onnxruntime's unoptimized
    Q/DQ path; the HardSigmoid gate is a depthwise Conv on the device; the partitioned graph on the
    instruction-level model of a 4x4 array equals the reference."""
    from _ort_helpers import ort_run

    d, q, x = se_ort
    g = load_ir(q, requant="multiplier")
    want = ort_run(str(d / "model.onnx"), list(x), name="x")[0]
    assert np.array_equal(np.stack([tony.run_reference(g, xi)[0] for xi in x]), want)
    cfg = AccelConfig(4, 4)
    p = accel_partition(g, cfg)
    host = {pl.op.origin: pl.reason for pl in p.host_ops()}
    assert set(host) == {"se_mul", "residual"}, host
    assert "ratio is not a power of two" in host["residual"]   # c3's and x's scales: 31-bit multipliers
    assert isinstance(next(op for op in g.ops if op.origin == "se_gate"), ir.Conv)
    feeds, _ = normalize_inputs(g, x[:2])
    env, cycles = run_partitioned(g, cfg, feeds, p)
    want = execute(g, feeds)
    assert cycles > 0 and all(np.array_equal(env[o], want[o]) for o in g.outputs)


@pytest.mark.sim
@pytest.mark.slow
def test_se_block_quantized_by_onnxruntime_on_verilator(se_ort, tmp_path):
    """The onnxruntime-quantized block on Verilator: every device segment bit-exact, cycles as
    predicted, the graph's output equal to the reference."""
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    compile_model(se_ort[0] / "model.onnx", tmp_path / "b", config=AccelConfig(4, 4), samples=2, requant="multiplier")
    rep = simulate(tmp_path / "b", progress=False)
    assert rep["bit_exact"] and rep["cycles_match"] and len(rep["segments"]) >= 3


_F = float(np.float32(0.0123))
_G = float(np.float32(0.0173))


# equal input scales, and scales exactly 4x apart whose rounded multipliers stay 4x apart (for
# other values round(4y) != 4 round(y) and the Add stays on the host)
@pytest.mark.parametrize("scales", [(0.0123, 0.0123, 0.0371), (0.0246, 0.0246, 0.05), (_F, 4 * _F, 0.05)])
def test_multiplier_mode_add_of_scales_a_power_of_two_apart_runs_on_the_vector_unit(scales, tmp_path):
    """An Add in multiplier mode whose input scales are equal (or a power of two apart, when the
    rounded multipliers keep that ratio): the 31-bit input multipliers are one odd number times
    powers of two, so the vector unit's left shifts and
    the post-processing multiplier compute the same sum (tony.accel.emit.add_alignment). The Add is
    on the device; onnxruntime (unoptimized Q/DQ) = reference = the instruction-level model."""
    from _host_graphs import build
    from tony.accel.emit import add_alignment

    sa, sb, sy = scales
    m = build("add_mult", "Add", [(1, 8, 4, 4), (1, 8, 4, 4)], 1, in_scales=[sa, sb], out_scale=sy)
    onnx.save(m, tmp_path / "m.onnx")
    rng = np.random.default_rng(3)
    xs = [(rng.standard_normal((1, 8, 4, 4)) * 1.5).astype(np.float32) for _ in range(6)]
    g = load_ir(m, requant="multiplier")
    add = next(op for op in g.ops if isinstance(op, ir.Add))
    assert add.mult_a != 1 and add.mult_b != 1            # multiplier mode, not pow2
    cfg = AccelConfig(4, 4)
    assert add_alignment(add, cfg) is not None
    p = accel_partition(g, cfg)
    assert not p.host_ops() and p.simple
    sess = ort.InferenceSession(m.SerializeToString(), _unoptimized(), providers=["CPUExecutionProvider"])
    feeds = {"x0": np.concatenate(xs[:3]), "x1": np.concatenate(xs[3:])}
    want_ort = np.concatenate([sess.run(None, {"x0": a, "x1": b})[0] for a, b in zip(xs[:3], xs[3:])])
    assert np.array_equal(tony.run_reference(g, feeds)[0], want_ort)
    f, _ = normalize_inputs(g, feeds)
    env, _ = run_partitioned(g, cfg, f, p)
    want = execute(g, f)
    assert all(np.array_equal(env[o], want[o]) for o in g.outputs)


def _unoptimized():
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return so


@pytest.mark.sim
@pytest.mark.slow
def test_multiplier_mode_add_on_verilator(tmp_path):
    """The Add of two scales a factor 4 apart in multiplier mode on Verilator: bit-exact, cycles as
    predicted."""
    from _host_graphs import build
    from tony.compiler import compile_model
    from tony.sim.accel import simulate

    m = build("add_mult", "Add", [(1, 8, 4, 4), (1, 8, 4, 4)], 1, in_scales=[4 * _G, _G], out_scale=0.0371)
    compile_model(m, tmp_path / "b", config=AccelConfig(4, 4), samples=3, requant="multiplier")
    rep = simulate(tmp_path / "b", progress=False)
    assert rep["bit_exact"] and rep["cycles_match"]
