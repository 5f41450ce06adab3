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

`tables_in_pixels` moves an element-wise table (GELU between a transformer's two feed-forward
layers) from the token view [N, T, M] onto the pixel view [N, M, 1, T] it came from, so that the
first layer, the table and the second layer form one device segment instead of three.

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

from .ops import Conv, Dense, Graph, MatMul, PixelMatMul, Reshape, Table, Transpose
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


def _token_view_of(g: Graph, prod: dict, name: str) -> str | None:
    """The pixel view [N, M, 1, T] that the token tensor `name` [N, T, M] was made from by
    tokens_as_pixels (Reshape to [N, M, T], Transpose(0, 2, 1)), or None."""
    t = prod.get(name)
    if not (isinstance(t, Transpose) and t.perm == (0, 2, 1)):
        return None
    r = prod.get(t.inputs[0])
    if not isinstance(r, Reshape):
        return None
    n, tt, m = g.tensors[name].shape
    return r.inputs[0] if g.tensors[r.inputs[0]].shape == (n, m, 1, tt) else None


def _drop_dead_views(ops: list, keep) -> list:
    """Without the Transposes and Reshapes whose results nothing reads (graph outputs in `keep`)."""
    while True:
        used = {i for op in ops for i in op.inputs} | set(keep)
        live = [op for op in ops if not (isinstance(op, (Transpose, Reshape)) and not any(o in used for o in op.outputs))]
        if len(live) == len(ops):
            return live
        ops = live


def tables_in_pixels(g: Graph) -> Graph:
    """Every Table of a token tensor [N, T, M] (per tensor, or one table per feature M) that
    tokens_as_pixels made from a pixel view [N, M, 1, T] as the same Table on that view (per
    feature: per channel), its result viewed back as before; the pixel views that the next layers
    take of the result (Transpose(0, 2, 1), Reshape to [N, M, 1, T]) are the Table's own result,
    and the views nothing reads any more are dropped. Elementwise, so the same integers."""
    tensors = dict(g.tensors)
    prod = {o: op for op in g.ops for o in op.outputs}
    alias: dict[str, str] = {}
    ops, changed = [], False
    for op in g.ops:
        if alias:
            op = replace(op, inputs=tuple(alias.get(i, i) for i in op.inputs))
        x = tensors[op.inputs[0]] if op.inputs else None
        src = (_token_view_of(g, prod, op.inputs[0]) if isinstance(op, Table) and len(x.shape) == 3
               and op.channel_axis in (None, 2) else None)
        if src is None:
            ops.append(op)
            continue
        changed = True
        y = tensors[op.outputs[0]]
        n, t, m = y.shape
        tpx = _fresh(tensors, f"{y.name}.px")
        tensors[tpx] = replace(y, name=tpx, shape=(n, m, 1, t))
        tmt = _fresh(tensors, f"{y.name}.mt")
        tensors[tmt] = replace(y, name=tmt, shape=(n, m, t))
        ops.append(replace(op, inputs=(src,) + op.inputs[1:], outputs=(tpx,),
                           channel_axis=None if op.channel_axis is None else 1))
        ops.append(Reshape((tpx,), (tmt,), origin=op.origin, op_type="Reshape", shape=(n, m, t)))
        ops.append(Transpose((tmt,), (y.name,), origin=op.origin, op_type="Transpose", perm=(0, 2, 1)))
        for c in g.ops:   # the next layers' pixel views of the result: the result itself
            if isinstance(c, Transpose) and c.inputs == (y.name,) and c.perm == (0, 2, 1):
                for r in g.ops:
                    if isinstance(r, Reshape) and r.inputs == c.outputs and g.tensors[r.outputs[0]].shape == (n, m, 1, t):
                        alias[r.outputs[0]] = tpx
    if not changed:
        return g
    return replace(g, tensors=tensors, ops=tuple(_drop_dead_views(ops, g.outputs)))


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
