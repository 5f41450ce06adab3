"""Resources from Yosys's `stat -json`: per module (summed over its instances) and for the design."""
from __future__ import annotations

from .targets import Family
from .yosys_log import base_module, ymod

FIELDS = ("lut", "logic_luts", "ff", "carry", "dsp", "bram", "bram_bits", "lutram", "lutram_bits", "latch")


def resources(cells: dict[str, int], family: Family, modules: set[str] = frozenset()) -> dict:
    """LUT, FF, carry, DSP, block/distributed RAM of a {cell type: count} table.

    `logic_luts` counts the LUTs inside carry cells too (two LUT4s per ECP5 CCU2C), which is what
    a per-PE LUT budget means; `bram_bits` and `lutram_bits` are the capacity of the cells used."""
    r = dict.fromkeys(FIELDS, 0)
    other: dict[str, int] = {}
    for cell, n in cells.items():
        if ymod(cell) in modules:
            continue
        kind = family.kind(cell)
        if kind is None:
            other[cell] = other.get(cell, 0) + n
            continue
        r[kind] += n
        if kind == "bram":
            r["bram_bits"] += n * family.bram[cell]
        elif kind == "lutram":
            r["lutram_bits"] += n * family.lutram[cell]
    r["logic_luts"] = r["lut"] + family.carry_luts * r["carry"]
    r["cells"] = {c: n for c, n in sorted(cells.items()) if ymod(c) not in modules}
    r["other_cells"] = other
    return r


def _add(a: dict, b: dict, k: int = 1) -> dict:
    out = dict(a)
    for f in FIELDS:
        out[f] = a.get(f, 0) + k * b.get(f, 0)
    cells = dict(a.get("cells", {}))
    for c, n in b.get("cells", {}).items():
        cells[c] = cells.get(c, 0) + k * n
    out["cells"] = dict(sorted(cells.items()))
    return out


def hierarchy(stat: dict, top: str, family: Family) -> dict:
    """Per-module and total resources of a `stat -json -top TOP` result of an unflattened design.

    modules[base name] = {instances, variants, local (its own cells, summed over its instances),
    with_submodules (the same including everything below it)}; the locals add up to the total."""
    mods = {ymod(k): v for k, v in stat["modules"].items()}
    names = set(mods)
    top_key = next((m for m in names if base_module(m) == top and not m.startswith("$paramod")), None) or \
        next((m for m in names if base_module(m) == top), None)
    if top_key is None:
        raise KeyError(top)

    def cells(m: str) -> dict[str, int]:
        return mods[m].get("num_cells_by_type", {})

    local = {m: resources(cells(m), family, names) for m in names}
    count: dict[str, int] = {}

    def visit(m: str, k: int) -> None:
        count[m] = count.get(m, 0) + k
        for c, n in cells(m).items():
            if ymod(c) in names:
                visit(ymod(c), k * n)

    visit(top_key, 1)
    below: dict[str, dict] = {}

    def total_of(m: str) -> dict:
        if m not in below:
            t = _add(dict.fromkeys(FIELDS, 0), local[m])
            for c, n in cells(m).items():
                if ymod(c) in names:
                    t = _add(t, total_of(ymod(c)), n)
            below[m] = t
        return below[m]

    out: dict[str, dict] = {}
    for m, k in count.items():
        b = base_module(m)
        e = out.setdefault(b, {"instances": 0, "variants": 0, "local": dict.fromkeys(FIELDS, 0),
                               "with_submodules": dict.fromkeys(FIELDS, 0)})
        e["instances"] += k
        e["variants"] += 1
        e["local"] = _add(e["local"], local[m], k)
        e["with_submodules"] = _add(e["with_submodules"], total_of(m), k)
    for e in out.values():
        e["with_submodules"].pop("cells", None)
    total = total_of(top_key)
    return {"modules": dict(sorted(out.items(), key=lambda kv: -kv[1]["local"]["logic_luts"])), "total": total}
