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
def bundled(tmp_path_factory):
    """bundled(name) -> the folder of `tony example NAME`, built once per test run: the parallel
    workers share it (one builds under a lock, the others wait and read). Read it, never write it."""
    import fcntl
    import shutil

    from tony.models import build_example

    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent   # the run's folder, above each worker's own
    root = base / "bundled-examples"
    root.mkdir(exist_ok=True)

    def get(name: str):
        d = root / name
        with open(root / f"{name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                if not (d / ".complete").exists():
                    shutil.rmtree(d, ignore_errors=True)   # what a failed build left
                    build_example(name, d / "ex")
                    (d / ".complete").touch()
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
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
