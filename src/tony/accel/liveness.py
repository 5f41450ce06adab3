"""Which storage every tensor of the device ops uses, and for how long.

Reshape outputs are views of their input's storage (Reshape never moves data). A Concat along
channels whose input is at the output's scale and starts at a whole channel group is written by
that input's producer straight into its slice of the output (zero copy); every other input is
copied by the vector unit. `analyse` returns these facts with the device inputs and outputs
and the last op that uses each storage root.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import ir
from ..errors import UnsupportedError


def where(op) -> str:
    return f'node "{op.origin or op.outputs[0]}" ({type(op).__name__})'


def activations(op) -> tuple[str, ...]:
    """The inputs of an op that the activation buffer holds (a Conv's or Dense's weights and bias
    are not; nor is a PixelMatMul's second operand, which goes from external memory straight into
    the weight buffer, or a Table's table, which goes into the table memory, or a LayerNorm's gamma
    and beta, which go into the LayerNorm unit's gamma/beta memory)."""
    return tuple(op.inputs[:1]) if isinstance(op, (ir.Conv, ir.Dense, ir.PixelMatMul, ir.Table, ir.LayerNorm)) \
        else tuple(op.inputs)


def weight_operands(op) -> tuple[str, ...]:
    """Activations that an op reads as weights: a PixelMatMul's second operand (docs/isa.md,
    'Activations as weights')."""
    return tuple(op.inputs[1:2]) if isinstance(op, ir.PixelMatMul) else ()


@dataclass(frozen=True)
class Tensors:
    g: ir.Graph
    cols: int
    view: dict          # tensor -> tensor whose storage it shares (Reshape)
    cslice: dict        # tensor -> (Concat output holding it, first channel group)
    inputs: tuple       # device inputs (storage roots), in first-use order
    outputs: tuple      # device outputs (tensor names)
    last_use: dict      # storage root -> index of the last device op reading it (len(ops): an output)

    @property
    def ops(self):
        return self.g.device_ops

    def root(self, name: str) -> str:
        r = self.view.get(name, name)
        return self.cslice[r][0] if r in self.cslice else r

    def reads(self, op) -> list[str]:
        return [self.root(n) for n in activations(op)]

    def chw(self, name: str) -> tuple[int, int, int]:
        shp = self.g.tensors[name].shape
        if len(shp) == 4:
            return shp[1], shp[2], shp[3]
        if len(shp) == 2:
            return shp[1], 1, 1
        raise UnsupportedError(f"tensor '{name}' has shape {list(shp)}; the accelerator stores [N, C, H, W] or [N, K]",
                               where=f"tensor {name}")

    def in_place(self, op) -> list[bool]:
        """Per Concat input: was it written in place (by its producer) into its channel groups?"""
        offs = np.cumsum([0] + [self.g.tensors[n].shape[1] for n in op.inputs])
        return [self.cslice.get(n) == (op.outputs[0], int(o) // self.cols) for n, o in zip(op.inputs, offs)]


def _views(ops) -> dict:
    view: dict[str, str] = {}
    for op in ops:
        if isinstance(op, ir.Reshape):
            view[op.outputs[0]] = view.get(op.inputs[0], op.inputs[0])
    return view


def _concat_slices(g: ir.Graph, ops, view: dict, cols: int) -> dict:
    producers = {o: op for op in ops for o in op.outputs}
    produced = {view.get(o, o) for op in ops if not isinstance(op, ir.Reshape) for o in op.outputs}
    graph_outs = set(g.outputs) | {op.inputs[0] for op in g.ops if op.host}
    cslice: dict[str, tuple[str, int]] = {}
    for op in ops:
        if not isinstance(op, ir.Concat):
            continue
        nd = len(g.tensors[op.outputs[0]].shape)
        if op.axis != 1 or nd not in (2, 4):
            raise UnsupportedError(f"Concat along axis {op.axis} of a {nd}-d tensor; the accelerator concatenates "
                                   "channels (axis 1) of [N, C, H, W] or [N, K] tensors", where=where(op))
        off = 0
        for name, rq in zip(op.inputs, op.requants):
            t = g.tensors[name]
            # an input starting inside a channel group is merged into it by EWISE (emit_concat)
            identity = off % cols == 0 and (rq is not None and not rq.per_channel and rq.mult == 1 and rq.shift == 0
                        and not rq.zero_point and rq.lo <= t.dtype.min and rq.hi >= t.dtype.max)
            if (identity and name in produced and name not in view and name not in cslice
                    and name not in graph_outs and not isinstance(producers.get(name), ir.Concat)):
                cslice[name] = (op.outputs[0], off // cols)
            off += t.shape[1]
    return cslice


def _device_outputs(g: ir.Graph) -> tuple:
    outs = []
    for op in g.ops:
        if op.host and isinstance(op, ir.Dequantize) and op.inputs[0] not in outs:
            outs.append(op.inputs[0])
    for name in g.outputs:
        if not g.tensors[name].dtype.is_float and name not in outs:
            outs.append(name)
    return tuple(outs)


def analyse(g: ir.Graph, cols: int) -> Tensors:
    """Views, Concat slices, device inputs and outputs and last uses of the device ops of `g`."""
    ops = g.device_ops
    view = _views(ops)
    t = Tensors(g, cols, view, _concat_slices(g, ops, view, cols), (), _device_outputs(g), {})
    produced = {view.get(o, o) for op in ops if not isinstance(op, ir.Reshape) for o in op.outputs}
    inputs = []
    for op in ops:
        for r in t.reads(op) + list(weight_operands(op)):
            if r not in produced and r not in g.constants and r not in inputs:
                inputs.append(r)
    last_use: dict[str, int] = {}
    for i, op in enumerate(ops):
        for name in op.inputs:
            if name not in g.constants:
                last_use[t.root(name)] = i
    for name in t.outputs:
        last_use[t.root(name)] = len(ops)
    return Tensors(g, cols, view, t.cslice, tuple(inputs), t.outputs, last_use)
