"""`tony sim --axi-stall P`: run a build through the SoC wrapper tony_axi_top (AXI4-Lite host,
AXI4 memory) instead of the bare accelerator, with random idle/back-pressure on every channel.

Without stalls the AXI path accepts a request every cycle and answers a read AXI_READ_LATENCY
cycles after accepting it (the bridge's AR register, the slave, the bridge's R register), so the
cycle model predicts the run exactly with that memory latency; with stalls the cycles can only
grow, and the report says by how much.
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ..errors import InputError

AXI_READ_LATENCY = 4
"""Cycles from a read accepted by tony_axi_master to its response, with a slave that never stalls
(the bridge registers AR and R; cocotbext-axi's AxiRam drives R two cycles after it takes AR)."""

AXI_DEFAULTS = {"AXIL_ADDR_BITS": 12, "AXI_DATA_BITS": 64, "AXI_ADDR_BITS": 32, "AXI_ID_BITS": 1,
                "MAX_BURST": 16, "WFIFO_DEPTH": 32, "MAX_READS": 32}


def axi_top_params(m: dict, **axi) -> dict:
    """HDL parameters of tony_axi_top for a build's manifest (BUILD_ID included)."""
    from .bringup import build_id

    a = m["accel"]
    p = {"ROWS": a["rows"], "COLS": a["cols"], "A_BITS": a["a_bits"], "W_BITS": a["w_bits"],
         "ACC_BITS": a["acc_bits"], "MEM_BITS": a["mem_bits"], "ABUF_WORDS": a["abuf_words"],
         "WBUF_WORDS": a["wbuf_words"], "BBUF_WORDS": a["bbuf_words"], "IMEM_WORDS": a["imem_words"],
         "ROUND_MODE": _round_code(m["rounding"]), **AXI_DEFAULTS, **axi}
    if p["AXI_DATA_BITS"] < p["MEM_BITS"]:
        p["AXI_DATA_BITS"] = p["MEM_BITS"]
    p["BUILD_ID"] = build_id(p)
    return p


def _round_code(rounding: str) -> int:
    from ..ir.types import Rounding

    return Rounding(rounding).code


def axi_prediction(build: Path, m: dict) -> dict:
    """The cycle model's prediction for the AXI path: the build's program with the AXI read latency."""
    from ..accel import model as accel_model
    from .compile import rebuild_program

    _, prog = rebuild_program(build, m)
    prog = replace(prog, cfg=replace(prog.cfg, mem_latency=AXI_READ_LATENCY))
    t = accel_model.cycles(prog)
    return {"predicted_cycles": t.total, "predicted_issue": t.issue}


def run_axi(build: Path, m: dict, work: Path, env: dict, stall: float, *, waves: bool = False,
            simulator: str = "verilator", testcase=None) -> dict:
    """Render tony_axi_top for the build, run tony/sim/benches/axi.py; returns the manifest with the
    AXI path's predicted cycles (for the sim report)."""
    from ..rtl import render_to
    from ..sim import run_cocotb

    if not 0.0 <= stall < 1.0:
        raise InputError(f"--axi-stall {stall}: expected a probability in [0, 1)")
    params = axi_top_params(m)
    sources = render_to(work / "rtl_axi", ["tony_axi_top"], **params)
    env = {**env, "TONY_AXI_STALL": repr(float(stall))}
    run_cocotb(sources, "tony_axi_top", "tony.sim.benches.axi", build_dir=work / "build_axi",
               extra_env=env, waves=waves, simulator=simulator, build_args=["-O3"], reuse_build=True,
               testcase=testcase or "run_model")
    return {**m, **axi_prediction(build, m), "toplevel": "tony_axi_top"}
