"""Errors raised by the simulator drivers (one clear line each)."""
from __future__ import annotations

try:  # the compiler package's base class, so the CLI prints these as one line
    from tony.errors import TonyError as _Base
except ImportError:  # pragma: no cover - sim/ used outside the installed package
    _Base = Exception


class SimError(_Base):
    """Base class of the simulator drivers' errors."""


class SimulatorNotFound(SimError):
    """No Verilator (or the requested simulator) could be found."""


class BuildFailed(SimError):
    """The simulator could not compile the HDL sources."""


class SimulationFailed(SimError):
    """The simulation ran but at least one cocotb test failed (or it crashed)."""


class LintError(SimError):
    """`verilator --lint-only -Wall` reported something."""
