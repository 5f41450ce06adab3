"""End to end: tony compile -> tony sim on Verilator, bit-exact against the golden vectors, with the
cycle model's prediction equal to the simulated cycle count."""
import json
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("array,batch", [("4x4", 1), ("3x5", 5)])
def test_digits_mlp_is_bit_exact_on_verilator(tmp_path, tony_cli, digits_mlp, array, batch):
    x = np.load(digits_mlp / "inputs.npy")[:24]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "build"
    res = tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", array, "--inputs", tmp_path / "x.npy",
                   "--batch", batch)
    assert res.returncode == 0, res.stderr
    res = tony_cli("sim", out, "-q")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "PASS" in res.stdout
    rep = json.loads((out / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["mismatches"] == 0
    assert rep["samples"] == 24 and rep["compared"] == 24 * 10
    assert rep["simulator"] == "verilator"
    r, c = map(int, array.split("x"))
    assert rep["accel"]["rows"] == r and rep["accel"]["cols"] == c
    assert rep["runs"] == -(-24 // batch) and rep["batch"] == batch
    assert rep["macs"] == rep["runs"] * batch * (64 * 32 + 32 * 10)
    assert rep["cycles"] > rep["macs"] / (r * c)  # cannot beat the array's peak
    # the cycle model predicted every run's cycle count and every instruction's issue cycle exactly
    assert rep["cycles_match"] and rep["issue_match"]
    assert all(c == rep["predicted_cycles"] for c in rep["cycles_per_run"])
    assert all(l["cycles"] == l["predicted"] for l in rep["layers"])
    # the hardware's own final output equals the reference's
    hw = np.load(out / "sim" / "hw_logits_q.npy")
    from tony.api import load_ir
    from tony.ref import execute

    g = load_ir(digits_mlp / "model.onnx")
    ref = execute(g, {"input": x.reshape(24, 64)}, keep_all=True)["logits_q"]
    assert np.array_equal(hw, ref)


def test_sim_detects_a_mismatch_and_exits_nonzero(tmp_path, tony_cli, digits_mlp):
    x = np.load(digits_mlp / "inputs.npy")[:4]
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "build"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", "2x2",
                    "--inputs", tmp_path / "x.npy").returncode == 0
    g = out / "golden" / "logits_q.npy"
    arr = np.load(g)
    arr.reshape(-1)[5] ^= 1  # one flipped bit in one golden value
    np.save(g, arr)
    res = tony_cli("sim", out, "-q")
    assert res.returncode == 1
    assert "FAIL" in res.stdout
    rep = json.loads((out / "sim_report.json").read_text())
    assert rep["mismatches"] == 1 and not rep["bit_exact"]
    assert rep["first_mismatches"][0]["tensor"] == "logits_q"


def test_sim_with_new_inputs_recomputes_golden(tmp_path, tony_cli, digits_mlp):
    out = tmp_path / "build"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", "2x3", "--samples", "3").returncode == 0
    x = np.load(digits_mlp / "inputs.npy")[100:122]
    np.save(tmp_path / "x.npy", x)
    res = tony_cli("sim", out, "-q", "--inputs", tmp_path / "x.npy")
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads((out / "sim_report.json").read_text())["samples"] == 22


def test_sim_waves_writes_a_waveform_and_names_it(tmp_path, tony_cli, digits_mlp):
    out = tmp_path / "b$ w"   # a folder name a shell would expand
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--array", "2x2", "--samples", "1").returncode == 0
    res = tony_cli("sim", out, "-q", "--waves")
    assert res.returncode == 0, res.stdout + res.stderr
    rep = json.loads((out / "sim_report.json").read_text())
    assert rep["bit_exact"] and rep["cycles_match"]
    waves = [p for p in rep["waves"] if p.endswith((".vcd", ".fst"))]
    assert waves and all(Path(p).is_file() and Path(p).stat().st_size > 1000 for p in waves)
    assert Path(waves[0]).is_relative_to(out.resolve())
    assert "waveforms: " in res.stdout and Path(waves[0]).name in res.stdout
