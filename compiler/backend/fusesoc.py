"""FuseSoC core file (CAPI2) and a plain file list for a compiled build, so the generated IP
drops into a FuseSoC/Edalize flow or any tool that reads a .f file."""
from __future__ import annotations

from pathlib import Path

from .names import safe_id


def core_name(model: str, version: str) -> str:
    """VLNV of the generated core: tony:generated:<model>:<version> (model name sanitized)."""
    return f"tony:generated:{safe_id(model, prefix='model').lower()}:{version}"


def write_core(out: Path, *, model: str, version: str, toplevel: str, rtl: list[str], params: dict,
               description: str) -> dict:
    """Write OUT/<toplevel>.core and OUT/filelist.f; returns their names.

    Paths in the core are relative to OUT (FuseSoC resolves them against the core file).
    """
    files = [f"rtl/{name}" for name in rtl]
    lines = [
        "CAPI=2:",
        f"name: {core_name(model, version)}",
        f'description: "{description}"',
        "",
        "filesets:",
        "  rtl:",
        "    file_type: verilogSource",
        "    files:",
        *[f"      - {f}" for f in files],
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
        "",
        "parameters:",
    ]
    for name, value in params.items():
        lines += [f"  {name}:", "    datatype: int", "    paramtype: vlogparam", f"    default: {int(value)}"]
    core = out / f"{toplevel}.core"
    core.write_text("\n".join(lines) + "\n")
    (out / "filelist.f").write_text("".join(f"{f}\n" for f in files))
    return {"core": core.name, "filelist": "filelist.f", "vlnv": core_name(model, version)}
