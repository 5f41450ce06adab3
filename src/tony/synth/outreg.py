"""Block RAM output registers on ECP5: a pass over the flattened netlist that nextpnr places.

Every block RAM of the accelerator has a registered read (the RAM's own read register), and the
templates put a second register right behind it in the fabric (tony_conv_unit's ard_q, wrd1b_q and
bw_q, the controller's ir_q): an ECP5 DP16KD's read data leaves the RAM 5.83 ns after the clock
(speed 6), and that delay then ends at a flip-flop. A DP16KD has that second register inside it:
with REGMODE_A/B = "OUTREG" the read data passes through an output register enabled by OCEA/OCEB,
and leaves the RAM shortly after the clock. Yosys's ECP5 memory mapping never uses it, so this
pass does what a vendor's mapper does with such a register: for each DP16KD whose every used
read-data bit feeds only flip-flops, all of them clocked by the RAM's clock, none with a set/reset,
all under one clock enable (or none), it removes those flip-flops, drives their outputs from the
RAM, and sets the RAM's output registers (both ports, enabled by that clock enable). Two flip-flops
on one read-data bit are then the same register (a copy kept for placement): the RAM's output
drives the users of both. The behaviour is the same cycle for cycle; the RTL, its simulation and
the cycle model do not change. A RAM whose read data also feeds logic, flip-flops under different
enables, or a flip-flop marked keep (a copy the RTL places beside its users on purpose, such as
the controller's copy of the instruction fields its issue logic reads), stays as it is.
"""
from __future__ import annotations

from collections import defaultdict

RAM = "DP16KD"
FF = "TRELLIS_FF"
DATA_OUT = tuple(f"DO{p}{i}" for p in "AB" for i in range(18))


def _flag(obj: dict, name: str) -> bool:
    """A boolean attribute of a Yosys JSON module or cell ("00...01", "1"), set."""
    return str(obj.get("attributes", {}).get(name, "0")).strip().strip("0") != ""


def _top(netlist: dict) -> dict:
    tops = [m for m in netlist.get("modules", {}).values() if _flag(m, "top")]
    if len(tops) != 1:
        raise ValueError("the netlist has no single top module")
    return tops[0]


def _one(bits) -> object | None:
    return bits[0] if isinstance(bits, list) and len(bits) == 1 else None


def _enable(ff: dict) -> tuple[str, object] | None:
    """A flip-flop's clock enable as ("1", None) (always on) or ("net", bit); None when inverted."""
    mux = str(ff.get("parameters", {}).get("CEMUX", "1")).strip()
    if mux == "1":
        return ("1", None)
    if mux == "CE":
        ce = _one(ff["connections"].get("CE"))
        if ce == "1":
            return ("1", None)
        if ce is not None and not isinstance(ce, str):
            return ("net", ce)
    return None


def _plain(ff: dict, clk) -> bool:
    """A flip-flop clocked on the rising edge of `clk` with no set or reset in use, starting at 0
    (as the RAM's output register does)."""
    p, c = ff.get("parameters", {}), ff["connections"]
    return (str(p.get("CLKMUX", "CLK")).strip() == "CLK" and _one(c.get("CLK")) == clk
            and str(p.get("LSRMUX", "LSR")).strip() == "LSR" and c.get("LSR", ["0"]) in (["0"], [])
            and str(p.get("REGSET", "RESET")).strip() == "RESET")


def fold_output_registers(netlist: dict) -> dict:
    """Move flip-flops that register a DP16KD's read data into its output registers (in place).
    Returns {"rams": RAMs changed, "registers": flip-flops removed, "skipped": RAMs left as they
    were, by reason}."""
    top = _top(netlist)
    cells = top.get("cells", {})
    port_bits = {b for p in top.get("ports", {}).values() for b in p.get("bits", []) if not isinstance(b, str)}
    sinks: dict[object, list[tuple[str, str]]] = defaultdict(list)
    for name, c in cells.items():
        for port, bits in c.get("connections", {}).items():
            if c.get("port_directions", {}).get(port) == "output":
                continue
            for b in bits:
                if not isinstance(b, str):
                    sinks[b].append((name, port))

    folded_rams = 0
    removed: set[str] = set()           # flip-flops gone
    dead: set = set()                   # the old read-data bits: now without driver or user
    same: dict = {}                     # a removed copy's output bit -> the bit that replaces it
    skipped: dict[str, int] = defaultdict(int)
    for name, ram in cells.items():
        if ram.get("type") != RAM:
            continue
        p, conn = ram.get("parameters", {}), ram.get("connections", {})
        if any(str(p.get(k, "NOREG")).strip() != "NOREG" for k in ("REGMODE_A", "REGMODE_B")):
            skipped["already registered"] += 1
            continue
        clk = _one(conn.get("CLKA"))
        if (clk is None or isinstance(clk, str) or _one(conn.get("CLKB")) != clk
                or any(str(p.get(k, "")).strip() not in ("CLKA", "CLKB", "CLK") for k in ("CLKAMUX", "CLKBMUX"))):
            skipped["two clocks or an inverted clock"] += 1
            continue
        plan, enable, reason = [], None, None
        for pin in DATA_OUT:
            bit = _one(conn.get(pin))
            if bit is None or isinstance(bit, str):
                continue
            users = sinks.get(bit, [])
            if not users and bit not in port_bits:
                continue
            if bit in port_bits:
                reason = "read data on a port"
                break
            ffs = [u for u, port in users if cells[u].get("type") == FF and port == "DI" and _plain(cells[u], clk)]
            if len(ffs) != len(users):
                reason = "read data into logic"
                break
            if any(_flag(cells[u], "keep") for u in ffs):   # a copy the RTL places on purpose
                reason = "registers marked keep"
                break
            ens = {_enable(cells[u]) for u in ffs}
            if None in ens or len(ens) != 1 or (enable is not None and ens != {enable}):
                reason = "registers under different enables"
                break
            qs = [_one(cells[u]["connections"].get("Q")) for u in ffs]
            if any(q is None or isinstance(q, str) for q in qs) or any(q in port_bits for q in qs[1:]):
                reason = "register outputs on a port"
                break
            enable = ens.pop()
            plan.append((pin, ffs, qs))
        if reason or not plan:
            skipped[reason or "no read data used"] += 1
            continue
        # the register (and its copies, the same register under the same enable) becomes the RAM's
        for pin, ffs, qs in plan:
            dead.add(conn[pin][0])
            conn[pin] = [qs[0]]
            removed.update(ffs)
            same.update((q, qs[0]) for q in qs[1:])
        oce = ["1"] if enable[0] == "1" else [enable[1]]
        conn["OCEA"], conn["OCEB"] = list(oce), list(oce)
        p["REGMODE_A"], p["REGMODE_B"] = "OUTREG", "OUTREG"
        folded_rams += 1

    for ff_name in removed:
        del cells[ff_name]
    if same:
        for c in cells.values():
            for port, bits in c.get("connections", {}).items():
                if c.get("port_directions", {}).get(port) != "output" and any(b in same for b in bits):
                    c["connections"][port] = [same.get(b, b) for b in bits]
    gone = dead | set(same)
    if gone:
        for net in top.get("netnames", {}).values():
            if any(b in gone for b in net.get("bits", [])):
                net["bits"] = ["x" if b in gone else b for b in net["bits"]]
    return {"rams": folded_rams, "registers": len(removed), "skipped": dict(skipped)}
