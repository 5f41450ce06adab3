"""Table lookups on the accelerator (docs/isa.md, 'Tables'): GELU (the Erf chain of opset 13),
HardSwish and Sigmoid as per-tensor tables, an unfoldable BatchNormalization as one table per
channel, each looked up by the vector unit from the table memory. The instruction-level model is
held to the reference on several arrays; `tony compile` + `tony sim` on Verilator to bit-exact
outputs with the cycles the cycle model predicts; the compile report names what keeps a table on
the host. (A transformer's GELU joining its feed-forward layers' device segment: tests/test_transformer.py.)"""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from tony import ir
from tony.accel.compiler import compile_program, run_partitioned
from tony.accel.program import AccelConfig
from tony.api import load_ir, normalize_inputs
from tony.compiler import accel_partition
from tony.ir.partition import partition, subgraph
from tony.ref import execute


def _model(kind: str, c: int, hw: int, seed: int = 0) -> onnx.ModelProto:
    """Conv 3x3 -> f -> Conv 1x1, float: f the Erf form of GELU (opset 13: Div, Erf, Add, Mul, Mul),
    HardSwish then Sigmoid (opset 14), or Relu then a BatchNormalization (not foldable into a Conv:
    one table per channel)."""
    rng = np.random.default_rng(seed)

    def init(name, shape, scale):
        return nh.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)
    inits = [init("w1", (c, 3, 3, 3), 0.4), init("b1", (c,), 0.1), init("w2", (c, c, 1, 1), 0.3),
             init("b2", (c,), 0.1)]
    nodes = [h.make_node("Conv", ["x", "w1", "b1"], ["a"], name="conv1", pads=[1, 1, 1, 1])]
    if kind == "gelu":
        inits += [nh.from_array(np.float32(v), n) for n, v in (("sqrt2", np.sqrt(2.0)), ("one", 1.0), ("half", 0.5))]
        nodes += [h.make_node("Div", ["a", "sqrt2"], ["g0"], name="gelu_div"),
                  h.make_node("Erf", ["g0"], ["g1"], name="gelu_erf"),
                  h.make_node("Add", ["g1", "one"], ["g2"], name="gelu_add"),
                  h.make_node("Mul", ["a", "g2"], ["g3"], name="gelu_mul"),
                  h.make_node("Mul", ["g3", "half"], ["f"], name="gelu_half")]
        opset = 13
    elif kind == "hswish":
        nodes += [h.make_node("HardSwish", ["a"], ["f0"], name="hswish"),
                  h.make_node("Sigmoid", ["f0"], ["f"], name="sigmoid")]
        opset = 14
    else:
        inits += [nh.from_array(rng.uniform(0.5, 2.0, c).astype(np.float32), "bn_s"),
                  nh.from_array(rng.uniform(-0.5, 0.5, c).astype(np.float32), "bn_b"),
                  nh.from_array(rng.uniform(-0.2, 0.2, c).astype(np.float32), "bn_m"),
                  nh.from_array(rng.uniform(0.5, 1.5, c).astype(np.float32), "bn_v")]
        nodes += [h.make_node("Relu", ["a"], ["r"], name="relu"),
                  h.make_node("BatchNormalization", ["r", "bn_s", "bn_b", "bn_m", "bn_v"], ["f"], name="bn")]
        opset = 14
    nodes.append(h.make_node("Conv", ["f", "w2", "b2"], ["y"], name="conv2"))
    g = h.make_graph(nodes, kind, [h.make_tensor_value_info("x", T.FLOAT, [1, 3, hw, hw])],
                     [h.make_tensor_value_info("y", T.FLOAT, [1, c, hw, hw])], inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    return m


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """kind -> (folder with model.onnx and x.npy, the QDQ model), quantized by Tony's quantizer."""
    from tony.quant.qdq import quantize_static

    out = {}
    for kind, c in (("gelu", 12), ("hswish", 8), ("bn", 12)):
        rng = np.random.default_rng(1)
        x = rng.standard_normal((5, 1, 3, 6, 6)).astype(np.float32)
        q = quantize_static(_model(kind, c, 6), x.reshape(5, 3, 6, 6), sequential=False)
        d = tmp_path_factory.mktemp(kind)
        onnx.save(q, d / "model.onnx")
        np.save(d / "x.npy", x[:2])
        out[kind] = (d, q, x)
    return out


def _tables(g: ir.Graph) -> list[ir.Table]:
    return [op for op in g.ops if isinstance(op, ir.Table)]


@pytest.mark.parametrize("kind,functions,per_channel", [("gelu", ["Gelu"], False),
                                                         ("hswish", ["HardSwish", "Sigmoid"], False),
                                                         ("bn", ["BatchNormalization"], True)])
def test_tables_lower_as_expected_and_run_in_one_device_segment(models, kind, functions, per_channel):
    g = load_ir(models[kind][1])
    tabs = _tables(g)
    assert [op.op_type for op in tabs] == functions
    assert all((op.channel_axis == 1) == per_channel for op in tabs)
    for array in ((8, 8), (4, 8)):
        p = accel_partition(g, AccelConfig(*array))
        assert len(p.device_segments) == 1 and not p.host_ops(), [(pl.op.origin, pl.reason) for pl in p.host_ops()]


@pytest.mark.parametrize("kind", ["gelu", "hswish", "bn"])
@pytest.mark.parametrize("array,batch", [((8, 8), 1), ((4, 8), 2), ((4, 4), 1), ((2, 8), 3)])
def test_table_models_on_the_instruction_model_equal_the_reference(models, kind, array, batch):
    """The whole model as one program on the instruction-level model: equal to the reference for
    inputs other than the calibration's first, per-tensor and per-channel (12 channels: two channel
    groups of 8 lanes, three of 4, so one table image per group) tables."""
    g = load_ir(models[kind][1])
    feeds, _ = normalize_inputs(g, models[kind][2][2:5])
    cfg = AccelConfig(*array)
    env, cycles = run_partitioned(g, cfg, feeds, accel_partition(g, cfg), batch=batch)
    want = execute(g, feeds)
    assert cycles > 0 and all(np.array_equal(env[o], want[o]) for o in g.outputs)


def test_per_channel_tables_load_one_image_per_channel_group(models):
    """12 channels at COLS 8: two LOAD tab of 256 words, each followed by its lookup over the group's
    words; at COLS 4 three. The table memory is read by the LOAD that follows only after the
    previous lookup (SYNC compute)."""
    from tony.accel import isa

    g = load_ir(models["bn"][1])
    seg = accel_partition(g, AccelConfig(8, 8)).device_segments[0]
    for cols, groups in ((8, 2), (4, 3)):
        prog = compile_program(subgraph(g, seg), AccelConfig(4, cols))
        loads = [t for t in prog.text if t.startswith("LOAD tab")]
        looks = [w for w in prog.words if isa.decode(w)["op"] == isa.EWISE and isa.decode(w)["flags"] & isa.F_TABLE]
        assert len(loads) == len(looks) == groups and all(t.endswith("x256") for t in loads)


def test_a_table_the_vector_unit_cannot_take_stays_on_the_host_with_its_reason():
    """A table from int8 to a 16-bit output runs on the host, the partition naming why; an 8-bit one
    next to it runs on the device."""
    t = {"x": ir.Tensor("x", (1, 4, 2, 2), ir.INT8), "a": ir.Tensor("a", (1, 4, 2, 2), ir.DType(16, True)),
         "b": ir.Tensor("b", (1, 4, 2, 2), ir.INT8), "tab": ir.Tensor("tab", (256,), ir.DType(16, True)),
         "tab8": ir.Tensor("tab8", (256,), ir.INT8)}
    ops = [ir.Table(("x", "tab"), ("a",), origin="wide"), ir.Table(("x", "tab8"), ("b",), origin="narrow")]
    g = ir.verify(ir.Graph("t", tensors=t, constants={"tab": np.arange(256) * 100 - 12800,
                                                      "tab8": np.arange(256) - 128},
                           ops=tuple(ops), inputs=("x",), outputs=("a", "b")))
    from tony.accel.placement import refuse

    p = partition(g, refuse(g, AccelConfig(4, 4)))
    why = {pl.op.origin: pl.reason for pl in p.placement}
    assert "'a' is int16 (the accelerator moves 8-bit activations)" in why["wide"] and why["narrow"] == ""


@pytest.mark.sim
@pytest.mark.parametrize("kind,array", [("gelu", "8x8"), ("bn", "4x8"),
                                        pytest.param("hswish", "4x8", marks=pytest.mark.slow),
                                        pytest.param("gelu", "4x8", marks=pytest.mark.slow),
                                        pytest.param("hswish", "8x8", marks=pytest.mark.slow),
                                        pytest.param("bn", "8x8", marks=pytest.mark.slow)])
def test_table_models_bit_exact_on_verilator_with_predicted_cycles(models, kind, array, tmp_path, tony_cli):
    """`tony compile` and `tony sim`: the whole model one program with the tables in it, bit-exact,
    the cycles as predicted, per layer too (the lookups' layers included)."""
    d = models[kind][0]
    r = tony_cli("compile", d / "model.onnx", "-o", tmp_path / "b", "--array", array, "--inputs", d / "x.npy")
    assert r.returncode == 0, r.stderr
    assert "host:" not in r.stdout and "instructions for a" in r.stdout   # one program, nothing on the host
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    channels = models[kind][1].graph.output[0].type.tensor_type.shape.dim[1].dim_value
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 2 * channels * 6 * 6
    tabs = [la for la in rep["layers"] if la["op"] == "table"]
    assert tabs and all(la["cycles"] == la["predicted"] for la in tabs)


@pytest.mark.parametrize("kind", ["hswish", "bn"])
def test_tables_in_hls_csim_equal_the_reference(models, kind, tmp_path):
    """The HLS back end looks tables up too (tony::table_op, an array read per value; per channel
    with the channel's table): the whole model is one device segment, and its C simulation is
    bit-exact against the golden vectors; the C++ model on inputs other than the build's equals the
    reference."""
    from tony.hls.backend import HlsConfig, HlsModel, compile_hls, csim
    from tony.hls.backend import refuse as hls_refuse

    g = load_ir(models[kind][1])
    p = partition(g, hls_refuse(g, HlsConfig(4, 4)))
    assert len(p.device_segments) == 1 and not p.host_ops()
    feeds, _ = normalize_inputs(g, models[kind][2][:2])
    compile_hls(g, tmp_path / "h", config=HlsConfig(4, 4), feeds=feeds)
    rep = csim(tmp_path / "h", graph=g)
    assert rep["bit_exact"] and rep["compared"] > 0
    other = models[kind][2][2:5]
    got = HlsModel(tmp_path / "h", graph=g).predict(other)[0]
    want = np.stack([execute(g, normalize_inputs(g, xi)[0])[g.outputs[0]][0] for xi in other])
    assert np.array_equal(got.reshape(want.shape), want)

@pytest.mark.parametrize("kind", ["gelu", "hswish", "bn"])
def test_per_layer_cycles_start_at_each_layers_first_compute_instruction(models, kind):
    """A layer's LOAD tab issues while the CONV before it still streams: the per-layer table starts
    each layer at its first compute instruction, so that the CONV's streaming is charged to the CONV
    and no layer's utilization exceeds its bound; the rows add up to the run."""
    from tony.accel import model as am

    g = load_ir(models[kind][1])
    seg = accel_partition(g, AccelConfig(8, 8)).device_segments[0]
    for array in ((8, 8), (4, 4)):
        prog = compile_program(subgraph(g, seg), AccelConfig(*array))
        t = am.cycles(prog)
        rows = am.layer_table(prog, t)
        assert sum(r["predicted"] for r in rows) == t.total
        assert all(r["predicted"] > 0 for r in rows[1:-1])
        assert all(r["utilization"] <= r["bound"] + 1e-9 for r in rows if r["macs"]), \
            [(r["name"], r["utilization"], r["bound"]) for r in rows if r["macs"]]
