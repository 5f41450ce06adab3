"""Design-space sweeps: many models x many accelerator configurations as dask.distributed tasks
(an embedded LocalCluster by default, a real scheduler with --scheduler), the results in
SWEEP/results.parquet (resumable), the Pareto fronts and SWEEP/report.html (docs/sweep.md).

    from tony.sweep import run_sweep, Settings
    out = run_sweep(["resnet8", "dscnn"], "sweep", arrays=[(4, 4), (8, 8), (16, 16)])
"""
from __future__ import annotations

from .runner import Outcome, Settings, run_sweep
from .store import read_results

__all__ = ["Outcome", "Settings", "read_results", "run_sweep"]
