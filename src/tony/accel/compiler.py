"""Compiler back end for the instruction-driven accelerator (docs/isa.md, docs/architecture.md).

IR device ops -> a program (instruction words) + one external-memory image (program, weights,
biases, inputs) + the layout of every tensor, for an accelerator of a given `AccelConfig`, in
stages that each take one data structure to the next:

    liveness.analyse   graph -> Tensors          views, Concat slices, device I/O, last uses
    plan.plan_memory   Tensors -> MemoryPlan     placements, spills, reloads, row bands (bands.py)
    emit.emit          OpPlan -> Code            per op type (EMITTERS), instructions + weights
    link.link          Codes -> Program          weight double-buffering, image, encoding, sizes
    check.check        Program -> ok | error     every rule of docs/isa.md (check.RULES)
"""
from __future__ import annotations

from .. import ir
from .check import check
from .emit import Ctx, emit
from .link import link
from .liveness import analyse, where
from .plan import plan_memory
from .program import AccelConfig, Program


def compile_program(g: ir.Graph, cfg: AccelConfig, batch: int = 1) -> Program:
    """Schedule every device op of `g` onto the accelerator; returns the checked program and memory image."""
    t = analyse(g, cfg.cols)
    mp = plan_memory(t, cfg, batch)
    codes, bias0 = [], 0
    for step in mp.steps:
        code = emit(Ctx(g, cfg, batch, t, bias0), step)
        bias0 += len(code.biases)
        codes.append(code)
    names = [(s.op.origin or s.op.outputs[0], s.op.kind) for s in mp.steps]
    prog = link(t, cfg, batch, mp, codes, names, [where(s.op) for s in mp.steps])
    check(prog)
    return prog
