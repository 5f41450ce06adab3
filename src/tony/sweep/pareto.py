"""The Pareto front of a sweep: latency against hardware cost, all minimized.

Latency is the cycles of one run (µs where every point of the set has an Fmax). Cost is the
synthesized overlay's LUTs, DSPs and block RAMs where every point of the set was synthesized, and
otherwise the proxies PE count (rows x cols) and on-chip buffer bits. A point is on the front when
no other point is at least as good in every objective and better in one.

Per model: among that model's points. Overall: among configurations (array, buffers, memory port,
batch) on which every model of the sweep compiled; a configuration's latency is the sum over the
models (running each once) and its cost that of its overlay, whose buffers are as deep as the
deepest model needs.
"""
from __future__ import annotations

from ..accel.isa import INSTR_BITS
from ..accel.program import AccelConfig

SYNTH_COST = ("lut", "dsp", "bram")
PROXY_COST = ("pes", "buffer_bits")


def front(objectives: list[tuple]) -> list[bool]:
    """For each objective vector (all minimized): True when no other vector dominates it."""
    out = []
    for i, a in enumerate(objectives):
        dominated = any(all(x <= y for x, y in zip(b, a)) and any(x < y for x, y in zip(b, a))
                        for j, b in enumerate(objectives) if j != i)
        out.append(not dominated)
    return out


def axes(rows: list[dict]) -> tuple[str, tuple[str, ...]]:
    """The latency column and cost columns for a set of rows: real figures where all rows have them."""
    latency = "latency_us" if rows and all(r.get("latency_us") is not None for r in rows) else "cycles"
    cost = SYNTH_COST if rows and all(all(r.get(k) is not None for k in SYNTH_COST) for r in rows) else PROXY_COST
    return latency, cost


def overlay_bits(cols: int, abuf: int, wbuf: int, bbuf: int, imem: int) -> int:
    c = AccelConfig()
    return cols * (abuf * c.a_bits + wbuf * c.w_bits + bbuf * c.acc_bits) + imem * INSTR_BITS


def config_key(r: dict) -> tuple:
    return (r["rows"], r["cols"], r["abuf_words"], r["mem_bits"], r["batch"])


def configurations(rows: list[dict]) -> list[dict]:
    """One entry per configuration of the sweep on which every model compiled: total latency over
    the models and the overlay's cost, with its place on the overall front (`pareto`)."""
    models = sorted({r["model"] for r in rows})
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault(config_key(r), []).append(r)
    out = []
    for key, rs in groups.items():
        ok = [r for r in rs if r["status"] == "ok"]
        if sorted({r["model"] for r in ok}) != models:
            continue
        depth = {b: max(r[b] for r in ok) for b in ("abuf", "wbuf", "bbuf", "imem")}
        s = ok[0]
        e = {"rows": key[0], "cols": key[1], "abuf_words": key[2], "mem_bits": key[3], "batch": key[4],
             "pes": key[0] * key[1], "models": len(models), "cycles": sum(r["cycles"] for r in ok),
             "buffer_bits": overlay_bits(key[1], **depth), "lut": s.get("lut"), "dsp": s.get("dsp"),
             "bram": s.get("bram"), "fmax_mhz": s.get("fmax_mhz"),
             "latency_us": sum(r["latency_us"] for r in ok) if all(r.get("latency_us") is not None for r in ok)
             else None}
        out.append(e)
    out.sort(key=lambda e: (e["pes"], e["rows"], e["abuf_words"], e["mem_bits"], e["batch"]))
    lat, cost = axes(out)
    for e, on in zip(out, front([(e[lat],) + tuple(e[k] for k in cost) for e in out])):
        e["pareto"] = on
    return out


def mark(rows: list[dict]) -> list[dict]:
    """`rows` with `pareto` (per model) and `pareto_overall` set (False for failed points)."""
    rows = [dict(r, pareto=False, pareto_overall=False) for r in rows]
    for model in sorted({r["model"] for r in rows}):
        ok = [r for r in rows if r["model"] == model and r["status"] == "ok"]
        lat, cost = axes(ok)
        for r, on in zip(ok, front([(r[lat],) + tuple(r[k] for k in cost) for r in ok])):
            r["pareto"] = on
    best = {config_key(e) for e in configurations(rows) if e["pareto"]}
    for r in rows:
        r["pareto_overall"] = r["status"] == "ok" and config_key(r) in best
    return rows
