"""Whole workloads on the accelerator in Verilator: tony compile -> tony sim, every output byte
equal to the reference's, and the cycle model's prediction equal to the simulated cycles, in
total, per instruction and per layer. The digits CNN and ResNet-8 at 8x8 run by default; the
other workloads and array sizes are behind -m slow."""
import json

import numpy as np
import pytest

from tony.accel.program import AccelConfig
from tony.compiler import compile_model
from tony.sim.accel import simulate

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def workload(bundled):
    return bundled


def _run(workload, tmp_path, name, arr, samples=1, batch=1, abuf_words=0):
    d = workload(name)
    x = np.load(d / "inputs.npy")[:samples]
    r, c = arr
    out = tmp_path / f"{name}_{r}x{c}"
    compile_model(d / "model.onnx", out, config=AccelConfig(r, c, abuf_words=abuf_words), inputs=x, batch=batch)
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["samples"] == samples and rep["compared"] > 0
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert all(l["cycles"] == l["predicted"] for l in rep["layers"])
    assert sum(l["cycles"] for l in rep["layers"]) == rep["predicted_cycles"]
    peak = r * c
    for l in rep["layers"]:
        if l["macs"]:
            # a layer's span holds all its streaming: the dataflow bound is a hard limit
            assert l["utilization"] <= l["dataflow_bound"] + 1e-9, l
    assert rep["macs"] <= rep["cycles"] * peak
    assert json.loads((out / "sim_report.json").read_text())["cycles"] == rep["cycles"]
    return rep


@pytest.mark.parametrize("name,arr", [("digits-cnn", (8, 8)), ("digits-mobilenet", (5, 3))],
                         ids=["digits-cnn-8x8", "digits-mobilenet-5x3"])
def test_digits_workload_on_verilator(workload, tmp_path, name, arr):
    rep = _run(workload, tmp_path, name, arr, samples=3, batch=2)
    assert rep["runs"] == 2


def test_small_activation_buffer_spills_to_external_memory(workload, tmp_path):
    """With 384 activation-buffer words (the model needs 512), the residual branch of the digits
    CNN is stored to external memory and loaded back before the Add."""
    rep = _run(workload, tmp_path, "digits-cnn", (4, 4), samples=2, abuf_words=384)
    text = (tmp_path / "digits-cnn_4x4" / "program.txt").read_text()
    assert "STORE act" in text and text.count("LOAD act") >= 2
    assert rep["accel"]["abuf_words"] == 384


def test_resnet8_at_8x8_is_bit_exact_with_80_percent_utilization(workload, tmp_path):
    rep = _run(workload, tmp_path, "resnet8", (8, 8))
    print(f"ResNet-8 8x8: {rep['cycles']} cycles, utilization {rep['utilization']:.3f}, "
          f"{rep['cycles_per_second']:.0f} simulated cycles/s")
    assert rep["utilization"] >= 0.80


SLOW = [
    ("resnet8", (16, 16)), ("resnet8", (12, 6)),
    ("dscnn", (8, 8)), ("dscnn", (16, 16)), ("dscnn", (6, 12)),
    ("mobilenet-v1-025", (8, 8)), ("mobilenet-v1-025", (16, 16)),
    ("fc-autoencoder", (8, 8)), ("fc-autoencoder", (16, 16)),
    ("digits-cnn", (16, 16)), ("digits-mobilenet", (8, 8)), ("digits-mobilenet", (16, 16)),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,arr", SLOW, ids=[f"{n}-{a[0]}x{a[1]}" for n, a in SLOW])
def test_workload_on_verilator(workload, tmp_path, name, arr):
    rep = _run(workload, tmp_path, name, arr)
    if name == "resnet8" and arr == (16, 16):
        assert rep["utilization"] >= 0.65
    if name in ("dscnn", "mobilenet-v1-025"):
        # (a layer interleaved with the one before it, overlap.fused_bands, reports its MACs there)
        dw = [l for l in rep["layers"] if l.get("group", 1) > 1 and l["macs"]]
        assert dw
        if arr[1] <= arr[0] + 3:
            # the array's depthwise mode: kh*kw slices per tile, every product useful
            assert all(l.get("depthwise_mode") for l in dw)
            assert all(l["dataflow_bound"] > 1 / arr[1] + 1e-9 for l in dw)
        else:
            # COLS > ROWS + 3: one input channel per output lane, at most 1/COLS of the products useful
            assert not any(l.get("depthwise_mode") for l in dw)
            assert all(l["dataflow_bound"] <= 1 / arr[1] + 1e-9 for l in dw)


def test_concat_cnn_on_verilator(tmp_path):
    """A CNN with a channel Concat (its inputs written in place into the output's channel groups),
    quantized by tony.quant: bit-exact and cycle-exact on Verilator."""
    import onnx

    from test_ort_quantized import concat_cnn
    from tony.quant.qdq import quantize_static

    x = np.random.default_rng(0).uniform(0, 1, (3, 1, 8, 8)).astype(np.float32)
    onnx.save(quantize_static(concat_cnn(), x), tmp_path / "model.onnx")
    out = tmp_path / "concat-cnn_4x4"
    compile_model(tmp_path / "model.onnx", out, config=AccelConfig(4, 4), inputs=x, batch=1)
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["samples"] == 3 and rep["compared"] > 0
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert any(l["op"] == "concat" for l in rep["layers"])
    assert all(l["cycles"] == l["predicted"] for l in rep["layers"])


def test_layers_larger_than_the_buffer_run_in_row_bands_on_verilator(workload, tmp_path):
    """With 128 activation-buffer words (each 8-channel 8x8 tensor of the digits CNN is 128 words at
    4 columns), the convolutions, the Add and the max pooling run in bands of output rows loaded
    from and stored to external memory."""
    rep = _run(workload, tmp_path, "digits-cnn", (4, 4), samples=2, abuf_words=128)
    assert rep["accel"]["abuf_words"] == 128
    banded = {l["op"] for l in rep["layers"] if l.get("bands", 1) > 1}
    assert {"conv", "add", "maxpool"} <= banded, banded


@pytest.mark.parametrize("n_new", [2, 23])
def test_sim_with_other_inputs_than_the_build_compares_those_inputs(workload, tmp_path, tony_cli, n_new):
    """A build compiled with 20 random samples, simulated with fewer and with more real digits:
    the hardware runs the new inputs (not the compiled ones) and equals their reference outputs."""
    d = workload("digits-cnn")
    out = tmp_path / "b"
    r = tony_cli("compile", d / "model.onnx", "-o", out, "--array", "4x4")
    assert r.returncode == 0, r.stderr
    x = np.load(d / "inputs.npy")[:n_new]
    np.save(tmp_path / "x.npy", x)
    r = tony_cli("sim", out, "--inputs", tmp_path / "x.npy", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((out / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["samples"] == n_new and rep["runs"] == n_new
    from tony.api import load_ir, normalize_inputs
    from tony.ref import execute

    m = json.loads((out / "manifest.json").read_text())
    key = m["device_outputs"][-1]
    g = load_ir(d / "model.onnx")
    want = execute(g, normalize_inputs(g, x)[0], keep_all=True)[m["golden"][key]["tensor"]]
    got = np.load(out / "sim" / f"hw_{key}.npy")
    assert np.array_equal(got.reshape(want.shape), want)


def _two_conv_net(c_in: int, h: int, w: int, stride: int, seed: int = 0):
    """Conv(c_in -> 8, 3x3, `stride`)-ReLU-Conv(8 -> 6, 3x3)-ReLU over a c_in x h x w image, seeded
    random weights; returns the float model."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)

    def w_(name, shape):
        return numpy_helper.from_array(rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), size=shape).astype(np.float32),
                                       name)
    inits = [w_("w1", (8, c_in, 3, 3)), numpy_helper.from_array(rng.normal(0, .05, 8).astype(np.float32), "b1"),
             w_("w2", (6, 8, 3, 3)), numpy_helper.from_array(rng.normal(0, .05, 6).astype(np.float32), "b2")]
    N = helper.make_node
    nodes = [N("Conv", ["input", "w1", "b1"], ["c1"], pads=[1] * 4, strides=[stride] * 2), N("Relu", ["c1"], ["r1"]),
             N("Conv", ["r1", "w2", "b2"], ["c2"], pads=[1] * 4), N("Relu", ["c2"], ["output"])]
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    g = helper.make_graph(nodes, "two_conv", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, c_in, h, w])],
                          [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 6, oh, ow])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


OVERLAP = [(3, 40, 36, 1, (4, 4)), (6, 30, 44, 2, (4, 4)), (3, 48, 40, 2, (2, 8))]


@pytest.mark.parametrize("c_in,h,w,stride,arr", OVERLAP, ids=[f"{c}x{h}x{w}-s{s}-{a[0]}x{a[1]}" for c, h, w, s, a in OVERLAP])
def test_input_load_overlaps_the_first_layer_on_verilator(tmp_path, c_in, h, w, stride, arr):
    """A model whose input is large loads it in bands of rows into bank 0 of the activation buffer
    while the first convolution computes the bands already loaded into bank 1: a LOAD into the
    activation buffer issues while a CONV streams, and the RTL equals the reference bit for bit
    with the same issue cycles as the cycle model (so it overlapped there too). Inputs of 3 and 6
    channels (one and two channel groups at 4 lanes), stride 1 and 2, square and wide arrays."""
    import onnx

    from tony.accel import model as accel_model
    from tony.accel.compiler import compile_program
    from tony.api import load_ir
    from tony.quant.qdq import quantize_static

    x = np.random.default_rng(1).uniform(0, 1, (3, c_in, h, w)).astype(np.float32)
    onnx.save(quantize_static(_two_conv_net(c_in, h, w, stride), x), tmp_path / "model.onnx")
    cfg = AccelConfig(*arr)
    prog = compile_program(load_ir(tmp_path / "model.onnx"), cfg)
    assert 0 < prog.cfg.abuf_split == -(-c_in // arr[1]) * h * w   # bank 0 holds the input
    timing = accel_model.cycles(prog)
    overlapped = _act_loads_while_streaming(prog, timing)
    assert overlapped >= 2, overlapped

    out = tmp_path / "build"
    compile_model(tmp_path / "model.onnx", out, config=cfg, inputs=x, batch=1)
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["samples"] == 3 and rep["compared"] > 0
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert rep["predicted_cycles"] == timing.total
    assert rep["accel"]["abuf_split"] == prog.cfg.abuf_split
    assert next(l for l in rep["layers"] if l["op"] == "conv")["input_bands"] > 1


def _act_loads_while_streaming(prog, timing, conv=lambda d: True) -> int:
    """LOADs into the activation buffer that issue while a CONV chosen by `conv` (every CONV by
    default) still streams: issue + 2 + ROWS + tiles x period (docs/isa.md, 'Timing')."""
    from tony.accel import isa
    from tony.accel import model as accel_model

    cfg, until, count = prog.cfg, 0, 0
    for d, t in zip(accel_model.decode_program(prog), timing.issue):
        if d["op"] == isa.CONV and conv(d):
            until = t + 2 + cfg.rows + -(-d["npix"] // cfg.rows) * d["period"]
        elif d["op"] == isa.LOAD and d["buf"] == isa.B_ACT and t < until:
            count += 1
    return count


FUSED = [(3, 48, 40, 2, (8, 8)), (3, 24, 25, 1, (16, 16))]


@pytest.mark.parametrize("c_in,h,w,stride,arr", FUSED, ids=[f"{c}x{h}x{w}-s{s}-{a[0]}x{a[1]}" for c, h, w, s, a in FUSED])
def test_input_load_overlaps_the_first_two_layers_on_verilator(tmp_path, c_in, h, w, stride, arr):
    """Where the input takes longer to load than the first convolution computes, the second layer's
    row bands are interleaved with the first's (overlap.fused_bands): LOADs of input rows issue
    while CONVs of the second layer stream, the program is faster than with the first layer alone
    banded (a fixed weight buffer rules the interleaving out), and the RTL equals the reference
    bit for bit with the cycle model's issue cycles. Stride 2 at 8x8, stride 1 at 16x16."""
    import onnx

    from tony.accel import model as accel_model
    from tony.accel.compiler import compile_program
    from tony.api import load_ir
    from tony.quant.qdq import quantize_static

    x = np.random.default_rng(2).uniform(0, 1, (2, c_in, h, w)).astype(np.float32)
    onnx.save(quantize_static(_two_conv_net(c_in, h, w, stride, seed=3), x), tmp_path / "model.onnx")
    cfg = AccelConfig(*arr)
    g = load_ir(tmp_path / "model.onnx")
    prog = compile_program(g, cfg)
    first, second = prog.layers[0], prog.layers[1]
    assert first.info["rows_with"] == second.name and second.info["rows_with"] == first.name
    assert first.info["second_bands"] > 1 and first.info["input_bands"] > 1 and second.first == second.last
    timing = accel_model.cycles(prog)
    # the second convolution's CONVs: 8 channels x 3x3
    under_second = _act_loads_while_streaming(prog, timing, conv=lambda d: d["klen"] == 8 * 9)
    assert under_second >= 1, under_second
    alone = compile_program(g, AccelConfig(*arr, wbuf_words=prog.cfg.wbuf_words))
    assert "rows_with" not in alone.layers[0].info and accel_model.cycles(alone).total > timing.total

    out = tmp_path / "build"
    compile_model(tmp_path / "model.onnx", out, config=cfg, inputs=x, batch=1)
    rep = simulate(out, progress=False)
    assert rep["bit_exact"], rep["first_mismatches"]
    assert rep["samples"] == 2 and rep["compared"] > 0
    assert rep["cycles_match"] and rep["issue_match"], (rep["cycles_per_run"], rep["predicted_cycles"])
    assert rep["predicted_cycles"] == timing.total
