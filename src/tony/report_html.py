"""HTML reports: one self-contained static page (inline SVG drawn by matplotlib, no script, no
network fetch when it is viewed). Every name that comes from a model goes through `html.escape`
on the page and is drawn by matplotlib as plain text (no mathtext), which escapes it again in
the SVG.

`tony report BUILD --html` writes BUILD/report.html: per-layer cycles, utilization against its
bound, memory traffic per layer, resources per unit (from synth_report.json when present) and the
tables the terminal report shows.
"""
from __future__ import annotations

import io
from html import escape
from pathlib import Path

PAGE = "report.html"

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;
color:#222;padding:0 1em}
h1{font-size:1.5em}h2{font-size:1.2em;margin-top:2em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:.85em;margin:.5em 0}
th,td{padding:.2em .6em;border-bottom:1px solid #eee;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td.l,th.l{text-align:left}
tr.front td{background:#fff6d5}.ok{color:#17803d;font-weight:bold}.bad{color:#b91c1c;font-weight:bold}
figure{margin:1em 0}figure svg{max-width:100%;height:auto}figcaption{font-size:.85em;color:#555}
ul.facts{list-style:none;padding:0}.scroll{overflow-x:auto}ul.facts li{margin:.2em 0}
"""


# ---- page building blocks --------------------------------------------------------------------------

def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>\n"
            f"<h1>{escape(title)}</h1>\n" + "\n".join(body) + "\n</body></html>\n")


def table(headers: list[str], rows: list[list], *, left: int = 1, row_class=None, caption: str = "") -> str:
    """An HTML table; every cell escaped; the first `left` columns aligned left."""
    cls = lambda i: ' class="l"' if i < left else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{escape(str(h))}</th>" for i, h in enumerate(headers))
    body = []
    for k, r in enumerate(rows):
        rc = row_class(k) if row_class else ""
        cells = "".join(f"<td{cls(i)}>{escape('' if v is None else str(v))}</td>" for i, v in enumerate(r))
        attr = f' class="{escape(rc)}"' if rc else ""
        body.append(f"<tr{attr}>{cells}</tr>")
    cap = f"<caption>{escape(caption)}</caption>" if caption else ""
    return (f"<div class=\"scroll\"><table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            "</table></div>")


def facts(items: list[tuple[str, str]]) -> str:
    return "<ul class=\"facts\">" + "".join(f"<li><b>{escape(k)}</b>: {escape(v)}</li>" for k, v in items) + "</ul>"


def figure_svg(fig, caption: str = "") -> str:
    """A matplotlib Figure as inline SVG (text kept as text), in a <figure>. The text is drawn by
    the browser's fonts, so matplotlib's warning that its own font lacks a glyph (a model name in
    CJK, say) only concerns its layout estimate and is not shown."""
    import warnings

    import matplotlib

    buf = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tony"}), warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"Glyph \d+ .* missing from font", UserWarning)
        fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    svg = buf.getvalue()
    svg = svg[svg.index("<svg"):]
    cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f"<figure>{svg}{cap}</figure>"


def new_figure(width: float, height: float, ncols: int = 1):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)


def plain(*texts) -> None:
    """Draw these matplotlib Text objects literally (a name with '$' is not mathtext)."""
    for t in texts:
        for x in (t if isinstance(t, (list, tuple)) else [t]):
            x.set_parse_math(False)


def pct(v) -> str:
    return f"{100 * v:.1f}%" if v is not None else ""


def num(v) -> str:
    if v is None:
        return ""
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def _height(n: int) -> float:
    return max(2.0, 0.28 * n + 1.0)


# ---- the build report ------------------------------------------------------------------------------

def layer_plots(layers: list[dict], measured: bool) -> list[str]:
    """Cycles per layer and utilization against its bound, as bar charts."""
    names = [l["name"] for l in layers]
    ys = list(range(len(layers)))
    fig, (ax,) = new_figure(9, _height(len(layers)))
    ax.barh([y + (0.2 if measured else 0) for y in ys], [l.get("predicted") or 0 for l in layers],
            height=0.4 if measured else 0.7, color="#4c78a8", label="predicted (cycle model)")
    if measured:
        ax.barh([y - 0.2 for y in ys], [l.get("cycles") or 0 for l in layers], height=0.4, color="#f58518",
                label="measured (Verilator)")
    ax.set_yticks(ys)
    plain(ax.set_yticklabels(names))
    ax.invert_yaxis()
    ax.set_xlabel("cycles per run")
    plain(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8).get_texts())
    out = [figure_svg(fig, "cycles per layer, one run")]
    mac = [l for l in layers if l.get("macs")]
    if mac:
        fig, (ax,) = new_figure(9, _height(len(mac)))
        ys = list(range(len(mac)))
        ax.barh(ys, [100 * (l.get("utilization") or 0) for l in mac], height=0.6, color="#54a24b",
                label="MAC utilization")
        ax.scatter([100 * (l.get("bound") or 0) for l in mac], ys, marker="|", s=300, color="#e45756", zorder=3,
                   label="bound (dataflow, memory bandwidth)")
        ax.set_yticks(ys)
        plain(ax.set_yticklabels([l["name"] for l in mac]))
        ax.invert_yaxis()
        ax.set_xlim(0, 105)
        ax.set_xlabel("% of the array's peak")
        plain(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8).get_texts())
        out.append(figure_svg(fig, "MAC utilization per layer against the best the dataflow and the memory "
                                   "port allow"))
    return out


def traffic_plot(tr: dict) -> str:
    from .accel.traffic import KINDS

    rows = tr["layers"]
    fig, (ax,) = new_figure(9, _height(len(rows)))
    ys = list(range(len(rows)))
    left = [0] * len(rows)
    colors = {"act_in": "#4c78a8", "weights": "#f58518", "bias": "#b279a2", "act_out": "#54a24b"}
    for k in KINDS:
        vals = [r[k] for r in rows]
        ax.barh(ys, vals, left=left, height=0.6, color=colors[k], label=k.replace("_", " "))
        left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(ys)
    plain(ax.set_yticklabels([r["name"] for r in rows]))
    ax.invert_yaxis()
    ax.set_xlabel("bytes moved over the memory port per run")
    plain(ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8).get_texts())
    return figure_svg(fig, f"external-memory traffic per layer ({num(tr['total']['total'])} bytes per run, "
                           f"of which {num(tr['program'])} the program read at boot)")


def synth_section(rep: dict) -> list[str]:
    """Resources per unit (module) as a chart and the synthesis tables."""
    mods = rep.get("modules", {})
    out = ["<h2>Resources per unit</h2>",
           facts([("target", f"{rep.get('target')} ({rep.get('device', '')})"),
                  ("Fmax", f"{rep['fmax_mhz']:.1f} MHz" if rep.get("fmax_mhz") else "not placed and routed"),
                  ("latency", f"{rep['performance']['latency_us']:,.1f} µs per run" if rep.get("performance")
                   else "needs Fmax (tony synth --pnr)")])]
    if mods:
        names = list(mods)
        fig, axes = new_figure(11, _height(len(names)), ncols=4)
        for ax, (key, label) in zip(axes, (("logic_luts", "LUT (with carry)"), ("ff", "FF"), ("dsp", "DSP"),
                                           ("bram", "BRAM"))):
            ax.barh(range(len(names)), [mods[n]["local"][key] for n in names], color="#4c78a8")
            ax.set_title(label)
            ax.set_yticks(range(len(names)))
            plain(ax.set_yticklabels(names if ax is axes[0] else [""] * len(names)))
            ax.invert_yaxis()
        out.append(figure_svg(fig, "resources of each unit (its own cells, summed over its instances)"))
        rows = [[n, m["instances"], num(m["local"]["lut"]), num(m["local"]["logic_luts"]), num(m["local"]["ff"]),
                 num(m["local"]["carry"]), num(m["local"]["dsp"]), num(m["local"]["bram"]), num(m["local"]["lutram"])]
                for n, m in mods.items()]
        t = rep.get("total", {})
        rows.append(["total", "", num(t.get("lut")), num(t.get("logic_luts")), num(t.get("ff")), num(t.get("carry")),
                     num(t.get("dsp")), num(t.get("bram")), num(t.get("lutram"))])
        out.append(table(["module", "instances", "LUT", "LUT+carry", "FF", "carry", "DSP", "BRAM", "LUTRAM"], rows))
    mems = rep.get("memories", [])
    if mems:
        out.append("<h3>Memories</h3>" + table(
            ["memory", "holds", "width x depth", "bits", "mapped to"],
            [[f"{x['module']}.{x['name']}", x.get("buffer", ""), f"{x['width']} x {x['depth']}", num(x["bits"]),
              x["mapped_to"]] for x in mems], left=2))
    goals = rep.get("goals", {})
    if goals:
        out.append("<h3>Goals</h3>" + table(["goal", "verdict", "detail"], [
            [k, "ok" if g["ok"] else "FAIL", f"{g['value']:.1f} vs {g['limit']:g}" if "value" in g
             else ", ".join(g.get("offenders", []))] for k, g in goals.items()], left=3))
    warns = rep.get("warnings", [])
    if warns:
        out.append("<h3>Yosys warnings</h3>" + table(["kind", "module", "signal", "where"], [
            [w["kind"], w.get("module") or "", w.get("signal") or w.get("text", ""), w.get("where") or ""]
            for w in warns], left=4))
    return out


def _layer_rows(layers: list[dict], measured: bool) -> list[list]:
    return [[l["name"], l["op"], f"{l.get('K', '')} x {l.get('M', '')}" if "K" in l else "", num(l.get("macs", 0)),
             *([num(l.get("cycles"))] if measured else []), num(l.get("predicted")), pct(l.get("utilization")),
             pct(l.get("bound"))] for l in layers]


def build_traffic(build) -> dict:
    """External-memory traffic of one run of `build` (accel.traffic's form): of its program, or,
    for a partitioned build, summed over its device segments (builds of their own in seg<k>/, in
    order, their layers one after another; host segments move nothing over the memory port)."""
    from .accel import traffic
    from .build import Build

    m = build.manifest
    if "segments" not in m:
        return traffic.of_manifest(m, build.load_npy("mem/image.npy"))
    parts = [build_traffic(Build.open(build.path / f"seg{k}", kind="accel"))   # seg<k>: k-th segment, as `tony sim`
             for k, s in enumerate(m["segments"]) if isinstance(s, dict) and s.get("kind") == "device"]
    return {"layers": [r for t in parts for r in t["layers"]], "program": sum(t["program"] for t in parts),
            "total": {k: sum(t["total"][k] for t in parts) for k in (*traffic.KINDS, "program", "total")}}


def build_layers(build) -> list[dict]:
    """The manifest's MAC layers of `build` (of every device segment, in order, when partitioned)."""
    m = build.manifest
    return [dict(l) for l in (m["layers"] if "segments" not in m else
                              [l for s in m["segments"] if isinstance(s, dict) for l in s.get("layers", [])])]


def build_report(build_dir) -> Path:
    """Write BUILD/report.html (cycle model; simulation and synthesis when their reports exist)."""
    from .build import Build, write_text
    from .sim.accel import REPORT
    from .synth.report import SYNTH_REPORT, read_synth_report

    build = Build.open(build_dir, kind="accel")
    m = build.manifest
    a = m["accel"]
    sim = None
    if (build.path / REPORT).is_file():
        from .report import read_sim_report

        sim = read_sim_report(build.path)
    layers = sim["layers"] if sim else build_layers(build)
    tr = build_traffic(build)
    util = m["macs_per_run"] / (m["predicted_cycles"] * a["rows"] * a["cols"]) if m["predicted_cycles"] else 0
    items = [("model", str(m["model"])), ("accelerator", f"{a['rows']}x{a['cols']} MAC array, {a['mem_bits']}-bit "
                                                      f"memory port, batch {m['batch']}"),
             ("buffers (words)", f"activation {a['abuf_words']:,}, weight {a['wbuf_words']:,}, bias "
                                 f"{a['bbuf_words']:,}, instruction {a['imem_words']:,}"),
             ("predicted", f"{m['predicted_cycles']:,} cycles and {m['macs_per_run']:,} MACs per run, "
                           f"MAC utilization {pct(util)}"),
             ("memory traffic", f"{tr['total']['total']:,} bytes per run")]
    if sim:
        items.append(("simulation", f"{'PASS bit-exact' if sim['bit_exact'] else 'FAIL'} on {sim['samples']} samples "
                                    f"({sim['simulator']}); {sim['cycles_per_run'][0]:,} cycles per run, "
                                    f"{'equal to' if sim['cycles_match'] else 'DIFFERENT from'} the prediction"))
    body = [facts(items), "<h2>Layers</h2>", *layer_plots(layers, sim is not None),
            table(["layer", "op", "K x M", "MACs", *(["cycles"] if sim else []), "predicted", "utilization", "bound"],
                  _layer_rows(layers, sim is not None), left=2)]
    whys = [(l["name"], f"{pct(l.get('bound'))}: {l['bound_why']}") for l in layers if l.get("bound_why")]
    if whys:
        body.append(facts(whys))
    body += ["<h2>Memory traffic</h2>", traffic_plot(tr),
             table(["layer", "activations in", "weights", "bias", "activations out", "total"],
                   [[r["name"], num(r["act_in"]), num(r["weights"]), num(r["bias"]), num(r["act_out"]), num(r["total"])]
                    for r in tr["layers"]])]
    if (build.path / SYNTH_REPORT).is_file():
        body += synth_section(read_synth_report(build.path))
    out = build.path / PAGE
    write_text(out, page(f"{m['model']} on a {a['rows']}x{a['cols']} accelerator", body))
    return out
