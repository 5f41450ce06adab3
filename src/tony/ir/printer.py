"""Text form of the IR, for `tony ir`, a build's ir.txt and failing tests: one line per value or op,
model names (graph, tensors) escaped by `show` so a newline or control character in a name cannot
break a line or reach the terminal raw."""
from __future__ import annotations

from ..errors import show
from . import ops as O
from .types import Requant


def _fmt(v) -> str:
    if isinstance(v, Requant):
        return v.describe()
    if isinstance(v, tuple) and v and isinstance(v[0], Requant):
        return "(" + ", ".join(r.describe() for r in v) + ")"
    if hasattr(v, "name") and hasattr(v, "bits"):
        return str(v)
    return repr(v)


def format_graph(g: O.Graph) -> str:
    lines = [f"graph {show(g.name)} ({g.meta.get('requant', 'pow2')} requant)"]
    for name in g.inputs:
        lines.append(f"  input  %{show(name)}: {g.tensors[name].describe()}")
    for name, arr in g.constants.items():
        t = g.tensors[name]
        lines.append(f"  const  %{show(name)}: {t.describe()} range [{arr.min()}, {arr.max()}]")
    for op in g.ops:
        outs = ", ".join(f"%{show(o)}: {g.tensors[o].describe()}" for o in op.outputs)
        ins = ", ".join(f"%{show(i)}" for i in op.inputs)
        attrs = ", ".join(f"{k}={_fmt(v)}" for k, v in op.attrs().items() if v not in (None, ()))
        where = "host " if op.host else ""
        lines.append(f"  {outs} = {where}{op.kind}({ins}){' {' + attrs + '}' if attrs else ''}")
    lines.append("  return " + ", ".join(f"%{show(o)}" for o in g.outputs))
    return "\n".join(lines)
