"""MLPerf Tiny reference architectures as float ONNX graphs with seeded random weights.

resnet8           image classification (CIFAR-10, input 1x3x32x32): the EEMBC ResNet-v1 of the
                  MLPerf Tiny training code with 16 filters: Conv 16 3x3 + BN + ReLU, three
                  residual stacks (16, 32, 64 filters; stride 2 and a 1x1 Conv shortcut without BN
                  in stacks 2 and 3), AveragePool 8x8, Dense 10.
dscnn             keyword spotting (49x10 MFCC, input 1x1x49x10): Conv 64 10x4 stride 2 + BN + ReLU,
                  four depthwise-separable blocks (depthwise 3x3 + BN + ReLU, pointwise 64 + BN +
                  ReLU), AveragePool (24, 5) (the reference's int(49/2) x int(10/2) window over the
                  25x5 map: the last row is not pooled), Dense 12.
mobilenet-v1-025  visual wake words (input 1x3x96x96): MobileNetV1 with alpha 0.25 (8 filters in the
                  stem), 13 depthwise-separable blocks, AveragePool 3x3, Dense 2.
fc-autoencoder    anomaly detection (5 frames x 128 log-mel bands, input 1x640): Dense 128 x4,
                  Dense 8, Dense 128 x4 (each + BN + ReLU), Dense 640.

Padding follows Keras 'same' exactly (the extra row/column of an odd total goes at the end).
The softmax at the end of the classifiers is left out (it does not change the arg max).

Weights are seeded random (He normal where the reference asks for it, Glorot uniform, Keras'
default, elsewhere). The graph is built eagerly on a batch of seeded random inputs so that every
BatchNormalization gets that batch's statistics as its moving mean and variance (then a random
gamma and beta): the activations have realistic ranges, as after training. Nothing is downloaded.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

OPSET = 13
BN_EPS = 1e-3  # Keras' BatchNormalization default


def same_pads(in_hw, k, s) -> tuple[int, int, int, int]:
    """Keras/TensorFlow 'same' padding as ONNX pads (top, left, bottom, right)."""
    before, after = [], []
    for n, kk, ss in zip(in_hw, k, s):
        out = -(-n // ss)
        total = max((out - 1) * ss + kk - n, 0)
        before.append(total // 2)
        after.append(total - total // 2)
    return (before[0], before[1], after[0], after[1])


class _Eager:
    """An ONNX graph builder that also computes every value on a batch of inputs (float64)."""

    def __init__(self, x: np.ndarray, rng: np.random.Generator):
        self.rng, self.nodes, self.inits, self.k = rng, [], [], 0
        self.in_shape = (1,) + x.shape[1:]
        self.vals = {"input": x.astype(np.float64)}

    def _name(self, base: str) -> str:
        self.k += 1
        return f"{base}_{self.k}"

    def _init(self, name: str, arr) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def _node(self, op: str, ins: list[str], name: str, value, **attrs) -> str:
        self.nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        self.vals[name] = value
        return name

    def he_normal(self, shape, fan_in):
        return self.rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)

    def glorot_uniform(self, shape, fan_in, fan_out):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return self.rng.uniform(-lim, lim, shape)

    def conv(self, x: str, cout: int, k, stride=1, group: int = 1, init: str = "glorot") -> str:
        """Conv2D / DepthwiseConv2D (group = channels) with bias and 'same' padding."""
        v = self.vals[x]
        n, cin, h, w = v.shape
        k = (k, k) if isinstance(k, int) else tuple(k)
        s = (stride, stride)
        fan_in, fan_out = cin // group * k[0] * k[1], cout // group * k[0] * k[1]
        shape = (cout, cin // group) + k
        wt = self.he_normal(shape, fan_in) if init == "he" else self.glorot_uniform(shape, fan_in, fan_out)
        wt = wt.astype(np.float32)
        b = np.zeros(cout, np.float32)
        pads = same_pads((h, w), k, s)
        name = self._name("conv" if group == 1 else "dwconv")
        y = _conv_forward(v, wt.astype(np.float64), b, s, pads, group)
        ins = [x, self._init(name + ".weight", wt), self._init(name + ".bias", b)]
        return self._node("Conv", ins, name, y, kernel_shape=list(k), strides=list(s), pads=list(pads), group=group)

    def dense(self, x: str, nout: int, init: str = "glorot") -> str:
        v = self.vals[x]
        nin = v.shape[1]
        wt = self.he_normal((nout, nin), nin) if init == "he" else self.glorot_uniform((nout, nin), nin, nout)
        wt = wt.astype(np.float32)
        b = np.zeros(nout, np.float32)
        name = self._name("dense")
        ins = [x, self._init(name + ".weight", wt), self._init(name + ".bias", b)]
        return self._node("Gemm", ins, name, v @ wt.T.astype(np.float64) + b, transB=1)

    def bn(self, x: str) -> str:
        """BatchNormalization with this batch's statistics and a random affine part."""
        v = self.vals[x]
        axes = (0,) + tuple(range(2, v.ndim))
        mean, var = v.mean(axis=axes), v.var(axis=axes) + 1e-6
        c = v.shape[1]
        gamma = self.rng.uniform(0.5, 1.5, c)
        beta = self.rng.normal(0.0, 0.25, c)
        sh = (1, c) + (1,) * (v.ndim - 2)
        y = (v - mean.reshape(sh)) / np.sqrt(var.reshape(sh) + BN_EPS) * gamma.reshape(sh) + beta.reshape(sh)
        name = self._name("bn")
        ins = [x] + [self._init(f"{name}.{p}", a) for p, a in
                     (("gamma", gamma), ("beta", beta), ("mean", mean), ("var", var))]
        return self._node("BatchNormalization", ins, name, y, epsilon=BN_EPS)

    def relu(self, x: str) -> str:
        return self._node("Relu", [x], self._name("relu"), np.maximum(self.vals[x], 0))

    def add(self, a: str, b: str) -> str:
        return self._node("Add", [a, b], self._name("add"), self.vals[a] + self.vals[b])

    def avgpool(self, x: str, k) -> str:
        v = self.vals[x]
        win = sliding_window_view(v, tuple(k), axis=(2, 3))[:, :, ::k[0], ::k[1]]
        return self._node("AveragePool", [x], self._name("avgpool"), win.mean(axis=(4, 5)),
                          kernel_shape=list(k), strides=list(k))

    def flatten(self, x: str) -> str:
        v = self.vals[x]
        return self._node("Flatten", [x], self._name("flatten"), v.reshape(len(v), -1), axis=1)

    def model(self, out: str, name: str) -> onnx.ModelProto:
        self.nodes[-1].output[0] = "output"
        self.vals["output"] = self.vals[out]
        out_shape = [1] + list(self.vals[out].shape[1:])
        g = helper.make_graph(self.nodes, name,
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(self.in_shape))],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, out_shape)], self.inits)
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tony")
        m.ir_version = 8
        onnx.checker.check_model(m)
        return m


def _conv_forward(x, w, b, strides, pads, group):
    t, l, bt, r = pads
    xp = np.pad(x, ((0, 0), (0, 0), (t, bt), (l, r)))
    m, cg, kh, kw = w.shape
    win = sliding_window_view(xp, (kh, kw), axis=(2, 3))[:, :, ::strides[0], ::strides[1]]  # N C OH OW kh kw
    n, c, oh, ow = win.shape[:4]
    mg = m // group
    win = win.reshape(n, group, cg, oh, ow, kh, kw)
    wg = w.reshape(group, mg, cg, kh, kw)
    y = np.einsum("ngchwij,gmcij->ngmhw", win, wg, optimize=True).reshape(n, m, oh, ow)
    return y + b.reshape(1, m, 1, 1)


# ---- the architectures -------------------------------------------------------------------------

def resnet8(b: _Eager) -> str:
    def cbr(x, f, s=1):
        return b.relu(b.bn(b.conv(x, f, 3, s, init="he")))

    x = cbr("input", 16)
    y = b.bn(b.conv(cbr(x, 16), 16, 3, init="he"))
    x = b.relu(b.add(x, y))
    for f in (32, 64):
        y = b.bn(b.conv(cbr(x, f, 2), f, 3, init="he"))
        x = b.relu(b.add(b.conv(x, f, 1, 2, init="he"), y))
    return b.dense(b.flatten(b.avgpool(x, (8, 8))), 10, init="he")


def dscnn(b: _Eager) -> str:
    x = b.relu(b.bn(b.conv("input", 64, (10, 4), 2)))
    for _ in range(4):
        x = b.relu(b.bn(b.conv(x, 64, 3, 1, group=64)))
        x = b.relu(b.bn(b.conv(x, 64, 1)))
    return b.dense(b.flatten(b.avgpool(x, (49 // 2, 10 // 2))), 12)


# (stride of the depthwise conv, pointwise filters) of MobileNetV1's 13 separable blocks at alpha 1
_MOBILENET_BLOCKS = [(1, 64), (2, 128), (1, 128), (2, 256), (1, 256), (2, 512),
                     (1, 512), (1, 512), (1, 512), (1, 512), (1, 512), (2, 1024), (1, 1024)]


def mobilenet_v1_025(b: _Eager) -> str:
    x = b.relu(b.bn(b.conv("input", 8, 3, 2, init="he")))
    for s, f in _MOBILENET_BLOCKS:
        c = b.vals[x].shape[1]
        x = b.relu(b.bn(b.conv(x, c, 3, s, group=c, init="he")))
        x = b.relu(b.bn(b.conv(x, f // 4, 1, init="he")))
    hw = b.vals[x].shape[2:]
    return b.dense(b.flatten(b.avgpool(x, hw)), 2)


def fc_autoencoder(b: _Eager) -> str:
    x = "input"
    for width in (128, 128, 128, 128, 8, 128, 128, 128, 128):
        x = b.relu(b.bn(b.dense(x, width)))
    return b.dense(x, 640)


def _images(rng, n, c, hw):
    """Pixels in [0, 1] (8-bit images divided by 255)."""
    return (rng.integers(0, 256, (n, c) + hw) / 255.0).astype(np.float32)


def _mfcc(rng, n):
    """49 frames x 10 MFCCs: the 0th coefficient (log energy) large and negative, the others
    shrinking with their index, as the keyword-spotting features are."""
    scale = 20.0 / (1.0 + np.arange(10))
    x = rng.standard_normal((n, 1, 49, 10)) * scale
    x[..., 0] -= 40.0
    return x.astype(np.float32)


def _logmel(rng, n):
    """5 frames x 128 log-mel energies in dB (10 log10 of the power), stacked to 640."""
    base = rng.normal(-30.0, 8.0, (n, 1, 128))
    return (base + rng.normal(0.0, 3.0, (n, 5, 128))).reshape(n, 640).astype(np.float32)


# name -> (architecture, input maker (rng, n) -> stack, graph name)
WORKLOADS = {
    "resnet8": (resnet8, lambda r, n: _images(r, n, 3, (32, 32)), "resnet8"),
    "dscnn": (dscnn, _mfcc, "dscnn_kws"),
    "mobilenet-v1-025": (mobilenet_v1_025, lambda r, n: _images(r, n, 3, (96, 96)), "mobilenet_v1_025_vww"),
    "fc-autoencoder": (fc_autoencoder, _logmel, "fc_autoencoder"),
}


def float_model(name: str, *, seed: int = 0, batch: int = 32) -> tuple[onnx.ModelProto, np.ndarray]:
    """The float ONNX model of workload `name` and the batch (N, *input shape[1:]) its BatchNorm
    statistics came from (also its calibration batch)."""
    arch, make_inputs, gname = WORKLOADS[name]
    rng = np.random.default_rng(seed)
    x = make_inputs(rng, batch)
    b = _Eager(x, rng)
    out = arch(b)
    return b.model(out, gname), x


def param_mac_counts(model: onnx.ModelProto) -> dict:
    """Parameters and MACs per sample of a float model, counted the way Keras' summary counts
    (conv/dense weights and biases; BatchNorm's gamma, beta, moving mean and variance)."""
    from onnx import shape_inference

    m = shape_inference.infer_shapes(model)
    shapes = {v.name: tuple(d.dim_value for d in v.type.tensor_type.shape.dim)
              for v in list(m.graph.value_info) + list(m.graph.output) + list(m.graph.input)}
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    params = {"mac": 0, "bn": 0}
    macs = 0
    for n in m.graph.node:
        if n.op_type in ("Conv", "Gemm"):
            w = inits[n.input[1]]
            params["mac"] += w.size + (inits[n.input[2]].size if len(n.input) > 2 else 0)
            out = shapes[n.output[0]]
            per_out = w[0].size if n.op_type == "Conv" else w.shape[1]
            macs += per_out * int(np.prod(out[1:]))
        elif n.op_type == "BatchNormalization":
            params["bn"] += sum(inits[i].size for i in n.input[1:5])
    return {"params": params["mac"] + params["bn"], "mac_params": params["mac"], "bn_params": params["bn"],
            "macs": macs}


def build(name: str, out_dir, *, seed: int = 0, calib_size: int = 32, samples: int = 32,
          method: str = "max", sequential: bool = False) -> dict:
    """Write float.onnx, model.onnx (pow2 QDQ, calibrated with `method` on one seeded random batch)
    and inputs.npy (`samples` other seeded random inputs, stacked). No labels: the weights are
    random, so there is no accuracy to measure.

    Calibration observes the float activations in one pass (`sequential=False`): sequential
    calibration re-runs onnx's reference evaluator once per tensor (45 s for the MobileNet
    instead of about 1 s)."""
    from ..quant.qdq import quantize_static

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fm, calib = float_model(name, seed=seed, batch=calib_size)
    qm = quantize_static(fm, calib, method=method, sequential=sequential)
    x = WORKLOADS[name][1](np.random.default_rng(seed + 1), samples)
    onnx.save(fm, out / "float.onnx")
    onnx.save(qm, out / "model.onnx")
    np.save(out / "inputs.npy", x[:, None])
    return {"dir": str(out), **param_mac_counts(fm)}
