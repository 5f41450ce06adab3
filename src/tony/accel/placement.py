"""Which IR ops the accelerator runs (docs/isa.md): `refuse(g, cfg)` gives tony.ir.partition the
reason an op stays on the host, or None when the accelerator can run it. The checks are the ones
the emitters make (emit.py, liveness.py), asked before scheduling so that the op moves to the host
instead of failing the build.
"""
from __future__ import annotations

from .. import ir
from . import isa
from .emit import (EMITTERS, add_alignment, merge_identity, norm_reason, per_channel_reason, softmax_reason,
                   table_reason)
from .program import AccelConfig


def _rq_reason(rq: ir.Requant | None, g: ir.Graph | None = None, op=None, cfg: AccelConfig | None = None) -> str | None:
    """Why the post-processing unit cannot requantize as `rq` does; per output channel only for a
    Conv or Dense (`g`, `op`, `cfg` given), from the lanes' shifts and mults in its bias words."""
    if rq is None:
        return None
    if rq.zero_point:
        return f"output zero point {rq.zero_point} (the accelerator needs 0)"
    if rq.per_channel:
        if not isinstance(op, (ir.Conv, ir.Dense)):
            return "per-channel requantization outside Conv and Gemm/MatMul"
        return per_channel_reason(rq, g.tensors[op.outputs[0]].shape[1], cfg)
    if not (0 < rq.mult < 1 << 32) or not (-128 <= rq.shift <= 127):
        return f"requantization *{rq.mult} >>{rq.shift} outside the post-processing unit's range"
    return None


def _act_reason(g: ir.Graph, op, cfg: AccelConfig) -> str | None:
    for n in op.inputs + op.outputs:
        if n in g.constants:
            continue
        t = g.tensors[n]
        if t.dtype.is_float:
            return f"'{n}' is float"
        if t.zero_point:
            return f"'{n}' has zero point {t.zero_point} (the accelerator needs 0)"
        if t.dtype.bits > cfg.a_bits:
            return f"'{n}' is {t.dtype} (the accelerator moves {cfg.a_bits}-bit activations)"
        if len(t.shape) not in (2, 4):
            return f"'{n}' has {len(t.shape)} dimensions (the accelerator stores [N, C, H, W] or [N, K])"
    return None


def _mac_reason(g: ir.Graph, op, cfg: AccelConfig) -> str | None:
    wt = g.tensors[op.inputs[1]]
    if wt.zero_point:
        return "weight zero point is not 0"
    if not (wt.dtype.signed and wt.dtype.bits <= cfg.w_bits):
        return f"weights are {wt.dtype} (the array takes signed <= {cfg.w_bits} bits)"
    if isinstance(op, ir.Dense) and (len(wt.shape) != 2 or len(g.tensors[op.inputs[0]].shape) != 2):
        return "MatMul/Gemm is not [N, K] x [K, M]"
    if isinstance(op, ir.Conv) and max(*op.strides, *op.dilations, *g.tensors[op.inputs[1]].shape[2:]) > 255:
        return "kernel, stride or dilation above 255"
    return None


def _pixel_matmul_reason(g: ir.Graph, op, cfg: AccelConfig) -> str | None:
    """A PixelMatMul's second operand goes from external memory into the weight buffer word for
    word: it must be a weight the array takes, in words of the activations' width, and come from
    the host (a graph input or a host op's result: the host writes it to external memory)."""
    b = g.tensors[op.inputs[1]]
    if not (b.dtype.signed and b.dtype.bits <= cfg.w_bits):
        return f"its second operand is {b.dtype} (the array takes signed <= {cfg.w_bits}-bit weights)"
    if cfg.a_bits != cfg.w_bits:
        return (f"its second operand is loaded as weights from {cfg.a_bits}-bit activation words, the weight "
                f"buffer has {cfg.w_bits}-bit lanes")
    _, k, _, t = g.tensors[op.inputs[0]].shape
    f = isa.COMPUTE_FIELDS
    if t >= 1 << f["ow"].bits or k >= 1 << f["klen"].bits:
        return (f"a head of {t} tokens reducing over {k} (a CONV walks at most {(1 << f['ow'].bits) - 1} pixels "
                f"per row and {(1 << f['klen'].bits) - 1} slices)")
    prod = g.producer(op.inputs[1])
    if prod is not None and not prod.host:
        return "its second operand is computed on the device (it reaches the weight buffer through the host)"
    return None


def _reshape_ok(g: ir.Graph, op) -> bool:
    """A Reshape is free (a view) when the activation words keep their layout."""
    x, y = g.tensors[op.inputs[0]].shape, g.tensors[op.outputs[0]].shape
    if x[1:] == y[1:]:
        return True
    if len(y) == 2 and len(x) in (2, 4):        # Flatten: read by a Dense as the unflattened image
        return True
    return len(x) == 2 and len(y) == 4 and y[2:] == (1, 1)


def _odd(m: int) -> int:
    """m without its factors of two."""
    return m >> ((m & -m).bit_length() - 1) if m > 0 else m


def _op_reason(g: ir.Graph, op, cfg: AccelConfig) -> str | None:
    if isinstance(op, ir.Reshape):
        return None if _reshape_ok(g, op) else "a reshape that moves channels between activation words"
    if isinstance(op, (ir.Conv, ir.Dense)):
        return _mac_reason(g, op, cfg)
    if isinstance(op, ir.PixelMatMul):
        return _pixel_matmul_reason(g, op, cfg)
    if isinstance(op, ir.Table):
        return table_reason(g, op, cfg)
    if isinstance(op, ir.Softmax):
        return softmax_reason(g, op, cfg)
    if isinstance(op, ir.LayerNorm):
        return norm_reason(g, op, cfg)
    if isinstance(op, (ir.MaxPool, ir.AvgPool)) and max(*op.kernel, *op.strides) > 255:
        return "pooling window or stride above 255"
    if isinstance(op, ir.AvgPool) and op.partial:
        return "count_include_pad=0 with padding (a divisor per window position)"
    if isinstance(op, ir.Add):
        if op.subtract:
            return "Sub (the vector unit adds)"
        if len({g.tensors[n].shape for n in op.inputs + op.outputs}) > 1:
            return "Add with broadcasting"
        if add_alignment(op, cfg) is None:
            if _odd(op.mult_a) != _odd(op.mult_b):
                return ("Add of inputs whose scales' ratio is not a power of two (the vector unit aligns its "
                        "inputs by left shifts and has no per-input multipliers)")
            return "Add of inputs whose scales are not aligned by small left shifts"
    if isinstance(op, ir.Concat):
        if op.axis != 1:
            return f"Concat along axis {op.axis} (the accelerator concatenates channels)"
        off = 0
        out = g.tensors[op.outputs[0]]
        for name, rq in zip(op.inputs, op.requants):
            if off % cfg.cols and not merge_identity(rq, out):
                return (f"Concat input '{name}' starts at channel {off} (inside a group of {cfg.cols} channels) "
                        "and needs a requantization: a merge keeps the group's other lanes unchanged")
            off += g.tensors[name].shape[1]
        if any(_rq_reason(rq) for rq in op.requants):
            return next(_rq_reason(rq) for rq in op.requants if _rq_reason(rq))
    return None


def refuse(g: ir.Graph, cfg: AccelConfig):
    """op -> why the accelerator `cfg` cannot run it (None: it can)."""
    def why(op) -> str | None:
        if type(op) not in EMITTERS and not isinstance(op, ir.Reshape):
            return f"no accelerator mapping for {op.kind}"
        return (_act_reason(g, op, cfg) or _rq_reason(getattr(op, "requant", None), g, op, cfg)
                or _op_reason(g, op, cfg))
    return why
