"""`tony sim --axi-stall P`: run a build through the SoC wrapper tony_axi_top (AXI4-Lite host,
AXI4 memory) instead of the bare accelerator, with random idle/back-pressure on every channel.

Without stalls the AXI path accepts a request every cycle and answers a read
tony.board.bringup.AXI_READ_LATENCY cycles after accepting it, so the cycle model predicts the
run exactly with that memory latency (`tony compile` stores that prediction in the manifest,
under "axi"); with stalls the cycles can only grow, and the report says by how much.
"""
from __future__ import annotations

from pathlib import Path

from ..build import Build
from ..errors import InputError


def check_stall(stall: float) -> None:
    """Refuse an --axi-stall that is not a probability; `simulate` calls it before it touches the
    build folder, so a bad value leaves the last simulation's report in place."""
    if not 0.0 <= stall < 1.0:
        raise InputError(f"--axi-stall {stall}: expected a probability in [0, 1)")


def run_axi(build: Build, work: Path, env: dict, stall: float, *, waves: bool = False,
            simulator: str = "verilator", testcase=None) -> dict:
    """Render tony_axi_top with the build's parameters and run tony/sim/benches/axi.py; returns the
    manifest with the AXI path's predicted cycles (for the sim report)."""
    from ..rtl import render_to
    from . import run_cocotb

    check_stall(stall)
    m = build.manifest
    axi = m["axi"]
    sources = render_to(work / "rtl_axi", ["tony_axi_top"], **axi["params"])
    env = {**env, "TONY_AXI_STALL": repr(float(stall))}
    run_cocotb(sources, "tony_axi_top", "tony.sim.benches.axi", build_dir=work / "build_axi",
               extra_env=env, waves=waves, simulator=simulator, build_args=["-O3"], reuse_build=True,
               testcase=testcase or "run_model")
    return {**m, "predicted_cycles": axi["predicted_cycles"], "predicted_issue": axi["predicted_issue"],
            "toplevel": "tony_axi_top"}
