"""FuseSoC core file (CAPI2) and a plain file list for a compiled build, so the generated IP
drops into a FuseSoC/Edalize flow or any tool that reads a .f file."""
from __future__ import annotations

from pathlib import Path

from ..names import safe_id


def core_name(model: str, version: str) -> str:
    """VLNV of the generated core: tony:generated:<model>:<version> (model name sanitized)."""
    return f"tony:generated:{safe_id(model, prefix='model').lower()}:{version}"


def write_core(out: Path, *, model: str, version: str, toplevel: str, rtl: list[str], params: dict,
               description: str, axi: dict | None = None) -> dict:
    """Write OUT/<toplevel>.core and OUT/filelist.f; returns their names.

    Paths in the core are relative to OUT (FuseSoC resolves them against the core file). With
    `axi` ({"rtl": [paths relative to OUT], "toplevel": ..., "params": {...}}) the core also holds the SoC wrapper's
    files, and targets `axi` (synthesis/IP packaging: the AXI top) and `axi_lint` use it;
    OUT/filelist_axi.f then names every file, the wrapper's last.
    """
    files = [f"rtl/{name}" for name in rtl]

    def entry(f: str) -> str:  # a generated header (tony_isa.vh): an include file, its folder an include path
        return f"      - {f}: {{is_include_file: true}}" if f.endswith(".vh") else f"      - {f}"
    axi_files = list((axi or {}).get("rtl", []))  # paths relative to OUT
    axi_params = {k: v for k, v in (axi or {}).get("params", {}).items() if k not in params}
    lines = [
        "CAPI=2:",
        f"name: {core_name(model, version)}",
        f'description: "{description}"',
        "",
        "filesets:",
        "  rtl:",
        "    file_type: verilogSource",
        "    files:",
        *[entry(f) for f in files],
        *(["  axi:", "    file_type: verilogSource", "    files:", *[entry(f) for f in axi_files]]
          if axi_files else []),
        "",
        "targets:",
        "  default: &default",
        "    filesets: [rtl]",
        f"    toplevel: {toplevel}",
        f"    parameters: [{', '.join(params)}]",
        "  lint:",
        "    <<: *default",
        "    default_tool: verilator",
        "    tools:",
        "      verilator:",
        "        mode: lint-only",
        "        verilator_options: [-Wall]",
    ]
    if axi_files:
        lines += [
            "  axi: &axi",
            "    filesets: [rtl, axi]",
            f"    toplevel: {axi['toplevel']}",
            f"    parameters: [{', '.join(list(params) + list(axi_params))}]",
            "  axi_lint:",
            "    <<: *axi",
            "    default_tool: verilator",
            "    tools:",
            "      verilator:",
            "        mode: lint-only",
            "        verilator_options: [-Wall]",
        ]
    lines += ["", "parameters:"]
    for name, value in {**params, **axi_params}.items():
        lines += [f"  {name}:", "    datatype: int", "    paramtype: vlogparam", f"    default: {int(value)}"]
    core = out / f"{toplevel}.core"
    core.write_text("\n".join(lines) + "\n")
    (out / "filelist.f").write_text("".join(f"{f}\n" for f in files))
    if axi_files:
        (out / "filelist_axi.f").write_text("".join(f"{f}\n" for f in files + axi_files))
    return {"core": core.name, "filelist": "filelist.f", "vlnv": core_name(model, version),
            **({"filelist_axi": "filelist_axi.f", "axi_target": "axi"} if axi_files else {})}
