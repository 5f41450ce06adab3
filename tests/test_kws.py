"""Keyword spotting: eSpeak NG speech, MLPerf Tiny MFCC features, the data set's splits and cache,
the trained examples (slow: the full-size ones)."""
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

pytest.importorskip("espeakng_loader")
pytest.importorskip("librosa")

from tony.errors import InputError, TonyError  # noqa: E402
from tony.models import kws_data as kd  # noqa: E402
from tony.models.speech import ACCENTS, Speaker, Utterance, variants  # noqa: E402

TINY = kd.KwsSpec(seed=3, train=36, val=24, test=24)


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    """One data-set cache for the module's tests (the tiny set is spoken once, then read back)."""
    return tmp_path_factory.mktemp("kws-cache")


def _mfcc_by_hand(audio):
    """The MLPerf Tiny KWS features written out with numpy/scipy: frames of 640 every 320, periodic
    Hann window, |rfft|, 40 triangular HTK-mel filters over 20-4000 Hz, ln(x + 1e-6), DCT-II
    (orthonormal), the first 10."""
    import scipy.fft
    import scipy.signal

    audio = np.asarray(audio, np.float64)
    idx = np.arange(640)[None] + 320 * np.arange(49)[:, None]
    spec = np.abs(np.fft.rfft(audio[:, idx] * scipy.signal.get_window("hann", 640), axis=-1))

    def mel(f):
        return 2595 * np.log10(1 + f / 700)

    edges = 700 * (10 ** (np.linspace(mel(20), mel(4000), 42) / 2595) - 1)
    f = np.fft.rfftfreq(640, 1 / 16000)
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    fb = np.maximum(0, np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    return scipy.fft.dct(np.log(spec @ fb.T + 1e-6), type=2, norm="ortho", axis=-1)[..., :10]


def test_mfcc_equals_the_mlperf_features_computed_by_hand():
    rng = np.random.default_rng(0)
    t = np.arange(16000) / 16000
    audio = np.stack([0.3 * np.sin(2 * np.pi * 440 * t) + 0.01 * rng.standard_normal(16000),
                      0.05 * rng.standard_normal(16000),
                      np.where(t < 0.5, 0.5, -0.2) * np.sin(2 * np.pi * 1234 * t)]).astype(np.float32)
    got = kd.mfcc(audio)
    assert got.shape == (3, 1, 49, 10) and got.dtype == np.float32
    want = _mfcc_by_hand(audio)
    assert np.allclose(got[:, 0], want, atol=2e-3, rtol=1e-4), np.abs(got[:, 0] - want).max()


def test_mfcc_refuses_clips_that_are_not_one_second():
    with pytest.raises(InputError, match="16000-sample clips"):
        kd.mfcc(np.zeros((2, 8000)))


def test_espeak_speaks_a_word_differently_per_accent_and_refuses_an_unknown_voice():
    s = Speaker()
    a = s.say(Utterance("left", "en-us+m3", seed=5))
    b = s.say(Utterance("left", "en-gb-scotland+m3", seed=5))
    assert a.dtype == np.int16 and 0.2 * 22050 < len(a) < 1.5 * 22050 and np.abs(a).max() > 1000
    assert len(a) != len(b) or not np.array_equal(a, b)
    with pytest.raises(TonyError, match="no voice"):
        s.say(Utterance("left", "no-such-language+m3"))


def test_voice_splits_are_disjoint_and_cover_every_variant_in_every_accent():
    pools = kd.voice_split(kd.KwsSpec(seed=7))
    var = {s: {v.split("+")[1] for v in pools[s]} for s in kd.SPLITS}
    assert not (var["test"] & var["train"]) and not (var["test"] & var["val"]) and not (var["val"] & var["train"])
    assert set().union(*var.values()) == set(variants())
    for s in kd.SPLITS:
        assert {v.split("+")[0] for v in pools[s]} == set(ACCENTS)
    assert len(var["test"]) >= 20 and len(var["val"]) >= 5
    assert kd.voice_split(kd.KwsSpec(seed=8))["test"] != pools["test"]


def test_bad_specs_are_refused_in_one_line():
    with pytest.raises(InputError, match="at least 12 samples"):
        kd.KwsSpec(train=5).check()
    with pytest.raises(InputError, match="shares"):
        kd.KwsSpec(test_voices=0.5, val_voices=0.5).check()


def test_the_data_set_is_cached_and_regenerated_bit_for_bit(shared_cache, monkeypatch):
    monkeypatch.setenv("TONY_CACHE_DIR", str(shared_cache))
    d = kd.dataset(TINY, progress=False)
    files = list((shared_cache / "kws").glob("kws-*.npz"))
    assert len(files) == 1 and TINY.key() in files[0].name
    assert d["x_train"].shape == (36, 1, 49, 10) and d["x_test"].shape == (24, 1, 49, 10)
    assert np.array_equal(d["y_train"], np.arange(36) % 12)  # classes in turn: every prefix balanced
    again = kd.dataset(TINY, progress=False, cache=False)  # spoken again by fresh processes
    for k in d:
        assert np.array_equal(d[k], again[k]), k
    assert np.isfinite(d["x_train"]).all() and d["x_train"].std() > 1
    assert kd.KwsSpec(seed=4).key() != kd.KwsSpec(seed=3).key()
    pools = kd.voice_split(TINY)
    assert kd.plan(TINY, "train", 0, pools["train"]) != kd.plan(kd.KwsSpec(seed=4), "train", 0, pools["train"])


def test_two_processes_wanting_one_data_set_speak_it_once(tmp_path, monkeypatch):
    """Two callers at once (a second `tony example kws`, a parallel test worker): the second waits
    for the first's cache file and reads it instead of speaking the set again."""
    import threading
    import time

    monkeypatch.setenv("TONY_CACHE_DIR", str(tmp_path))
    calls = []

    def generate(spec, progress):
        calls.append(spec)
        time.sleep(0.5)   # long enough for the other caller to arrive while this one speaks
        return {"x_train": np.full((2, 3), len(calls), np.float32)}

    monkeypatch.setattr(kd, "_generate", generate)
    got = [None, None]
    threads = [threading.Thread(target=lambda i=i: got.__setitem__(i, kd.dataset(TINY, progress=False)))
               for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert np.array_equal(got[0]["x_train"], got[1]["x_train"]) and got[0]["x_train"][0, 0] == 1
    assert [f.name for f in (tmp_path / "kws").glob("*.tmp.npz")] == []


def test_an_unwritable_cache_is_one_line_before_any_synthesis(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "tony.cli", "example", "kws", "-o", str(out)], capture_output=True,
                         text=True, env={**os.environ, "TONY_CACHE_DIR": str(blocker)}, timeout=120)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "TONY_CACHE_DIR" in res.stderr
    assert not out.exists()


def test_a_small_kws_example_trains_quantizes_and_runs_on_the_reference(tmp_path, shared_cache, monkeypatch):
    pytest.importorskip("torch")
    import tony
    from _ort_helpers import ort_run
    from tony.models.kws import build_kws

    monkeypatch.setenv("TONY_CACHE_DIR", str(shared_cache))
    info = build_kws(tmp_path / "ex", arch="kws-conv1d", spec=TINY, epochs=2, calib_size=16, progress=False)
    names = {p.name for p in (tmp_path / "ex").iterdir()}
    assert {"float.onnx", "model.onnx", "inputs.npy", "labels.npy", "calib.npy", "train.npz"} <= names
    assert 0 <= info["float_accuracy"] <= 1
    x, y = np.load(tmp_path / "ex" / "inputs.npy"), np.load(tmp_path / "ex" / "labels.npy")
    assert x.shape == (24, 1, 1, 49, 10) and y.shape == (24,)
    fm = onnx.load(tmp_path / "ex" / "float.onnx")
    assert fm.opset_import[0].version == 13
    assert [n.op_type for n in fm.graph.node if n.op_type == "Conv"] and all(
        n.op_type != "Conv" or [a.ints for a in n.attribute if a.name == "kernel_shape"][0][1] in (1, 10)
        for n in fm.graph.node)  # 1-D convolutions: kernels 3x10, then 3x1
    qm = onnx.load(tmp_path / "ex" / "model.onnx")
    assert {n.op_type for n in qm.graph.node} >= {"QuantizeLinear", "DequantizeLinear", "GlobalAveragePool"}
    ref = tony.run_reference(tmp_path / "ex" / "model.onnx", x)[0]
    got = ort_run(str(tmp_path / "ex" / "model.onnx"), list(x))[0]
    # GlobalAveragePool over 7 frames: the reference's reciprocal multiplier (docs/arithmetic.md) may
    # round one LSB away from onnxruntime's float mean, never more
    lsb = float(onnx.numpy_helper.to_array(next(i for i in qm.graph.initializer if i.name == "logits_scale")))
    assert np.abs(ref - got).max() <= lsb


@pytest.mark.slow
@pytest.mark.parametrize("example,goal", [("kws", 0.90), ("kws-conv1d", 0.85)])
def test_the_kws_examples_reach_their_accuracy_on_unseen_voices(example, goal, tmp_path):
    import tony

    res = subprocess.run([sys.executable, "-m", "tony.cli", "example", example, "-o", str(tmp_path)],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    x, y = np.load(tmp_path / "inputs.npy"), np.load(tmp_path / "labels.npy")
    from _ort_helpers import ort_run

    f_acc = float((ort_run(str(tmp_path / "float.onnx"), list(x))[0].reshape(len(y), -1).argmax(1) == y).mean())
    q_acc = float((tony.run_reference(tmp_path / "model.onnx", x)[0].reshape(len(y), -1).argmax(1) == y).mean())
    print(f"{example}: float {f_acc:.4f}, PTQ KL-J int8 {q_acc:.4f}")
    assert f_acc >= goal
    assert q_acc >= f_acc - 0.01


def test_a_tiny_kws_transformer_lowers_to_integer_ops_and_follows_onnxruntime(tmp_path, shared_cache, monkeypatch):
    """kws-transformer (tony.models.kwt) in a tiny size, one epoch: the float graph computes what
    torch computes, model.onnx lowers to the integer LayerNorm / Softmax / GELU table with the frame
    projection on the array, and the reference stays within 2 output LSB of onnxruntime on it."""
    torch = pytest.importorskip("torch")
    import tony
    from _ort_helpers import ort_run
    from tony import ir
    from tony.accel.placement import refuse
    from tony.accel.program import AccelConfig
    from tony.api import load_ir
    from tony.ir.partition import partition
    from tony.models import kwt

    monkeypatch.setenv("TONY_CACHE_DIR", str(shared_cache))
    small = {"d_model": 16, "ffn": 32, "layers": 1, "epochs": 1}
    d = tmp_path / "ex"
    info = kwt.build_kwt(d, spec=TINY, calib_size=16, progress=False, **small)
    assert {"float.onnx", "model.onnx", "inputs.npy", "labels.npy", "calib.npy", "train.npz"} <= {
        p.name for p in d.iterdir()}
    assert 0 <= info["float_accuracy"] <= 1
    x = np.load(d / "inputs.npy")
    assert x.shape == (24, 1, 1, 49, 10)

    fm = onnx.load(d / "float.onnx")
    ops = [n.op_type for n in fm.graph.node]
    assert fm.opset_import[0].version == 13 and ops[:3] == ["Reshape", "MatMul", "Add"]
    embed = {i.name: i for i in fm.graph.initializer}["embed.weight"]
    assert list(embed.dims) == [10, 16]  # each frame's 10 coefficients -> d_model
    assert ops.count("Softmax") == 1 and ops.count("Erf") == 1

    cfg = kwt.KwtConfig(**small)
    data = kd.dataset(TINY, progress=False)
    net, _ = kwt.train_kwt(cfg, data, progress=False)  # seeded: the same weights as the build's
    with torch.no_grad():
        want = net(torch.from_numpy(data["x_test"])).numpy()
    got = ort_run(str(d / "float.onnx"), list(x))[0].reshape(24, -1)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)

    g = load_ir(d / "model.onnx")
    kinds = [type(op).__name__ for op in g.ops]
    assert kinds.count("LayerNorm") == 3 and kinds.count("Softmax") == 1 and "FloatIsland" not in kinds
    assert any(isinstance(op, ir.Table) and op.function == "Gelu" for op in g.ops)
    part = partition(g, refuse(g, AccelConfig(8, 8)))
    on_array = {p.op.origin for p in part.placement if p.device}
    assert any(o.startswith("embed.matmul") for o in on_array), on_array

    ref = np.asarray(tony.run_reference(g, x)[0]).reshape(24, -1)
    qdq = ort_run(str(d / "model.onnx"), list(x))[0].reshape(24, -1)
    out_scale = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    assert np.abs(ref - qdq).max() <= 2 * out_scale


@pytest.mark.slow
@pytest.mark.sim
def test_the_kws_transformer_example_keeps_its_accuracy_and_runs_bit_exactly_on_verilator(tmp_path):
    """`tony example kws-transformer`, then model.onnx through `tony compile --array 8x8 --samples 2`
    and `tony sim`: bit-exact against the reference, cycles equal to the cycle model's, the frame
    projection and every other token-wise projection on the array."""
    import json

    import tony
    from _ort_helpers import ort_run

    d, b = tmp_path / "ex", tmp_path / "b"
    for args in (["example", "kws-transformer", "-o", d], ["compile", d / "model.onnx", "-o", b, "--array", "8x8",
                                                           "--samples", "2"], ["sim", b, "-q"]):
        res = subprocess.run([sys.executable, "-m", "tony.cli", *map(str, args)], capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
    x, y = np.load(d / "inputs.npy"), np.load(d / "labels.npy")
    f_acc = float((ort_run(str(d / "float.onnx"), list(x))[0].reshape(len(y), -1).argmax(1) == y).mean())
    q_acc = float((tony.run_reference(d / "model.onnx", x)[0].reshape(len(y), -1).argmax(1) == y).mean())
    print(f"kws-transformer: float {f_acc:.4f}, PTQ max int8 {q_acc:.4f}")
    assert f_acc >= 0.80  # 83.13% when measured (docs/accuracy.md); the DS-CNN gets 93.5% on this set
    assert q_acc >= f_acc - 0.02
    rep = json.loads((b / "sim_report.json").read_text())
    man = json.loads((b / "manifest.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"] and rep["compared"] > 0
    assert any(o.startswith("embed.matmul") for s in man["segments"] if s.get("build") for o in s["ops"])
    assert man["placement"]["device_mac_share"] > 0.5
