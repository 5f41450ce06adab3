"""Human-readable reports: tables a person would rather look at than read."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from .errors import show


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if v is not None else ""


def print_sim_report(rep: dict, console: Console | None = None) -> None:
    console = console or Console(width=140)
    arr = rep.get("accel", {})
    runs = rep.get("runs", 1)
    t = Table(title=f"{escape(show(rep.get('model', 'model')))} on a {arr.get('rows')}x{arr.get('cols')} accelerator "
                    f"({rep.get('simulator', '?')}, {rep.get('samples', '?')} samples, batch {rep.get('batch', 1)}); "
                    "cycles per run")
    t.add_column("layer", no_wrap=True, overflow="ellipsis", max_width=50)  # one line per layer, long names cut
    for col in ("op", "K x M", "MACs", "cycles", "predicted", "utilization", "bound"):
        t.add_column(col, justify="right" if col != "op" else "left")
    for l in rep.get("layers", []):
        cyc, pred = l.get("cycles"), l.get("predicted")
        mark = "" if cyc == pred else " [bold red]!=[/]"
        t.add_row(Text(show(l["name"])), l["op"],   # model names: one line, no markup
                  f"{l.get('K', '')} x {l.get('M', '')}" if "K" in l else "",
                  f"{l.get('macs', 0):,}", f"{cyc:,}" if cyc is not None else "?", f"{pred:,}{mark}",
                  _pct(l.get("utilization")), _pct(l.get("bound")))
    console.print(t)
    util = rep.get("utilization")
    pred = rep.get("predicted_cycles")
    per_run = rep.get("cycles_per_run") or [rep.get("cycles", 0)]
    match = "equal to" if rep.get("cycles_match") else "[bold red]DIFFERENT from[/]"
    console.print(f"total: {rep.get('cycles', 0):,} cycles in {runs} run(s) ({per_run[0]:,} per run, {match} the "
                  f"predicted {pred:,}), {rep.get('macs', 0):,} MACs, MAC utilization {100 * (util or 0):.1f}% of "
                  f"100%")
    if rep.get("cycles_per_second"):
        cpu = rep.get("cycles_per_cpu_second")
        console.print(f"speed: {rep['cycles_per_second']:,.0f} simulated cycles/s"
                      + (f", {cpu:,.0f} per CPU second" if cpu else "")
                      + f" ({rep.get('cycles', 0):,} cycles in {rep.get('sim_seconds', 0):.2f} s"
                      + (f", {rep['sim_cpu_seconds']:.2f} CPU s" if cpu else "") + "; the Verilator build excluded)")
    for l in rep.get("layers", []):
        if l.get("bound_why"):
            console.print(Text(f"  bound of {show(l['name'])}: {_pct(l.get('bound'))} ({show(l['bound_why'])})"))
    if rep.get("segments"):
        console.print(f"{len(rep['segments'])} device segment(s) on the simulated accelerator, host segments in the "
                      "reference between them; outputs compared with the reference of the whole graph")
    if "waves" in rep:
        console.print(Text("waveforms: " + (", ".join(show(w) for w in rep["waves"]) or "none written")))
    verdict = "[bold green]PASS[/] bit-exact" if rep.get("bit_exact") else \
        f"[bold red]FAIL[/] {rep.get('mismatches')} mismatching elements"
    console.print(f"{verdict}: every output value of {rep.get('samples')} samples compared with the golden vectors")


def placement_lines(where: dict) -> list[str]:
    """The compile report's lines on what runs where: every op kept off the device with its
    reason, then the segments and the share of MACs on the device."""
    lines = []
    host = [r for r in where["ops"] if r["where"] == "host"]
    for r in host:   # the whole line through show: a reason may quote a tensor name
        lines.append(show(f"  host: {r['node']} ({r['op']}, segment {r['segment']}): {r['reason']}"))
    kinds = "".join("D" if s["kind"] == "device" else "h" for s in where["segments"])
    total = where["device_macs"] + where["host_macs"]
    lines.append(f"{len(host)} op(s) on the host, {len(where['ops']) - len(host)} on the device; segments {kinds} "
                 f"(D device, h host); {100 * where['device_mac_share']:.2f}% of {total:,} MACs per sample on the "
                 "device")
    return lines


def device_layer_lines(manifest: dict) -> list[str]:
    """The compile report's lines on the device's MAC layers of a partitioned build: per layer its
    segment, K x M, MACs, predicted cycles and MAC utilization (per run, from the cycle model); and
    the layers of the nonlinear units (a Softmax: its row length and predicted cycles)."""
    lines = []
    for s in manifest.get("segments", []):
        for L in s.get("layers", []):
            if not L["macs"]:
                rows = f"rows of {L['row_length']}, " if "row_length" in L else ""
                lines.append(f"  device: {show(L['name'])} ({L['op']}, segment {s['index']}): {rows}"
                             f"{L['predicted']:,} predicted cycles")
                continue
            km = f"{L['K']} x {L['M']}, " if "K" in L else ""
            lines.append(f"  device: {show(L['name'])} ({L['op']}, segment {s['index']}): {km}{L['macs']:,} MACs, "
                         f"{L['predicted']:,} predicted cycles, {_pct(L.get('utilization'))} MAC utilization")
    return lines


def read_sim_report(build_dir) -> dict:
    """The report of the last `tony sim` of a build."""
    import json

    from .build import Build
    from .errors import InputError
    from .sim.accel import REPORT

    build = Build.open(build_dir, kind="accel")
    p = Path(build.path) / REPORT
    if not p.is_file():
        raise InputError(f"no {REPORT} in {build.path}", hint="run `tony sim` first")
    try:
        return json.loads(p.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{p} is not valid JSON", hint="run `tony sim` again") from None
