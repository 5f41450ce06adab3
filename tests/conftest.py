import os
import subprocess
import sys

import numpy as np
import pytest

# tony sim's profile-guided builds build each design twice: off in the suite (one test turns it on)
os.environ.setdefault("TONY_SIM_PGO", "0")
# and g++ -O1 instead of -O3: about 2.6x faster to build, as fast for the suite's short runs
os.environ.setdefault("TONY_SIM_CXX_OPT", "1")


@pytest.fixture(scope="session")
def digits_mlp(tmp_path_factory):
    """The bundled example: float.onnx, model.onnx (pow2 QDQ), inputs.npy, labels.npy."""
    from tony.models import build_example

    d = tmp_path_factory.mktemp("digits_mlp")
    build_example("digits-mlp", d)
    return d


@pytest.fixture(scope="session")
def run_tmp(tmp_path_factory):
    """The test run's temporary folder, the same for every pytest-xdist worker (each worker's own
    folder is below it): what the workers share, under `tony.build.exclusive` or `fill_once`."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def bundled(run_tmp):
    """bundled(name) -> the folder of `tony example NAME`, built once per test run: the parallel
    workers share it (one builds under a lock, the others wait and read). Read it, never write it."""
    from tony.build import fill_once
    from tony.models import build_example

    root = run_tmp / "bundled-examples"
    root.mkdir(exist_ok=True)

    def get(name: str):
        d = root / name
        fill_once(d, lambda: build_example(name, d / "ex"), lock_file=root / f"{name}.lock", fresh=True)
        return d / "ex"
    return get


def run_tony(*args, cwd=None):
    """Run the CLI as a user would; returns CompletedProcess."""
    return subprocess.run([sys.executable, "-m", "tony.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def tony_cli():
    return run_tony


@pytest.fixture
def rng(request):
    seed = int(os.environ.get("TONY_SEED", "0")) or abs(hash(request.node.nodeid)) % (2**31)
    print(f"seed={seed}")
    return np.random.default_rng(seed)
