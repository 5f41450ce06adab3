"""Integer IR operators: one frozen dataclass per op, plain data.

Every op names its input and output tensors (`inputs`, `outputs`) and the ONNX node it came from
(`origin`, for messages). Constant inputs (weights, biases) live in `Graph.constants`.
Host ops (Quantize, Dequantize) run on the host, not on the accelerator.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from .types import DType, Requant


@dataclass(frozen=True)
class Op:
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    origin: str = ""
    op_type: str = ""    # the ONNX operator it came from (for messages and reports)

    host = False  # True for ops that run on the host (float <-> int boundary)
    kind = "op"

    @property
    def where(self) -> str:
        """'node "name" (OpType)' for messages: the ONNX node it came from (or the op's first output)
        and the ONNX operator (or the IR op)."""
        return f'node "{self.origin or self.outputs[0]}" ({self.op_type or type(self).__name__})'

    def attrs(self) -> dict:
        """Attributes shown by the printer (everything but inputs/outputs/origin)."""
        skip = {"inputs", "outputs", "origin", "op_type"}
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in skip}


def _boundary_attrs(op) -> dict:
    """Printer attributes of Quantize/Dequantize: the layout fields only when per-axis/blocked."""
    d = Op.attrs(op)
    if not op.param_shape:
        for k in ("axis", "block_size", "param_shape"):
            d.pop(k)
    return d


@dataclass(frozen=True)
class Quantize(Op):
    """float -> int: y = saturate(round_half_even(x / scale) + zero_point) (ONNX QuantizeLinear).

    Per-axis or blocked parameters (graph boundary only): `scale`/`zero_point` are flat tuples of
    shape `param_shape`, broadcast along `axis` (per-axis) or repeated `block_size` times along
    `axis` (blocked), as in ONNX.
    """

    scale: float | tuple = 1.0
    zero_point: int | tuple = 0
    dtype: DType | None = None
    axis: int = 1
    block_size: int = 0
    param_shape: tuple[int, ...] = ()
    host = True
    kind = "quantize"
    attrs = _boundary_attrs


@dataclass(frozen=True)
class Dequantize(Op):
    """int -> float32: y = (x - zero_point) * scale (ONNX DequantizeLinear).

    By default the input tensor's scale and zero point; a per-axis or blocked DequantizeLinear at
    the graph boundary carries its own (`scale` not None), laid out as for Quantize.
    """

    scale: float | tuple | None = None
    zero_point: int | tuple = 0
    axis: int = 1
    block_size: int = 0
    param_shape: tuple[int, ...] = ()
    host = True
    kind = "dequantize"
    attrs = _boundary_attrs


@dataclass(frozen=True)
class Conv(Op):
    """2-D convolution, NCHW. inputs = (x, w, bias?) with w [M, C/groups, kh, kw] constant.

    acc = sum (x - x_zp) * w + bias in ACC_BITS, then requant (docs/arithmetic.md, 'MAC ops').
    pads = (top, left, bottom, right); padding reads the value x_zp (real zero).
    """

    strides: tuple[int, int] = (1, 1)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    group: int = 1
    requant: Requant | None = None
    kind = "conv"


@dataclass(frozen=True)
class Dense(Op):
    """Matrix product: inputs = (x [N, K], w [K, M] constant, bias [M]?); acc = x @ w + bias, requant."""

    requant: Requant | None = None
    kind = "dense"


@dataclass(frozen=True)
class PixelMatMul(Op):
    """Per-head product of two activations in the accelerator's pixel view (tony.ir.tokens,
    `matmuls_as_pixels`): inputs = (a [N, K, H, T], b [N, M, H, K]), output y [N, M, H, T] with

        y[n, m, h, t] = requant(sum_k (a[n, k, h, t] - a_zp) * (b[n, m, h, k] - b_zp))

    the MatMul a' [N, H, T, K] @ b' [N, H, K, M] of its ONNX node with the rows t of each head h
    as the pixels of an image row and the reduction K as channels. On the accelerator it is a 1x1
    CONV per head whose weight block is that head's slice of b, loaded from external memory
    (docs/isa.md, 'Activations as weights')."""

    requant: Requant | None = None
    kind = "pixel_matmul"


@dataclass(frozen=True)
class Add(Op):
    """Element-wise a + b: align both to the finer scale by exact left shifts (mult for
    non-pow2 scales), add exactly, requant (docs/arithmetic.md, 'Add')."""

    shift_a: int = 0
    shift_b: int = 0
    mult_a: int = 1
    mult_b: int = 1
    requant: Requant | None = None
    subtract: bool = False   # Sub: a - b (host)
    kind = "add"


@dataclass(frozen=True)
class Concat(Op):
    """Concatenate along `axis`; each input is requantized to the output scale first."""

    axis: int = 1
    requants: tuple[Requant, ...] = ()
    kind = "concat"


@dataclass(frozen=True)
class MaxPool(Op):
    """Max over windows; padding reads the dtype minimum."""

    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    dilations: tuple[int, int] = (1, 1)
    requant: Requant | None = None
    kind = "maxpool"


@dataclass(frozen=True)
class AvgPool(Op):
    """Average over windows: exact window sum, then (sum * mult) rounding-shifted (requant).

    For window areas that are powers of two mult == 1 and the shift divides exactly;
    otherwise mult = round(2^k / area) (docs/arithmetic.md, 'Pooling').
    count_include_pad=False with padding needs a per-position divisor and is refused.
    """

    kernel: tuple[int, int] = (2, 2)
    strides: tuple[int, int] = (2, 2)
    pads: tuple[int, int, int, int] = (0, 0, 0, 0)
    requant: Requant | None = None
    # count_include_pad=0 with padding (host): (count, num, den) for every window size: a window
    # of `count` real pixels gives y = round(sum * num / den) exactly, then zero point and clamp
    partial: tuple = ()
    kind = "avgpool"


@dataclass(frozen=True)
class Clamp(Op):
    """Stand-alone activation / rescale: y = clamp(round_shift(x * mult, shift), lo, hi)."""

    requant: Requant | None = None
    kind = "clamp"


@dataclass(frozen=True)
class Reshape(Op):
    """Reshape (Flatten, Reshape, Squeeze...). `shape` is the output shape; axis 0 is the batch."""

    shape: tuple[int, ...] = ()
    kind = "reshape"


@dataclass(frozen=True)
class Table(Op):
    """y = table[x - x.dtype.min]: inputs = (x, table) with the table a constant of 2^bits entries
    ([C, 2^bits] with `channel_axis`: one table per channel). Built so that
    table[q] = quantize(f(dequantize(q))) exactly (docs/arithmetic.md, 'Tables'). The accelerator
    looks it up in its vector unit (docs/isa.md, 'Tables'); back ends without a lookup leave it to
    the host."""

    function: str = ""
    channel_axis: int | None = None
    kind = "table"


# ---- host ops: the reference runs them between device segments (docs/arithmetic.md) -------------

class HostOp(Op):
    """An op with no accelerator mapping: it runs on the host with the reference's arithmetic."""

    host = True
    host_reason = "no accelerator mapping"


@dataclass(frozen=True)
class Mul(HostOp):
    """Element-wise product with broadcasting: y = requant((a - a_zp) * (b - b_zp)); the ratio is
    scale_a * scale_b / scale_y (docs/arithmetic.md, 'Mul')."""

    requant: Requant | None = None
    kind = "mul"




@dataclass(frozen=True)
class FloatIsland(HostOp):
    """A float op that the quantizer left between DequantizeLinear and QuantizeLinear, run in
    float32 as onnxruntime does: dequantize, `function` (Softmax, LRN), quantize to the output
    (or a float32 output at the graph's end). docs/arithmetic.md, 'Float islands'."""

    function: str = ""
    params: tuple = ()        # (name, value) pairs of the ONNX attributes
    host_reason = "float island (float32 on the host)"
    kind = "float"


@dataclass(frozen=True)
class Transpose(HostOp):
    """Permute axes; axis 0 (the batch) stays first."""

    perm: tuple[int, ...] = ()
    kind = "transpose"


@dataclass(frozen=True)
class Pad(HostOp):
    """Pad (ONNX Pad): `pads` = (begin..., end...) per axis, `mode` constant/reflect/edge; the
    constant is the integer `value` (the quantized pad value)."""

    pads: tuple[int, ...] = ()
    mode: str = "constant"
    value: int = 0
    kind = "pad"


@dataclass(frozen=True)
class Slice(HostOp):
    """Take `(start, stop, step)` along each axis in `axes` (already clipped to the shape)."""

    axes: tuple[int, ...] = ()
    slices: tuple[tuple[int, int, int], ...] = ()
    kind = "slice"


@dataclass(frozen=True)
class Take(HostOp):
    """Gather with constant indices: y = take(x, indices, axis) (ONNX Gather of an activation),
    or a lookup in a constant table: inputs = (table, indices) with the indices an integer
    input (`table_input`)."""

    axis: int = 0
    indices: tuple = ()
    index_shape: tuple[int, ...] = ()
    table_input: bool = False
    kind = "gather"


@dataclass(frozen=True)
class Resize(HostOp):
    """Nearest-neighbour resize: for each spatial axis, the source index of every output index
    (computed exactly from the ONNX coordinate rules at lowering)."""

    index: tuple[tuple[int, ...], ...] = ()
    kind = "resize"


@dataclass(frozen=True)
class ReduceMean(HostOp):
    """Mean over `axes`: the exact sum, divided exactly by count * scale_y / scale_x and rounded
    (docs/arithmetic.md, 'Exact division')."""

    axes: tuple[int, ...] = ()
    keepdims: bool = True
    requant: Requant | None = None     # its zero point, clamp and rounding
    num: int = 1                       # y = round(sum * num / den): ratio / count as an exact fraction
    den: int = 1
    kind = "reducemean"


@dataclass(frozen=True)
class MatMul(HostOp):
    """Product of two activations: y = requant((a - a_zp) @ (b - b_zp)), numpy matmul broadcasting."""

    requant: Requant | None = None
    kind = "matmul"


@dataclass(frozen=True)
class Softmax(Op):
    """Integer Softmax over `axis` (docs/transformer.md, 'Softmax'): base-2 exponent with shifts, a
    2^frac_bits-entry table of 2^(-r / 2^F) in Q0.table_bits, one division per row. The input is at
    2^x_exp (zero point 0), the output at 2^-out_bits, saturated to its dtype. Over the last axis as
    ONNX writes it; over the channels (axis 1) of a [N, C, H, W] tensor after tony.ir.layout moves it
    onto the pixel layout of attention scores, where the accelerator's Softmax unit runs it
    (docs/isa.md, 'SOFTMAX'); back ends without a unit leave it to the host."""

    axis: int = -1
    x_exp: int = 0
    frac_bits: int = 6
    table_bits: int = 15
    out_bits: int = 8
    log2e: int = 47274       # round(log2(e) 2^15); round(that / c) when the input is at 2^x_exp / c
    kind = "softmax"


@dataclass(frozen=True)
class LayerNorm(Op):
    """Integer LayerNorm over `axis` (docs/transformer.md, 'LayerNorm'): inputs = (x, gamma, beta)
    with gamma and beta integer constants per channel; exact mean and variance, an integer square
    root with `sqrt_bits` fraction bits, one reciprocal per row, v with `norm_bits` fraction bits,
    y = clamp(round_shift(v * gamma + beta, shift), lo, hi). Over the last axis as ONNX writes it;
    over the channels (axis 1) of a [N, d, 1, T] tensor after tony.ir.layout moves it onto the
    residual stream's pixel layout, where the accelerator's LayerNorm unit runs it (docs/isa.md,
    'NORM'); back ends without a unit leave it to the host."""

    axis: int = -1
    eps_int: int = 0
    sqrt_bits: int = 0
    norm_bits: int = 16
    shift: int = 0
    lo: int = -128
    hi: int = 127
    kind = "layernorm"


@dataclass(frozen=True)
class Graph:
    """A whole integer program: tensors, constants, ops in execution order."""

    name: str
    tensors: dict = field(default_factory=dict)       # name -> Tensor
    constants: dict = field(default_factory=dict)     # name -> np.ndarray (int64 / float)
    ops: tuple = ()
    inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)          # requant mode, source file, ...

    def producer(self, name: str) -> Op | None:
        for op in self.ops:
            if name in op.outputs:
                return op
        return None

    def consumers(self, name: str) -> list[Op]:
        return [op for op in self.ops if name in op.inputs]

    @property
    def device_ops(self) -> list[Op]:
        return [op for op in self.ops if not op.host]
