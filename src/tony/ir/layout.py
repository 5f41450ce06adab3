"""Token activations stay in the accelerator's pixel layout between the ops that read them.

`tokens_as_pixels` and `matmuls_as_pixels` (tony.ir.tokens) rewrite one op at a time: each
token-wise projection reads its input through the views "into pixels" (Transpose(0, 2, 1),
Reshape [N, K, 1, T]) and hands its output back through the views "out of pixels" (Reshape
[N, M, T], Transpose(0, 2, 1)). The views run on the host (the accelerator stores no 3-D
tensor), so between two projections, and around the elementwise ops between them (the GELU
table, the residual Adds), the integers go back and forth through the host.
`keep_pixels` removes that round trip in one pass over the graph, moving integers only:

1. **Equal views.** A tensor made by a chain of Reshapes and Transposes from a tensor that is not
   (its root) holds a fixed permutation of the root's elements, computed here as an index array
   (per sample: both views keep axis 0, the batch). A chain whose permutation is the identity on
   the root's shape gives back the root, and two tensors with the same root, shape and
   permutation are equal: every op reads the root, or the first of the equal tensors. So a Conv
   whose input is the previous Conv's output, out of pixels and back in, reads that output. A
   PixelMatMul's second operand is the exception: it stays a tensor the host writes (it reaches
   the weight buffer from external memory), not a view the device could make.
2. **Elementwise ops in the pixel layout.** An elementwise op of 3-D tensors [N, T, C] (`Table`,
   `Clamp`, and `Add` and `Mul` of two activations of one shape; an op with a constant operand
   stays as it is: the back ends load activations, not constants, into the vector unit) one of
   whose inputs already exists in the pixel layout, to_pixels(x) = x.transpose(0, 2, 1)
   .reshape(N, C, 1, T) (a Conv's output read back, or a conversion made before), runs on the
   pixel layouts of its inputs instead: op(to_pixels(a), to_pixels(b)) = to_pixels(op(a, b)) for
   any per-element function. An input without one gets its conversion on the host, once; a
   per-channel table's channel axis goes from the last axis to axis 1. The op's 3-D output is
   then the view out of pixels of its pixel output, which step 1 cancels against the next op's
   view into pixels; it stays (on the host) only while an op still reads it in 3-D.
3. **Heads as rows.** A 1x1 Conv whose input is a PixelMatMul's output z [N, d, H, T] with the
   heads merged into channels (channel h d + j holds z's channel j of row h: the head merge
   before an attention's output projection) reads z directly as an H x 1 convolution whose
   weights are the same numbers rearranged, w'[m, j, h] = w[m, h d + j]: the same products, the
   same sum. So P.V and the output projection share a device segment.

4. **Softmax rows as pixels.** A Softmax over the last axis whose input is made by views from a
   [N, M, A, B] tensor z such that each of its rows is one pixel's M channels, pixel after pixel
   (attention scores: Q.K^T's PixelMatMul output [N, keys, H, T] seen as [N, H, T, keys]), runs
   over the channels of z itself (axis 1): the same rows, so the same integers, in z's layout. Its
   output is then the view of that pixel output, which step 1 cancels against P.V's first operand
   (P seen as [N, keys, H, T] again), so Q.K^T, the Softmax and P.V can share a device segment.
   A LayerNorm over the last axis of the residual stream (a [N, T, d] view of a [N, d, 1, T]
   pixel tensor: a token's row is one pixel's d channels) moves the same way, gamma and beta
   unchanged, so the ops before and after it can share a device segment with it.

Views left without a reader are dropped. Nothing else changes: the head splits and the mean pool
read the same 3-D tensors as before, each made once on the host from the pixel layout.
Whether the moved ops run on the device is the back end's decision, as before (docs/partition.md);
an Add of two [N, C, 1, T] tensors is the vector unit's EWISE add, a Softmax over a pixel's
channels the Softmax unit's SOFTMAX (docs/isa.md, 'Softmax'), a LayerNorm over them the LayerNorm
unit's NORM (docs/isa.md, 'NORM').
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import replace

import numpy as np

from .ops import Add, Clamp, Conv, Graph, LayerNorm, Mul, Op, PixelMatMul, Reshape, Softmax, Table, Transpose
from .tokens import _fresh

_PIXEL_AXIS = (0, 3, 1)     # axis of a [N, T, C] tensor -> its axis in the pixel layout [N, C, 1, T]


def _to_pixels(a: np.ndarray) -> np.ndarray:
    """[.., T, C] -> [.., C, 1, T]: the pixel layout of the last two axes (per sample or with the batch)."""
    *lead, t, c = a.shape
    return np.swapaxes(a, -1, -2).reshape(*lead, c, 1, t)


class _Views:
    """Every tensor made by views as (root, index array): the per-sample element of its root that
    each of its elements is; equal (root, shape, index) means equal integers. Index arrays are
    int32 (a tensor of 2^31 elements per sample is far beyond any buffer) and looked up by a
    digest, then compared in full."""

    def __init__(self, tensors: dict):
        self.tensors = tensors
        self.index: dict[str, tuple[str, np.ndarray]] = {}
        self.first: dict[tuple, str] = {}

    def of(self, name: str) -> tuple[str, np.ndarray]:
        """(root, index) of a tensor; a tensor no view made is its own root."""
        if name in self.index:
            return self.index[name]
        shape = self.tensors[name].shape[1:]
        return name, np.arange(int(np.prod(shape)), dtype=np.int32).reshape(shape)

    def equal(self, root: str, idx: np.ndarray) -> str | None:
        """A tensor seen so far that holds `idx` of `root`: the root itself or the first such view."""
        if idx.shape == self.tensors[root].shape[1:] and np.array_equal(idx.reshape(-1), np.arange(idx.size)):
            return root
        seen = self.first.get(_key(root, idx))
        return seen if seen is not None and np.array_equal(self.index[seen][1], idx) else None

    def add(self, op: Op) -> str | None:
        """Record a view op's output; return an earlier tensor equal to it (None: it is new)."""
        if isinstance(op, Transpose) and op.perm[:1] != (0,):
            return None                     # moves the batch axis: a root of its own
        root, idx = self.of(op.inputs[0])
        if isinstance(op, Transpose):
            idx = idx.transpose([p - 1 for p in op.perm[1:]])
        else:
            idx = idx.reshape(op.shape[1:])
        out = op.outputs[0]
        self.index[out] = (root, idx)
        same = self.equal(root, idx)
        if same is None:
            self.first.setdefault(_key(root, idx), out)
        return same

    def pixels(self, name: str) -> str | None:
        """A tensor seen so far that is the pixel layout of the 3-D tensor `name`."""
        root, idx = self.of(name)
        return self.equal(root, _to_pixels(idx))


def _key(root: str, idx: np.ndarray) -> tuple:
    return root, idx.shape, hashlib.blake2b(np.ascontiguousarray(idx).tobytes(), digest_size=16).digest()


def _operands(op: Op) -> tuple[str, ...]:
    """The inputs of an elementwise op that are data (a Table's table is not)."""
    return op.inputs[:1] if isinstance(op, Table) else op.inputs


def _elementwise(op: Op, tensors: dict, constants: dict) -> bool:
    """An op that computes each output element from the elements at the same index of its inputs,
    on 3-D integer activations of one shape, the same function at every index (per-tensor requant)
    or one per channel (a Table's `channel_axis`)."""
    if not isinstance(op, (Table, Clamp, Add, Mul)):
        return False
    rq = getattr(op, "requant", None)
    if rq is not None and rq.per_channel:
        return False
    shapes = {tensors[n].shape for n in _operands(op) + op.outputs}
    return len(shapes) == 1 and len(next(iter(shapes))) == 3 and not any(n in constants for n in _operands(op))


def keep_pixels(g: Graph) -> Graph:
    """`g` with equal views read once and elementwise ops of tokens moved into the pixel layout
    (module docstring); the same integers in every tensor that stays. A graph whose views would
    need index arrays beyond the memory budget stays as it is (running it is refused by the
    budget, in one line, before anything that size is allocated)."""
    from ..budget import limit_bytes

    viewed = {n for op in g.ops if isinstance(op, (Reshape, Transpose)) for n in op.inputs + op.outputs}
    if 4 * sum(math.prod(int(d) for d in g.tensors[n].shape[1:]) for n in viewed) > limit_bytes():
        return g
    tensors, constants = dict(g.tensors), dict(g.constants)
    views = _Views(tensors)
    same: dict[str, str] = {}          # tensor -> an equal one made earlier, which its readers read
    ops: list[Op] = []

    def emit(op: Op) -> None:
        ops.append(op)
        if isinstance(op, (Reshape, Transpose)):
            eq = views.add(op)
            if eq is not None:
                same[op.outputs[0]] = eq

    def view(src: str, shape: tuple, origin: str, perm: tuple | None = None, name: str = "", tag: str = "") -> str:
        name = name or _fresh(tensors, f"{src}.{tag}")
        tensors[name] = replace(tensors[src], name=name, shape=tuple(shape))
        if perm is None:
            emit(Reshape((src,), (name,), origin=origin, op_type="Reshape", shape=tuple(shape)))
        else:
            emit(Transpose((src,), (name,), origin=origin, op_type="Transpose", perm=perm))
        return name

    def into_pixels(x: str, origin: str) -> str:
        """The pixel layout of 3-D `x`: one seen before, or new views (on the host)."""
        found = views.pixels(x)
        if found is not None:
            return found
        n, t, c = tensors[x].shape
        kt = view(x, (n, c, t), origin, perm=(0, 2, 1), tag="kt")
        return view(kt, (n, c, 1, t), origin, tag="px")

    def reads(op: Op, k: int, name: str) -> str:
        """What input k of `op` reads: the equal tensor made earlier, except that a PixelMatMul's
        second operand stays a tensor that the host writes (it is loaded as weights from external
        memory, docs/isa.md, 'Activations as weights'), not a view that the device could make."""
        eq = same.get(name, name)
        if isinstance(op, PixelMatMul) and k == 1 and eq != name:
            made = next((o for o in ops if eq in o.outputs), None)
            if made is not None and not made.host:
                return name
        return eq

    for op in g.ops:
        op = replace(op, inputs=tuple(reads(op, k, i) for k, i in enumerate(op.inputs)))
        op = _heads_as_rows(op, views, tensors, constants)
        z = _pixel_rows(op, views, tensors)
        if z is not None:
            y = op.outputs[0]
            ypx = _fresh(tensors, f"{y}.px")
            tensors[ypx] = replace(tensors[y], name=ypx, shape=tensors[z].shape)
            emit(replace(op, inputs=(z,) + op.inputs[1:], outputs=(ypx,), axis=1))
            n, m, a, b = tensors[z].shape
            if tensors[y].shape == (n, a, b, m):
                view(ypx, (n, a, b, m), op.origin, perm=(0, 2, 3, 1), name=y)
            else:
                view(view(ypx, (n, a, b, m), op.origin, perm=(0, 2, 3, 1), tag="rows"), tensors[y].shape,
                     op.origin, name=y)
            continue
        if not (_elementwise(op, tensors, constants) and any(views.pixels(i) for i in _operands(op))):
            emit(op)
            continue
        y = op.outputs[0]
        n, t, c = tensors[y].shape
        data = tuple(into_pixels(i, op.origin) for i in _operands(op))
        ypx = _fresh(tensors, f"{y}.px")
        tensors[ypx] = replace(tensors[y], name=ypx, shape=(n, c, 1, t))
        moved = replace(op, inputs=data + op.inputs[len(data):], outputs=(ypx,))
        if isinstance(op, Table) and op.channel_axis is not None:
            moved = replace(moved, channel_axis=_PIXEL_AXIS[op.channel_axis % 3])
        emit(moved)
        # the 3-D output, out of pixels: read by the ops that still need it, cancelled for the others
        view(view(ypx, (n, c, t), op.origin, tag="mt"), (n, t, c), op.origin, perm=(0, 2, 1), name=y)
    if tuple(ops) == g.ops:
        return g
    return _drop_unread_views(replace(g, tensors=tensors, constants=constants, ops=tuple(ops)))


def _pixel_rows(op: Op, views: _Views, tensors: dict) -> str | None:
    """The [N, M, A, B] tensor z whose pixels a Softmax's or a LayerNorm's rows are (its input, made by
    views from z, holds in row r the M channels of z's pixel r, r = a B + b); None for any other op
    or input."""
    rank = len(tensors[op.inputs[0]].shape) if isinstance(op, (Softmax, LayerNorm)) else 0
    if not rank or op.axis % rank != rank - 1:
        return None
    root, idx = views.of(op.inputs[0])
    if root == op.inputs[0] or len(tensors[root].shape) != 4:
        return None
    m, a, b = tensors[root].shape[1:]
    if idx.shape[-1] != m:
        return None
    rows = np.arange(m * a * b, dtype=np.int32).reshape(m, a * b).T
    return root if np.array_equal(idx.reshape(-1, m), rows) else None


def _heads_as_rows(op: Op, views: _Views, tensors: dict, constants: dict) -> Op:
    """A 1x1 Conv whose input [N, H d, 1, T] is the head merge of a tensor z [N, d, H, T] (channel
    h d + j = z's channel j of row h: a PixelMatMul's output, heads as rows) as a Conv of z itself
    with an H x 1 kernel: w'[m, j, h] = w[m, h d + j], the same products summed (op unchanged
    when its input is no such view)."""
    if not (isinstance(op, Conv) and op.inputs[1] in constants and op.group == 1 and op.strides == (1, 1)
            and op.dilations == (1, 1) and not any(op.pads) and tensors[op.inputs[1]].shape[2:] == (1, 1)):
        return op
    root, idx = views.of(op.inputs[0])
    if len(tensors[root].shape) != 4 or root == op.inputs[0]:
        return op
    d, h, t = tensors[root].shape[1:]
    merged = np.arange(d * h * t).reshape(d, h, t).transpose(1, 0, 2).reshape(h * d, 1, t)
    if h == 1 or idx.shape != merged.shape or not np.array_equal(idx, merged):
        return op
    w = np.asarray(constants[op.inputs[1]])
    m = w.shape[0]
    name = _fresh(tensors, f"{op.inputs[1]}.{h}x1")
    constants[name] = w.reshape(m, h, d).transpose(0, 2, 1).reshape(m, d, h, 1).copy()
    tensors[name] = replace(tensors[op.inputs[1]], name=name, shape=(m, d, h, 1))
    return replace(op, inputs=(root, name) + op.inputs[2:])


def _drop_unread_views(g: Graph) -> Graph:
    """Remove the Reshapes and Transposes whose outputs nothing reads (and the graph does not
    return), and the tensors and constants that only the removed ops read or wrote."""
    read = set(g.outputs)
    kept = []
    for op in reversed(g.ops):
        if isinstance(op, (Reshape, Transpose)) and not read.intersection(op.outputs):
            continue
        kept.append(op)
        read.update(op.inputs)
    ops = tuple(reversed(kept))
    used = set(g.inputs) | set(g.outputs) | {n for op in ops for n in op.inputs + op.outputs}
    gone = {n for op in g.ops for n in op.inputs + op.outputs} - used
    return replace(g, ops=ops, tensors={k: v for k, v in g.tensors.items() if k not in gone},
                   constants={k: v for k, v in g.constants.items() if k not in gone})
