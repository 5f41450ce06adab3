"""Compiler back end for the instruction-driven accelerator (docs/isa.md, docs/architecture.md).

IR device ops -> a program (instruction words) + one external-memory image (program, weights,
biases, inputs) + the layout of every tensor, for an accelerator of a given `AccelConfig`, in
stages that each take one data structure to the next:

    liveness.analyse   graph -> Tensors          views, Concat slices, device I/O, last uses
    plan.plan_memory   Tensors -> MemoryPlan     placements, spills, reloads, row bands (bands.py)
    emit.emit          OpPlan -> Code            per op type (EMITTERS), instructions + weights
    overlap.input_bands  MemoryPlan, Codes ->    the input loaded band by band under the first layer
                                                 (kept where the cycle model says it is faster)
    overlap.fused_bands  MemoryPlan, Codes ->    ... or under the first two, their row bands interleaved
                                                 (the plan keeps the input's words: overlap.fusion_hold)
    link.link          Codes -> Program          weight double-buffering, image, encoding, sizes
    check.check        Program -> ok | error     every rule of docs/isa.md (check.RULES)
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from .. import ir
from . import model
from .check import check
from .emit import Ctx, emit
from .link import link
from .liveness import analyse, where
from .overlap import fused_bands, fusion_hold, input_bands
from .plan import plan_memory
from .program import AccelConfig, Program


def per_channel_need(g: ir.Graph) -> str:
    """What per-channel requantization the device ops of `g` need: "none", "shift" (per-channel
    shifts, every mult 1: pow2 mode) or "mult" (multipliers and shifts: multiplier mode)."""
    need = "none"
    for op in g.ops:
        rq = getattr(op, "requant", None)
        if op.host or not isinstance(op, (ir.Conv, ir.Dense)) or rq is None or not rq.per_channel:
            continue
        if not rq.is_pow2:
            return "mult"
        need = "shift"
    return need


def softmax_need(g: ir.Graph) -> int:
    """The longest row of the device Softmax ops of `g` (over axis 1: a pixel's channels): the
    Softmax unit's MAX_N for an accelerator sized to the model; 0 (no unit) without one."""
    return max((g.tensors[op.inputs[0]].shape[1] for op in g.device_ops if isinstance(op, ir.Softmax)), default=0)


def layernorm_need(g: ir.Graph) -> int:
    """The longest row of the device LayerNorm ops of `g` (over axis 1: a pixel's channels): the
    LayerNorm unit's N_MAX for an accelerator sized to the model; 0 (no unit) without one."""
    return max((g.tensors[op.inputs[0]].shape[1] for op in g.device_ops if isinstance(op, ir.LayerNorm)),
               default=0)


def _emit_all(g: ir.Graph, cfg: AccelConfig, batch: int, t, mp) -> list:
    """Every planned op's code, its bias words, tables and gamma/beta images numbered after the ops'
    before it."""
    codes, bias0, tab0, gb0 = [], 0, 0, 0
    for step in mp.steps:
        code = emit(Ctx(g, cfg, batch, t, bias0, tab0, gb0), step)
        bias0 += len(code.biases)
        tab0 += len(code.tables)
        gb0 += len(code.gbs)
        codes.append(code)
    return codes


def compile_program(g: ir.Graph, cfg: AccelConfig, batch: int = 1) -> Program:
    """Schedule every device op of `g` onto the accelerator; returns the checked program and memory
    image. An accelerator sized to the model (cfg.per_channel "") stores per-channel scales in its
    bias words as the model needs (per_channel_need), and (cfg.smx_n -1) has a Softmax unit for its
    longest device Softmax row, or none (softmax_need), and (cfg.ln_n -1) a LayerNorm unit likewise
    (layernorm_need)."""
    if not cfg.per_channel:
        cfg = replace(cfg, per_channel=per_channel_need(g))
    if cfg.smx_n < 0:
        cfg = replace(cfg, smx_n=softmax_need(g))
    if cfg.ln_n < 0:
        cfg = replace(cfg, ln_n=layernorm_need(g))
    t = analyse(g, cfg.cols)
    mp = plan_memory(t, cfg, batch)
    codes = _emit_all(g, cfg, batch, t, mp)
    names = [(s.op.origin or s.op.outputs[0], s.op.kind) for s in mp.steps]
    wheres = [where(s.op) for s in mp.steps]
    prog = link(t, cfg, batch, mp, codes, names, wheres)
    # the input loaded under the first layer, or under the first two (their row bands interleaved, the
    # input's words kept until the second has run), where the cycle model says it saves time and the
    # activation buffer needs no more words
    alts = [input_bands(t, cfg, batch, mp, codes)]
    hold = fusion_hold(t, cfg, batch, mp)
    if hold:
        mp_h = plan_memory(t, cfg, batch, hold)
        alts.extend(fused_bands(t, cfg, batch, mp_h, _emit_all(g, cfg, batch, t, mp_h)))
    for mp2, codes2 in alts:
        if mp2.split:
            alt = link(t, cfg, batch, mp2, codes2, names, wheres)
            if model.cycles(alt).total < model.cycles(prog).total and alt.cfg.abuf_words <= prog.cfg.abuf_words:
                prog = alt
    check(prog)
    return prog


def run_partitioned(g: ir.Graph, cfg: AccelConfig, feeds: dict, part, *, batch: int = 1) -> tuple[dict, int]:
    """The whole graph with every device segment compiled and executed by the instruction-level
    model (model.run, one run per `batch` samples) and host segments in the reference between
    them. Returns (every tensor computed, predicted cycles per run summed over the segments)."""
    from ..ir.partition import subgraph
    from ..ref import execute_segments
    from . import model
    from .layout import input_beats, read_outputs

    total = [0]

    def device(k, seg, ins):
        prog = compile_program(subgraph(g, seg, f"{g.name}.seg{k}"), cfg, batch=batch)
        total[0] += model.cycles(prog).total
        n = next(iter(ins.values())).shape[0]
        outs = {o: [] for o in seg.outputs}
        for s in range(0, n, batch):
            chunk = {name: v[s:s + batch] for name, v in ins.items()}
            pad = batch - next(iter(chunk.values())).shape[0]
            if pad:
                chunk = {name: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)]) for name, v in chunk.items()}
            got = read_outputs(prog, model.run(prog, input_beats(prog, chunk), g.meta.get("rounding", "half_even")))
            for o in seg.outputs:
                outs[o].append(np.asarray(got[o]).reshape((batch,) + g.tensors[o].shape[1:])[:batch - pad])
        return [np.concatenate(outs[o]) for o in seg.outputs]
    env = execute_segments(g, part, feeds, device)
    return env, total[0]
