"""FPGA synthesis of a build folder with the YoWASP tools from PyPI (`pip install tony[synth]`):
Yosys for LUT/FF/carry/DSP/block-RAM counts per module and the warnings that matter for hardware,
nextpnr for Fmax and the critical path. `tony synth BUILD` writes BUILD/synth_report.json.

    from tony.synth import synthesize
    rep = synthesize("build/demo/build", target="ecp5-85k", pnr=True)
"""
from __future__ import annotations

from .flow import REPORT, load_report, performance, synthesize
from .targets import TARGETS
from .tools import SynthError, have_tool

__all__ = ["REPORT", "TARGETS", "SynthError", "have_tool", "load_report", "performance", "synthesize"]
