"""The synthesis report as tables: resources per module, memories, warnings, Fmax and what it means
for one inference."""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .flow import performance


def _n(v) -> str:
    if v is None:
        return ""
    return f"{v:,.1f}" if isinstance(v, float) and v != int(v) else f"{int(v):,}"


def print_synth_report(rep: dict, console: Console | None = None, manifest=None, cycles_per_run=None) -> None:
    """Print a synth_report.json; with the build's manifest (or measured cycles per run) and an Fmax,
    also latency per inference and inferences per second."""
    console = console or Console(width=140)
    arr = rep.get("array", {})
    t = Table(title=f"{rep.get('model', 'model')} on a {arr.get('rows')}x{arr.get('cols')} accelerator: "
                    f"{rep.get('target')} resources per module ({rep.get('yosys', {}).get('command', '')})")
    cols = ("module", "instances", "LUT", "LUT+carry", "FF", "carry", "DSP", "BRAM", "LUTRAM")
    for c in cols:
        t.add_column(c, justify="left" if c == "module" else "right")
    for name, mod in rep.get("modules", {}).items():
        loc = mod["local"]
        t.add_row(name, _n(mod["instances"]), _n(loc["lut"]), _n(loc["logic_luts"]), _n(loc["ff"]), _n(loc["carry"]),
                  _n(loc["dsp"]), _n(loc["bram"]), _n(loc["lutram"]))
    tot = rep.get("total", {})
    t.add_row("[bold]total[/]", "", _n(tot.get("lut")), _n(tot.get("logic_luts")), _n(tot.get("ff")),
              _n(tot.get("carry")), _n(tot.get("dsp")), _n(tot.get("bram")), _n(tot.get("lutram")))
    console.print(t)
    pp = rep.get("per_pe", {})
    if pp.get("array"):
        a = pp["array"]
        console.print(f"per PE ({pp['pes']} PEs, the array and its skew registers): {a['logic_luts']:.1f} LUTs "
                      f"(with carry), {a['ff']:.1f} FFs, {a['dsp']:.2f} DSPs; whole design per PE: "
                      f"{pp['design']['logic_luts']:.0f} LUTs, {pp['design']['ff']:.0f} FFs")
    console.print(f"block RAM: {_n(tot.get('bram'))} cells ({_n(tot.get('bram_bits'))} bits); distributed RAM: "
                  f"{_n(tot.get('lutram'))} cells ({_n(tot.get('lutram_bits'))} bits)")
    mems = rep.get("memories", [])
    if mems:
        mt = Table(title="memories (after elaboration) and where they went")
        for c in ("memory", "holds", "width x depth", "bits", "read/write ports", "mapped to"):
            mt.add_column(c, justify="right" if c in ("bits",) else "left")
        seen = set()
        for x in mems:
            key = (x["module"], x["name"], x["mapped_to"], x["bits"])
            if key in seen:
                continue
            seen.add(key)
            bad = x.get("buffer") and x["kind"] != "bram"
            mt.add_row(f"{x['module']}.{x['name']}", x.get("buffer", ""), f"{x['width']} x {x['depth']}", _n(x["bits"]),
                       f"{x['read_ports']}/{x['write_ports']}",
                       f"[bold red]{x['mapped_to']}[/]" if bad or x["kind"] == "registers" else x["mapped_to"])
        console.print(mt)
    warns = rep.get("warnings", [])
    if warns:
        console.print(f"[bold]Yosys warnings ({len(warns)}):[/]")
        for w in warns:
            where = f" at {w['where']}" if w.get("where") else ""
            what = w["kind"].replace("_", " ")
            console.print(f"  {what}: {w.get('module') or '?'}.{w.get('signal') or ''}{where}"
                          if w["kind"] != "other" else f"  {w.get('module') or ''}: {w['text']}", highlight=False)
    pnr = rep.get("pnr")
    if pnr:
        clocks = ", ".join(f"{c} {f:.1f} MHz" for c, f in pnr["fmax_mhz"].items())
        how = f", placer {pnr['placer']}, {pnr['router']}" if pnr.get("placer") else ""
        how += ", untimed route" if pnr.get("timing_driven_route") is False else ""
        how += f", seed {pnr['seed']}" if pnr.get("seed") is not None else ""
        console.print(f"Fmax ({rep['target']}, nextpnr{how}, constraint {pnr['target_mhz']:g} MHz): {clocks}")
        net = pnr.get("netlist") or {}
        if net.get("total"):
            t = net["total"]
            console.print(f"  placed netlist ({net['command']}): {t['lut']:,} LUT, {t['ff']:,} FF, {t['carry']:,} carry, "
                          f"{t['dsp']} DSP, {t['bram']} block RAM, {t['lutram']} distributed RAM", highlight=False)
        folded = net.get("bram_output_registers")
        if folded and folded.get("registers"):
            console.print(f"  block RAM output registers: {folded['registers']:,} flip-flops into {folded['rams']} "
                          f"RAMs (tony.synth.outreg)", highlight=False)
        cp = pnr.get("critical_path")
        if cp:
            console.print(f"  critical path {cp['delay_ns']:.2f} ns: {escape(cp['from'])} -> {escape(cp['to'])} "
                          f"({', '.join(f'{k} {v:.2f} ns' for k, v in cp['by_type_ns'].items())})", highlight=False)
        late = pnr.get("late_endpoints")
        if late and late["by_unit"]:
            units = ", ".join(f"{escape(u)} {c:,}" for u, c in list(late["by_unit"].items())[:6])
            console.print(f"  {sum(late['by_unit'].values()):,} of {late['endpoints']:,} register inputs later than "
                          f"{late['period_ns']:g} ns, by unit: {units}", highlight=False)
            if late.get("by_register"):
                regs = ", ".join(f"{escape(r)} {c:,}" for r, c in list(late["by_register"].items())[:6])
                console.print(f"  the most of them at: {regs}", highlight=False)
    perf = rep.get("performance")
    if manifest is not None and rep.get("fmax_mhz"):
        m = manifest if isinstance(manifest, dict) else json.loads(Path(manifest).read_text())
        if cycles_per_run:
            m = {**m, "predicted_cycles": cycles_per_run}
        perf = performance(m, rep["fmax_mhz"]) or perf
    if perf:
        console.print(f"at {perf['fmax_mhz']:.1f} MHz: {perf['cycles_per_run']:,} cycles per run of {perf['batch']} -> "
                      f"[bold]{perf['latency_us']:,.1f} µs[/] per run, {perf['inferences_per_s']:,.0f} inferences/s")
    goals = rep.get("goals", {})
    if goals:
        parts = []
        for name, g in goals.items():
            mark = "[green]ok[/]" if g["ok"] else "[bold red]FAIL[/]"
            extra = f" ({g['value']:.1f} vs {g['limit']:g})" if "value" in g else \
                (f" ({len(g['offenders'])}: {', '.join(g['offenders'][:3])}{'...' if len(g['offenders']) > 3 else ''})"
                 if g.get("offenders") else "")
            parts.append(f"  {name}: {mark}{extra}")
        console.print("[bold]goals:[/]")
        for p in parts:
            console.print(p, highlight=False)
    console.print(f"log: {rep.get('yosys', {}).get('log', '')}", highlight=False)


SYNTH_REPORT = "synth_report.json"


def read_synth_report(build_dir) -> dict:
    """The report of the last `tony synth` of a build."""
    from ..errors import InputError

    p = Path(build_dir) / SYNTH_REPORT
    try:
        return json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise InputError(f"{p} is missing or not valid JSON", hint="run `tony synth` again") from None
