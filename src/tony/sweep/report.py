"""A sweep's reports: SWEEP/report.html (Pareto scatter per model and overall, the Pareto tables and
the results table) and the terminal table of the fronts."""
from __future__ import annotations

from pathlib import Path

from ..report_html import PAGE, facts, figure_svg, new_figure, num, page, pct, plain, table
from . import pareto

LABELS = {"cycles": "cycles per run", "latency_us": "µs per run", "pes": "PEs (rows x cols)",
          "buffer_bits": "on-chip buffer bits", "lut": "LUTs", "dsp": "DSPs", "bram": "block RAMs"}


def shape(r: dict) -> str:
    s = f"{r['rows']}x{r['cols']}"
    if r.get("abuf_words"):
        s += f" a{r['abuf_words']}"
    if r.get("mem_bits", 64) != 64:
        s += f" m{r['mem_bits']}"
    if r.get("batch", 1) != 1:
        s += f" b{r['batch']}"
    return s


def scatter(points: list[dict], title: str) -> str:
    """Latency against each cost axis; the front drawn as a step line through its points, labelled."""
    lat, cost = pareto.axes(points)
    fig, axes = new_figure(4.2 * len(cost), 3.6, ncols=len(cost))
    for ax, c in zip(axes, cost):
        on = [p for p in points if p["pareto"]]
        off = [p for p in points if not p["pareto"]]
        ax.scatter([p[c] for p in off], [p[lat] for p in off], color="#9aa5b1", s=22, label="dominated")
        ax.scatter([p[c] for p in on], [p[lat] for p in on], color="#e45756", s=36, zorder=3, label="Pareto front")
        best = sorted(on, key=lambda p: (p[c], p[lat]))
        stairs, low = [], None
        for p in best:
            if low is None or p[lat] < low:
                stairs.append(p)
                low = p[lat]
        if len(stairs) > 1:
            ax.step([p[c] for p in stairs], [p[lat] for p in stairs], where="post", color="#e45756", lw=1)
        for p in on:
            plain(ax.annotate(shape(p), (p[c], p[lat]), textcoords="offset points", xytext=(4, 4), fontsize=7))
        if c in ("pes", "buffer_bits", "lut"):
            ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(LABELS[c])
        ax.set_ylabel(LABELS[lat])
        ax.grid(True, which="both", alpha=0.25)
    plain(fig.suptitle(title))
    plain(axes[-1].legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7).get_texts())
    return figure_svg(fig, f"{title}: {LABELS[lat]} against {', '.join(LABELS[c] for c in cost)}; red: "
                           "not dominated in all of them together")


def front_rows(rows: list[dict]) -> list[list]:
    lat, cost = pareto.axes(rows)
    return [[r["model"], shape(r), num(r[lat]), *[num(r[c]) for c in cost], pct(r["utilization"]),
             num(r["traffic_bytes"])] for r in rows if r["pareto"]]


def _config_table(conf: list[dict]) -> str:
    lat, cost = pareto.axes(conf)
    return table(["configuration", f"total {LABELS[lat]}", *[LABELS[c] for c in cost], "on the front"],
                 [[shape(e), num(e[lat]), *[num(e[c]) for c in cost], "yes" if e["pareto"] else ""] for e in conf],
                 row_class=lambda k: "front" if conf[k]["pareto"] else "")


RESULT_HEADERS = ["model", "configuration", "status", "cycles/run", "MACs/run", "utilization", "traffic bytes",
                  "PEs", "buffer bits", "LUT", "DSP", "BRAM", "Fmax MHz", "µs/run", "sim", "Pareto", "overall"]


def _result_row(r: dict) -> list:
    sim = "" if not r.get("sim_samples") else ("bit-exact, cycles equal" if r["bit_exact"] and r["cycles_match"]
                                               else "MISMATCH")
    return [r["model"], shape(r), r["status"] if r["status"] == "ok" else f"error: {r['error']}", num(r["cycles"]),
            num(r["macs"]), pct(r["utilization"]), num(r["traffic_bytes"]), num(r["pes"]), num(r["buffer_bits"]),
            num(r["lut"]), num(r["dsp"]), num(r["bram"]), num(r["fmax_mhz"]), num(r["latency_us"]), sim,
            "yes" if r["pareto"] else "", "yes" if r["pareto_overall"] else ""]


def sweep_page(rows: list[dict], summary: dict) -> str:
    ok = [r for r in rows if r["status"] == "ok"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    shapes = list(dict.fromkeys(shape(r) for r in rows))
    body = [facts([("models", ", ".join(models)), ("configurations", ", ".join(shapes)),
                   ("points", f"{len(rows)} ({len(rows) - len(ok)} failed)"),
                   ("run", f"{summary.get('mode', '?')}, {summary.get('wall_s', 0):.1f} s for the last run")])]
    body.append("<h2>Pareto front per model</h2>")
    for model in models:
        pts = [r for r in ok if r["model"] == model]
        if pts:
            body.append(scatter(pts, model))
    body.append(table(["model", "configuration", "latency", *[LABELS[c] for c in pareto.axes(ok)[1]], "utilization",
                       "traffic bytes"], front_rows(ok), left=2, caption="the points on each model's front"))
    conf = pareto.configurations(rows)
    body.append("<h2>Pareto front over all models</h2>")
    if conf:
        body.append(scatter(conf, "all models (latency summed)"))
        body.append(_config_table(conf))
    else:
        body.append("<p>No configuration ran every model.</p>")
    body.append("<h2>All points</h2>")
    body.append(table(RESULT_HEADERS, [_result_row(r) for r in rows], left=3,
                      row_class=lambda k: "front" if rows[k]["pareto"] else ""))
    return page("Tony design-space sweep", body)


def write_sweep_report(out, rows: list[dict] | None = None) -> Path:
    from ..build import write_text
    from .runner import summary_json
    from .store import read_results

    rows = read_results(out) if rows is None else rows
    p = Path(out) / PAGE
    write_text(p, sweep_page(rows, summary_json(out)))
    return p


def print_sweep(rows: list[dict], console=None) -> None:
    """The fronts as terminal tables."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from ..errors import show

    console = console or Console(width=140)
    ok = [r for r in rows if r["status"] == "ok"]
    lat, cost = pareto.axes(ok)
    t = Table(title=f"Pareto front per model: {LABELS[lat]} against {', '.join(LABELS[c] for c in cost)}")
    for c in ("model", "configuration", "latency", *[LABELS[c] for c in cost], "utilization", "traffic bytes"):
        t.add_column(c, justify="left" if c in ("model", "configuration") else "right")
    for r in front_rows(ok):
        t.add_row(*[Text(show(x)) for x in r])
    console.print(t)
    conf = pareto.configurations(rows)
    if conf:
        lat, cost = pareto.axes(conf)
        t = Table(title=f"over all models: total {LABELS[lat]} per configuration")
        for c in ("configuration", "latency", *[LABELS[c] for c in cost], "front"):
            t.add_column(c, justify="left" if c == "configuration" else "right")
        for e in conf:
            t.add_row(Text(shape(e)), num(e[lat]), *[num(e[c]) for c in cost], "yes" if e["pareto"] else "")
        console.print(t)
    bad = [r for r in rows if r["status"] != "ok"]
    for r in bad:
        console.print(f"failed: {show(r['model'])} {shape(r)}: {show(r['error'])}", markup=False, highlight=False)
