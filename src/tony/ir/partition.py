"""Where each op of a graph runs: host ops before the device, the device ops, host ops after.

One function for every back end (the accelerator's scheduler, the HLS back end, the simulators
that run host ops around the device): the device part's inputs are what the host hands over,
its outputs what the host reads back.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import UnsupportedError
from .ops import Graph, Op


@dataclass(frozen=True)
class Partition:
    pre: tuple[Op, ...]          # host ops that feed the device (Quantize of graph inputs)
    device: tuple[Op, ...]       # ops the device runs, in graph order
    post: tuple[Op, ...]         # host ops on device results (Dequantize of graph outputs)
    inputs: tuple[str, ...]      # tensors the device reads from the host, first use first
    outputs: tuple[str, ...]     # tensors the host reads back (graph outputs, host-op inputs)

    def parts(self) -> tuple[list, list, list, list[str], list[str]]:
        return list(self.pre), list(self.device), list(self.post), list(self.inputs), list(self.outputs)


def partition(g: Graph) -> Partition:
    """Split `g` into host ops before the device, the device ops and host ops after it; refuses,
    naming the op, a device op fed by a host op that itself reads device results."""
    dev = g.device_ops
    if not dev:
        raise UnsupportedError("the model has no operator that runs on the device", where="model",
                               hint="`tony run` executes it in the reference")
    produced_dev = {o for op in dev for o in op.outputs}
    tainted = set(produced_dev)
    pre, post = [], []
    for op in g.ops:
        if not op.host:
            continue
        if any(i in tainted for i in op.inputs):
            post.append(op)
            tainted.update(op.outputs)
        else:
            pre.append(op)
    post_out = {o for op in post for o in op.outputs}
    for op in dev:
        if any(i in post_out for i in op.inputs):
            raise UnsupportedError("a host operator sits between device operators", where=op.where,
                                   hint="keep Quantize/Dequantize at the model's boundary")
    seen, dins = set(), []
    for op in dev:
        for i in op.inputs:
            if i not in produced_dev and i not in g.constants and i not in seen:
                seen.add(i)
                dins.append(i)
    consumed_host = {i for op in post for i in op.inputs}
    douts = [o for op in dev for o in op.outputs if o in consumed_host or o in g.outputs]
    return Partition(tuple(pre), tuple(dev), tuple(post), tuple(dins), tuple(douts))
