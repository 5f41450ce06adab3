"""Where each op of a graph runs: an ordered list of segments, host and device alternating.

One function for every back end (the accelerator's scheduler, the HLS back end, the simulators
that run host segments between device segments, the compile report). A back end says which ops
it can run (`refuse(op) -> reason or None`); every other op runs on the host with the reference's
exact arithmetic. Ops are taken in graph order (a topological order); a device segment is a
maximal run of consecutive device ops, so the order of segments is an order in which the host
can run them: segment k reads only graph inputs, constants and outputs of segments before it.

A device segment's `inputs` are the tensors the host hands over (graph inputs or host results),
its `outputs` what the host reads back (graph outputs and inputs of later segments).
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from ..errors import UnsupportedError
from .ops import Graph, Op

BOUNDARY = "float <-> integer at the host boundary"


@dataclass(frozen=True)
class Segment:
    device: bool                 # True: the accelerator runs it; False: the host (the reference)
    ops: tuple[Op, ...]
    inputs: tuple[str, ...]      # tensors read from earlier segments or the graph's inputs, first use first
    outputs: tuple[str, ...]     # tensors read by later segments or graph outputs

    @property
    def kind(self) -> str:
        return "device" if self.device else "host"


@dataclass(frozen=True)
class Placement:
    op: Op
    device: bool
    reason: str                  # why it is on the host ("" on the device)
    segment: int


@dataclass(frozen=True)
class Partition:
    segments: tuple[Segment, ...]
    placement: tuple[Placement, ...]

    @property
    def device_segments(self) -> list[Segment]:
        return [s for s in self.segments if s.device]

    @property
    def simple(self) -> bool:
        """One device segment between host segments that hold only the float boundary
        (Quantize of graph inputs before it, Dequantize of its results after it)."""
        dev = [i for i, s in enumerate(self.segments) if s.device]
        if len(dev) != 1:
            return False
        return all(p.device or p.reason == BOUNDARY for p in self.placement)

    def host_ops(self) -> list[Placement]:
        """Ops kept off the device, excluding the float boundary (Quantize/Dequantize)."""
        return [p for p in self.placement if not p.device and p.reason != BOUNDARY]

    def parts(self) -> tuple[list, list, list, list[str], list[str]]:
        """(host ops before, device ops, host ops after, device inputs, device outputs) of a
        partition with one device segment."""
        dev = [i for i, s in enumerate(self.segments) if s.device]
        assert len(dev) == 1, "parts() needs exactly one device segment"
        k = dev[0]
        pre = [op for s in self.segments[:k] for op in s.ops]
        post = [op for s in self.segments[k + 1:] for op in s.ops]
        s = self.segments[k]
        return pre, list(s.ops), post, list(s.inputs), list(s.outputs)


def default_refuse(op: Op) -> str | None:
    """The IR's own rule: host ops (the float boundary and ops without a device mapping) run on the host."""
    if not op.host:
        return None
    return BOUNDARY if op.kind in ("quantize", "dequantize") else getattr(op, "host_reason", "no device mapping")


def _io(g: Graph, segs: list[tuple[bool, list[Op]]]) -> tuple[Segment, ...]:
    produced_in = {}
    for k, (_, ops) in enumerate(segs):
        for op in ops:
            for o in op.outputs:
                produced_in[o] = k
    read_later: dict[str, int] = {}
    for k, (_, ops) in enumerate(segs):
        for op in ops:
            for i in op.inputs:
                if produced_in.get(i, -1) != k and i not in g.constants:
                    read_later[i] = max(read_later.get(i, -1), k)
    out = []
    for k, (dev, ops) in enumerate(segs):
        seen, ins = set(), []
        for op in ops:
            for i in op.inputs:
                if i not in g.constants and produced_in.get(i, -1) != k and i not in seen:
                    seen.add(i)
                    ins.append(i)
        outs = [o for op in ops for o in op.outputs
                if o in g.outputs or read_later.get(o, -1) > k]
        out.append(Segment(dev, tuple(ops), tuple(ins), tuple(dict.fromkeys(outs))))
    return tuple(out)


def _some_device(marks) -> None:
    """Refuse a graph with nothing for the device, naming the first op that could not go there:
    the first of a kind the device runs (a Conv whose input has a zero point, say) before any op
    with no accelerator mapping at all, whose reason says less."""
    if any(dev for _, dev, _ in marks):
        return
    refused = [(op, why) for op, _, why in marks if why != BOUNDARY]
    first = next(((op, why) for op, why in refused if not op.host), None) or next(iter(refused), None)
    if first is None:
        raise UnsupportedError("the model has no operator that runs on the device", where="model",
                               hint="`tony run` executes it in the reference")
    raise UnsupportedError(f"the model has no operator that runs on the device; this one cannot ({first[1]})",
                           where=first[0].where, hint="`tony run` executes it in the reference")


def _schedule(g: Graph, marks: list) -> list:
    """Graph order changed only to keep same-side ops together: of the ops whose inputs are
    ready, take the first of the side now running; switch sides when none is left."""
    avail = set(g.inputs) | set(g.constants)
    todo = list(marks)
    order = []
    side = None
    while todo:
        ready = [m for m in todo if all(i in avail for i in m[0].inputs)]
        pick = next((m for m in ready if m[1] == side), None) or ready[0]
        side = pick[1]
        order.append(pick)
        todo.remove(pick)
        avail.update(pick[0].outputs)
    return order


def partition(g: Graph, refuse=None) -> Partition:
    """Split `g` into alternating host and device segments. `refuse(op)` returns why `op` cannot
    run on the device (None: it can); the default is the IR's own host/device marking. Refuses a
    graph with nothing for the device."""
    refuse = refuse or default_refuse
    marks = []
    for op in g.ops:
        why = default_refuse(op) or refuse(op)
        marks.append((op, why is None, why or ""))
    _some_device(marks)
    while True:
        segs: list[tuple[bool, list[Op]]] = []
        placement = []
        for op, dev, why in _schedule(g, marks):
            if not segs or segs[-1][0] != dev:
                segs.append((dev, []))
            segs[-1][1].append(op)
            placement.append(Placement(op, dev, why, len(segs) - 1))
        idle = {id(op) for dev, ops in segs if dev and all(op.kind == "reshape" for op in ops) for op in ops}
        if not idle:
            return Partition(_io(g, segs), tuple(placement))
        marks = [(op, False, "a reshape with nothing to compute around it on the device") if id(op) in idle
                 else (op, dev, why) for op, dev, why in marks]
        _some_device(marks)


def macs(g: Graph, op: Op) -> int:
    """Multiply-accumulates of one op per sample (MAC ops only; 0 for the others)."""
    kind = op.kind
    if kind not in ("conv", "dense", "matmul", "pixel_matmul"):
        return 0
    y = g.tensors[op.outputs[0]].shape
    per_out = g.tensors[op.inputs[0]].shape[1 if kind == "pixel_matmul" else -1]
    if kind == "conv":
        w = g.tensors[op.inputs[1]].shape
        per_out = w[1] * w[2] * w[3]
    n = 1
    for d in y[1:]:
        n *= d
    return n * per_out


def report(g: Graph, p: Partition) -> dict:
    """What runs where, for the manifest and the compile report: one row per op (not the float
    boundary), the MACs on each side and the device's share."""
    rows, dev_macs, host_macs = [], 0, 0
    for pl in p.placement:
        m = macs(g, pl.op)
        if pl.device:
            dev_macs += m
        else:
            host_macs += m
        if pl.reason == BOUNDARY:
            continue
        rows.append({"op": pl.op.op_type or pl.op.kind, "node": pl.op.origin or pl.op.outputs[0], "segment": pl.segment,
                     "where": "device" if pl.device else "host", "reason": pl.reason, "macs": m})
    total = dev_macs + host_macs
    return {"segments": [{"index": i, "kind": s.kind, "ops": len(s.ops)} for i, s in enumerate(p.segments)],
            "ops": rows, "device_macs": dev_macs, "host_macs": host_macs,
            "device_mac_share": dev_macs / total if total else 1.0}


def subgraph(g: Graph, seg: Segment, name: str | None = None) -> Graph:
    """The graph of one segment alone: its inputs become graph inputs, its outputs graph outputs."""
    used = set(seg.inputs) | {n for op in seg.ops for n in op.inputs + op.outputs}
    return replace(g, name=name or g.name,
                   tensors={n: t for n, t in g.tensors.items() if n in used},
                   constants={n: a for n, a in g.constants.items() if n in used},
                   ops=tuple(seg.ops), inputs=tuple(seg.inputs), outputs=tuple(seg.outputs),
                   meta=dict(g.meta))


def first_host_op(p: Partition) -> Placement | None:
    """The first op kept off the device (besides the float boundary), for --device-only."""
    hs = p.host_ops()
    return hs[0] if hs else None
