"""TQT threshold training: the analytic gradients, a short training run through the CLI, and (slow)
the accuracy targets."""
import math

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")

import tony  # noqa: E402
from _ort_helpers import ort_run  # noqa: E402
from tony.quant.tqt import qrange, tqt_quantize  # noqa: E402


def _ste_reference(x, log2t, bits, signed):
    """The same quantizer built from autograd primitives with straight-through round and ceil."""
    n, p = qrange(bits, signed)
    l_ste = log2t + (torch.ceil(log2t) - log2t).detach()
    s = torch.pow(2.0, l_ste) / 2.0 ** (bits - int(signed))
    xs = x / s
    r = xs + (torch.round(xs) - xs).detach()
    return torch.clamp(r, n, p) * s


@pytest.mark.parametrize("bits,signed", [(8, True), (8, False), (4, True)])
def test_threshold_gradient_matches_autograd_of_the_ste_quantizer(bits, signed, rng):
    x = torch.tensor(rng.normal(0, 1.5, 500), dtype=torch.float64, requires_grad=True)
    g = torch.tensor(rng.normal(0, 1, 500), dtype=torch.float64)
    l1 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    l2 = torch.tensor(0.3, dtype=torch.float64, requires_grad=True)
    q1 = tqt_quantize(x, l1, bits, signed)
    (q1 * g).sum().backward()
    gx1 = x.grad.clone()
    x.grad = None
    q2 = _ste_reference(x, l2, bits, signed)
    (q2 * g).sum().backward()
    assert torch.equal(q1, q2)
    assert torch.allclose(l1.grad, l2.grad, rtol=1e-12)
    assert torch.equal(gx1, x.grad)
    n, p = qrange(bits, signed)
    s = 2.0 ** math.ceil(0.3) / 2 ** (bits - int(signed))
    r = torch.round(x.detach() / s)
    assert torch.equal(gx1 != 0, (r >= n) & (r <= p))  # STE: 1 inside the range, 0 outside


def test_threshold_gradient_of_clipped_values_matches_finite_differences():
    # all values clip at p: q = p * 2^l / 2^(b-1), so dq/dl = p s ln2 exactly (ceil aside)
    x = torch.full((10,), 100.0, dtype=torch.float64)
    l0 = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    tqt_quantize(x, l0, 8, True).sum().backward()
    h = 1e-6

    def f(lv):  # the continuous surrogate (no ceil) around l = 1
        return float((127 * 2.0**lv / 128) * 10)
    fd = (f(1.0 + h) - f(1.0 - h)) / (2 * h)
    assert l0.grad.item() == pytest.approx(fd, rel=1e-6)
    assert l0.grad.item() == pytest.approx(10 * 127 * (2.0 / 128) * math.log(2), rel=1e-12)


def test_training_through_the_cli_writes_a_pow2_model_that_onnxruntime_and_the_reference_agree_on(
        digits_mlp, tmp_path, tony_cli):
    from tony.models.digits import digits_data

    xtr, ytr, xte, yte = digits_data(0)
    np.save(tmp_path / "calib.npy", xtr[:128, None, :])
    np.savez(tmp_path / "train.npz", x=xtr[:300, None, :], y=ytr[:300])
    out = tmp_path / "q.onnx"
    res = tony_cli("quantize", digits_mlp / "float.onnx", "--calib", tmp_path / "calib.npy",
                   "--train-data", tmp_path / "train.npz", "--epochs", 1, "--weight-bits", 4, "-o", out)
    assert res.returncode == 0, res.stderr
    assert "epoch 1/1" in res.stdout
    m = onnx.load(out)
    x = xte[:, None, :]
    ref = tony.run_reference(out, x)[0]
    got = ort_run(str(out), list(x))[0]  # onnxruntime's Q/DQ path: the same on every CPU
    assert np.array_equal(ref, got)
    acc = float((ref.reshape(len(yte), -1).argmax(1) == yte).mean())
    print(f"TQT 1 epoch, int4 weights: {acc:.4f}")
    assert acc > 0.85
    from onnx import numpy_helper
    for i in m.graph.initializer:
        if i.name.endswith("_scale"):
            v = float(numpy_helper.to_array(i))
            assert math.log2(v) == round(math.log2(v))


def test_a_validation_split_without_labels_is_one_line_and_writes_nothing(digits_mlp, tmp_path, tony_cli):
    x = np.load(digits_mlp / "inputs.npy")
    np.save(tmp_path / "calib.npy", x[:32])
    np.savez(tmp_path / "train.npz", x=x[:100], y=np.zeros(100, np.int64), x_val=x[100:150])
    out = tmp_path / "q.onnx"
    res = tony_cli("quantize", digits_mlp / "float.onnx", "--calib", tmp_path / "calib.npy",
                   "--train-data", tmp_path / "train.npz", "-o", out)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "y_val" in res.stderr
    assert not out.exists()


def test_the_validation_split_is_stratified_disjoint_and_seeded():
    from tony.quant.tqt import split_validation

    x = np.arange(200, dtype=np.float32)[:, None]
    y = np.repeat(np.arange(4), 50)
    xt, yt, xv, yv = split_validation(x, y, 0.2, seed=3)
    assert len(xv) == 40 and np.array_equal(np.bincount(yv), [10] * 4)
    assert not set(xt[:, 0]) & set(xv[:, 0]) and len(xt) + len(xv) == 200
    assert np.array_equal(split_validation(x, y, 0.2, seed=3)[2], xv)
    assert not np.array_equal(split_validation(x, y, 0.2, seed=4)[2], xv)


def _val_losses(lines):
    """[(accuracy, loss)] of the calibrated start and every epoch, from the training log."""
    def score(line):  # "... validation accuracy A[,] loss V ..."
        acc, loss = line.split("validation accuracy ")[1].replace(",", "").split()[:3:2]
        return float(acc), float(loss)
    return [score(lines[0])] + [score(x) for x in lines if x.startswith("epoch")]


def test_training_keeps_the_last_epoch_unless_an_earlier_one_is_significantly_better(digits_mlp):
    from tony.models.digits import digits_data
    from tony.quant.tqt import train_thresholds

    xtr, ytr, _, _ = digits_data(0)
    lines = []
    train_thresholds(onnx.load(digits_mlp / "float.onnx"), xtr[:64], xtr[:400], ytr[:400], epochs=3, weight_bits=4,
                     log=lines.append)
    scores = _val_losses(lines)
    assert len(scores) == 4 and "(thresholds only)" in lines[1]
    kept = lines[-1]
    assert kept.startswith("kept epoch ")
    k = int(kept.split()[2])
    losses = [v for _, v in scores]
    if k == 3:
        assert "standard errors" not in kept
    else:  # an earlier epoch only when it has the lowest validation loss, below the last epoch's
        assert losses[k] == min(losses) and losses[k] < losses[3] and "standard errors" in kept


def test_an_earlier_epoch_must_beat_the_last_by_more_than_the_noise():
    from tony.quant.tqt import significantly_lower

    rng = np.random.default_rng(0)
    last = rng.exponential(0.1, 400)
    assert significantly_lower(last - 0.02, last, 2.0)  # lower on every sample
    noise = rng.normal(0, 0.05, 400)
    worse_here_better_there = last + noise - noise.mean() - 0.001  # lower on average by far less than the spread
    assert not significantly_lower(worse_here_better_there, last, 2.0)
    assert significantly_lower(worse_here_better_there, last, 0.0)  # z = 0: the plain lower mean
    assert not significantly_lower(last, last, 2.0)


def test_thresholds_freeze_one_by_one_inputs_first_and_then_stay(digits_mlp):
    from dataclasses import replace

    from tony.models.digits import digits_data
    from tony.quant import tqt
    from tony.quant.qdq import _name_nodes, prepare

    xtr, ytr, _, _ = digits_data(0)
    model = _name_nodes(prepare(onnx.load(digits_mlp / "float.onnx")))
    net = tqt._start(model, xtr[:64, None], weight_bits=4, act_bits=8, method="kl-j", weight_method="mse",
                     first_last_8bit=False, device="cpu")
    assert sorted(net.topo) == sorted(net.log2t) and net.topo[0] == net.act_key(model.graph.input[0].name)
    macs = [n for n in model.graph.node if n.op_type == "Gemm"]
    assert net.topo[1] == "w_" + net.key[macs[0].input[1]]  # the first layer's weights next
    assert net.topo.index("w_" + net.key[macs[1].input[1]]) > net.topo.index(net.act_key(macs[1].input[0]))
    lines, seen = [], []
    sched = replace(tqt.Schedule(), epochs=4, freeze=(0.25, 0.5), distill=0.0)
    orig = tqt._score

    def spy(n, *a, **k):  # the thresholds after each epoch
        seen.append({key: float(v.detach()) for key, v in n.log2t.items()})
        return orig(n, *a, **k)
    tqt._score = spy
    try:
        x, y = xtr[:300, None], ytr[:300]
        tqt._train(net, (x, y), (xtr[300:400, None], ytr[300:400]), (1, 1, 64), sched, 0, False, lines.append)
    finally:
        tqt._score = orig
    n = len(net.topo)
    assert "(thresholds only)" in lines[1] and f"({n}/{n} thresholds frozen)" in lines[3]
    assert 0 < int(lines[2].split("(")[1].split("/")[0]) < n  # partly frozen during the second epoch
    assert seen[3] == seen[4]  # none moves once all are frozen (epochs 3 and 4)
    assert seen[1] != seen[0]  # they trained before


def test_the_training_network_without_quantizers_is_the_float_model(rng):
    """The distillation teacher: _Net's float forward equals onnxruntime on the float graph
    (a freshly seeded MobileNet-like net: BatchNorm folded, ReLU6, Concat, AveragePool)."""
    from tony.models import torchnet, digits_torch
    from tony.quant.qdq import _name_nodes, prepare
    from tony.quant.tqt import _start

    net = digits_torch.mobilenet_net(5)
    for m in net.modules():  # non-trivial BatchNorm statistics to fold
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fm = torchnet.to_onnx(net, (1, 1, 8, 8), 10, "t")
    x = rng.uniform(0, 1, (16, 1, 8, 8)).astype(np.float32)
    tn = _start(_name_nodes(prepare(fm)), x, weight_bits=8, act_bits=8, method="kl-j", weight_method="mse",
                first_last_8bit=False, device="cpu")
    with torch.no_grad():
        got = tn.forward(torch.tensor(x), quantize=False).numpy()
    want = ort_run_float(fm, x[:, None])
    assert np.allclose(got.reshape(want.shape), want, atol=1e-4)
    with torch.no_grad():
        assert np.allclose(net(torch.tensor(x)).numpy(), want, atol=1e-4)


def _acc(model, x, y) -> float:
    return float((tony.run_reference(model, x)[0].reshape(len(y), -1).argmax(1) == y).mean())


def _float_acc(model, x, y) -> float:
    return float((ort_run_float(model, x).argmax(1) == y).mean())


def ort_run_float(model, x):
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return np.stack([sess.run(None, {"input": xi})[0].reshape(-1) for xi in x])


def _tqt_vs_float(arch, seed, epochs, bits_list, model_epochs=60):
    """(float accuracy, {bits: (PTQ KL-J accuracy, TQT accuracy)}) on the digits test split for a
    torch model trained from `seed` (a model this quantizer was never tuned on)."""
    from tony.models.digits_torch import data, train
    from tony.quant.qdq import quantize_static
    from tony.quant.tqt import train_thresholds

    fm, _ = train(arch, seed, epochs=model_epochs)
    xtr, ytr, xva, yva, xte, yte = data(arch, seed)
    x = xte[:, None]
    f_acc = _float_acc(fm, x, yte)
    calib = xtr[np.random.default_rng(seed).choice(len(xtr), 256, replace=False)]
    res = {}
    for bits in bits_list:
        ptq = _acc(quantize_static(fm, calib, method="kl-j", weight_bits=bits), x, yte)
        q = train_thresholds(fm, calib, xtr, ytr, val=(xva, yva), epochs=epochs, weight_bits=bits, seed=seed)
        res[bits] = (ptq, _acc(q, x, yte))
        print(f"digits {arch} seed {seed}: float {f_acc:.4f}, w{bits} PTQ {ptq:.4f}, TQT {res[bits][1]:.4f}")
    return f_acc, res


def test_int4_tqt_stays_within_the_goal_of_float_on_a_freshly_seeded_mlp():
    """A short run (4 epochs) on a model the schedule was not tuned on. The margins are measured:
    over model seeds 101-108, TQT int4 minus float ranged -0.56 to +1.11 points and TQT minus PTQ
    KL-J -0.28 to +3.06 (one seed in eight below PTQ by one test image, so "TQT >= PTQ" would be a
    coin toss); the test holds the int4 goal (1.5 points of float) and PTQ less 1 point."""
    f_acc, res = _tqt_vs_float("mlp", 101, epochs=4, bits_list=[4], model_epochs=30)
    ptq, tqt = res[4]
    assert f_acc > 0.9
    assert tqt >= f_acc - 0.015
    assert tqt >= ptq - 0.01


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mlp", "mobilenet"])
@pytest.mark.parametrize("seed", [11, 12, 13])
def test_tqt_holds_on_freshly_seeded_torch_models(arch, seed):
    f_acc, res = _tqt_vs_float(arch, seed, epochs=30, bits_list=[8, 4])
    assert res[8][1] >= f_acc - 0.003
    assert res[4][1] >= f_acc - 0.015


@pytest.mark.slow
@pytest.mark.parametrize("example", ["digits-mlp", "digits-cnn", "digits-mobilenet"])
def test_tqt_meets_the_accuracy_targets(example, tmp_path):
    import onnxruntime as ort
    from tony.models import build_example
    from tony.models.cnn import images
    from tony.models.digits import digits_data
    from tony.quant.tqt import train_thresholds

    build_example(example, tmp_path)
    xtr, ytr, xte, yte = digits_data(0)
    if example != "digits-mlp":
        xtr, xte = images(xtr), images(xte)
    x = np.load(tmp_path / "inputs.npy")
    fm = onnx.load(tmp_path / "float.onnx")
    sess = ort.InferenceSession(str(tmp_path / "float.onnx"), providers=["CPUExecutionProvider"])
    acc_f = float((np.stack([sess.run(None, {"input": xi})[0] for xi in x]).reshape(len(yte), -1).argmax(1)
                   == yte).mean())
    for bits, margin in [(8, 0.003), (4, 0.015)]:  # the goals: float - 0.3 points (int8), - 1.5 (int4)
        q = train_thresholds(fm, xtr[:256], xtr, ytr, epochs=30, weight_bits=bits)
        acc = float((tony.run_reference(q, x)[0].reshape(len(yte), -1).argmax(1) == yte).mean())
        print(f"{example}: float {acc_f:.4f} TQT w{bits} {acc:.4f}")
        assert acc >= acc_f - margin


# ---- transformer encoders --------------------------------------------------------------------

def _tiny_encoder(tmp_path, opset):
    """A freshly seeded 1-layer torch encoder (test_transformer's) exported at `opset`, and
    labelled training data: the float model's own predictions on random tokens."""
    from test_transformer import _data, _encoder, _export, _ort

    f = _export(_encoder(layers=1), tmp_path / f"float{opset}.onnx", opset)
    x = _data(300, seed=7)
    return f, x, _ort(f, x).reshape(len(x), -1).argmax(1)


@pytest.mark.parametrize("opset", [13, 17])
def test_tqt_trains_an_encoder_into_a_pow2_qdq_model_that_tony_lowers(opset, tmp_path):
    """One epoch on 300 samples: the export is a pow2 QDQ model, lowered to the integer LayerNorm,
    Softmax and GELU table (no float island), the Softmax output still uint8 at 2^-8 (its threshold
    is not trained), and the reference within the 2 output LSB of onnxruntime on the same QDQ
    graph that test_transformer holds the PTQ encoders to (onnxruntime computes LayerNorm, Softmax
    and GELU in float on the dequantized values, the reference with the integer kernels)."""
    from onnx import numpy_helper
    from test_transformer import _data, _kinds, _ort

    from tony.api import load_ir
    from tony.frontend.load import load_model
    from tony.quant.tqt import train_thresholds

    f, x, y = _tiny_encoder(tmp_path, opset)
    lines = []
    q = train_thresholds(load_model(f), x[:32], x, y, epochs=1, method="max", log=lines.append)
    assert any(line.startswith("epoch 1/1") for line in lines)
    onnx.save(q, tmp_path / "q.onnx")
    onnx.checker.check_model(q)
    inits = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    scales = [float(v) for k, v in inits.items() if k.endswith("_scale")]
    assert scales and all(math.log2(v) == round(math.log2(v)) for v in scales)
    sm = next(n for n in q.graph.node if n.op_type == "Softmax")
    qn = next(n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] == sm.output[0])
    assert float(inits[qn.input[1]]) == 2.0**-8 and inits[qn.input[2]].dtype == np.uint8
    g = load_ir(tmp_path / "q.onnx")
    kinds = _kinds(g)
    assert kinds.count(("LayerNorm", "")) == 3 and kinds.count(("Softmax", "")) == 1
    assert kinds.count(("Table", "Gelu")) == 1 and kinds.count(("PixelMatMul", "")) == 2
    assert not any(k == "FloatIsland" for k, _ in kinds)
    xt = _data(24)
    got = np.asarray(tony.run_reference(g, xt)[0]).reshape(24, 1, 4)
    out_scale = g.tensors[g.producer(g.outputs[0]).inputs[0]].scale
    assert np.abs(got - _ort(tmp_path / "q.onnx", xt)).max() <= 2 * out_scale


@pytest.mark.parametrize("opset", [13, 17, 20])
def test_the_training_encoder_quantizes_where_the_exported_model_does(opset, tmp_path):
    """The fake-quantized training network equals onnxruntime on the QDQ model it exports (the
    same tensors quantized on the same grids: activations, weights, the bias Adds' int32 biases,
    the Softmax output), and without quantizers equals the float model."""
    from onnx import numpy_helper
    from test_transformer import _data, _ort

    from tony.frontend.load import load_model
    from tony.quant.qdq import _name_nodes, prepare
    from tony.quant.tqt import _start, export

    f, _, _ = _tiny_encoder(tmp_path, opset)
    m = _name_nodes(prepare(load_model(f)))
    x = _data(48)
    net = _start(m, x[:16], weight_bits=8, act_bits=8, method="kl-j", weight_method="mse", first_last_8bit=False,
                 device="cpu")
    assert len(net.fixed) == 1 and not set(net.fixed) & set(net.log2t)   # the Softmax output's threshold
    q = export(net, m, 8, 8, False)
    onnx.save(q, tmp_path / "q.onnx")
    n_q = sum(n.op_type == "QuantizeLinear" for n in q.graph.node)
    assert n_q == len(net.points)
    xb = torch.tensor(x.reshape((len(x),) + x.shape[2:]))
    with torch.no_grad():
        fq, fl = net.forward(xb).numpy(), net.forward(xb, quantize=False).numpy()
    want_q, want_f = _ort(tmp_path / "q.onnx", x).reshape(fq.shape), _ort(f, x).reshape(fl.shape)
    dq = next(n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == q.graph.output[0].name)
    out_scale = float(next(numpy_helper.to_array(i) for i in q.graph.initializer if i.name == dq.input[1]))
    assert np.abs(fq - want_q).max() <= out_scale * 1.001
    assert (fq == want_q).mean() > 0.95
    assert np.allclose(fl, want_f, atol=1e-5)


def _graph_model(nodes, inits, in_shape, out_shape):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_an_op_across_the_batch_axis_is_refused_in_one_line_naming_the_node(tmp_path, tony_cli):
    """A ReduceMean over axis 0 quantizes (PTQ) but would mix the samples of a training batch."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.3, (8, 4)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (4,)).astype(np.float32), "b")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="proj"),
             helper.make_node("Add", ["h", "b"], ["hb"], name="bias"),
             helper.make_node("ReduceMean", ["hb"], ["y"], name="batch_mean", axes=[0], keepdims=1)]
    onnx.save(_graph_model(nodes, [w, b], [1, 8], [1, 4]), tmp_path / "f.onnx")
    x = rng.normal(0, 1, (64, 1, 8)).astype(np.float32)
    np.save(tmp_path / "calib.npy", x[:16])
    np.savez(tmp_path / "train.npz", x=x, y=np.arange(64) % 4)
    out = tmp_path / "q.onnx"
    res = tony_cli("quantize", tmp_path / "f.onnx", "--calib", tmp_path / "calib.npy", "--train-data",
                   tmp_path / "train.npz", "--epochs", 1, "-q", "-o", out)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "batch_mean" in err[0] and "axis 0" in err[0]
    assert not out.exists()


def test_the_structural_and_host_ops_train_as_onnx_defines_them(rng):
    """A graph of the ops around attention heads (Split, Mul of two activations, Sub of a constant,
    Unsqueeze/Squeeze, Gather, Slice, Concat, Transpose, Reshape with 0 and -1, Pad, Softmax on
    axis 1, ReduceMean, Gemm): the training network without quantizers equals onnxruntime on the
    float graph, and with them onnxruntime on its QDQ export."""
    from onnx import helper, numpy_helper

    from tony.quant.qdq import _name_nodes, prepare
    from tony.quant.tqt import _start, export

    def c(name, v, dt=np.float32):
        return numpy_helper.from_array(np.asarray(v, dt), name)
    inits = [c("w", rng.normal(0, 0.4, (8, 12))), c("b", rng.normal(0, 0.1, 12)), c("k", rng.normal(0, 0.5, 4)),
             c("split", [4, 4, 4], np.int64), c("ax1", [1], np.int64), c("idx", [0, 2], np.int64),
             c("st", [1], np.int64), c("en", [3], np.int64), c("shape", [0, -1], np.int64),
             c("pads", [0, 1, 0, 3], np.int64), c("w2", rng.normal(0, 0.5, (20, 3))),
             c("b2", rng.normal(0, 0.1, 3)), c("w3", rng.normal(0, 0.5, (3, 8)))]
    N = helper.make_node
    nodes = [N("MatMul", ["x", "w"], ["h"], name="proj"), N("Add", ["h", "b"], ["hb"], name="bias"),
             N("Split", ["hb", "split"], ["s1", "s2", "s3"], name="heads", axis=2),
             N("Mul", ["s1", "s2"], ["m"], name="prod"), N("Sub", ["s3", "k"], ["d"], name="shift"),
             N("Unsqueeze", ["d", "ax1"], ["u"], name="unsq"), N("Squeeze", ["u", "ax1"], ["q"], name="sq"),
             N("Gather", ["q", "idx"], ["g"], name="pick", axis=1),
             N("Slice", ["m", "st", "en", "ax1"], ["sl"], name="cut"),
             N("Concat", ["g", "sl"], ["cat"], name="join", axis=2),
             N("Transpose", ["cat"], ["t"], name="tr", perm=[0, 2, 1]),
             N("Reshape", ["t", "shape"], ["r"], name="flat"), N("Pad", ["r", "pads"], ["p"], name="pad"),
             N("Softmax", ["p"], ["sm"], name="soft", axis=1),
             N("ReduceMean", ["t"], ["rm"], name="pool", axes=[-1], keepdims=0),
             N("Gemm", ["sm", "w2", "b2"], ["y1"], name="head1"),
             N("Gemm", ["rm", "w3"], ["y2"], name="head2", transB=1),
             N("Add", ["y1", "y2"], ["y"], name="sum")]
    m = _name_nodes(prepare(_graph_model(nodes, inits, [1, 4, 8], [1, 3])))
    x = rng.normal(0, 1, (32, 1, 4, 8)).astype(np.float32)
    net = _start(m, x[:16], weight_bits=8, act_bits=8, method="max", weight_method="mse", first_last_8bit=False,
                 device="cpu")
    q = export(net, m, 8, 8, False)
    xb = torch.tensor(x[:, 0])
    with torch.no_grad():
        fq, fl = net.forward(xb).numpy(), net.forward(xb, quantize=False).numpy()
    want_f = ort_run(m, list(x), name="x")[0].reshape(fl.shape)
    want_q = ort_run(q, list(x), name="x")[0].reshape(fq.shape)
    assert np.allclose(fl, want_f, atol=1e-5)
    out_scale = float(next(numpy_helper.to_array(i) for i in q.graph.initializer if i.name == "y_scale"))
    assert np.abs(fq - want_q).max() <= out_scale * 1.001 and (fq == want_q).mean() > 0.95
