"""One function per IR op: the reference interpreter's kernels.

Each kernel takes (op, graph, *input arrays) and returns the output array (int64 holding exact
integers, or float32 for Dequantize). Axis 0 is the batch: a stack of N samples runs at once.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import ir
from . import arith, nonlinear


def _boundary_param(values, op, shape):
    """A per-axis or blocked scale / zero point of a Quantize/Dequantize as an array that
    broadcasts against a stack [S, *shape] of samples (ONNX QuantizeLinear layout rules)."""
    a = np.asarray(values).reshape(op.param_shape)
    axis = op.axis % len(shape)
    if op.block_size:
        a = np.repeat(a, op.block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)
    else:
        bshape = [1] * len(shape)
        bshape[axis] = a.size
        a = a.reshape(bshape)
    return a[None]


def quantize(op: ir.Quantize, g: ir.Graph, x):
    if not op.param_shape:
        return arith.quantize(x, op.scale, op.zero_point, op.dtype)
    shape = g.tensors[op.inputs[0]].shape
    xs = np.asarray(x).reshape((-1,) + shape)
    scale = _boundary_param(np.asarray(op.scale, np.float32), op, shape)
    zp = _boundary_param(np.asarray(op.zero_point, np.int64), op, shape)
    return arith.quantize(xs, scale, zp, op.dtype).reshape(np.shape(x))


def dequantize(op: ir.Dequantize, g: ir.Graph, q):
    t = g.tensors[op.inputs[0]]
    if op.scale is None:
        return arith.dequantize(q, t.scale, t.zero_point)
    if not op.param_shape:
        return arith.dequantize(q, op.scale, op.zero_point)
    qs = np.asarray(q).reshape((-1,) + t.shape)
    scale = _boundary_param(np.asarray(op.scale, np.float32), op, t.shape)
    zp = _boundary_param(np.asarray(op.zero_point, np.int64), op, t.shape)
    return arith.dequantize(qs, scale, zp).reshape(np.shape(q))


def _windows(x, kernel, strides, dilations):
    """x [N, C, H, W] (already padded) -> [N, C, OH, OW, kh, kw] view."""
    kh, kw = kernel
    dh, dw = dilations
    win = sliding_window_view(x, ((kh - 1) * dh + 1, (kw - 1) * dw + 1), axis=(2, 3))
    return win[:, :, :: strides[0], :: strides[1], ::dh, ::dw]


def _pad(x, pads, value):
    t, l, b, r = pads
    return np.pad(x, ((0, 0), (0, 0), (t, b), (l, r)), constant_values=value)


def im2col(x, kernel, strides, pads, dilations, group: int = 1, pad_value: int = 0):
    """x [N, C, H, W] -> one [N*OH*OW, (C/group)*kh*kw] matrix per group, columns in (c, kh, kw) order,
    plus (OH, OW). This is the layout the array consumes (rows = output pixels)."""
    xp = _pad(np.asarray(x), pads, pad_value)
    win = _windows(xp, kernel, strides, dilations)  # N C OH OW kh kw
    n, c, oh, ow = win.shape[:4]
    cg = c // group
    mats = [win[:, gi * cg:(gi + 1) * cg].transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, cg * kernel[0] * kernel[1])
            for gi in range(group)]
    return mats, (oh, ow)


def conv(op: ir.Conv, g: ir.Graph, x, w, b=None):
    """docs/arithmetic.md, 'MAC ops': acc = sum (x - zx) * (w - zw) + bias; requant."""
    xt, wt = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    w = np.asarray(w, np.int64) - wt.zero_point
    m, cg, kh, kw = w.shape
    bias = None if b is None else np.asarray(b, np.int64).reshape(1, m, 1, 1)
    if op.group == 1:
        return _conv_dense(op, np.asarray(x, np.int64), xt.zero_point, w, bias)
    x = np.asarray(x, np.int64) - xt.zero_point
    if cg == 1 and m == op.group == x.shape[1]:
        acc = _conv_depthwise(op, x, w)
    else:
        mats, (oh, ow) = im2col(x, (kh, kw), op.strides, op.pads, op.dilations, op.group)
        n = x.shape[0]
        mg = m // op.group
        acc = np.empty((n, m, oh, ow), dtype=np.int64)
        for gi, cols in enumerate(mats):
            wg = w[gi * mg:(gi + 1) * mg].reshape(mg, cg * kh * kw).T    # K x mg
            res = arith.matmul_exact(cols, wg)                          # (N OH OW) x mg
            acc[:, gi * mg:(gi + 1) * mg] = res.reshape(n, oh, ow, mg).transpose(0, 3, 1, 2)
    if bias is not None:
        acc += bias
    return arith.requantize(acc, op.requant)


_CONV_CHUNK = 1 << 20
"""Window values per block of samples in the dense convolution (4 MiB of float32): a block's
windows are filled, multiplied and requantized while they are in cache, in one reused buffer."""


def _exact_dtype(xmax: float, w):
    """The narrowest exact type of a convolution's accumulator (arith.exact_float_dtype, bounded
    like arith.matmul_exact: max|x| times the largest sum of |w| over one output channel)."""
    m = w.shape[0]
    return arith.exact_float_dtype(xmax * float(np.abs(w).reshape(m, -1).sum(axis=1).max(initial=0))) or np.int64


def _conv_dense(op: ir.Conv, x, zx: int, w, bias):
    """A dense (group 1) convolution, requantized: int64 [N, M, OH, OW], C-contiguous.

    The accumulator is computed in the narrowest exact type (_exact_dtype), block by block of
    samples: the weights [M, kh*kw*C] times the windows [kh*kw*C, S*P] in the same (kh, kw, C)
    order (one slice copy per kernel tap, x - zx converted on the way into the padded block), one
    matrix product per block, give [M, S, P], turned to NCHW order; then the bias and the
    requantization on the block. With stride 1 a tap's windows are one contiguous run of the
    flattened padded image (P = OH x padded width, the columns past OW dropped after the
    product); otherwise P = OH x OW, one strided copy per tap."""
    m, c, kh, kw = w.shape
    t, l, b, r = op.pads
    (sh, sw), (dh, dw) = op.strides, op.dilations
    n, _, h, wd = x.shape
    hp, wp = h + t + b, wd + l + r
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    xmax = max(abs(int(x.min()) - zx), abs(int(x.max()) - zx)) if x.size else 0
    dt = _exact_dtype(float(xmax), w)
    flat = sh == sw == 1 and wp <= 2 * ow  # a tap's windows: one run of the flattened image
    if flat:
        b += 1  # a zero row below: the last tap's run reaches (kw - 1) * dw values past the image
        p = oh * wp
    else:
        p = oh * ow
    k = kh * kw * c
    wm = w.transpose(0, 2, 3, 1).reshape(m, k).astype(dt)  # columns in (kh, kw, C) order
    out = np.empty((n, m, oh, ow), np.int64)
    step = max(1, _CONV_CHUNK // max(k * p, 1))
    cols = np.empty((k, min(step, n), p), dt)
    xp = np.zeros((min(step, n), c, h + t + b, wp), dt)  # the padding stays zero
    with _one_blas_thread():
        for s0 in range(0, n, step):
            s1 = min(s0 + step, n)
            xs = xp[:s1 - s0]
            np.subtract(x[s0:s1], zx, out=xs[:, :, t:t + h, l:l + wd], casting="unsafe")  # exact: |x - zx| <= xmax
            cs = cols[:, :s1 - s0]
            if flat:
                xf = xs.reshape(s1 - s0, c, -1).transpose(1, 0, 2)  # C S (Hp Wp)
                for i in range(kh):
                    for j in range(kw):
                        o = i * dh * wp + j * dw
                        cs[(i * kw + j) * c:(i * kw + j + 1) * c] = xf[:, :, o:o + p]
            else:
                cv = cs.reshape(kh, kw, c, s1 - s0, oh, ow)
                xt = xs.transpose(1, 0, 2, 3)  # C S Hp Wp
                for i in range(kh):
                    for j in range(kw):
                        cv[i, j] = xt[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            res = (wm @ cs.reshape(k, -1)).reshape(m, s1 - s0, oh, -1)[..., :ow]  # one product: M x (S P)
            acc = res.transpose(1, 0, 2, 3).astype(np.int64, order="C")  # S M OH OW, exact
            if bias is not None:
                acc += bias
            out[s0:s1] = arith.requantize(acc, op.requant)
    return out


def _one_blas_thread():
    """One BLAS thread for the blocks' products (each small: more threads would mostly spin
    between them, costing CPU time and, on a loaded machine, wall time); a no-op without
    threadpoolctl."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - a dependency
        from contextlib import nullcontext

        return nullcontext()
    return threadpool_limits(1, user_api="blas")


def _conv_depthwise(op: ir.Conv, x, w):
    """The accumulator of a depthwise convolution in the narrowest exact type (_exact_dtype): a
    multiply-add per kernel tap over the whole [N, C, OH, OW] stack."""
    m, cg, kh, kw = w.shape
    dt = _exact_dtype(float(np.abs(x).max(initial=0)), w)
    xp = _pad(x.astype(dt), op.pads, 0)
    win = _windows(xp, (kh, kw), op.strides, op.dilations)  # N C OH OW kh kw (a view)
    n, c, oh, ow = win.shape[:4]
    wd = w.reshape(1, m, kh, kw).astype(dt)
    acc = np.zeros((n, c, oh, ow), dt)
    for i in range(kh):
        for j in range(kw):
            acc += win[:, :, :, :, i, j] * wd[:, :, i:i + 1, j:j + 1]
    return acc.astype(np.int64)


def dense(op: ir.Dense, g: ir.Graph, x, w, b=None):
    """docs/arithmetic.md, 'MAC ops': acc = (x - zx) @ (w - zw) + bias; requant.

    x may carry leading axes ([..., N, K]); w [B, K, M] is a batched product (one matrix per B)."""
    xt, wt = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    x = np.asarray(x, np.int64) - xt.zero_point
    w = np.asarray(w, np.int64) - wt.zero_point
    if x.ndim == 2 and w.ndim == 2:
        acc = arith.matmul_exact(x, w)
    elif w.ndim == 2:  # x [..., N, K] @ w [K, M]
        acc = arith.matmul_exact(x.reshape(-1, x.shape[-1]), w).reshape(x.shape[:-1] + (w.shape[1],))
    else:  # batched: x [..., B, N, K] @ w [B, K, M], one weight matrix per batch index
        nb, k, m = w.shape
        xb = x.reshape((-1, nb) + x.shape[-2:])
        acc = np.stack([arith.matmul_exact(xb[:, i].reshape(-1, k), w[i]).reshape(xb.shape[0], -1, m)
                        for i in range(nb)], axis=1).reshape(x.shape[:-1] + (m,))
    if b is not None:
        acc += np.asarray(b, np.int64)
    return arith.requantize(acc, op.requant, channel_axis=acc.ndim - 1)


def add(op: ir.Add, g: ir.Graph, a, b):
    """docs/arithmetic.md, 'Add': align to the finer scale, add (or subtract) exactly, requant.
    Inputs broadcast as in numpy (the batch axis included). Two stacks of the same shape run in
    blocks of samples (the int64 temporaries stay in cache)."""
    at, bt = (g.tensors[i] for i in op.inputs)
    a, b = np.asarray(a), np.asarray(b)

    def run(a, b):
        a, b = _aligned(a, at.zero_point, op.mult_a, op.shift_a), _aligned(b, bt.zero_point, op.mult_b, op.shift_b)
        if isinstance(a, np.ndarray) and a.shape == np.broadcast_shapes(a.shape, np.shape(b)):  # in place
            return arith.requantize(np.subtract(a, b, out=a) if op.subtract else np.add(a, b, out=a), op.requant)
        return arith.requantize(a - b if op.subtract else a + b, op.requant)

    if a.ndim < 2 or a.shape != b.shape or a.size <= _BLOCK:
        return run(a, b)
    out = np.empty(a.shape, np.int64)
    step = max(1, _BLOCK // (a.size // a.shape[0]))
    for s0 in range(0, a.shape[0], step):
        out[s0:s0 + step] = run(a[s0:s0 + step], b[s0:s0 + step])
    return out


_BLOCK = 1 << 16
"""Values per block of samples in elementwise kernels run block by block (512 KiB of int64)."""


def _aligned(x, zero_point: int, mult: int, shift: int):
    """(x - zero_point) * mult << shift as a new int64 array (computed in place)."""
    y = np.asarray(x, np.int64) - zero_point
    if mult != 1:
        y *= mult
    if shift:
        y <<= shift
    return y


def mul(op: ir.Mul, g: ir.Graph, a, b):
    """docs/arithmetic.md, 'Mul': the exact product of the two integers (zero points removed),
    broadcast as in numpy, then requant."""
    at, bt = (g.tensors[i] for i in op.inputs)
    return arith.requantize((np.asarray(a, np.int64) - at.zero_point) * (np.asarray(b, np.int64) - bt.zero_point),
                            op.requant)


def table(op: ir.Table, g: ir.Graph, x, tab):
    """docs/arithmetic.md, 'Tables': y = table[x - dtype.min] (per channel with channel_axis)."""
    t = g.tensors[op.inputs[0]]
    idx = np.asarray(x, np.int64) - t.dtype.min
    tab = np.asarray(tab, np.int64)
    if op.channel_axis is None:
        return tab[idx]
    shape = [1] * idx.ndim
    shape[op.channel_axis] = tab.shape[0]
    ch = np.arange(tab.shape[0]).reshape(shape)
    return tab[ch, idx]


def float_island(op: ir.FloatIsland, g: ir.Graph, x):
    """docs/arithmetic.md, 'Float islands': dequantize, the float32 function, quantize."""
    t, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    xf = arith.dequantize(x, t.scale, t.zero_point)
    f = FLOAT_FUNCTIONS[op.function](xf, **dict(op.params))
    if y.dtype.is_float:
        return f.astype(np.float32)
    return arith.quantize(f, y.scale, y.zero_point, y.dtype)


def _softmax(x, axis=-1):
    x = np.asarray(x, np.float32)
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def _lrn(x, size=5, alpha=1e-4, beta=0.75, bias=1.0):
    """ONNX LRN in float32, summed as onnxruntime does: the scale of channel 0 is bias plus
    alpha/size times each square of its window in turn; channel c's is channel c-1's plus the
    square entering the window minus the one leaving it; y = x * scale^-beta."""
    x = np.asarray(x, np.float32)
    c = x.shape[1]
    pre = (size - 1) // 2
    sq = np.zeros((x.shape[0], c + size - 1) + x.shape[2:], np.float32)
    sq[:, pre:pre + c] = np.square(x)
    a = np.float32(alpha) / np.float32(size)
    scale = np.empty_like(x)
    s0 = np.full((x.shape[0],) + x.shape[2:], np.float32(bias), np.float32)
    for k in range(size):
        s0 = s0 + a * sq[:, k]
    scale[:, 0] = s0
    for i in range(1, c):
        s0 = s0 + a * sq[:, i + size - 1]
        s0 = s0 + (-a) * sq[:, i - 1]
        scale[:, i] = s0
    return (np.power(scale, np.float32(-beta)) * x).astype(np.float32)


FLOAT_FUNCTIONS = {"Softmax": _softmax, "LRN": _lrn}


def transpose(op: ir.Transpose, g: ir.Graph, x):
    return np.transpose(np.asarray(x), op.perm)


def pad(op: ir.Pad, g: ir.Graph, x):
    x = np.asarray(x, np.int64)
    n = x.ndim
    width = [(op.pads[i], op.pads[i + n]) for i in range(n)]
    if op.mode == "constant":
        return np.pad(x, width, constant_values=op.value)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[op.mode])


def slice_(op: ir.Slice, g: ir.Graph, x):
    x = np.asarray(x)
    index = [slice(None)] * x.ndim
    for ax, (a, b, st) in zip(op.axes, op.slices):
        index[ax] = slice(a, None if b is None else b, st)
    return x[tuple(index)]


def take(op: ir.Take, g: ir.Graph, x, *rest):
    if op.table_input:  # x is the constant table, rest[0] the integer indices (stacked)
        tab = np.asarray(x, np.int64)
        idx = np.asarray(rest[0], np.int64)
        n = tab.shape[op.axis]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            from ..errors import InputError

            raise InputError(f"index {int(idx.max() if idx.max() >= n else idx.min())} is outside [-{n}, {n - 1}]",
                             where=op.where)
        return np.take(tab, np.where(idx < 0, idx + n, idx), axis=op.axis)
    idx = np.asarray(op.indices, np.int64).reshape(op.index_shape)
    return np.take(np.asarray(x), idx, axis=op.axis)


def resize(op: ir.Resize, g: ir.Graph, x):
    y = np.asarray(x)
    for k, idx in enumerate(op.index):
        if idx:
            y = np.take(y, np.asarray(idx, np.int64), axis=2 + k)
    return y


def reduce_mean(op: ir.ReduceMean, g: ir.Graph, x):
    """Exact sum over the axes, then requant (whose multiplier and shift hold 1 / count)."""
    t = g.tensors[op.inputs[0]]
    s = (np.asarray(x, np.int64) - t.zero_point).sum(axis=op.axes, keepdims=op.keepdims)
    rq = op.requant
    return np.clip(arith.divide_round(s, op.num, op.den, rq.rounding) + rq.zero_point, rq.lo, rq.hi)


def matmul(op: ir.MatMul, g: ir.Graph, a, b):
    """docs/arithmetic.md, 'MatMul of two activations': exact int64 products, then requant."""
    at, bt = (g.tensors[i] for i in op.inputs)
    acc = np.matmul(np.asarray(a, np.int64) - at.zero_point, np.asarray(b, np.int64) - bt.zero_point)
    return arith.requantize(acc, op.requant)


def pixel_matmul(op: ir.PixelMatMul, g: ir.Graph, a, b):
    """The MatMul of two activations in the pixel view (a [N, K, H, T], b [N, M, H, K] ->
    [N, M, H, T]): the same exact products and requant as `matmul` on [N, H, T, K] @ [N, H, K, M]."""
    at, bt = (g.tensors[i] for i in op.inputs)
    a4 = np.asarray(a, np.int64).transpose(0, 2, 3, 1) - at.zero_point     # [N, H, T, K]
    b4 = np.asarray(b, np.int64).transpose(0, 2, 3, 1) - bt.zero_point     # [N, H, K, M]
    return arith.requantize(np.matmul(a4, b4), op.requant).transpose(0, 3, 1, 2)


def softmax(op: ir.Softmax, g: ir.Graph, x):
    """docs/transformer.md, 'Softmax': tony.ref.nonlinear.softmax, saturated to the output dtype."""
    y = g.tensors[op.outputs[0]]
    spec = nonlinear.SoftmaxSpec(x_exp=op.x_exp, frac_bits=op.frac_bits, table_bits=op.table_bits,
                                 out_bits=op.out_bits, log2e=op.log2e)
    rows = np.moveaxis(np.asarray(x), op.axis, -1)
    return np.moveaxis(np.clip(nonlinear.softmax(rows, spec), y.dtype.min, y.dtype.max), -1, op.axis)


def layernorm(op: ir.LayerNorm, g: ir.Graph, x, gamma, beta):
    """docs/transformer.md, 'LayerNorm': tony.ref.nonlinear.layernorm with the op's constants."""
    n = g.tensors[op.inputs[0]].shape[op.axis]
    spec = nonlinear.LayerNormSpec(n=n, eps_int=op.eps_int, sqrt_bits=op.sqrt_bits,
                                   gamma=tuple(int(v) for v in np.ravel(gamma)),
                                   beta=tuple(int(v) for v in np.ravel(beta)), shift=op.shift, lo=op.lo, hi=op.hi,
                                   norm_bits=op.norm_bits)
    return np.moveaxis(nonlinear.layernorm(np.moveaxis(np.asarray(x), op.axis, -1), spec), -1, op.axis)


def concat(op: ir.Concat, g: ir.Graph, *xs):
    parts = []
    for name, x, rq in zip(op.inputs, xs, op.requants):
        x = np.asarray(x, np.int64) - g.tensors[name].zero_point
        parts.append(arith.requantize(x, rq))
    return np.concatenate(parts, axis=op.axis)


def maxpool(op: ir.MaxPool, g: ir.Graph, x):
    """docs/arithmetic.md, 'Pooling': max over the window, padding = dtype min."""
    t = g.tensors[op.inputs[0]]
    xp = _pad(np.asarray(x, np.int64), op.pads, t.dtype.min)
    y = _windows(xp, op.kernel, op.strides, op.dilations).max(axis=(4, 5))
    if op.requant is not None:
        y = arith.requantize(y - t.zero_point, op.requant)
    return y


def avgpool(op: ir.AvgPool, g: ir.Graph, x):
    """docs/arithmetic.md, 'Pooling': exact window sum (padding counts as zero), then
    sum * mult, rounding shift, clamp; with count_include_pad=0 (`partial`, host) each window's
    sum is divided exactly by its own count (docs/arithmetic.md, 'Exact division')."""
    t = g.tensors[op.inputs[0]]
    xp = _pad(np.asarray(x, np.int64) - t.zero_point, op.pads, 0)
    s = _windows(xp, op.kernel, op.strides, (1, 1)).sum(axis=(4, 5))
    if not op.partial:
        return arith.requantize(s, op.requant)
    ones = _pad(np.ones((1, 1) + np.shape(x)[2:], np.int64), op.pads, 0)
    count = np.broadcast_to(_windows(ones, op.kernel, op.strides, (1, 1)).sum(axis=(4, 5)), s.shape)
    y = np.zeros(s.shape, np.int64)
    for c, num, den in op.partial:
        sel = count == c
        y[sel] = arith.divide_round(s[sel], num, den, op.requant.rounding)
    rq = op.requant
    return np.clip(y + rq.zero_point, rq.lo, rq.hi)


def clamp(op: ir.Clamp, g: ir.Graph, x):
    t = g.tensors[op.inputs[0]]
    return arith.requantize(np.asarray(x, np.int64) - t.zero_point, op.requant)


def reshape(op: ir.Reshape, g: ir.Graph, x):
    return np.asarray(x).reshape((x.shape[0],) + tuple(op.shape[1:]))


KERNELS = {
    ir.Quantize: quantize,
    ir.Dequantize: dequantize,
    ir.Conv: conv,
    ir.Dense: dense,
    ir.Add: add,
    ir.Concat: concat,
    ir.MaxPool: maxpool,
    ir.AvgPool: avgpool,
    ir.Clamp: clamp,
    ir.Reshape: reshape,
    ir.Mul: mul,
    ir.Table: table,
    ir.FloatIsland: float_island,
    ir.Transpose: transpose,
    ir.Pad: pad,
    ir.Slice: slice_,
    ir.Take: take,
    ir.Resize: resize,
    ir.ReduceMean: reduce_mean,
    ir.MatMul: matmul,
    ir.PixelMatMul: pixel_matmul,
    ir.Softmax: softmax,
    ir.LayerNorm: layernorm,
}
