"""FPGA synthesis of a build folder with the YoWASP tools from PyPI (`pip install tony[synth]`):
Yosys for LUT/FF/carry/DSP/block-RAM counts per module and the warnings that matter for hardware,
nextpnr for Fmax and the critical path. `tony synth BUILD` writes BUILD/synth_report.json.

    from tony.synth import synthesize
    rep = synthesize("build/demo/build", target="ecp5-85k", pnr=True)
"""
from __future__ import annotations

import importlib

# imported on first use: `tony compile` reads only TARGETS (its --help), not the flow
_WHERE = {"REPORT": "flow", "load_report": "flow", "performance": "flow", "synthesize": "flow", "synthesize_module": "flow",
          "TARGETS": "targets", "SynthError": "tools", "have_tool": "tools"}


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["REPORT", "TARGETS", "SynthError", "have_tool", "load_report", "performance", "synthesize", "synthesize_module"]
