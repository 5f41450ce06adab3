"""Transformer encoders exported by torch: quantized by Tony's quantizer, lowered to the integer
LayerNorm, Softmax and GELU ops (docs/transformer.md), the token-wise projections on the
accelerator, and bit-exact through Verilator and the HLS C simulation (slow)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import tony
from tony import ir
from tony.api import load_ir
from tony.ref import nonlinear as nl

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

D, HEADS, FFN, TOKENS = 32, 2, 64, 8   # head size 16: the scores' 1/sqrt(16) is a power of two


def _encoder(layers=1, gelu="none", seed=0, heads=HEADS, d=D, ffn=FFN):
    nn = torch.nn

    class Block(nn.Module):
        def __init__(s):
            super().__init__()
            s.ln1, s.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            s.q, s.k, s.v, s.o = (nn.Linear(d, d) for _ in range(4))
            s.f1, s.f2 = nn.Linear(d, ffn), nn.Linear(ffn, d)
            s.act = nn.GELU(approximate=gelu)

        def forward(s, x):
            b, t, d = x.shape
            y = s.ln1(x)
            q = s.q(y).reshape(b, t, heads, d // heads).transpose(1, 2)
            k = s.k(y).reshape(b, t, heads, d // heads).transpose(1, 2)
            v = s.v(y).reshape(b, t, heads, d // heads).transpose(1, 2)
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
            x = x + s.o((a @ v).transpose(1, 2).reshape(b, t, d))
            return x + s.f2(s.act(s.f1(s.ln2(x))))

    class Encoder(nn.Module):
        def __init__(s):
            super().__init__()
            s.blocks = nn.ModuleList(Block() for _ in range(layers))
            s.ln = nn.LayerNorm(d)
            s.head = nn.Linear(d, 4)

        def forward(s, x):
            for blk in s.blocks:
                x = blk(x)
            return s.head(s.ln(x).mean(dim=1))

    torch.manual_seed(seed)
    m = Encoder().eval()
    with torch.no_grad():   # LayerNorm parameters other than 1 and 0, so that gamma and beta count
        for mod in m.modules():
            if isinstance(mod, nn.LayerNorm):
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.3, 0.3)
    return m


def _export(model, path, opset, tokens=TOKENS, d=D):
    x = torch.zeros(1, tokens, d)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), opset_version=opset, dynamo=False, input_names=["x"],
                          output_names=["y"])
    return path


def _data(n, seed=1, tokens=TOKENS, d=D):
    return np.random.default_rng(seed).standard_normal((n, 1, tokens, d)).astype(np.float32)


def _ort(path, x):
    """onnxruntime without graph optimizations: on a QDQ model its fused int8 kernels differ from
    one CPU to the next (AVX2 against AVX-512 VNNI); the plain Q/DQ path does not."""
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.stack([s.run(None, {"x": v})[0] for v in x])


def _kinds(g):
    return [(type(op).__name__, getattr(op, "function", "")) for op in g.ops]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Float encoders at opset 13 (LayerNorm and GELU decomposed), 17 (LayerNormalization) and 20
    (Gelu, both approximate modes), each quantized by tony.quant (one batch, pow2)."""
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    d = tmp_path_factory.mktemp("enc")
    calib = _data(16, seed=0)
    out = {}
    for key, opset, gelu in (("13", 13, "none"), ("17", 17, "none"), ("20", 20, "none"), ("20tanh", 20, "tanh")):
        f = _export(_encoder(gelu=gelu), d / f"float{key}.onnx", opset)
        q = quantize_static(load_model(f), calib, sequential=False)
        onnx.save(q, d / f"q{key}.onnx")
        out[key] = (f, d / f"q{key}.onnx")
    return out


@pytest.mark.parametrize("key", ["13", "17", "20", "20tanh"])
def test_torch_encoder_lowers_to_integer_layernorm_softmax_and_gelu(exported, key):
    _, q = exported[key]
    g = load_ir(q)
    kinds = _kinds(g)
    assert kinds.count(("LayerNorm", "")) == 3
    assert kinds.count(("Softmax", "")) == 1
    assert kinds.count(("Table", "Gelu" if key != "20tanh" else "Gelu(tanh)")) == 1
    assert not any(k == "FloatIsland" for k, _ in kinds)
    # every projection is a 1x1 Conv (tokens as pixels) or the head's Dense; the two products of
    # activations (Q.K^T and P.V) are PixelMatMuls (heads as pixel rows)
    assert kinds.count(("Conv", "")) == 6 and kinds.count(("Dense", "")) == 1
    assert kinds.count(("PixelMatMul", "")) == 2 and kinds.count(("MatMul", "")) == 0


@pytest.mark.parametrize("key", ["13", "17", "20tanh"])
def test_reference_is_within_an_lsb_of_onnxruntime_and_near_float(exported, key):
    """The integer kernels against onnxruntime on the same QDQ model (float LayerNorm, Softmax and
    GELU on the dequantized values, then quantized) and against the float model."""
    f, q = exported[key]
    g = load_ir(q)
    x = _data(24)
    got = np.asarray(tony.run_reference(g, x)[0]).reshape(24, 1, 4)
    out_scale = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    qdq, flt = _ort(q, x), _ort(f, x)
    assert np.abs(got - qdq).max() <= 2 * out_scale
    assert np.abs(got - flt).max() <= 4 * out_scale
    # the integer kernels cost at most a quarter LSB of mean error beyond the int8 quantization itself
    assert np.abs(got - flt).mean() <= np.abs(qdq - flt).mean() + 0.25 * out_scale


def test_projections_attention_softmax_and_gelu_run_on_the_accelerator_and_the_rest_on_the_host(exported):
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.ir.partition import partition, report

    g = load_ir(exported["17"][1])
    part = partition(g, refuse(g, AccelConfig(8, 8)))
    dev = [p.op for p in part.placement if p.device]
    # the residual Adds run on [1, d, 1, T] in the vector unit, the GELU table between fc1 and fc2
    # in its lookup mode, the Softmax over the scores' channels in the Softmax unit and the LayerNorms
    # of the residual stream (ln2, the final one) over its channels in the LayerNorm unit
    # (tony.ir.layout); ln1 reads the graph's 3-D input and stays on the host
    assert {type(op).__name__ for op in dev} == {"Conv", "Dense", "PixelMatMul", "Add", "Table", "Softmax",
                                                 "LayerNorm"}
    assert len(dev) == 15 and sum(isinstance(op, ir.LayerNorm) for op in dev) == 2
    assert [op.origin for op in dev if isinstance(op, ir.PixelMatMul)] == ["/blocks.0/MatMul", "/blocks.0/MatMul_1"]
    host = {type(p.op).__name__ for p in part.placement if not p.device}
    assert {"LayerNorm", "Transpose"} <= host and not host & {"MatMul", "Table", "Softmax"}
    assert report(g, part)["device_mac_share"] == 1.0


@pytest.mark.parametrize("key", ["13", "20tanh"])
def test_gelu_joins_its_feed_forward_layers_device_segment(exported, key, monkeypatch):
    """GELU (the Erf chain of opset 13, or Gelu(tanh)) between fc1 and fc2, on token tensors
    [N, T, D], runs as a table lookup on fc1's pixel view (tony.ir.layout.keep_pixels): fc1,
    GELU and fc2 form one device segment instead of two (fc1's and fc2's with GELU on the host), and
    the partitioned graph on the instruction model equals the reference of the graph without the
    rewrite, at 8x8 and 4x8."""
    import tony.frontend.lower as lower
    from tony.accel.compiler import run_partitioned
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.api import normalize_inputs
    from tony.ir.partition import partition
    from tony.ref import execute

    g = load_ir(exported[key][1])
    with monkeypatch.context() as m:
        m.setattr(lower, "keep_pixels", lambda graph: graph)
        plain = load_ir(exported[key][1])
    feeds, _ = normalize_inputs(g, _data(3, seed=5))
    want = execute(plain, feeds)[plain.outputs[0]]
    for array in ((8, 8), (4, 8)):
        cfg = AccelConfig(*array)
        part = partition(g, refuse(g, cfg))
        gelu = next(p for p in part.placement if isinstance(p.op, ir.Table))
        seg = part.segments[gelu.segment]
        kinds = [op.kind for op in seg.ops if op.kind in ("conv", "table")]
        k = kinds.index("table")
        assert gelu.device and kinds[k - 1:k + 2] == ["conv", "table", "conv"]
        before = partition(plain, refuse(plain, cfg))
        # one encoder layer: fc1 + GELU + fc2 join, and P.V with the output projection
        assert len(part.device_segments) <= len(before.device_segments) - 1
        env, _ = run_partitioned(g, cfg, feeds, part)
        assert np.array_equal(env[g.outputs[0]], want)


def _without_pixel_matmuls(path, monkeypatch):
    """The same model lowered with its MatMuls of two activations left as MatMul (the host kernel)."""
    import tony.frontend.lower as lower

    with monkeypatch.context() as m:
        m.setattr(lower, "matmuls_as_pixels", lambda g: g)
        return load_ir(path)


@pytest.mark.parametrize("key", ["13", "17"])
def test_pixel_matmuls_compute_what_the_matmuls_compute(exported, key, monkeypatch):
    """The rewritten graph (Transposes around a PixelMatMul) gives the reference's outputs of the
    graph with the plain MatMuls, to the bit."""
    g, plain = load_ir(exported[key][1]), _without_pixel_matmuls(exported[key][1], monkeypatch)
    assert sum(isinstance(op, ir.MatMul) for op in plain.ops) == 2
    x = _data(6)
    assert np.array_equal(tony.run_reference(g, x)[0], tony.run_reference(plain, x)[0])


@pytest.mark.parametrize("array,batch", [((8, 8), 1), ((4, 4), 2), ((16, 16), 3), ((4, 8), 2)])
def test_attention_on_the_instruction_model_equals_the_plain_matmul_reference(exported, array, batch, monkeypatch):
    """Every device segment (projections, Q.K^T, P.V) on the instruction-level model, host segments
    between them: the outputs equal the reference of the graph with plain MatMuls, for several
    arrays and batches (each sample and head its own weight block)."""
    from tony.accel.compiler import run_partitioned
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.api import normalize_inputs
    from tony.ir.partition import partition
    from tony.ref import execute

    g = load_ir(exported["17"][1])
    plain = _without_pixel_matmuls(exported["17"][1], monkeypatch)
    cfg = AccelConfig(*array)
    feeds, _ = normalize_inputs(g, _data(5, seed=3))
    env, cycles = run_partitioned(g, cfg, feeds, partition(g, refuse(g, cfg)), batch=batch)
    want = execute(plain, feeds)
    assert cycles > 0 and np.array_equal(env[g.outputs[0]], want[plain.outputs[0]])


def _attention(d, heads, tokens, seed=0):
    """One self-attention (no LayerNorm, no FFN): the projections and the two MatMuls of
    activations, 3-D products when heads == 1."""
    nn = torch.nn

    class Attn(nn.Module):
        def __init__(s):
            super().__init__()
            s.q, s.k, s.v, s.o = (nn.Linear(d, d) for _ in range(4))

        def forward(s, x):
            b, t, _ = x.shape
            if heads == 1:
                a = torch.softmax(s.q(x) @ s.k(x).transpose(-1, -2) / math.sqrt(d), dim=-1)
                return s.o(a @ s.v(x))
            q, k, v = (f(x).reshape(b, t, heads, d // heads).transpose(1, 2) for f in (s.q, s.k, s.v))
            a = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // heads), dim=-1)
            return s.o((a @ v).transpose(1, 2).reshape(b, t, d))

    torch.manual_seed(seed)
    m = Attn().eval()
    x = torch.zeros(1, tokens, d)
    return m, x


def _attention_model(tmp_path, d, heads, tokens, opset=17):
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    m, x = _attention(d, heads, tokens)
    f = tmp_path / "attn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), str(f), opset_version=opset, dynamo=False, input_names=["x"], output_names=["y"])
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((8, 1, tokens, d)).astype(np.float32)
    q = quantize_static(load_model(f), calib, sequential=False)
    onnx.save(q, tmp_path / "q.onnx")
    return tmp_path / "q.onnx", rng.standard_normal((3, 1, tokens, d)).astype(np.float32)


@pytest.mark.parametrize("d,heads,tokens", [(16, 1, 5), (24, 3, 11), (32, 2, 20)])
def test_any_head_count_head_size_and_token_count_runs_on_the_array(tmp_path, d, heads, tokens, monkeypatch):
    """One head (3-D MatMuls), head sizes 16 and 8, token counts that fill the array's rows and
    columns partly: both MatMuls on the device, bit-exact on the instruction model."""
    from tony.accel.compiler import run_partitioned
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.api import normalize_inputs
    from tony.ir.partition import partition
    from tony.ref import execute

    q, x = _attention_model(tmp_path, d, heads, tokens)
    g, plain = load_ir(q), _without_pixel_matmuls(q, monkeypatch)
    cfg = AccelConfig(8, 8)
    part = partition(g, refuse(g, cfg))
    assert sum(p.device and isinstance(p.op, ir.PixelMatMul) for p in part.placement) == 2
    feeds, _ = normalize_inputs(g, x)
    env, _ = run_partitioned(g, cfg, feeds, part)
    assert np.array_equal(env[g.outputs[0]], execute(plain, feeds)[plain.outputs[0]])


def test_a_second_operand_the_array_cannot_take_keeps_the_matmul_on_the_host(exported):
    """b must reach the weight buffer word for word: with 16-bit weight lanes and 8-bit activation
    lanes the products stay on the host, named with their reason, while the projections run."""
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.ir.partition import partition

    g = load_ir(exported["17"][1])
    part = partition(g, refuse(g, AccelConfig(8, 8, w_bits=16)))
    why = {p.reason for p in part.placement if isinstance(p.op, ir.PixelMatMul)}
    assert all(not p.device for p in part.placement if isinstance(p.op, ir.PixelMatMul))
    assert why == {"its second operand is loaded as weights from 8-bit activation words, the weight buffer has "
                   "16-bit lanes"}
    assert sum(p.device and isinstance(p.op, ir.Conv) for p in part.placement) == 6


@pytest.mark.sim
def test_attention_matmuls_bit_exact_on_verilator_with_predicted_cycles(tmp_path, tony_cli):
    """`tony compile` (8x8) and `tony sim` of one attention (2 heads of 16, 12 tokens): Q.K^T and
    P.V run as device segments, the compile report says so (every MAC on the device), and the
    simulation is bit-exact with the cycles of the cycle model, the two products in its layer table."""
    import json

    q, x = _attention_model(tmp_path, 32, 2, 12)
    np.save(tmp_path / "inputs.npy", x[:2])
    r = tony_cli("compile", q, "-o", tmp_path / "b", "--array", "8x8", "--inputs", tmp_path / "inputs.npy")
    assert r.returncode == 0, r.stderr
    assert "100.00% of" in r.stdout and "(MatMul," not in r.stdout
    assert r.stdout.count("(pixel_matmul, segment") == 2 and "MAC utilization" in r.stdout
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["placement"]["device_mac_share"] == 1.0
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 2 * 12 * 32
    mm = [l for s in rep["segments"] for l in s["layers"] if l["op"] == "pixel_matmul"]
    assert len(mm) == 2 and all(l["cycles"] == l["predicted"] and l["utilization"] > 0 for l in mm)


@pytest.mark.sim
@pytest.mark.parametrize("array,d,heads,tokens", [("8x8", 32, 2, 10), ("4x4", 24, 3, 7)])
def test_softmax_on_the_device_bit_exact_on_verilator_with_predicted_cycles(tmp_path, tony_cli, array, d, heads,
                                                                            tokens):
    """`tony compile` and `tony sim` of one attention whose score rows (10 and 7 tokens) are not a
    multiple of COLS (8 and 4): the Softmax runs on the Softmax unit (SOFTMAX) between Q.K^T and P.V
    in one device segment, the report lists it as a layer with its cycles, and the simulation is
    bit-exact with the reference, every layer's cycles those of the cycle model."""
    import json

    q, x = _attention_model(tmp_path, d, heads, tokens)
    np.save(tmp_path / "inputs.npy", x[:2])
    r = tony_cli("compile", q, "-o", tmp_path / "b", "--array", array, "--inputs", tmp_path / "inputs.npy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(softmax, segment") == 1 and "(Softmax," not in r.stdout, r.stdout
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    placed = [o for o in man["placement"]["ops"] if o["op"] == "Softmax"]
    assert len(placed) == 1 and placed[0]["where"] == "device"
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"]
    layers = [l for s in rep["segments"] for l in s["layers"]]
    seg = [s for s in rep["segments"] if any(l["op"] == "softmax" for l in s["layers"])]
    assert len(seg) == 1 and [l["op"] for l in seg[0]["layers"]].count("pixel_matmul") == 2
    smx = [l for l in layers if l["op"] == "softmax"]
    rows = heads * tokens    # per sample: the unit runs the rows back to back, faster than one at a time
    assert len(smx) == 1 and smx[0]["cycles"] == smx[0]["predicted"] < rows * (3 * tokens + 51)


def test_softmax_unit_option_sizes_or_removes_the_unit(tmp_path, tony_cli):
    """`tony compile --softmax-unit 0`: no unit, the Softmax on the host (where a host that is faster
    than one row at a time wants it); a unit shorter than the rows (8 < 10 tokens) leaves it on the
    host with that reason; one out of range is refused in one line."""
    import json

    q, x = _attention_model(tmp_path, 32, 2, 10)
    np.save(tmp_path / "inputs.npy", x[:1])
    for n, where in ((0, "host"), (8, "host"), (16, "device")):
        out = tmp_path / f"b{n}"
        r = tony_cli("compile", q, "-o", out, "--array", "8x8", "--inputs", tmp_path / "inputs.npy",
                     "--softmax-unit", str(n))
        assert r.returncode == 0, r.stderr
        man = json.loads((out / "manifest.json").read_text())
        placed = [o for o in man["placement"]["ops"] if o["op"] == "Softmax"]
        assert [o["where"] for o in placed] == [where], (n, placed)
        smx = {json.loads((out / s["build"] / "manifest.json").read_text())["accel"]["smx_n"]
               for s in man["segments"] if s["kind"] == "device"}
        assert smx == {16 if n == 16 else 0 if n == 0 else 8}, (n, smx)
    r = tony_cli("compile", q, "-o", tmp_path / "bad", "--array", "8x8", "--softmax-unit", "100000")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--softmax-unit" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()


def _quantized_encoder(tmp_path, d, heads, tokens, seed=4):
    """A 1-layer encoder of width d (feed-forward 2 d), quantized by tony.quant, and 2 inputs."""
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    f = _export(_encoder(seed=seed, d=d, heads=heads, ffn=2 * d), tmp_path / "float.onnx", 17, tokens=tokens, d=d)
    onnx.save(quantize_static(load_model(f), _data(16, seed=0, tokens=tokens, d=d), sequential=False),
              tmp_path / "q.onnx")
    np.save(tmp_path / "inputs.npy", _data(2, seed=9, tokens=tokens, d=d))
    return tmp_path / "q.onnx", tmp_path / "inputs.npy"


@pytest.mark.sim
@pytest.mark.parametrize("array,d,heads,tokens", [("8x8", 20, 2, 6), ("4x4", 18, 2, 5)])
def test_layernorm_on_the_device_bit_exact_on_verilator_with_predicted_cycles(tmp_path, tony_cli, array, d, heads,
                                                                              tokens):
    """`tony compile` and `tony sim` of a 1-layer encoder whose width (20, 18) is not a multiple of
    COLS (8, 4): the LayerNorms of the residual stream (ln2, the final one) run on the LayerNorm unit
    (NORM) in its pixel layout, so the attention, its output projection, the residual Add, ln2 and
    the feed-forward share one device segment (3 device segments where the host LayerNorms made 4);
    ln1 reads the graph's 3-D input and stays on the host. The simulation is bit-exact with the
    reference, every layer's cycles those of the cycle model."""
    import json

    q, inputs = _quantized_encoder(tmp_path, d, heads, tokens)
    r = tony_cli("compile", q, "-o", tmp_path / "b", "--array", array, "--inputs", inputs)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("(layernorm, segment") == 2, r.stdout
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    placed = [o["where"] for o in man["placement"]["ops"] if o["op"] == "LayerNormalization"]
    assert placed == ["host", "device", "device"]
    assert sum(s["kind"] == "device" for s in man["segments"]) == 3
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 2 * 4
    seg = [[l["op"] for l in s["layers"]] for s in rep["segments"]]
    joined = [ops for ops in seg if "layernorm" in ops]
    assert len(joined) == 1 and joined[0].count("layernorm") == 2
    assert {"pixel_matmul", "softmax", "add", "table"} <= set(joined[0])
    norms = [l for s in rep["segments"] for l in s["layers"] if l["op"] == "layernorm"]
    assert len(norms) == 2 and all(l["cycles"] == l["predicted"] > tokens * 2 * d for l in norms)


def test_layernorm_unit_option_sizes_or_removes_the_unit(tmp_path, tony_cli):
    """`tony compile --layernorm-unit 0`: no unit, every LayerNorm on the host; a unit shorter than
    the rows (16 < 20 channels) leaves them on the host with that reason; by default and with room
    the unit is sized (LN_N) and the residual stream's LayerNorms run on it; a model without a device
    LayerNorm gets no unit; a size out of range is refused in one line."""
    import json

    q, inputs = _quantized_encoder(tmp_path, 20, 2, 6)
    for n, where, ln_n in ((0, "host", 0), (16, "host", 16), (32, "device", 32), (None, "device", 20)):
        out = tmp_path / f"b{n}"
        r = tony_cli("compile", q, "-o", out, "--array", "8x8", "--inputs", inputs,
                     *(("--layernorm-unit", str(n)) if n is not None else ()))
        assert r.returncode == 0, r.stderr
        man = json.loads((out / "manifest.json").read_text())
        placed = [o for o in man["placement"]["ops"] if o["op"] == "LayerNormalization"]
        assert [o["where"] for o in placed[1:]] == [where] * 2, (n, placed)
        if n == 16:
            assert "rows of 20 elements (the LayerNorm unit takes up to 16)" in placed[1]["reason"]
        sizes = {json.loads((out / s["build"] / "manifest.json").read_text())["accel"]["ln_n"]
                 for s in man["segments"] if s["kind"] == "device"}
        # the segments without a LayerNorm render no unit when sized to the model
        assert sizes == ({ln_n} if n is not None else {0, ln_n}), (n, sizes)
    r = tony_cli("compile", q, "-o", tmp_path / "bad", "--array", "8x8", "--layernorm-unit", "100000")
    assert r.returncode != 0 and len(r.stderr.strip().splitlines()) == 1 and "--layernorm-unit" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "bad").exists()


@pytest.mark.parametrize("d,heads,tokens", [(32, 2, 10), (16, 1, 5)])
def test_softmax_in_hls_csim_equals_the_reference(tmp_path, d, heads, tokens):
    """The HLS back end runs the Softmax (tony::softmax_op over the scores' channels, the table a
    constant array) while the products stay on the host: its C simulation is bit-exact against the
    golden vectors of the reference."""
    from tony.api import normalize_inputs
    from tony.hls.backend import HlsConfig, compile_hls, csim
    from tony.hls.backend import refuse as hls_refuse
    from tony.ir.partition import partition

    q, x = _attention_model(tmp_path, d, heads, tokens)
    g = load_ir(q)
    part = partition(g, hls_refuse(g, HlsConfig(4, 4)))
    smx = [p for p in part.placement if isinstance(p.op, ir.Softmax)]
    assert len(smx) == 1 and smx[0].device and smx[0].op.axis == 1
    feeds, _ = normalize_inputs(g, x)
    compile_hls(g, tmp_path / "h", config=HlsConfig(4, 4), feeds=feeds)
    rep = csim(tmp_path / "h", graph=g)
    assert rep["bit_exact"] and rep["compared"] > 0


def test_layernorm_in_hls_csim_equals_the_reference(tmp_path):
    """The HLS back end runs every LayerNorm of a 1-layer encoder of width 20 (tony::layernorm_op:
    the first over the tokens' last axis, the others over the residual stream's channels, gamma and
    beta constant arrays): its C simulation is bit-exact against the golden vectors of the
    reference."""
    from tony.api import normalize_inputs
    from tony.hls.backend import HlsConfig, compile_hls, csim
    from tony.hls.backend import refuse as hls_refuse
    from tony.ir.partition import partition

    q, inputs = _quantized_encoder(tmp_path, 20, 2, 6)
    g = load_ir(q)
    part = partition(g, hls_refuse(g, HlsConfig(4, 4)))
    lns = [p for p in part.placement if isinstance(p.op, ir.LayerNorm)]
    assert len(lns) == 3 and all(p.device for p in lns) and [p.op.axis for p in lns] == [-1, 1, 1]
    feeds, _ = normalize_inputs(g, np.load(inputs))
    compile_hls(g, tmp_path / "h", config=HlsConfig(4, 4), feeds=feeds)
    rep = csim(tmp_path / "h", graph=g)
    assert rep["bit_exact"] and rep["compared"] > 0


def test_layernorm_ops_equal_the_kernel_with_specs_from_the_torch_parameters(exported):
    """Each LayerNorm op's output, recomputed from its input by tony.ref.nonlinear.layernorm with a
    spec built from the torch module's gamma, beta and eps and the op's pow2 scales."""
    from tony.ref import execute
    from tony.ref.feeds import normalize_inputs

    g = load_ir(exported["13"][1])
    feeds, _ = normalize_inputs(g, _data(4))
    vals = execute(g, feeds, keep_all=True)
    m = _encoder()
    mods = [m.blocks[0].ln1, m.blocks[0].ln2, m.ln]
    lns = [op for op in g.ops if isinstance(op, ir.LayerNorm)]
    assert len(lns) == 3
    for op, mod in zip(lns, mods):
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        spec = nl.layernorm_spec(D, x.exp, y.exp, mod.weight.detach().numpy(), mod.bias.detach().numpy(),
                                 eps=mod.eps)
        rows = np.moveaxis(vals[x.name], op.axis, -1)   # ln2 and the final one run on pixels (axis 1)
        assert np.array_equal(np.moveaxis(vals[y.name], op.axis, -1), nl.layernorm(rows, spec))


def _gelu_graph(variant: str):
    """A float graph x -> Gemm -> GELU (as exporters write it) -> Gemm."""
    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 16)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.standard_normal((16, 4)).astype(np.float32), "w2")]
    c = {"sqrt2": math.sqrt(2.0), "rsqrt2": 1 / math.sqrt(2.0), "one": 1.0, "half": 0.5}
    inits += [numpy_helper.from_array(np.array(v, np.float32), k) for k, v in c.items()]
    n = [helper.make_node("Gemm", ["x", "w1"], ["h"])]
    if variant == "div":           # torch: Div -> Erf -> Add -> Mul(x, .) -> Mul(., 0.5)
        n += [helper.make_node("Div", ["h", "sqrt2"], ["a"]), helper.make_node("Erf", ["a"], ["e"]),
              helper.make_node("Add", ["e", "one"], ["s"]), helper.make_node("Mul", ["h", "s"], ["m"]),
              helper.make_node("Mul", ["m", "half"], ["g"])]
    elif variant == "mul-half-first":   # Mul(1/sqrt2, x) -> Erf -> Add(1, .) -> Mul(., 0.5) -> Mul(x, .)
        n += [helper.make_node("Mul", ["rsqrt2", "h"], ["a"]), helper.make_node("Erf", ["a"], ["e"]),
              helper.make_node("Add", ["one", "e"], ["s"]), helper.make_node("Mul", ["s", "half"], ["m"]),
              helper.make_node("Mul", ["h", "m"], ["g"])]
    elif variant == "x-half":      # (x * 0.5) * (1 + erf(x / sqrt2))
        n += [helper.make_node("Mul", ["h", "half"], ["xh"]), helper.make_node("Div", ["h", "sqrt2"], ["a"]),
              helper.make_node("Erf", ["a"], ["e"]), helper.make_node("Add", ["e", "one"], ["s"]),
              helper.make_node("Mul", ["xh", "s"], ["g"])]
    n += [helper.make_node("Gemm", ["g", "w2"], ["y"])]
    graph = helper.make_graph(n, "gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_scores_divided_by_a_non_pow2_sqrt_fold_into_the_softmax_multiplier(tmp_path):
    """Head size 8: the scores' 1/sqrt(8) is not a power of two. In pow2 mode the MatMul writes the
    undivided scores on a pow2 grid and the Softmax multiplies by round(LOG2E / sqrt 8): every
    rescale stays a shift, within 2 LSB of onnxruntime on the QDQ model."""
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    f = _export(_encoder(heads=4), tmp_path / "f.onnx", 13)
    q = quantize_static(load_model(f), _data(16, seed=0), sequential=False)
    onnx.save(q, tmp_path / "q.onnx")
    g = load_ir(tmp_path / "q.onnx", requant="pow2")
    sm = [op for op in g.ops if isinstance(op, ir.Softmax)]
    assert len(sm) == 1 and sm[0].log2e == round(nl.LOG2E / math.sqrt(8))
    assert all(op.requant.mult == 1 for op in g.ops if getattr(op, "requant", None) is not None)
    x = _data(48)
    got = np.asarray(tony.run_reference(g, x)[0]).reshape(48, 1, 4)
    out_scale = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    qdq, flt = _ort(tmp_path / "q.onnx", x), _ort(f, x)
    # the undivided scores' grid is up to sqrt(2) coarser than the quantizer's: a few LSB from
    # onnxruntime's QDQ path, but no further from the float model than that path
    assert np.abs(got - qdq).max() <= 4 * out_scale
    assert np.abs(got - flt).mean() <= np.abs(qdq - flt).mean() + 0.25 * out_scale


def test_softmax_with_a_divided_multiplier_is_within_an_lsb_of_float():
    rng = np.random.default_rng(11)
    c = math.sqrt(8)
    q = rng.integers(-128, 128, (500, 16))
    spec = nl.SoftmaxSpec(x_exp=-4, log2e=round(nl.LOG2E / c))
    z = q * 2.0**-4 / c
    want = np.exp(z - z.max(1, keepdims=True))
    want = np.minimum(want / want.sum(1, keepdims=True) * 256, 255)
    assert np.abs(nl.softmax(q, spec) - want).max() <= 1.0


@pytest.mark.parametrize("variant", ["div", "mul-half-first", "x-half"])
def test_gelu_operand_orders_become_the_gelu_table(variant):
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    m = load_model(_gelu_graph(variant))
    q = quantize_static(m, np.random.default_rng(0).standard_normal((8, 1, 8)).astype(np.float32),
                        sequential=False)
    g = load_ir(q)
    tables = [op for op in g.ops if isinstance(op, ir.Table)]
    assert [op.function for op in tables] == ["Gelu"] and len(g.ops) == 5   # Q, Dense, Table, Dense, DQ
    x, y = g.tensors[tables[0].inputs[0]], g.tensors[tables[0].outputs[0]]
    want = nl.gelu_table(x.exp, y.exp).table
    assert tuple(g.constants[tables[0].inputs[1]].tolist()) == want


def test_softmax_op_equals_the_kernel_and_its_output_grid_is_fixed(exported):
    g = load_ir(exported["17"][1])
    sm = next(op for op in g.ops if isinstance(op, ir.Softmax))
    y = g.tensors[sm.outputs[0]]
    assert y.dtype == ir.UINT8 and y.scale == 2.0**-8 and sm.out_bits == 8
    q = np.random.default_rng(5).integers(-128, 128, (3,) + g.tensors[sm.inputs[0]].shape[1:])
    from tony.ref.kernels import KERNELS

    # on the scores' pixel layout [N, keys, H, T] (tony.ir.layout): the rows run over axis 1
    assert sm.axis == 1
    got = KERNELS[ir.Softmax](sm, g, q)
    want = np.moveaxis(nl.softmax(np.moveaxis(q, 1, -1), nl.SoftmaxSpec(x_exp=sm.x_exp)), -1, 1)
    assert np.array_equal(got, want)


def test_layernormalization_of_a_float_input_is_refused_in_one_line(tmp_path, capsys):
    from tony.cli import main

    f = _export(_encoder(), tmp_path / "f.onnx", 17)
    assert main(["ir", str(f)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "LayerNormalization" in err[0] and "quantize" in err[0]


@pytest.mark.slow
@pytest.mark.sim
@pytest.mark.parametrize("opset", [13, 17])
def test_torch_encoder_bit_exact_on_verilator_and_hls_csim(opset, tmp_path):
    """`tony quantize` (one calibration batch, pow2), `tony compile` at 8x8, `tony sim`: bit-exact
    against the reference with the cycles of the cycle model; `tony compile --backend hls` and
    `tony csim`: bit-exact."""
    import json

    from tony.cli import main

    f = _export(_encoder(layers=2), tmp_path / "float.onnx", opset)
    np.save(tmp_path / "calib.npy", _data(16, seed=0))
    np.save(tmp_path / "inputs.npy", _data(3, seed=7))
    q = tmp_path / "q.onnx"
    assert main(["quantize", str(f), "--calib", str(tmp_path / "calib.npy"), "-o", str(q), "--quiet"]) == 0
    assert main(["compile", str(q), "-o", str(tmp_path / "b"), "--array", "8x8",
                 "--inputs", str(tmp_path / "inputs.npy")]) == 0
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert man["placement"]["device_mac_share"] > 0.9
    assert main(["sim", str(tmp_path / "b"), "-q"]) == 0
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 3 * 4
    assert main(["compile", str(q), "-o", str(tmp_path / "h"), "--backend", "hls",
                 "--inputs", str(tmp_path / "inputs.npy")]) == 0
    assert main(["csim", str(tmp_path / "h")]) == 0
    # the golden outputs are the reference's, and near the float model
    g = load_ir(q)
    ref = np.asarray(tony.run_reference(g, np.load(tmp_path / "inputs.npy"))[0]).reshape(3, 1, 4)
    flt = _ort(f, np.load(tmp_path / "inputs.npy"))
    assert np.abs(ref - flt).max() < 0.1 * max(np.abs(flt).max(), 1.0)


def test_pixel_matmul_placement_names_what_keeps_it_on_the_host():
    """The accelerator's conditions on a PixelMatMul, one reason each: the CONV's pixel-row field,
    an unsigned second operand, a second operand computed on the device."""
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.ir.types import INT8, UINT8, Requant, Tensor

    def graph(t, b_dtype=INT8, b_from_conv=False):
        ts = {"a": Tensor("a", (1, 16, 2, t), UINT8), "b": Tensor("b", (1, 8, 2, 16), b_dtype),
              "y": Tensor("y", (1, 8, 2, t), INT8)}
        ops = []
        if b_from_conv:
            ts.update(x=Tensor("x", (1, 4, 2, 16), INT8), w=Tensor("w", (8, 4, 1, 1), INT8))
            ops.append(ir.Conv(("x", "w"), ("b",), requant=Requant(shift=4, lo=-128, hi=127)))
        ops.append(ir.PixelMatMul(("a", "b"), ("y",), origin="mm", requant=Requant(shift=7, lo=-128, hi=127)))
        consts = {"w": np.ones((8, 4, 1, 1), np.int64)} if b_from_conv else {}
        return ir.verify(ir.Graph("g", tensors=ts, constants=consts, ops=tuple(ops),
                                  inputs=("a", "x" if b_from_conv else "b"), outputs=("y",)))

    def why(g):
        return refuse(g, AccelConfig(8, 8))(g.ops[-1])

    assert why(graph(4095)) is None
    assert "4096 tokens" in why(graph(4096))
    assert "uint8" in why(graph(32, UINT8))
    assert "computed on the device" in why(graph(32, b_from_conv=True))


# ---- the token activations stay in the pixel layout between device ops (tony.ir.layout) -------------

def _without_keep_pixels(path, monkeypatch):
    """The same model lowered without keep_pixels: every projection between its own views."""
    import tony.frontend.lower as lower

    with monkeypatch.context() as m:
        m.setattr(lower, "keep_pixels", lambda g: g)
        return load_ir(path)


def _same_integers(path, x, monkeypatch):
    """(graph, graph without keep_pixels): the reference on `x` gives the same integers in every
    tensor that both graphs have (the outputs included)."""
    from tony.ref import execute
    from tony.ref.feeds import normalize_inputs

    g, plain = load_ir(path), _without_keep_pixels(path, monkeypatch)
    feeds, _ = normalize_inputs(g, x)
    a, b = execute(g, feeds, keep_all=True), execute(plain, feeds, keep_all=True)
    shared = [n for n in g.tensors if n in plain.tensors and n in a]
    assert set(g.outputs) <= set(shared) and len(shared) > len(g.ops) // 2
    for n in shared:
        assert np.array_equal(a[n], b[n]), n
    return g, plain


def _device_segments(g, cfg=None, refuse=None):
    from tony.accel.placement import refuse as accel_refuse
    from tony.accel.program import AccelConfig
    from tony.ir.partition import partition

    part = partition(g, refuse or accel_refuse(g, cfg or AccelConfig(8, 8)))
    return part, len(part.device_segments)


@pytest.fixture(scope="module")
def two_layers(tmp_path_factory):
    """2-layer encoders at opsets 13 and 17, quantized by tony.quant (one batch, pow2)."""
    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    d = tmp_path_factory.mktemp("enc2")
    out = {}
    for opset in (13, 17):
        f = _export(_encoder(layers=2, seed=opset), d / f"float{opset}.onnx", opset)
        onnx.save(quantize_static(load_model(f), _data(16, seed=2), sequential=False), d / f"q{opset}.onnx")
        out[opset] = d / f"q{opset}.onnx"
    return out


@pytest.mark.parametrize("opset", [13, 17])
def test_keep_pixels_keeps_every_integer_of_two_layer_encoders(two_layers, opset, monkeypatch):
    """The 2-layer encoders: equal integers everywhere on random inputs; per layer the residual Adds
    and the GELU table read the Convs' [1, d, 1, T] outputs, and the output projection reads P.V's
    output (heads as rows) with no view between them."""
    g, plain = _same_integers(two_layers[opset], _data(7, seed=11), monkeypatch)
    made = {o: op for op in g.ops for o in op.outputs}
    for op in g.ops:
        if isinstance(op, (ir.Add, ir.Table)):
            from_conv = op.inputs[1] if isinstance(op, ir.Add) else op.inputs[0]
            assert len(g.tensors[op.inputs[0]].shape) == 4 and isinstance(made[from_conv], ir.Conv)
    o_proj = [op for op in g.ops if isinstance(op, ir.Conv) and isinstance(made[op.inputs[0]], ir.PixelMatMul)]
    assert len(o_proj) == 2 and g.tensors[o_proj[0].inputs[1]].shape == (D, D // HEADS, HEADS, 1)
    views = (ir.Reshape, ir.Transpose)
    assert sum(isinstance(op, views) for op in g.ops) < sum(isinstance(op, views) for op in plain.ops) - 10


@pytest.mark.parametrize("d,heads,tokens", [(16, 1, 5), (24, 3, 11)])
def test_keep_pixels_keeps_every_integer_of_attention_blocks(tmp_path, d, heads, tokens, monkeypatch):
    """One head (3-D products: P.V's output is the output projection's input, no kernel change) and
    3 heads of 8 (an H x 1 kernel): equal integers, and P.V and the output projection share a
    device segment at 8x8, as do Q.K^T, the Softmax (on the scores' pixel layout) and P.V (two
    device segments fewer)."""
    q, x = _attention_model(tmp_path, d, heads, tokens)
    g, plain = _same_integers(q, x, monkeypatch)
    (o,) = [op for op in g.ops if isinstance(op, ir.Conv) and isinstance(g.producer(op.inputs[0]), ir.PixelMatMul)]
    assert g.tensors[o.inputs[1]].shape == (d, d // heads, heads, 1)
    part, n = _device_segments(g)
    assert n == _device_segments(plain)[1] - 2
    seg = {p.op.outputs[0]: p.segment for p in part.placement}
    assert seg[o.outputs[0]] == seg[o.inputs[0]]
    (sm,) = [op for op in g.ops if isinstance(op, ir.Softmax)]
    assert seg[sm.outputs[0]] == seg[sm.inputs[0]] == seg[o.inputs[0]]


def _random_bundle_architecture(name, tmp_path):
    """text-langid's (d 64, 4 heads, FFN 128, 32 tokens, 2 layers) or kws-transformer's graph with
    untrained weights, quantized on random inputs; (path, random inputs)."""
    from tony.models import kwt, text
    from tony.quant.qdq import quantize_static

    rng = np.random.default_rng(4)
    if name == "kws-transformer":
        cfg = kwt.KwtConfig()
        f, shape = kwt.kwt_onnx(kwt.make_kwt(cfg).eval(), cfg), (1, 1, 49, 10)
    else:
        cfg = text.TextConfig()
        f = text.encoder_onnx(text.make_encoder(cfg, 55, 8).eval(), cfg, 13 if name == "text13" else 17)
        shape = (1, cfg.seq_len, cfg.d_model)
    q = quantize_static(f, rng.standard_normal((16,) + shape).astype(np.float32), sequential=False)
    onnx.save(q, tmp_path / "q.onnx")
    return tmp_path / "q.onnx", 2 * rng.standard_normal((6,) + shape).astype(np.float32)


@pytest.mark.parametrize("name", ["text13", "text17", "kws-transformer"])
def test_keep_pixels_keeps_every_integer_of_the_bundled_encoder_architectures(tmp_path, name, monkeypatch):
    q, x = _random_bundle_architecture(name, tmp_path)
    _same_integers(q, x, monkeypatch)


def test_text_langid_architecture_runs_in_fewer_device_segments(tmp_path, monkeypatch):
    """At 8x8: 13 device segments without keep_pixels (each projection its own, the GELU table on
    a 3-D token tensor on the host), 4 with it: Q.K^T, the Softmax (on the scores' pixel layout),
    P.V and the output projection share one per layer, fc1 -> GELU table -> fc2 -> residual Add
    too, and the LayerNorms of the residual stream (on its pixel layout, in the LayerNorm unit) join
    the attention's output projection to the feed-forward and a layer to the next: the 4 residual
    Adds, the 2 tables and the 4 LayerNorms after the first on the device, with no view between fc1,
    the table and fc2."""
    q, _ = _random_bundle_architecture("text17", tmp_path)
    g, plain = load_ir(q), _without_keep_pixels(q, monkeypatch)
    part, n = _device_segments(g)
    before, n_before = _device_segments(plain)
    assert (n_before, n) == (13, 4)
    lns = [p for p in part.placement if isinstance(p.op, ir.LayerNorm)]
    assert len(lns) == 5 and [p.device for p in lns] == [False] + [True] * 4 and all(p.op.axis == 1 for p in lns[1:])
    seg = {id(p.op): p.segment for p in part.placement}
    smx = [p for p in part.placement if isinstance(p.op, ir.Softmax)]
    assert len(smx) == 2 and all(p.device and p.op.axis == 1 for p in smx)
    for sm in (p.op for p in smx):
        qk, (pv,) = g.producer(sm.inputs[0]), g.consumers(sm.outputs[0])
        assert isinstance(qk, ir.PixelMatMul) and isinstance(pv, ir.PixelMatMul)
        assert seg[id(qk)] == seg[id(sm)] == seg[id(pv)]
    assert sum(p.device and isinstance(p.op, ir.Add) for p in part.placement) == 4
    assert len(part.host_ops()) < len(before.host_ops()) - 20
    seg = {id(p.op): p.segment for p in part.placement}
    tables = [p for p in part.placement if isinstance(p.op, ir.Table)]
    assert len(tables) == 2 and all(p.device for p in tables)
    for tab in (p.op for p in tables):
        fc1, (fc2,) = g.producer(tab.inputs[0]), g.consumers(tab.outputs[0])
        assert isinstance(fc1, ir.Conv) and isinstance(fc2, ir.Conv)
        add = g.consumers(fc2.outputs[0])[0]
        assert isinstance(add, ir.Add) and seg[id(fc1)] == seg[id(tab)] == seg[id(fc2)] == seg[id(add)]


@pytest.mark.sim
def test_encoder_with_tokens_kept_in_pixels_bit_exact_on_verilator(tmp_path, tony_cli):
    """`tony compile` (8x8) and `tony sim` of a 1-layer encoder (2 heads of 16, 8 tokens): the
    residual Adds, the GELU table and the LayerNorms after the first on the device in the pixel
    layout, Q.K^T, the Softmax, P.V, the output projection, ln2, fc1, GELU, fc2 and the Add in one
    segment, bit-exact with the predicted cycles."""
    import json

    from tony.frontend.load import load_model
    from tony.quant.qdq import quantize_static

    f = _export(_encoder(seed=3), tmp_path / "float.onnx", 17)
    onnx.save(quantize_static(load_model(f), _data(16, seed=0), sequential=False), tmp_path / "q.onnx")
    np.save(tmp_path / "inputs.npy", _data(2, seed=9))
    r = tony_cli("compile", tmp_path / "q.onnx", "-o", tmp_path / "b", "--array", "8x8",
                 "--inputs", tmp_path / "inputs.npy")
    assert r.returncode == 0, r.stderr
    assert "(Add, segment" not in r.stdout and "100.00% of" in r.stdout
    man = json.loads((tmp_path / "b" / "manifest.json").read_text())
    # QKV, Q.K^T + Softmax + P.V + o + Add + ln2 + fc1 + GELU + fc2 + Add + the final LayerNorm, head
    assert sum(s["kind"] == "device" for s in man["segments"]) == 3
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 2 * 4
