"""text-langid: the data from wordfreq's lists, the encoder's ONNX graphs (opsets 13 and 17) against
torch through onnxruntime, and the integer-kernel substitution. A tiny configuration here; the
bundled size behind `slow`."""
import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("wordfreq")
ort = pytest.importorskip("onnxruntime")

from tony.models import text  # noqa: E402
from tony.models.text_int import IntegerOps, calibrate  # noqa: E402

TINY = dict(n_words=300, train_per_lang=48, test_per_lang=6, epochs=1, d_model=16, heads=2, ffn=32, layers=2,
            ngram_buckets=64, calib_size=32)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TONY_CACHE_DIR", str(d))
        yield d


@pytest.fixture(scope="module")
def tiny(cache, tmp_path_factory):
    d = tmp_path_factory.mktemp("text_langid")
    info = text.build_text_langid(d, progress=False, **TINY)
    return d, info


def ort_logits(path, x):
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    return np.concatenate([sess.run(None, {"embeddings": xi})[0] for xi in x])


def test_data_is_seeded_balanced_and_cached(cache):
    cfg = text.TextConfig(**TINY)
    a = text.text_data(cfg, progress=False)
    files = list((cache / "text-langid").glob("*.npz"))
    b = text.text_data(cfg, progress=False)
    assert len(files) == 1 and all(np.array_equal(a[k], b[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
    assert a["vocab"] == b["vocab"] and a["vocab"][:2] == [" ", "\N{REPLACEMENT CHARACTER}"]
    assert a["x_train"].shape == (8 * 48, 32) and np.bincount(a["y_train"]).tolist() == [48] * 8
    assert np.bincount(a["y_test"]).tolist() == [6] * 8


def test_samples_are_words_of_their_language(cache):
    cfg = text.TextConfig(**TINY)
    d = text.text_data(cfg, progress=False)
    lists = text.word_lists(cfg.langs, cfg.n_words)
    for tokens, y in zip(d["x_test"][:12], d["y_test"][:12]):
        words = text.decode(tokens, d["vocab"]).split(" ")
        assert all(w in lists[cfg.langs[y]][0] for w in words[:-1])  # the last one may be cut


def test_ngram_ids_hash_the_characters_before_each_position():
    tok = np.array([[5, 7, 9, 11]])
    bi, tri = text.ngram_ids(tok, 1000)
    h = text.HASH
    assert bi.tolist() == [[(0 * h + 5) % 1000, (5 * h + 7) % 1000, (7 * h + 9) % 1000, (9 * h + 11) % 1000]]
    assert tri[0, 3] == ((7 * h + 9) * h + 11) % 1000 and tri[0, 1] == ((0 * h + 5) * h + 7) % 1000
    tb, tt = text.ngram_ids(torch.from_numpy(tok), 1000)
    assert tb.tolist() == bi.tolist() and tt.tolist() == tri.tolist()


def test_build_writes_the_documented_files(tiny):
    d, info = tiny
    for f in ("float.onnx", "float17.onnx", "inputs.npy", "labels.npy", "tokens.npy", "calib.npy", "embedding.npz",
              "weights.npz", "vocab.json", "accuracy.json"):
        assert (d / f).is_file(), f
    x, y, tok = np.load(d / "inputs.npy"), np.load(d / "labels.npy"), np.load(d / "tokens.npy")
    assert x.shape == (48, 1, 32, 16) and x.dtype == np.float32 and y.shape == (48,) and tok.shape == (48, 32)
    emb = np.load(d / "embedding.npz")
    assert sorted(emb.files) == ["bigram", "position", "token", "trigram"] and emb["bigram"].shape == (64, 16)
    np.testing.assert_allclose(x[:, 0], text.host_embed(tok, emb), rtol=1e-6, atol=1e-6)
    assert set(info["integer_kernels"]) == {"softmax", "layernorm", "gelu", "int8 sites, float functions", "all three"}


def test_opset13_graph_decomposes_layernorm_and_gelu(tiny):
    m = onnx.load(tiny[0] / "float.onnx")
    ops = [n.op_type for n in m.graph.node]
    assert m.opset_import[0].version == 13 and "LayerNormalization" not in ops
    assert ops.count("Sqrt") == 5 and ops.count("Pow") == 5 and ops.count("ReduceMean") == 11  # 5 LN x 2 + pool
    assert ops.count("Erf") == 2 and ops.count("Softmax") == 2
    assert ops.count("Reshape") == 2 * 4 and ops.count("Transpose") == 2 * 4
    perms = sorted(tuple(a.ints) for n in m.graph.node if n.op_type == "Transpose" for a in n.attribute)
    assert perms.count((0, 2, 3, 1)) == 2  # K is transposed for Q.K^T by the head split itself


def test_opset17_graph_uses_layernormalization(tiny):
    m = onnx.load(tiny[0] / "float17.onnx")
    ops = [n.op_type for n in m.graph.node]
    assert m.opset_import[0].version == 17 and ops.count("LayerNormalization") == 5
    assert "Sqrt" not in ops and "Pow" not in ops and ops.count("Erf") == 2


@pytest.mark.parametrize("name", ["float.onnx", "float17.onnx"])
def test_onnxruntime_predicts_what_torch_predicts(tiny, name):
    d, _ = tiny
    model, *_ = text.load_encoder(d)
    want = text.predict(model, np.load(d / "tokens.npy"))
    got = ort_logits(d / name, np.load(d / "inputs.npy"))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    assert np.array_equal(got.argmax(1), want.argmax(1))


def test_integer_ops_follow_the_float_model(tiny):
    d, _ = tiny
    model, cfg, *_ = text.load_encoder(d)
    tokens = np.load(d / "tokens.npy")
    ops = IntegerOps(calibrate(model, tokens))
    f, i = text.predict(model, tokens), text.predict(model, tokens, ops)
    assert not np.array_equal(f, i)  # the kernels are in the path
    assert np.abs(f - i).max() < 0.25 * np.abs(f).max()


def test_integer_softmax_site_is_the_kernel(tiny):
    from tony.ref import nonlinear as nl

    d, _ = tiny
    model, *_ = text.load_encoder(d)
    ops = IntegerOps({"s": (3.0, 1.0)})  # int8 at 2^-5
    x = torch.linspace(-4, 3.9, 40).reshape(2, 20)
    q = np.clip(np.rint(x.numpy() * 32), -128, 127).astype(np.int64)
    assert np.array_equal(ops.softmax("s", x).numpy() * 256, nl.softmax(q, nl.SoftmaxSpec(x_exp=-5)))


def test_model_onnx_is_the_quantized_encoder_in_integer_ops(tiny):
    """model.onnx (tony quantize, max, one pass) lowers to the integer LayerNorm, Softmax and GELU
    table, and its reference accuracy is the one accuracy.json records."""
    from tony import ir
    from tony.api import load_ir

    d, info = tiny
    g = load_ir(d / "model.onnx")
    kinds = [type(op).__name__ for op in g.ops]
    assert kinds.count("LayerNorm") == 2 * info["config"]["layers"] + 1 and "FloatIsland" not in kinds
    assert kinds.count("Softmax") == info["config"]["layers"]
    assert any(isinstance(op, ir.Table) and op.function == "Gelu" for op in g.ops)
    assert info["int8_accuracy"] == text.int8_accuracy(d / "model.onnx", d)


@pytest.fixture(scope="module")
def bundled(cache, tmp_path_factory):
    """`tony example text-langid` at its bundled size (its build time is a figure of docs/accuracy.md,
    not a test: it depends on the machine's load)."""
    from conftest import run_tony

    d = tmp_path_factory.mktemp("bundled")
    r = run_tony("example", "text-langid", "-o", d)
    assert r.returncode == 0, r.stderr
    return d


@pytest.mark.slow
def test_bundled_text_langid_keeps_its_accuracy(bundled):
    tmp_path = bundled
    info = json.loads((tmp_path / "accuracy.json").read_text())
    assert info["float_accuracy"] > 0.95
    assert info["integer_kernels"]["all three"] > info["float_accuracy"] - 0.01
    assert info["int8_accuracy"] > info["float_accuracy"] - 0.01   # PTQ int8 within one point
    got = ort_logits(tmp_path / "float.onnx", np.load(tmp_path / "inputs.npy"))
    assert abs((got.argmax(1) == np.load(tmp_path / "labels.npy")).mean() - info["float_accuracy"]) < 1e-9


@pytest.mark.slow
@pytest.mark.sim
def test_bundled_text_langid_runs_every_mac_on_the_array_bit_exact_at_8x8(bundled, tmp_path, tony_cli):
    """model.onnx at 8x8: the projections, both attention MatMuls and the Softmax between them of
    each layer on the device (100% of the MACs, each product's utilization and each Softmax's cycles
    in the compile report), the LayerNorms after the first on the LayerNorm unit (rows of 64), 4 test
    samples on Verilator bit-exact with the predicted cycles."""
    d = bundled
    np.save(tmp_path / "x.npy", np.load(d / "inputs.npy")[:4])
    r = tony_cli("compile", d / "model.onnx", "-o", tmp_path / "b", "--array", "8x8", "--inputs", tmp_path / "x.npy")
    assert r.returncode == 0, r.stderr
    assert "100.00% of 2,359,808 MACs" in r.stdout
    for layer in ("l0", "l1"):
        for mm in ("scores", "context"):
            assert sum(line.startswith(f"  device: {layer}.attn.{mm}") and "(pixel_matmul, segment" in line
                       and "MAC utilization" in line for line in r.stdout.splitlines()) == 1
        assert sum(line.startswith(f"  device: {layer}.attn.softmax") and "(softmax, segment" in line
                   and "rows of 32" in line for line in r.stdout.splitlines()) == 1
    assert sum("(layernorm, segment" in line and "rows of 64" in line for line in r.stdout.splitlines()) == 4
    r = tony_cli("sim", tmp_path / "b", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    rep = json.loads((tmp_path / "b" / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] == 4 * 8
    assert sum(l["op"] == "pixel_matmul" for l in rep["layers"]) == 4
    assert sum(l["op"] == "softmax" for l in rep["layers"]) == 2
    assert sum(l["op"] == "layernorm" for l in rep["layers"]) == 4
