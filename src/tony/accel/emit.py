"""Per IR op, the compute instructions of one layer (docs/isa.md, 'Semantics').

`EMITTERS` maps each IR op type the accelerator runs to its emitter, like tony.ref's KERNELS:
`emitter(ctx, plan) -> Code` turns one op, placed by the planner (plan.py, bands.py), into its
instructions: the planner's DMA around them, one run of compute instructions per site (the
whole tensors, or each row band), CONV instructions carrying their weight blocks (linking
places them) and bias words numbered from `ctx.bias0`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import ir
from ..errors import UnsupportedError
from . import isa
from .liveness import Tensors, where
from .plan import OpPlan, Site
from .program import AccelConfig, Ext, ExtBlock, Instr, dma, instr, sync


@dataclass(frozen=True)
class Ctx:
    g: ir.Graph
    cfg: AccelConfig
    batch: int
    t: Tensors
    bias0: int = 0       # index of the layer's first bias word
    tab0: int = 0        # index of the layer's first table (the tables of the ops before it)
    gb0: int = 0         # index of the layer's first gamma/beta image (the NORMs' before it)


@dataclass(frozen=True)
class Code:
    """One layer's instructions and its report data."""

    instrs: tuple
    biases: tuple = ()    # bias words [COLS], numbered from ctx.bias0
    macs: int = 0
    info: dict = field(default_factory=dict)
    tables: tuple = ()    # table-memory images [2^A_BITS, COLS], numbered from ctx.tab0
    gbs: tuple = ()       # gamma/beta images (lists of gamma/beta words, docs/isa.md 'NORM'), from ctx.gb0


def lane_scales(rq: ir.Requant, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(shift, mult) per output channel of a requantization over m channels."""
    return (np.broadcast_to(np.asarray(rq.shift, np.int64), (m,)).copy(),
            np.broadcast_to(np.asarray(rq.mult, np.int64), (m,)).copy())


def per_channel_reason(rq: ir.Requant, m: int, cfg: AccelConfig) -> str | None:
    """Why the accelerator `cfg` cannot requantize per output channel as `rq` does (None: it can)."""
    mode = cfg.per_channel or "mult"
    if mode == "none":
        return "per-channel requantization (this accelerator has no per-channel scales: per_channel = \"none\")"
    shift, mult = lane_scales(rq, m)
    f = isa.COMPUTE_FIELDS
    s_lo, s_hi = -(1 << (f["shift"].bits - 1)), (1 << (f["shift"].bits - 1)) - 1
    if shift.min() < s_lo or shift.max() > s_hi:
        return f"a per-channel shift outside [{s_lo}, {s_hi}]"
    if mode == "shift" and (mult != 1).any():
        return ("per-channel multipliers (this accelerator stores per-channel shifts only: per_channel = "
                "\"shift\")")
    if mult.min() < 0 or mult.max() >= 1 << f["mult"].bits:
        return "a per-channel multiplier outside the post-processing unit's range"
    return None


def rq_fields(rq: ir.Requant | None, out: ir.Tensor, op, cfg: AccelConfig | None = None) -> dict:
    """The CONV/POOL/EWISE requantization fields. A per-channel requantization (Conv and Dense
    only, `cfg` given) is mult = 0: every lane's shift and mult come from its bias word."""
    if rq is None:
        return {"mult": 1, "shift": 0, "lo": out.dtype.min, "hi": out.dtype.max}
    if rq.zero_point:
        raise UnsupportedError(f"output zero point {rq.zero_point}; the accelerator needs 0", where=where(op),
                               hint="quantize activations symmetrically")
    if rq.per_channel:
        why = per_channel_reason(rq, out.shape[1], cfg) if cfg is not None else \
            "per-channel requantization outside Conv and Gemm/MatMul"
        if why:
            raise UnsupportedError(f"{why} is not supported on this accelerator", where=where(op),
                                   hint="quantize weights per tensor, or compile for an accelerator with "
                                        "per-channel scales")
        return {"mult": 0, "shift": 0, "lo": max(rq.lo, -2048), "hi": min(rq.hi, 2047)}
    if not (0 < rq.mult < 1 << 32) or not (-128 <= rq.shift <= 127):
        raise UnsupportedError(f"requantization *{rq.mult} >>{rq.shift} is outside the post-processing unit's range",
                               where=where(op))
    return {"mult": rq.mult, "shift": rq.shift, "lo": max(rq.lo, -2048), "hi": min(rq.hi, 2047)}


def check_operands(ctx: Ctx, op) -> None:
    """Activations in and out: zero point 0, at most A_BITS bits."""
    g, cfg = ctx.g, ctx.cfg
    for n in op.inputs:
        t = g.tensors[n]
        if n not in g.constants and t.zero_point:
            raise UnsupportedError(f"tensor '{n}' has zero point {t.zero_point}; the accelerator needs 0",
                                   where=where(op), hint="quantize activations symmetrically")
        if n not in g.constants and t.dtype.bits > cfg.a_bits:
            raise UnsupportedError(f"'{n}' is {t.dtype}; the accelerator takes {cfg.a_bits}-bit activations",
                                   where=where(op))
    out_t = g.tensors[op.outputs[0]]
    if out_t.dtype.bits > cfg.a_bits:
        raise UnsupportedError(f"'{op.outputs[0]}' is {out_t.dtype}; the accelerator writes {cfg.a_bits}-bit "
                               "activations", where=where(op))


def run_sites(p: OpPlan, body) -> tuple:
    """The planner's DMA around `body(site, whole)` for every site of the layer."""
    out = list(p.pre)
    for site in p.sites:
        out += site.before
        out += body(site, not p.banded)
        out += site.after
    return tuple(out) + p.post


def _walk(W: int, H: int, pt: int, pl: int, oh: int, ow: int, sh: int, sw: int) -> dict:
    """Pixel-walker fields of a window walk over an H x W image with padding (pt, pl)."""
    return dict(ow=ow, oh=oh, oy0=0, sw=sw, sh=sh, ixs=-pl, iys=-pt, ix0=-pl, iy0=-pt,
                rjump=sh * W - (ow - 1) * sw, sjump=H * W - (oh - 1) * sh * W - (ow - 1) * sw, h=H, w=W)


# ---- CONV (Conv, Dense) ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _ConvShape:
    w4: np.ndarray        # [M, Cg, KH, KW]
    m: int
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pads: tuple
    group: int
    oh: int
    ow: int


def _conv_shape(ctx: Ctx, op, src) -> _ConvShape:
    g, cfg = ctx.g, ctx.cfg
    wt = g.tensors[op.inputs[1]]
    w = np.asarray(g.constants[op.inputs[1]], np.int64)
    if wt.zero_point:
        raise UnsupportedError("weight zero point must be 0 on hardware", where=where(op))
    if not (wt.dtype.signed and wt.dtype.bits <= cfg.w_bits):
        raise UnsupportedError(f"weights are {wt.dtype}; the array takes signed <= {cfg.w_bits} bits", where=where(op))
    if isinstance(op, ir.Dense):
        if w.ndim != 2 or len(g.tensors[op.inputs[0]].shape) != 2:
            raise UnsupportedError("the array runs MatMul/Gemm as [N, K] x [K, M]", where=where(op))
        k, m = w.shape
        if src.c * src.h * src.w != k:
            raise UnsupportedError(f"input holds {src.c * src.h * src.w} values per sample, weights expect {k}",
                                   where=where(op))
        return _ConvShape(w.T.reshape(m, src.c, src.h, src.w), m, src.h, src.w, 1, 1, 1, 1, (0, 0, 0, 0), 1, 1, 1)
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = op.strides, op.dilations
    if max(sh, sw, dh, dw, kh, kw) > 255:
        raise UnsupportedError("kernel, stride and dilation must be <= 255 on the accelerator", where=where(op))
    oh, ow = g.tensors[op.outputs[0]].shape[2:]
    return _ConvShape(w, w.shape[0], kh, kw, sh, sw, dh, dw, op.pads, op.group, oh, ow)


def depthwise_mode(cfg: AccelConfig, s: _ConvShape) -> bool:
    """Whether a convolution runs in the array's depthwise mode (docs/architecture.md): every output
    channel reads only the input channel of the same index (groups of one input and one output
    channel), so output lane c's input is lane c of the same pixel's word, and the array allows it
    (COLS <= ROWS + 3, the check's 'conv-depthwise'). Other grouped convolutions stream the input
    channels of every group their COLS outputs touch, with a block-diagonal weight block."""
    return s.group > 1 and s.w4.shape[1] == 1 and s.m == s.group and cfg.cols <= cfg.rows + 3


def _conv_blocks(ctx: Ctx, op, s: _ConvShape, dw: bool = False) -> tuple[list, list]:
    """Per COLS output channels: (first input channel, input channels streamed, klen, weight block
    [klen, COLS], bias index), and the bias words. Depthwise mode: one channel group, klen = kh*kw,
    word k holds each lane's own weight of tap k."""
    C = ctx.cfg.cols
    b = np.asarray(ctx.g.constants[op.inputs[2]], np.int64) if len(op.inputs) > 2 else np.zeros(s.m, np.int64)
    cg, mg = s.w4.shape[1], s.m // s.group
    blocks, biases = [], []
    for j in range(-(-s.m // C)):
        ocs = np.arange(j * C, min(s.m, (j + 1) * C))
        bw = np.zeros(C, np.int64)
        bw[:len(ocs)] = b[ocs]
        if dw:
            K = s.kh * s.kw
            blk = np.zeros((K, C), np.int64)
            blk[:, :len(ocs)] = s.w4[ocs, 0].reshape(len(ocs), K).T
            blocks.append((j * C, 1, K, blk, ctx.bias0 + len(biases)))
            biases.append(bw)
            continue
        g_lo, g_hi = ocs[0] // mg, ocs[-1] // mg
        ic0, nic = g_lo * cg, (g_hi - g_lo + 1) * cg
        K = nic * s.kh * s.kw
        blk = np.zeros((K, C), np.int64)
        for lane, oc in enumerate(ocs):
            rel = (oc // mg) * cg - ic0
            blk[rel * s.kh * s.kw:(rel + cg) * s.kh * s.kw, lane] = s.w4[oc].reshape(-1)
        blocks.append((ic0, nic, K, blk, ctx.bias0 + len(biases)))
        biases.append(bw)
    return blocks, biases


def _with_lane_scales(biases: list, rq: ir.Requant, m: int, C: int) -> list:
    """Per-channel requantization: each bias word [COLS] becomes [3, COLS] (biases, the lanes'
    shifts, their mults; lanes past the last channel 0), block j holding channels j*COLS ..."""
    shift, mult = lane_scales(rq, m)
    out = []
    for j, bw in enumerate(biases):
        w = np.zeros((3, C), np.int64)
        w[0] = bw
        n = min(C, m - j * C)
        w[1, :n] = shift[j * C:j * C + n]
        w[2, :n] = mult[j * C:j * C + n]
        out.append(w)
    return out


def emit_conv(ctx: Ctx, p: OpPlan) -> Code:
    op, g, cfg = p.op, ctx.g, ctx.cfg
    R, C = cfg.rows, cfg.cols
    rq = rq_fields(op.requant, g.tensors[op.outputs[0]], op, cfg)
    src = p.locs[op.inputs[0]]
    s = _conv_shape(ctx, op, src)
    dw = depthwise_mode(cfg, s)
    blocks, biases = _conv_blocks(ctx, op, s, dw)
    if op.requant is not None and op.requant.per_channel:
        biases = _with_lane_scales(biases, op.requant, s.m, C)
    flags = (isa.F_A_SIGNED if g.tensors[op.inputs[0]].dtype.signed else 0) | (isa.F_DEPTHWISE if dw else 0)
    pl = s.pads[1]

    def body(site: Site, whole: bool) -> list[Instr]:
        x, dst = site.srcs[0], site.dst
        H, pt, oh = (x.h, s.pads[0], s.oh) if whole else (site.h, site.pt, site.oh)
        walk = _walk(x.w, H, pt, pl, oh, s.ow, s.sh, s.sw)
        return [instr(isa.CONV, flags=flags, block=blk, ibase=x.base + (ic0 // C) * x.gstride + (-pt) * x.w + (-pl),
                      obase=dst.base + j * dst.gstride, npix=ctx.batch * oh * s.ow, **walk, kh=s.kh, kw=s.kw,
                      dh=s.dh, dw=s.dw, dhw=s.dh * x.w, nic=nic, lane0=ic0 % C, cstride=x.gstride, klen=K,
                      period=max(K, R, C), wbase=0, bbase=bbase, **rq)
                for j, (ic0, nic, K, blk, bbase) in enumerate(blocks)]
    instrs = run_sites(p, body)
    info = {"bands": len(p.sites)} if p.banded else {}
    cg = s.w4.shape[1]
    info.update({"K": cg * s.kh * s.kw, "M": s.m, "group": s.group, "pixels": ctx.batch * s.oh * s.ow})
    if dw:
        info["depthwise_mode"] = True
    return Code(instrs, tuple(biases), ctx.batch * s.oh * s.ow * s.m * cg * s.kh * s.kw, info)


# ---- CONV with an activation as weights (PixelMatMul) ------------------------------------------
def emit_pixel_matmul(ctx: Ctx, p: OpPlan) -> Code:
    """a [N, K, H, T] x b [N, M, H, K]: per sample n, head h and COLS output channels j one 1x1
    CONV over the head's row of T pixels (K input channels), whose weight block is the K words of
    b's channel group j at that row: b is a device input, so the host wrote it to its input region
    in the activation layout, which for these words is the weight layout (docs/isa.md,
    'Activations as weights'). The bias is one zero word."""
    op, g, cfg, t = p.op, ctx.g, ctx.cfg, ctx.t
    R, C = cfg.rows, cfg.cols
    rq = rq_fields(op.requant, g.tensors[op.outputs[0]], op, cfg)
    a_name, b_name = op.inputs
    _, k, h, tt = g.tensors[a_name].shape
    m = g.tensors[b_name].shape[1]
    bt = g.tensors[b_name]
    if b_name not in t.inputs or t.root(b_name) != b_name:
        raise UnsupportedError(f"its second operand '{b_name}' is computed on the device; it reaches the weight "
                               "buffer only from the host's external memory", where=where(op))
    if not (bt.dtype.signed and bt.dtype.bits <= cfg.w_bits) or cfg.a_bits != cfg.w_bits:
        raise UnsupportedError(f"its second operand is {bt.dtype} in {cfg.a_bits}-bit activation words; the weight "
                               f"buffer takes signed <= {cfg.w_bits}-bit weights in words of the same width",
                               where=where(op))
    n_ = ctx.batch
    flags = isa.F_A_SIGNED if g.tensors[a_name].dtype.signed else 0
    bg = n_ * h * k                   # b's words per channel group
    walk = _walk(tt, 1, 0, 0, 1, tt, 1, 1)

    def body(site: Site, whole: bool) -> list[Instr]:
        x, dst = site.srcs[0], site.dst
        out = []
        for row in range(n_ * h):     # sample-major, then head: the pixel rows of a and y
            for j in range(-(-m // C)):
                blk = ExtBlock(Ext("in", b_name) + (j * bg + row * k) * cfg.act_beats, k, C)
                out.append(instr(isa.CONV, flags=flags, block=blk, ibase=x.base + row * tt,
                                 obase=dst.base + j * dst.gstride + row * tt, npix=tt, **walk, kh=1, kw=1, dh=1,
                                 dw=1, dhw=tt, nic=k, lane0=0, cstride=x.gstride, klen=k, period=max(k, R, C),
                                 wbase=0, bbase=ctx.bias0, **rq))
        return out
    info = {"K": k, "M": m, "group": 1, "pixels": n_ * h * tt, "heads": h, "weights": "activation"}
    return Code(run_sites(p, body), (np.zeros(C, np.int64),), n_ * h * tt * m * k, info)


# ---- POOL (MaxPool, AvgPool) ----------------------------------------------------------------------
def emit_pool(ctx: Ctx, p: OpPlan) -> Code:
    op, g = p.op, ctx.g
    out_t = g.tensors[op.outputs[0]]
    rq = rq_fields(op.requant, out_t, op)
    kh, kw = op.kernel
    sh, sw = op.strides
    dh, dw = op.dilations if isinstance(op, ir.MaxPool) else (1, 1)
    pl = op.pads[1]
    oh, ow = out_t.shape[2:]
    if max(sh, sw, dh, dw, kh, kw) > 255:
        raise UnsupportedError("pooling window too large for the accelerator", where=where(op))
    flags = (isa.F_A_SIGNED if g.tensors[op.inputs[0]].dtype.signed else 0) | \
        (isa.F_MAX if isinstance(op, ir.MaxPool) else 0)

    def body(site: Site, whole: bool) -> list[Instr]:
        x, dst = site.srcs[0], site.dst
        H, pt, n_oh = (x.h, op.pads[0], oh) if whole else (site.h, site.pt, site.oh)
        walk = _walk(x.w, H, pt, pl, n_oh, ow, sh, sw)
        # whole tensors: channel group j follows group j-1's last sample in both the input and the
        # result, so one POOL walks every group as further samples (one issue and pipeline drain)
        per = 1 if whole else x.groups
        return [instr(isa.POOL, flags=flags, ibase=x.base + j * x.gstride - pt * x.w - pl,
                      obase=dst.base + j * dst.gstride, npix=ctx.batch * n_oh * ow * (x.groups // per), **walk,
                      kh=kh, kw=kw, dh=dh, dw=dw, dhw=dh * x.w, nic=1, klen=kh * kw, period=kh * kw, **rq)
                for j in range(per)]
    info = {"window": [kh, kw]}
    if p.banded:
        info["bands"] = len(p.sites)
    return Code(run_sites(p, body), info=info)


# ---- EWISE (Add, Clamp; Concat copies) ------------------------------------------------------------
def ewise(flags: int, a, b_off: int, dst_base: int, words: int, sa: int, sb: int, rq: dict) -> Instr:
    """A stand-alone vector instruction over `words` consecutive words (span 4095 per row)."""
    span = 4095
    return instr(isa.EWISE, flags=flags, ibase=a, boff=b_off, obase=dst_base, npix=words, ow=span, oh=1, sw=1,
                 sh=1, ixs=0, iys=0, ix0=0, iy0=0, rjump=0, sjump=1, h=1, w=span, kh=1, kw=1, dh=1, dw=1, nic=1,
                 klen=1, period=1, sa=sa, sb=sb, **rq)


def add_alignment(op: ir.Add, cfg: AccelConfig) -> tuple[int, int, int] | None:
    """(sa, sb, mult): the Add's exact sum (a * mult_a << shift_a) + (b * mult_b << shift_b)
    (docs/arithmetic.md, 'Add') as ((a << sa) + (b << sb)) * m, the vector unit's left shifts and
    the post-processing unit's multiplier m, with the requantization's own multiplier folded into
    mult = m * requant.mult. Exists when the input multipliers are one odd number times powers of
    two (pow2 scales: both 1; multiplier mode: input scales whose ratio is a power of two, equal
    scales included), the shifts fit the accumulator and mult the PPU's 32 bits; else None (the Add
    runs on the host: the vector unit has no per-input multipliers, docs/isa.md 'EWISE')."""
    ma, mb, rq = op.mult_a, op.mult_b, op.requant
    if ma <= 0 or mb <= 0 or op.shift_a < 0 or op.shift_b < 0 or rq is None or rq.per_channel:
        return None
    ta, tb = (ma & -ma).bit_length() - 1, (mb & -mb).bit_length() - 1
    if ma >> ta != mb >> tb:
        return None
    p = min(ta, tb)
    sa, sb, mult = op.shift_a + ta - p, op.shift_b + tb - p, rq.mult * ((ma >> ta) << p)
    if max(sa, sb) > cfg.acc_bits - cfg.a_bits - 2 or not 0 < mult < 1 << 32:
        return None
    return sa, sb, mult


def emit_ewise(ctx: Ctx, p: OpPlan) -> Code:
    op, g, cfg = p.op, ctx.g, ctx.cfg
    rq = rq_fields(op.requant, g.tensors[op.outputs[0]], op)
    flags = isa.F_A_SIGNED if g.tensors[op.inputs[0]].dtype.signed else 0
    sa = sb = 0
    if isinstance(op, ir.Add):
        aligned = add_alignment(op, cfg)
        if aligned is None:
            raise UnsupportedError("Add needs input scales whose ratio is a power of two (alignment by left "
                                   "shifts) on the accelerator", where=where(op), hint="use --requant pow2")
        src, other = p.locs[op.inputs[0]], p.locs[op.inputs[1]]
        if (other.c, other.h, other.w) != (src.c, src.h, src.w):
            raise UnsupportedError("Add with broadcasting is not supported on the accelerator", where=where(op))
        flags |= isa.F_HAS_B | (isa.F_B_SIGNED if g.tensors[op.inputs[1]].dtype.signed else 0)
        sa, sb, rq["mult"] = aligned

    def body(site: Site, whole: bool) -> list[Instr]:
        a, b = site.srcs[0], site.srcs[-1]
        return [ewise(flags, a.base, b.base - a.base if len(site.srcs) > 1 else 0, site.dst.base, a.words, sa, sb,
                      rq)]
    return Code(run_sites(p, body), info={"bands": len(p.sites)} if p.banded else {})


def merge_identity(rq: ir.Requant | None, out: ir.Tensor) -> bool:
    """Is a Concat input's requantization the identity on the output's values (so that a merge,
    which requantizes the whole word, keeps the lanes it takes from the output unchanged)?"""
    return rq is None or (not rq.per_channel and rq.mult == 1 and rq.shift == 0 and not rq.zero_point
                          and rq.lo <= out.dtype.min and rq.hi >= out.dtype.max)


def _merges(a_flags: int, out_signed: bool, part, dst, off: int, C: int, rq: dict) -> list[Instr]:
    """An input starting at channel `off`, inside a channel group (r = off % COLS > 0): per group k
    of the input, an EWISE merge into output group off // COLS + k (lanes >= r from the input
    rotated by r, the lanes below from the output word itself: B at the same address), and the
    rest of its channels into the next output group (a rotated copy of whole words; the lanes
    past them are rewritten by the next group or the next input, merged after it)."""
    r, g0 = off % C, off // C
    b = isa.F_HAS_B | (isa.F_B_SIGNED if out_signed else 0)
    out = []
    for k in range(part.groups):
        n = min(C, part.c - k * C)
        a = part.base + k * part.gstride
        d0 = dst.base + (g0 + k) * dst.gstride
        out.append(ewise(a_flags | isa.F_MERGE | b, a, d0 - a, d0, part.gstride, 0, 0, rq).with_fields(rot=r, mlo=r))
        if r + n > C:
            d1 = d0 + dst.gstride
            out.append(ewise(a_flags | isa.F_MERGE, a, 0, d1, part.gstride, 0, 0, rq).with_fields(rot=r, mlo=0))
    return out


def emit_concat(ctx: Ctx, p: OpPlan) -> Code:
    """Inputs written in place by their producers need nothing; the others are copied (and
    requantized) into their channel groups by EWISE without B, or merged into them when they
    start inside a group (`_merges`)."""
    op, g, C = p.op, ctx.g, ctx.cfg.cols
    dst = p.sites[0].dst
    out_t = g.tensors[op.outputs[0]]
    done = ctx.t.in_place(op)
    body, off = [], 0
    for name, rq0, here in zip(op.inputs, op.requants, done):
        part = p.locs[name]
        if not here:
            if (part.c, part.h, part.w) != ctx.t.chw(name):
                raise UnsupportedError(f"Concat input '{name}' is a reshaped tensor; the accelerator "
                                       "concatenates channels of tensors in their own layout", where=where(op))
            rq = rq_fields(rq0, out_t, op)
            a_flags = isa.F_A_SIGNED if g.tensors[name].dtype.signed else 0
            if off % C:
                if not merge_identity(rq0, out_t):
                    raise UnsupportedError(f"Concat input '{name}' starts at channel {off}, inside a group of {C} "
                                           "channels, and needs a requantization", where=where(op),
                                           hint="give the Concat's inputs the output's scale")
                body += _merges(a_flags, out_t.dtype.signed, part, dst, off, C, rq)
            else:
                body.append(ewise(a_flags, part.base, 0, dst.base + (off // C) * dst.gstride, part.words, 0, 0, rq))
        off += g.tensors[name].shape[1]
    info = {"copied": [n for n, here in zip(op.inputs, done) if not here]}
    return Code(tuple(p.pre) + tuple(body) + p.post, info=info)


# ---- EWISE table lookups (Table) ------------------------------------------------------------------
def table_reason(g: ir.Graph, op: ir.Table, cfg: AccelConfig) -> str | None:
    """Why the vector unit cannot look `op` up (None: it can). Its table memory holds, per lane, one
    A_BITS-bit entry for every A_BITS-bit input value, so the input, the output and every entry
    must be activations of at most A_BITS bits, and one table per channel must follow the lanes."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if op.inputs[1] not in g.constants:
        return "its table is computed, not a constant (the table memory is loaded from the image)"
    tab = np.asarray(g.constants[op.inputs[1]], np.int64)
    if x.dtype.is_float or y.dtype.is_float or x.dtype.bits > cfg.a_bits or y.dtype.bits > cfg.a_bits:
        return (f"a table from {x.dtype} to {y.dtype} (the table memory maps {cfg.a_bits}-bit activations to "
                f"{cfg.a_bits}-bit entries)")
    if tab.shape[-1] != 1 << x.dtype.bits:
        return f"a table of {tab.shape[-1]} entries for a {x.dtype} input"
    if tab.size and (tab.min() < y.dtype.min or tab.max() > y.dtype.max):
        return f"table entries outside the output's {y.dtype} range"
    if op.channel_axis is not None and (op.channel_axis != 1 or len(x.shape) not in (2, 4)):
        return (f"one table per index of axis {op.channel_axis} of a {len(x.shape)}-D tensor (the lanes hold "
                "channels, axis 1)")
    return None


def table_words(g: ir.Graph, op: ir.Table, cfg: AccelConfig) -> list[np.ndarray]:
    """The table memory's image, [2^A_BITS, COLS] per load: word e holds, in lane l, the entry for
    the A_BITS-bit lane value e ^ (the sign bit, for a signed input: e is that value minus the
    lane type's minimum). Per tensor one image, every lane the same table; per channel one per
    channel group (lane l: channel j*COLS + l). Lane values outside a narrower input's range
    never occur; their entries are 0."""
    x = g.tensors[op.inputs[0]]
    tab = np.asarray(g.constants[op.inputs[1]], np.int64)
    n, C = isa.tab_words(cfg.a_bits), cfg.cols
    v = np.arange(n) - (n // 2 if x.dtype.signed else 0)          # the lane value of word e
    ok = (v >= x.dtype.min) & (v <= x.dtype.max)
    idx = np.where(ok, v - x.dtype.min, 0)
    tabs = tab[None] if op.channel_axis is None else tab           # [channels, 2^bits]
    out = []
    for j in range(1 if op.channel_axis is None else -(-tabs.shape[0] // C)):
        w = np.zeros((n, C), np.int64)
        for lane in range(C):
            ch = 0 if op.channel_axis is None else j * C + lane
            if ch < tabs.shape[0]:
                w[:, lane] = np.where(ok, tabs[ch][idx], 0)
        out.append(w)
    return out


def emit_table(ctx: Ctx, p: OpPlan) -> Code:
    """Per table image (one, or one per channel group): `LOAD tab` of its 2^A_BITS words, `SYNC dma`,
    then one EWISE with the table flag over the words it serves (all of the tensor, or the group's).
    Only lookups read the table memory, so the first image is loaded before the planner's syncs
    for the operand (while the layer before still computes), and a LOAD waits with `SYNC stream`
    only for an earlier lookup of the program, which may still read the table memory (docs/isa.md,
    'Tables')."""
    op, g, cfg = p.op, ctx.g, ctx.cfg
    why = table_reason(g, op, cfg)
    if why:
        raise UnsupportedError(f"{why} is not supported on this accelerator", where=where(op))
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    tabs = table_words(g, op, cfg)
    flags = isa.F_TABLE | (isa.F_A_SIGNED if x.dtype.signed else 0) | (isa.F_B_SIGNED if y.dtype.signed else 0)
    rq = rq_fields(None, y, op)
    n = isa.tab_words(cfg.a_bits)

    def load(j: int) -> list[Instr]:
        wait = [sync(isa.S_STREAM)] if ctx.tab0 + j else []
        return wait + [dma(isa.LOAD, isa.B_TAB, 0, Ext("tab", ctx.tab0 + j), n)]

    assert not p.banded      # bands.geometry bands only Conv, pooling and Add/Clamp layers
    a, dst = p.sites[0].srcs[0], p.sites[0].dst
    out = load(0) + list(p.pre)
    for j in range(len(tabs)):
        words, off = (a.words, 0) if len(tabs) == 1 else (a.gstride, j * a.gstride)
        out += (load(j) if j else []) + [sync(isa.S_DMA), ewise(flags, a.base + off, 0, dst.base + off, words, 0, 0, rq)]
    info = {"tables": len(tabs), "function": op.function}
    return Code(tuple(out) + tuple(p.post), tables=tuple(tabs), info=info)


# ---- SOFTMAX (Softmax over a pixel's channels) -------------------------------------------------------
SMX_MAX_N = 4096
"""The longest row a compiler-sized Softmax unit takes (its row buffer is MAX_N activations)."""


def softmax_reason(g: ir.Graph, op: ir.Softmax, cfg: AccelConfig) -> str | None:
    """Why the Softmax unit cannot run `op` (None: it can). The unit takes one pixel's channels as a
    row (axis 1 of [N, C, H, W], or of [N, K]: tony.ir.layout puts attention scores there), computes
    the spec of its rendered F and P with A_BITS-bit unsigned results, and takes the input scale and
    log2e as the instruction's shift and mult (softmax_fields)."""
    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    rank = len(x.shape)
    if rank not in (2, 4) or op.axis % rank != 1:
        return (f"a Softmax over axis {op.axis} of a {rank}-D tensor (the Softmax unit's rows are a pixel's "
                "channels: axis 1 of [N, C, H, W] or [N, K])")
    n, limit = x.shape[1], cfg.smx_n if cfg.smx_n >= 0 else SMX_MAX_N
    if limit == 0:
        return "the accelerator has no Softmax unit"
    if n > limit:
        return f"rows of {n} elements (the Softmax unit takes up to {limit})"
    if y.dtype.signed or y.dtype.bits != op.out_bits or op.out_bits != cfg.a_bits:
        return (f"a Softmax to {y.dtype} with {op.out_bits} fraction bits (the unit writes unsigned "
                f"{cfg.a_bits}-bit activations at 2^-{cfg.a_bits})")
    try:
        softmax_fields(op, cfg)
    except ValueError as e:
        return str(e)
    return None


def softmax_fields(op: ir.Softmax, cfg: AccelConfig) -> tuple[int, int]:
    """(shift, log2e): the Softmax unit's s and log2e for `op`'s spec (tony.rtl.softmax.unit_inputs on
    the unit the accelerator renders: F, P and SHIFT_BITS of tony.rtl.softmax, A_BITS + 1-bit elements,
    A_BITS-bit results); ValueError where the unit computes something else."""
    from ..ref.nonlinear import SoftmaxSpec
    from ..rtl.softmax import FRAC_BITS, SHIFT_BITS, TABLE_BITS, unit_inputs

    spec = SoftmaxSpec(x_exp=op.x_exp, frac_bits=op.frac_bits, table_bits=op.table_bits, out_bits=op.out_bits,
                       log2e=op.log2e)
    return unit_inputs(spec, in_bits=cfg.a_bits + 1, out_bits=cfg.a_bits, frac_bits=FRAC_BITS, table_bits=TABLE_BITS,
                       shift_bits=SHIFT_BITS)


def _whole_rows(site: Site, whole: bool, op, what: str):
    """(source, destination) of a row unit's site (SOFTMAX, NORM): every pixel at once, source and
    destination with the same channel-group stride; anything else is refused naming the op."""
    x, dst = site.srcs[0], site.dst
    if not whole or x.gstride != dst.gstride:
        raise UnsupportedError(f"{what} in row bands is not supported on the accelerator", where=where(op),
                               hint="a larger --abuf-words")
    return x, dst


def emit_softmax(ctx: Ctx, p: OpPlan) -> Code:
    """One SOFTMAX over every pixel of the tensor (all samples): row p is pixel p's C channels, lane l
    of channel group g at base + p + g*gstride in the source and the result alike (docs/isa.md,
    'Softmax')."""
    op, g, cfg = p.op, ctx.g, ctx.cfg
    why = softmax_reason(g, op, cfg)
    if why:
        raise UnsupportedError(f"{why} is not supported on this accelerator", where=where(op))
    shift, log2e = softmax_fields(op, cfg)
    flags = isa.F_A_SIGNED if g.tensors[op.inputs[0]].dtype.signed else 0
    n = g.tensors[op.inputs[0]].shape[1]

    def body(site: Site, whole: bool) -> list[Instr]:
        x, dst = _whole_rows(site, whole, op, "a Softmax")
        return [instr(isa.SOFTMAX, flags=flags, ibase=x.base, obase=dst.base, npix=x.gstride, klen=n,
                      cstride=x.gstride, shift=shift, mult=log2e)]
    return Code(run_sites(p, body), info={"row_length": n})


# ---- NORM (LayerNorm over a pixel's channels) ------------------------------------------------------
LN_MAX_N = 4096
"""The longest row a compiler-sized LayerNorm unit takes (its row buffer and gamma/beta memory are
N_MAX words)."""


def norm_spec(g: ir.Graph, op: ir.LayerNorm):
    """The op's LayerNormSpec (tony.ref.nonlinear), its constants as the reference kernel takes them."""
    from ..ref.nonlinear import LayerNormSpec

    n = g.tensors[op.inputs[0]].shape[op.axis]
    return LayerNormSpec(n=n, eps_int=op.eps_int, sqrt_bits=op.sqrt_bits,
                         gamma=tuple(int(v) for v in np.ravel(g.constants[op.inputs[1]])),
                         beta=tuple(int(v) for v in np.ravel(g.constants[op.inputs[2]])), shift=op.shift,
                         lo=op.lo, hi=op.hi, norm_bits=op.norm_bits)


def norm_reason(g: ir.Graph, op: ir.LayerNorm, cfg: AccelConfig) -> str | None:
    """Why the LayerNorm unit cannot run `op` (None: it can). The unit takes one pixel's channels as
    a row (axis 1 of [N, C, H, W] or [N, K]: tony.ir.layout puts the residual stream's LayerNorms
    there), signed A_BITS-bit elements in and out, and a spec that fits its widths
    (tony.rtl.layernorm_unit.port_values on the unit the accelerator renders)."""
    from ..rtl.layernorm_unit import accel_unit_params, port_values

    x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    rank = len(x.shape)
    if rank not in (2, 4) or op.axis % rank != 1:
        return (f"a LayerNorm over axis {op.axis} of a {rank}-D tensor (the LayerNorm unit's rows are a pixel's "
                "channels: axis 1 of [N, C, H, W] or [N, K])")
    if op.inputs[1] not in g.constants or op.inputs[2] not in g.constants:
        return "its gamma or beta is computed, not a constant (the gamma/beta memory is loaded from the image)"
    n, limit = x.shape[1], cfg.ln_n if cfg.ln_n >= 0 else LN_MAX_N
    if limit == 0:
        return "the accelerator has no LayerNorm unit"
    if n > limit:
        return f"rows of {n} elements (the LayerNorm unit takes up to {limit})"
    if not (x.dtype.signed and y.dtype.signed and x.dtype.bits <= cfg.a_bits and y.dtype.bits <= cfg.a_bits):
        return (f"a LayerNorm of {x.dtype} to {y.dtype} (the LayerNorm unit takes and writes signed "
                f"{cfg.a_bits}-bit activations)")
    try:
        port_values(norm_spec(g, op), **accel_unit_params(limit, cfg.a_bits))
    except UnsupportedError as e:
        return f"a spec the LayerNorm unit cannot hold ({e.message})"
    return None


def emit_norm(ctx: Ctx, p: OpPlan) -> Code:
    """`SYNC stream` (only after an earlier NORM of the program, which may still read the gamma/beta
    memory), `LOAD gb` of the row's n gamma/beta words, the planner's DMA for the operand, `SYNC dma`,
    then one NORM over every pixel of the tensor (all samples): row p is pixel p's C channels, lane l
    of channel group g at base + p + g*gstride in the source and the result alike (docs/isa.md,
    'NORM')."""
    from ..rtl.layernorm_unit import gb_words

    op, g, cfg = p.op, ctx.g, ctx.cfg
    why = norm_reason(g, op, cfg)
    if why:
        raise UnsupportedError(f"{why} is not supported on this accelerator", where=where(op))
    spec = norm_spec(g, op)
    n = spec.n
    load = ([sync(isa.S_STREAM)] if ctx.gb0 else []) + [dma(isa.LOAD, isa.B_GB, 0, Ext("gb", ctx.gb0), n)]

    def body(site: Site, whole: bool) -> list[Instr]:
        x, dst = _whole_rows(site, whole, op, "a LayerNorm")
        return [sync(isa.S_DMA),
                instr(isa.NORM, flags=isa.F_A_SIGNED, ibase=x.base, obase=dst.base, npix=x.gstride, klen=n,
                      cstride=x.gstride, mult=spec.eps_int, sa=spec.sqrt_bits, sb=spec.norm_bits, shift=spec.shift,
                      lo=spec.lo, hi=spec.hi)]
    return Code(tuple(load) + run_sites(p, body), gbs=(tuple(gb_words(spec.gamma, spec.beta)),),
                info={"row_length": n})


EMITTERS = {
    ir.Conv: emit_conv, ir.Dense: emit_conv, ir.PixelMatMul: emit_pixel_matmul,
    ir.MaxPool: emit_pool, ir.AvgPool: emit_pool,
    ir.Add: emit_ewise, ir.Clamp: emit_ewise,
    ir.Concat: emit_concat,
    ir.Table: emit_table,
    ir.Softmax: emit_softmax,
    ir.LayerNorm: emit_norm,
}


def emit(ctx: Ctx, p: OpPlan) -> Code:
    """The instructions of one planned op."""
    fn = EMITTERS.get(type(p.op))
    check_operands(ctx, p.op)
    if fn is None:
        raise UnsupportedError(f"{type(p.op).__name__} has no accelerator mapping", where=where(p.op),
                               hint="`tony run` executes it in the reference")
    return fn(ctx, p)
