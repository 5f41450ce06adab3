"""Human-readable reports: tables a person would rather look at than read."""
from __future__ import annotations

from rich.console import Console
from rich.table import Table


def print_sim_report(rep: dict, console: Console | None = None) -> None:
    console = console or Console()
    arr = rep.get("array", {})
    t = Table(title=f"{rep.get('model', 'model')} on a {arr.get('rows')}x{arr.get('cols')} array "
                    f"({rep.get('simulator', '?')}, {rep.get('samples', '?')} samples)")
    for col in ("layer", "op", "K x M", "MACs", "cycles", "utilization", "mismatches"):
        t.add_column(col, justify="right" if col not in ("layer", "op") else "left")
    for l in rep.get("layers", []):
        util = l.get("utilization")
        t.add_row(l["name"], l["op"], f"{l.get('K', '')} x {l.get('M', '')}" if "K" in l else "",
                  f"{l.get('macs', 0):,}", f"{l.get('cycles', 0):,}",
                  f"{100 * util:.1f}%" if util is not None else "", str(l.get("mismatches", 0)))
    console.print(t)
    util = rep.get("utilization")
    console.print(f"total: {rep.get('cycles', 0):,} cycles, {rep.get('macs', 0):,} MACs, "
                  f"MAC utilization {100 * (util or 0):.1f}% of 100%, "
                  f"{rep.get('cycles_per_second', 0):,.0f} simulated cycles/s")
    verdict = "[bold green]PASS[/] bit-exact" if rep.get("bit_exact") else \
        f"[bold red]FAIL[/] {rep.get('mismatches')} mismatching elements"
    console.print(f"{verdict}: every layer output of {rep.get('samples')} samples compared with the golden vectors")
