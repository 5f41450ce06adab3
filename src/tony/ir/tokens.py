"""Token-wise dense layers as 1x1 convolutions, so that the accelerator runs them.

A transformer's projections are products x [N, T, K] @ w [K, M]: the same matrix for each of T
tokens. The accelerator stores activations as [N, C, H, W] (channels in the lanes of a word, one
word per pixel) or [N, K], so `tokens_as_pixels` rewrites each such Dense as

    Transpose(0, 2, 1) -> Reshape [N, K, 1, T] -> Conv 1x1 (w^T as [M, K, 1, 1]) -> Reshape [N, M, T]
    -> Transpose(0, 2, 1)

with the same integers (acc = sum_k x[t, k] w[k, m] + bias[m], the same requant): the tokens
become the pixels of a 1 x T image whose channels are the features. The Transposes and Reshapes
move integers only and run on the host (tony.ir.partition); the layers reading one tensor share
one pixel view of it, so Q, K and V projections of one input form one device segment.

`matmuls_as_pixels` does the same for the attention's products of two activations (Q.K^T and
P.V): a [N, H, T, K] @ b [N, H, K, M] (or [N, T, K] @ [N, K, M], one head) becomes

    Transpose a -> [N, K, H, T], Transpose b -> [N, M, H, K] -> PixelMatMul -> [N, M, H, T] -> Transpose

so each head is one row of T pixels with K channels, and b, laid out as an activation with M
channels and K pixels per head row, is word for word the weight block of a 1x1 convolution with
K input and M output channels (docs/isa.md, 'Activations as weights').
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .ops import Conv, Dense, Graph, MatMul, PixelMatMul, Reshape, Transpose
from .types import Tensor


def _fresh(g_tensors: dict, base: str) -> str:
    name, k = base, 0
    while name in g_tensors:
        k += 1
        name = f"{base}.{k}"
    return name


def tokens_as_pixels(g: Graph) -> Graph:
    """Every Dense of a 3-D activation [N, T, K] by a 2-D constant weight as a 1x1 Conv between views."""
    tensors, constants = dict(g.tensors), dict(g.constants)
    views: dict[str, str] = {}
    ops = []
    changed = False
    for op in g.ops:
        x = tensors[op.inputs[0]] if op.inputs else None
        if not (isinstance(op, Dense) and len(x.shape) == 3 and op.inputs[1] in constants
                and constants[op.inputs[1]].ndim == 2 and not x.dtype.is_float):
            ops.append(op)
            continue
        changed = True
        n, t, k = x.shape
        wt = tensors[op.inputs[1]]
        w = np.asarray(constants[op.inputs[1]])
        m = w.shape[1]
        y = tensors[op.outputs[0]]
        if x.name not in views:
            kt = _fresh(tensors, f"{x.name}.kt")
            tensors[kt] = replace(x, name=kt, shape=(n, k, t))
            px = _fresh(tensors, f"{x.name}.px")
            tensors[px] = replace(x, name=px, shape=(n, k, 1, t))
            ops.append(Transpose((x.name,), (kt,), origin=op.origin, op_type="Transpose", perm=(0, 2, 1)))
            ops.append(Reshape((kt,), (px,), origin=op.origin, op_type="Reshape", shape=(n, k, 1, t)))
            views[x.name] = px
        w4 = _fresh(tensors, f"{op.inputs[1]}.1x1")
        constants[w4] = w.T.reshape(m, k, 1, 1).copy()
        tensors[w4] = Tensor(w4, (m, k, 1, 1), wt.dtype, wt.scale, wt.zero_point)
        if sum(op.inputs[1] in o.inputs for o in g.ops) == 1:
            constants.pop(op.inputs[1])
            tensors.pop(op.inputs[1])
        ypx = _fresh(tensors, f"{y.name}.px")
        tensors[ypx] = replace(y, name=ypx, shape=(n, m, 1, t))
        ymt = _fresh(tensors, f"{y.name}.mt")
        tensors[ymt] = replace(y, name=ymt, shape=(n, m, t))
        ops.append(Conv((views[x.name], w4) + tuple(op.inputs[2:]), (ypx,), origin=op.origin,
                        op_type=op.op_type, requant=op.requant))
        ops.append(Reshape((ypx,), (ymt,), origin=op.origin, op_type="Reshape", shape=(n, m, t)))
        ops.append(Transpose((ymt,), (y.name,), origin=op.origin, op_type="Transpose", perm=(0, 2, 1)))
    if not changed:
        return g
    return replace(g, tensors=tensors, constants=constants, ops=tuple(ops))


def _pixel_ready(g: Graph, op) -> bool:
    """A MatMul of two integer activations [N, (H,) T, K] @ [N, (H,) K, M] with the same leading
    axes (no broadcasting), zero points 0 and a per-tensor requantization: what PixelMatMul takes."""
    if not isinstance(op, MatMul) or op.requant is None or op.requant.per_channel or op.requant.zero_point:
        return False
    a, b, y = (g.tensors[n] for n in op.inputs + op.outputs)
    if any(n in g.constants for n in op.inputs) or any(t.dtype.is_float or t.zero_point for t in (a, b, y)):
        return False
    r = len(a.shape)
    return r in (3, 4) and len(b.shape) == r and a.shape[:-2] == b.shape[:-2] and a.shape[-1] == b.shape[-2]


def matmuls_as_pixels(g: Graph) -> Graph:
    """Every MatMul of two activations that PixelMatMul takes (`_pixel_ready`) as a PixelMatMul
    between Transposes (3-D operands get a head axis of 1 by a Reshape)."""
    tensors = dict(g.tensors)
    ops, changed = [], False

    def view(src: str, shape: tuple, tag: str, op, perm=None, reshape=False) -> str:
        name = _fresh(tensors, f"{src}.{tag}")
        tensors[name] = replace(tensors[src], name=name, shape=tuple(shape))
        if reshape:
            ops.append(Reshape((src,), (name,), origin=op.origin, op_type="Reshape", shape=tuple(shape)))
        else:
            ops.append(Transpose((src,), (name,), origin=op.origin, op_type="Transpose", perm=perm))
        return name

    for op in g.ops:
        if not _pixel_ready(g, op):
            ops.append(op)
            continue
        changed = True
        a, b, y = (tensors[n] for n in op.inputs + op.outputs)
        an, bn = op.inputs
        if len(a.shape) == 3:      # one head: [N, T, K] -> [N, 1, T, K]
            an = view(an, (a.shape[0], 1) + a.shape[1:], "h", op, reshape=True)
            bn = view(bn, (b.shape[0], 1) + b.shape[1:], "h", op, reshape=True)
        n, h, t, k = tensors[an].shape
        m = tensors[bn].shape[-1]
        apx = view(an, (n, k, h, t), "px", op, perm=(0, 3, 1, 2))
        bpx = view(bn, (n, m, h, k), "px", op, perm=(0, 3, 1, 2))
        ypx = _fresh(tensors, f"{y.name}.px")
        tensors[ypx] = replace(y, name=ypx, shape=(n, m, h, t))
        ops.append(PixelMatMul((apx, bpx), (ypx,), origin=op.origin, op_type=op.op_type, requant=op.requant))
        if len(y.shape) == 3:
            y4 = _fresh(tensors, f"{y.name}.h")
            tensors[y4] = replace(y, name=y4, shape=(n, h, t, m))
            ops.append(Transpose((ypx,), (y4,), origin=op.origin, op_type="Transpose", perm=(0, 2, 3, 1)))
            ops.append(Reshape((y4,), (y.name,), origin=op.origin, op_type="Reshape", shape=y.shape))
        else:
            ops.append(Transpose((ypx,), (y.name,), origin=op.origin, op_type="Transpose", perm=(0, 2, 3, 1)))
    if not changed:
        return g
    return replace(g, tensors=tensors, ops=tuple(ops))
