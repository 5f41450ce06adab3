"""The accelerator's compiler back end and Python model: bit-exact against the reference.

The model executes the compiled program word by word from the memory image (instruction
decode, DMA, implicit im2col, post-processing); golden values come from tony.ref."""
import numpy as np
import pytest

from tony.api import load_ir, normalize_inputs
from tony.accel import model as am
from tony.accel import isa
from tony.accel.compiler import compile_program
from tony.accel.layout import input_beats, pack_act, read_outputs, unpack_act
from tony.accel.program import AccelConfig
from tony.errors import UnsupportedError
from tony.ref import execute


@pytest.fixture(scope="module")
def workloads(bundled):
    return {name: bundled(name) for name in ("digits-cnn", "digits-mobilenet", "resnet8", "dscnn")}


def _check(model_dir, cfg, batch, samples=2):
    g = load_ir(model_dir / "model.onnx", requant="pow2")
    x = np.load(model_dir / "inputs.npy")[:samples]
    feeds, _ = normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    prog = compile_program(g, cfg, batch=batch)
    qin = next(op.outputs[0] for op in g.ops if op.host and op.kind == "quantize")
    compared = 0
    for s in range(0, samples, batch):
        ext = am.run(prog, input_beats(prog, {qin: env[qin][s:s + batch]}))
        for name, y in read_outputs(prog, ext).items():
            assert np.array_equal(y, env[name][s:s + batch]), (name, s)
            compared += y.size
    assert compared > 0
    return prog


@pytest.mark.parametrize("arr", [(8, 8), (16, 16), (4, 7), (1, 3)])
@pytest.mark.parametrize("name", ["digits-cnn", "digits-mobilenet"])
def test_model_is_bit_exact_on_digits(workloads, name, arr):
    _check(workloads[name], AccelConfig(*arr), batch=1)
    _check(workloads[name], AccelConfig(*arr, mem_bits=32), batch=2)


@pytest.mark.parametrize("name,arr", [("resnet8", (8, 8)), ("resnet8", (5, 12)), ("dscnn", (16, 16))])
def test_model_is_bit_exact_on_tiny_workloads(workloads, name, arr):
    _check(workloads[name], AccelConfig(*arr), batch=1, samples=1)


def test_resnet8_predicted_utilization_meets_targets(workloads):
    g = load_ir(workloads["resnet8"] / "model.onnx", requant="pow2")
    for arr, target in (((8, 8), 0.972), ((16, 16), 0.929)):  # 97.29% and 93.00% now
        prog = compile_program(g, AccelConfig(*arr), batch=1)
        t = am.cycles(prog)
        rows = am.layer_table(prog, t)
        assert sum(r["predicted"] for r in rows) == t.total
        macs = sum(r["macs"] for r in rows)
        assert macs > 12_000_000  # ResNet-8: about 12.5 M MACs per inference
        assert macs / (t.total * arr[0] * arr[1]) >= target


@pytest.mark.parametrize("name", ["resnet8", "mobilenet-v1-025"])
def test_the_second_layer_computes_while_the_input_loads(workloads, tmp_path, name):
    """At 16x16 the input of ResNet-8 (a 3x3 convolution after a 3x3 one) and of MobileNetV1-0.25
    (a depthwise one after a 3x3 stride-2 one) takes longer to load than the first layer
    computes: the second layer's row bands are interleaved with the first's (overlap.fused_bands),
    LOADs of input rows issue while the second layer's CONVs (weight block in the buffer's upper
    half) stream, every weight block is loaded once, and the result equals the reference."""
    if name not in workloads:
        from tony.models import build_example

        build_example(name, tmp_path)
    prog = _check(workloads.get(name, tmp_path), AccelConfig(16, 16), batch=1, samples=1)
    first, second = prog.layers[0], prog.layers[1]
    assert first.info["rows_with"] == second.name and first.info["second_bands"] > 1
    assert second.first == second.last and second.macs == 0 and first.macs > 0
    ins = am.decode_program(prog)
    t = am.cycles(prog)
    until, under = 0, 0
    for i in range(first.first, first.last):
        d = ins[i]
        if d["op"] == isa.CONV and d["wbase"] > 0:
            until = t.issue[i] + 2 + 16 + -(-d["npix"] // 16) * d["period"]
        elif d["op"] == isa.LOAD and d["buf"] == isa.B_ACT and t.issue[i] < until:
            under += 1
    assert under >= 1
    wloads = [d["eaddr"] for d in ins if d["op"] == isa.LOAD and d["buf"] == isa.B_WGT]
    assert len(wloads) == len(set(wloads))


def test_depthwise_layers_run_in_depthwise_mode_at_their_bound(workloads):
    g = load_ir(workloads["digits-mobilenet"] / "model.onnx", requant="pow2")
    prog = compile_program(g, AccelConfig(4, 4), batch=1)
    rows = am.layer_table(prog, am.cycles(prog))
    dw = [r for r in rows if r.get("group", 1) > 1]
    # kh*kw = 9 slices per tile of 4 pixels x 4 channels: only partly filled tiles lose
    assert dw and all(r.get("depthwise_mode") and r["dataflow_bound"] > 0.5 for r in dw)
    assert all(r["utilization"] <= r["bound"] + 1e-9 for r in rows if r["macs"])
    flags = [isa.decode(w)["flags"] for w in prog.words if isa.decode(w)["op"] == isa.CONV]
    assert any(f & isa.F_DEPTHWISE for f in flags) and not all(f & isa.F_DEPTHWISE for f in flags)


def test_depthwise_falls_back_to_one_over_cols_when_cols_exceed_rows_plus_3(workloads):
    g = load_ir(workloads["digits-mobilenet"] / "model.onnx", requant="pow2")
    prog = compile_program(g, AccelConfig(2, 6), batch=1)
    rows = am.layer_table(prog, am.cycles(prog))
    dw = [r for r in rows if r.get("group", 1) > 1]
    assert dw and all(not r.get("depthwise_mode") and r["dataflow_bound"] <= 1 / 6 + 1e-9 for r in dw)
    assert not any(isa.decode(w)["flags"] & isa.F_DEPTHWISE for w in prog.words)


def test_dscnn_predicted_utilization_meets_targets(workloads):
    g = load_ir(workloads["dscnn"] / "model.onnx", requant="pow2")
    for arr, target in (((8, 8), 0.85), ((16, 16), 0.65)):
        prog = compile_program(g, AccelConfig(*arr), batch=1)
        t = am.cycles(prog)
        macs = sum(r["macs"] for r in am.layer_table(prog, t))
        assert macs / (t.total * arr[0] * arr[1]) >= target, arr


def test_instruction_encoding_round_trips(rng):
    fields = isa.COMPUTE_FIELDS
    for _ in range(50):
        vals = {}
        for k, f in fields.items():
            lo, hi = (-(1 << (f.bits - 1)), (1 << (f.bits - 1)) - 1) if f.signed else (0, (1 << f.bits) - 1)
            vals[k] = int(rng.integers(lo, hi + 1))
        word = isa.encode(isa.CONV, flags=5, **vals)
        d = isa.decode(word)
        assert d["op"] == isa.CONV and d["flags"] == 5
        assert all(d[k] == v for k, v in vals.items())
    with pytest.raises(ValueError, match="does not fit"):
        isa.encode(isa.CONV, kh=300)


def test_activation_layout_round_trips(rng):
    x = rng.integers(-128, 128, size=(3, 11, 5, 4))
    w = pack_act(x, 11, 5, 4, 8, 8)
    assert w.shape == (2 * 3 * 5 * 4, 8)
    # channel 9 of sample 1 at pixel (2, 3): group 1, lane 1
    assert w[1 * 60 + 1 * 20 + 2 * 4 + 3, 1] == x[1, 9, 2, 3] & 0xFF
    assert np.array_equal(unpack_act(w, 3, 11, 5, 4, 8, 8, True), x)


def test_unsupported_op_names_the_node(tmp_path):
    from onnx import TensorProto, helper

    from tony.quant.qdq import quantize_static

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 2, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 4, 2])
    n = helper.make_node("Concat", ["x", "x"], ["y"], axis=2, name="cat0")
    m = helper.make_model(helper.make_graph([n], "g", [x], [y]), opset_imports=[helper.make_opsetid("", 13)])
    q = quantize_static(m, np.random.default_rng(0).uniform(-1, 1, (4, 4, 2, 2)).astype(np.float32))
    g = load_ir(q, requant="pow2")
    # along the rows: the accelerator concatenates channels only
    with pytest.raises(UnsupportedError, match=r'cat0.*Concat along axis 2'):
        compile_program(g, AccelConfig(4, 3))


def test_isa_doc_lists_every_field_at_its_position():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "isa.md").read_text()
    for group in (isa.HEADER, isa.DMA_FIELDS, isa.COMPUTE_FIELDS):
        for name, f in group.items():
            assert f"| {name} | {f.lo} | {f.bits}" in doc, name


def test_activations_spill_when_the_buffer_is_small(workloads):
    prog = _check(workloads["resnet8"], AccelConfig(8, 8, abuf_words=6144), batch=1, samples=1)
    assert any(t.startswith("STORE act") for t in prog.text[:-3])  # a spill before the final STORE
    # 4096 words: the convolutions fit once the other tensors leave (the buffer is compacted by
    # spilling everything), only the 32x32 Adds (3 x 2048 words) need row bands
    prog = _check(workloads["resnet8"], AccelConfig(8, 8, abuf_words=4096), batch=1, samples=1)
    assert {L.op for L in prog.layers if L.info.get("bands")} == {"add"}


# ---- Concat ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def concat_model():
    """tests/test_ort_quantized.py's CNN (a residual block whose 8-channel output is concatenated
    with a 4-channel 1x1 Conv of itself), quantized by tony.quant (shared Concat scales)."""
    from test_ort_quantized import concat_cnn
    from tony.quant.qdq import quantize_static

    x = np.random.default_rng(0).uniform(0, 1, (4, 1, 8, 8)).astype(np.float32)
    return quantize_static(concat_cnn(), x), x


def _check_graph(g, x, cfg, batch):
    feeds, _ = normalize_inputs(g, x)
    env = execute(g, feeds, keep_all=True)
    prog = compile_program(g, cfg, batch=batch)
    qin = next(op.outputs[0] for op in g.ops if op.host and op.kind == "quantize")
    for s in range(0, len(x), batch):
        ext = am.run(prog, input_beats(prog, {qin: env[qin][s:s + batch]}))
        outs = read_outputs(prog, ext)
        assert outs
        for name, y in outs.items():
            assert np.array_equal(y, env[name][s:s + batch]), (name, s)
    return prog


@pytest.mark.parametrize("arr", [(8, 8), (4, 4), (2, 4)])
def test_concat_at_a_shared_scale_is_zero_copy_and_bit_exact(concat_model, arr):
    q, x = concat_model
    g = load_ir(q, requant="pow2")
    cat = next(op for op in g.ops if op.kind == "concat")
    assert all(rq.mult == 1 and rq.shift == 0 for rq in cat.requants)
    prog = _check_graph(g, x, AccelConfig(*arr), batch=2)
    layer = next(L for L in prog.layers if L.op == "concat")
    assert layer.info["copied"] == []
    assert not any(t.split()[0] in ("EWISE", "CONV", "POOL") for t in prog.text[layer.first:layer.last])


def test_concat_with_a_rescaled_input_requantizes_through_the_vector_unit(concat_model):
    from dataclasses import replace as dreplace

    q, x = concat_model
    g = load_ir(q, requant="pow2")
    ops = list(g.ops)
    k = next(i for i, op in enumerate(ops) if op.kind == "concat")
    rq0, rq1 = ops[k].requants
    # the first input at twice the output's scale: a rounding right shift by one through EWISE
    ops[k] = dreplace(ops[k], requants=(dreplace(rq0, shift=1), rq1))
    g = dreplace(g, ops=tuple(ops))
    prog = _check_graph(g, x, AccelConfig(4, 4), batch=1)
    layer = next(L for L in prog.layers if L.op == "concat")
    assert layer.info["copied"] == [ops[k].inputs[0]]
    assert sum(t.startswith("EWISE") and "shift=1" in t for t in prog.text[layer.first:layer.last]) == 1


def test_concat_of_a_graph_input_and_a_repeated_input_is_bit_exact():
    from test_ort_quantized import concat_input_cnn

    from tony.quant.qdq import quantize_static

    m, x = concat_input_cnn()
    g = load_ir(quantize_static(m, x), requant="pow2")
    for arr in ((4, 4), (2, 2)):
        prog = _check_graph(g, x, AccelConfig(*arr), batch=1)
        layer = next(L for L in prog.layers if L.op == "concat")
        assert len(layer.info["copied"]) >= 2  # the graph input and the second use of r are copies


@pytest.mark.parametrize("name,arr,abuf", [("digits-cnn", (4, 4), 128), ("digits-cnn", (8, 8), 64),
                                           ("resnet8", (8, 8), 2048)])
def test_layers_larger_than_the_buffer_run_in_row_bands(workloads, name, arr, abuf):
    g = load_ir(workloads[name] / "model.onnx", requant="pow2")
    full = compile_program(g, AccelConfig(*arr), batch=1)
    assert full.cfg.abuf_words > 2 * abuf
    prog = _check(workloads[name], AccelConfig(*arr, abuf_words=abuf), batch=1, samples=1)
    banded = [L for L in prog.layers if L.info.get("bands", 1) > 1]
    assert {L.op for L in banded} >= {"conv", "add"}
    assert prog.cfg.abuf_words == abuf
    # every band reads and writes only inside the buffer (the model asserts on any access outside it)
    assert am.cycles(prog).total > am.cycles(full).total


def test_a_row_too_large_for_the_buffer_is_refused_with_the_size_it_needs(workloads):
    g = load_ir(workloads["digits-cnn"] / "model.onnx", requant="pow2")
    with pytest.raises(UnsupportedError, match=r"conv.*one output row of the layer needs \d+ activation-buffer words"):
        compile_program(g, AccelConfig(4, 4, abuf_words=32), batch=1)


def test_pages_biases_and_weight_syncs_overlap_computation(workloads):
    """With the instruction memory sized by the compiler, the boot reads only the first page and
    the other pages load while CONVs compute; only the first two CONVs' bias words are loaded
    before the first CONV; a prefetched weight block's CONV waits with SYNC dma alone. Fewer
    cycles than the same program in one page, and bit-exact."""
    g = load_ir(workloads["resnet8"] / "model.onnx", requant="pow2")
    prog = _check(workloads["resnet8"], AccelConfig(16, 16), batch=1, samples=1)
    one = compile_program(g, AccelConfig(16, 16, imem_words=4096), batch=1)
    assert one.boot_words == len(one.words) and not any(t.startswith("LOAD imem") for t in one.text)
    pages = [t for t in prog.text if t.startswith("LOAD imem")]
    # the first page holds the first convolution's row bands with the input's band LOADs under them
    # (overlap.py): the memory port is busy loading the input there, so it is booted rather than paged
    assert pages and prog.boot_words < 64 and prog.cfg.imem_words < len(prog.words)
    t, t1 = am.cycles(prog), am.cycles(one)
    assert t.total < t1.total
    ins = [isa.decode(w) for w in prog.words]
    first_conv = next(i for i, d in enumerate(ins) if d["op"] == isa.CONV)
    # before the first CONV: the boot, the input (1024 words of 2 beats), its weights, 2 bias words
    assert t.issue[first_conv] < prog.boot_words * 8 + 2048 + 27 * 2 + 2 * 8 + 40
    bias = [d for d in ins if d["op"] == isa.LOAD and d["buf"] == isa.B_BIAS]
    assert [d["baddr"] for d in bias] == [0, 2] and bias[0]["nwords"] == 2
    assert bias[1]["nwords"] == prog.cfg.bbuf_words - 2
    assert not any(d["op"] == isa.SYNC and d["sync"] & isa.S_STREAM for d in ins)


def test_one_pool_walks_every_channel_group(workloads):
    """A pooling layer over whole tensors is one POOL: the channel groups follow one another as
    further samples in the input and the result."""
    prog = _check(workloads["resnet8"], AccelConfig(4, 4), batch=2, samples=2)
    pools = [isa.decode(w) for w in prog.words if isa.decode(w)["op"] == isa.POOL]
    assert len(pools) == 1 and pools[0]["npix"] == 64 // 4 * 2   # 16 groups of 4 channels, 2 samples
