"""A small numpy network library (NCHW, forward/backward, Adam) to train the digits CNNs without
torch, and export them as float ONNX graphs.

Layers keep what backward needs from the last forward. `to_onnx(name, x, b)` appends nodes and
initializers to an ONNX graph builder `b` and returns the output tensor name.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 13


class _Builder:
    def __init__(self):
        self.nodes, self.inits, self.k = [], [], 0

    def name(self, base: str) -> str:
        self.k += 1
        return f"{base}{self.k}"

    def init(self, name: str, arr) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    def node(self, op: str, ins: list[str], name: str, **attrs) -> str:
        self.nodes.append(helper.make_node(op, ins, [name], name=name, **attrs))
        return name


class Layer:
    params: tuple[str, ...] = ()

    def forward(self, x, train):
        raise NotImplementedError

    def backward(self, g):
        raise NotImplementedError


def _im2col(x, k, stride, pad):
    n, c, h, w = x.shape
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    cols = np.empty((n, c, k, k, oh, ow), x.dtype)
    for i in range(k):
        for j in range(k):
            cols[:, :, i, j] = xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride]
    return cols, (oh, ow)


def _col2im(cols, shape, k, stride, pad):
    n, c, h, w = shape
    oh, ow = cols.shape[-2:]
    xp = np.zeros((n, c, h + 2 * pad, w + 2 * pad), cols.dtype)
    for i in range(k):
        for j in range(k):
            xp[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += cols[:, :, i, j]
    return xp[:, :, pad:pad + h, pad:pad + w]


class Conv(Layer):
    """2-D convolution, groups 1 (dense) or = channels (depthwise)."""
    params = ("w", "b")

    def __init__(self, cin, cout, k=3, stride=1, pad=1, groups=1, rng=None, bias=True):
        self.cin, self.cout, self.k, self.stride, self.pad, self.groups = cin, cout, k, stride, pad, groups
        fan_in = cin // groups * k * k
        self.w = (rng.standard_normal((cout, cin // groups, k, k)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        self.b = np.zeros(cout, np.float32)
        self.has_bias = bias

    def forward(self, x, train):
        cols, (oh, ow) = _im2col(x, self.k, self.stride, self.pad)
        n, g = x.shape[0], self.groups
        self.cache = (cols, x.shape)
        c = cols.reshape(n, g, self.cin // g * self.k * self.k, oh * ow)
        w = self.w.reshape(g, self.cout // g, -1)
        y = np.matmul(w[None], c).reshape(n, self.cout, oh, ow)
        return y + self.b[None, :, None, None]

    def backward(self, gy):
        cols, shape = self.cache
        n, g = shape[0], self.groups
        oh, ow = gy.shape[2:]
        c = cols.reshape(n, g, self.cin // g * self.k * self.k, oh * ow)
        gy_ = gy.reshape(n, g, self.cout // g, oh * ow)
        w = self.w.reshape(g, self.cout // g, -1)
        self.gw = np.matmul(gy_, c.transpose(0, 1, 3, 2)).sum(axis=0).reshape(self.w.shape)
        self.gb = gy.sum(axis=(0, 2, 3)) if self.has_bias else np.zeros_like(self.b)
        gc = np.matmul(w.transpose(0, 2, 1)[None], gy_).reshape(cols.shape)
        return _col2im(gc, shape, self.k, self.stride, self.pad)

    def to_onnx(self, name, x, b):
        ins = [x, b.init(name + ".weight", self.w)]
        if self.has_bias:
            ins.append(b.init(name + ".bias", self.b))
        return b.node("Conv", ins, name, kernel_shape=[self.k, self.k], strides=[self.stride] * 2,
                      pads=[self.pad] * 4, group=self.groups)


class BatchNorm(Layer):
    params = ("gamma", "beta")

    def __init__(self, c, momentum=0.1, eps=1e-5):
        self.gamma, self.beta = np.ones(c, np.float32), np.zeros(c, np.float32)
        self.mean, self.var = np.zeros(c, np.float32), np.ones(c, np.float32)
        self.momentum, self.eps = momentum, eps

    def forward(self, x, train):
        if train:
            mu, var = x.mean(axis=(0, 2, 3)), x.var(axis=(0, 2, 3))
            self.mean = (1 - self.momentum) * self.mean + self.momentum * mu
            self.var = (1 - self.momentum) * self.var + self.momentum * var
        else:
            mu, var = self.mean, self.var
        inv = 1.0 / np.sqrt(var + self.eps)
        xh = (x - mu[None, :, None, None]) * inv[None, :, None, None]
        self.cache = (xh, inv)
        return xh * self.gamma[None, :, None, None] + self.beta[None, :, None, None]

    def backward(self, gy):
        xh, inv = self.cache
        m = gy.shape[0] * gy.shape[2] * gy.shape[3]
        self.ggamma = (gy * xh).sum(axis=(0, 2, 3))
        self.gbeta = gy.sum(axis=(0, 2, 3))
        gxh = gy * self.gamma[None, :, None, None]
        return (inv[None, :, None, None] / m) * (m * gxh - gxh.sum(axis=(0, 2, 3))[None, :, None, None]
                                                  - xh * (gxh * xh).sum(axis=(0, 2, 3))[None, :, None, None])

    def to_onnx(self, name, x, b):
        ins = [x] + [b.init(f"{name}.{k}", getattr(self, k)) for k in ("gamma", "beta", "mean", "var")]
        return b.node("BatchNormalization", ins, name, epsilon=self.eps)


class ReLU(Layer):
    def __init__(self, hi=None):
        self.hi = hi

    def forward(self, x, train):
        self.mask = (x > 0) if self.hi is None else (x > 0) & (x < self.hi)
        return np.maximum(x, 0) if self.hi is None else np.clip(x, 0, self.hi)

    def backward(self, g):
        return g * self.mask

    def to_onnx(self, name, x, b):
        if self.hi is None:
            return b.node("Relu", [x], name)
        return b.node("Clip", [x, b.init(name + ".min", np.float32(0)), b.init(name + ".max", np.float32(self.hi))],
                      name)


class MaxPool2(Layer):
    def forward(self, x, train):
        n, c, h, w = x.shape
        r = x.reshape(n, c, h // 2, 2, w // 2, 2)
        y = r.max(axis=(3, 5))
        self.mask = r == y[:, :, :, None, :, None]
        return y

    def backward(self, g):
        n, c, h, _, w, _ = self.mask.shape
        gm = self.mask * g[:, :, :, None, :, None]
        gm = gm / np.maximum(self.mask.sum(axis=(3, 5), keepdims=True), 1)
        return gm.reshape(n, c, h * 2, w * 2)

    def to_onnx(self, name, x, b):
        return b.node("MaxPool", [x], name, kernel_shape=[2, 2], strides=[2, 2])


class GlobalAvgPool(Layer):
    def forward(self, x, train):
        self.shape = x.shape
        return x.mean(axis=(2, 3))

    def backward(self, g):
        n, c, h, w = self.shape
        return np.broadcast_to(g[:, :, None, None] / (h * w), self.shape).copy()

    def to_onnx(self, name, x, b):
        y = b.node("GlobalAveragePool", [x], name)
        return b.node("Flatten", [y], name + "_flat", axis=1)


class Flatten(Layer):
    def forward(self, x, train):
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g):
        return g.reshape(self.shape)

    def to_onnx(self, name, x, b):
        return b.node("Flatten", [x], name, axis=1)


class Dense(Layer):
    params = ("w", "b")

    def __init__(self, nin, nout, rng):
        self.w = (rng.standard_normal((nout, nin)) * np.sqrt(1.0 / nin)).astype(np.float32)
        self.b = np.zeros(nout, np.float32)

    def forward(self, x, train):
        self.x = x
        return x @ self.w.T + self.b

    def backward(self, g):
        self.gw, self.gb = g.T @ self.x, g.sum(axis=0)
        return g @ self.w

    def to_onnx(self, name, x, b):
        return b.node("Gemm", [x, b.init(name + ".weight", self.w), b.init(name + ".bias", self.b)], name, transB=1)


class Seq(Layer):
    def __init__(self, *layers):
        self.layers = list(layers)

    def forward(self, x, train):
        for layer in self.layers:
            x = layer.forward(x, train)
        return x

    def backward(self, g):
        for layer in reversed(self.layers):
            g = layer.backward(g)
        return g

    def to_onnx(self, name, x, b):
        for layer in self.layers:
            x = layer.to_onnx(b.name(type(layer).__name__.lower()), x, b)
        return x

    def all_layers(self):
        for layer in self.layers:
            if isinstance(layer, (Seq, Residual)):
                yield from layer.all_layers()
            else:
                yield layer


class Residual(Seq):
    """y = body(x) + x (the ONNX graph: an Add of the block's input and the body's output)."""

    def forward(self, x, train):
        return super().forward(x, train) + x

    def backward(self, g):
        return super().backward(g) + g

    def to_onnx(self, name, x, b):
        y = super().to_onnx(name, x, b)
        return b.node("Add", [y, x], b.name("add"))


def _param_grads(layer):
    for p in layer.params:
        gname = {"w": "gw", "b": "gb", "gamma": "ggamma", "beta": "gbeta"}[p]
        yield layer, p, gname


def train(net: Seq, x, y, *, epochs=20, lr=3e-3, batch=64, seed=0, weight_decay=1e-4) -> Seq:
    """Softmax cross-entropy, Adam; lr cosine-decayed to 0."""
    rng = np.random.default_rng(seed)
    slots = [s for layer in net.all_layers() for s in _param_grads(layer)]
    m = [np.zeros_like(getattr(l_, p)) for l_, p, _ in slots]
    v = [np.zeros_like(getattr(l_, p)) for l_, p, _ in slots]
    step, total = 0, epochs * -(-len(x) // batch)
    for _ in range(epochs):
        idx = rng.permutation(len(x))
        for s in range(0, len(x), batch):
            bi = idx[s:s + batch]
            logits = net.forward(x[bi], True)
            p = np.exp(logits - logits.max(axis=1, keepdims=True))
            p /= p.sum(axis=1, keepdims=True)
            p[np.arange(len(bi)), y[bi]] -= 1
            net.backward((p / len(bi)).astype(np.float32))
            step += 1
            cur = lr * 0.5 * (1 + np.cos(np.pi * step / total))
            for k, (layer, pname, gname) in enumerate(slots):
                w = getattr(layer, pname)
                gr = getattr(layer, gname) + (weight_decay * w if pname == "w" else 0)
                m[k] = 0.9 * m[k] + 0.1 * gr
                v[k] = 0.999 * v[k] + 0.001 * gr * gr
                mh, vh = m[k] / (1 - 0.9**step), v[k] / (1 - 0.999**step)
                setattr(layer, pname, (w - cur * mh / (np.sqrt(vh) + 1e-8)).astype(np.float32))
    return net


def accuracy(net: Seq, x, y) -> float:
    return float((net.forward(x, False).argmax(axis=1) == y).mean())


def to_onnx(net: Seq, in_shape: tuple[int, ...], n_out: int, name: str) -> onnx.ModelProto:
    b = _Builder()
    y = net.to_onnx(name, "input", b)
    b.nodes[-1].output[0] = "logits"
    g = helper.make_graph(b.nodes, name, [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(in_shape))],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, n_out])], b.inits)
    del y
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tony")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m
