"""Wall time of a design-space sweep on the embedded dask LocalCluster against the same sweep run
in-process, one point after another (the cycle model only: every point is compiled and timed).

Both runs start from empty sweep folders with the same model files (built once beforehand), and
must give identical results; printed: the wall times, their ratio, and the Pareto table.

    .venv/bin/python bench/sweep.py                                 # the four MLPerf Tiny workloads, six shapes
    .venv/bin/python bench/sweep.py --workers 4 --array 4x4,8x8,16x16
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

WORKLOADS = ["resnet8", "dscnn", "mobilenet-v1-025", "fc-autoencoder"]
ARRAYS = "4x4,8x8,8x16,16x16,16x32,32x32"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*", default=WORKLOADS)
    ap.add_argument("--array", default=ARRAYS)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", help="keep the LocalCluster sweep folder here")
    a = ap.parse_args()

    from tony.compiler import parse_array
    from tony.models import EXAMPLES, build_example
    from tony.sweep import Settings, read_results, run_sweep
    from tony.sweep.report import print_sweep
    from tony.sweep.spec import parse_list

    arrays = parse_list(a.array, "--array", parse_array)
    work = Path(tempfile.mkdtemp(prefix="tony-bench-sweep-"))
    try:
        models = []
        for m in a.models:
            if m in EXAMPLES:
                build_example(m, work / "models" / m)
                m = str(work / "models" / m / "model.onnx")
            models.append(m)
        walls = {}
        for mode, settings in (("serial", Settings(serial=True, progress=False)),
                               ("cluster", Settings(workers=a.workers, progress=False))):
            t0 = time.perf_counter()
            run_sweep(models, work / mode, arrays=arrays, settings=settings)
            walls[mode] = time.perf_counter() - t0
        same = read_results(work / "serial") == read_results(work / "cluster")
        print_sweep(read_results(work / "cluster"))
        n = len(models) * len(arrays)
        print(f"{n} points ({len(models)} models x {len(arrays)} shapes), cycle model")
        print(f"serial (in-process):               {walls['serial']:7.1f} s")
        print(f"dask LocalCluster, {a.workers} workers:     {walls['cluster']:7.1f} s  "
              f"(x{walls['serial'] / walls['cluster']:.2f} the serial speed, cluster start included)")
        print(f"identical results: {same}")
        if a.keep:
            shutil.copytree(work / "cluster", a.keep, dirs_exist_ok=True)
        return 0 if same else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
