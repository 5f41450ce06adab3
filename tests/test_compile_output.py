"""What `tony compile` writes: golden vectors, memory images, manifest; nothing half-written."""
import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from tony.golden import from_hex_lines, to_hex_lines
from tony.names import safe_id


def test_compile_writes_golden_in_both_formats(tmp_path, tony_cli, digits_mlp):
    out = tmp_path / "b"
    res = tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--samples", "5")
    assert res.returncode == 0, res.stderr
    m = json.loads((out / "manifest.json").read_text())
    assert m["samples"] == 5 and m["kind"] == "accel"
    assert {k: m["accel"][k] for k in ("rows", "cols", "a_bits", "w_bits", "acc_bits")} == \
        {"rows": 8, "cols": 8, "a_bits": 8, "w_bits": 8, "acc_bits": 32}  # the CLI's default array
    for key, files in m["golden"].items():
        arr = np.load(out / "golden" / files["npy"])
        if "hex" in files:
            lines = (out / "golden" / files["hex"]).read_text().splitlines()
            back = from_hex_lines(lines, 8, key != "relu0_q")
            assert np.array_equal(back, arr.reshape(-1)), key
    assert sorted(p.name for p in (out / "rtl").iterdir()) == [
        "tony_accel.v", "tony_act_buf.v", "tony_agu.v", "tony_controller.v", "tony_conv_unit.v", "tony_decoder.v",
        "tony_dma.v", "tony_isa.vh", "tony_mac.v", "tony_os_array.v", "tony_post.v", "tony_ppu.v", "tony_vec_unit.v"]
    assert m["rtl"][0] == "tony_isa.vh"  # the include file first: a file list compiles it before its users


def test_hex_round_trip_twos_complement():
    a = np.array([-128, -1, 0, 1, 127])
    assert to_hex_lines(a, 8) == ["80", "ff", "00", "01", "7f"]
    assert from_hex_lines(to_hex_lines(a, 8), 8, True).tolist() == a.tolist()
    assert to_hex_lines([-2], 32) == ["fffffffe"]


def test_model_names_are_sanitized(tmp_path, tony_cli, digits_mlp):
    m = onnx.load(digits_mlp / "model.onnx")
    evil = 'x"; rm -rf / #`$(id)'
    rename = {"relu0_q": evil + "/../../pwn"}
    for n in m.graph.node:
        for i, v in enumerate(n.input):
            if v in rename:
                n.input[i] = rename[v]
        for i, v in enumerate(n.output):
            if v in rename:
                n.output[i] = rename[v]
        n.name = evil
    p = tmp_path / "evil.onnx"
    onnx.save(m, p)
    out = tmp_path / "b"
    res = tony_cli("compile", p, "-o", out, "--samples", "2")
    assert res.returncode == 0, res.stderr
    files = [f for f in out.rglob("*") if f.is_file()]
    assert all(f.resolve().is_relative_to(out.resolve()) for f in files)
    for f in files:
        assert "$(" not in f.name and '"' not in f.name and "/" not in f.relative_to(out).name
    for v in (out / "rtl").glob("*.v"):
        assert evil not in v.read_text() and "rm -rf" not in v.read_text()
    assert safe_id(evil) == "x_rm_rf_id"


def test_overflowing_layer_is_refused_with_its_bound(tmp_path, tony_cli, digits_mlp):
    res = tony_cli("compile", digits_mlp / "model.onnx", "-o", tmp_path / "b", "--acc-bits", "16")
    assert res.returncode == 1
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and "accumulator can reach" in err and "fc0" in err
    assert not (tmp_path / "b").exists()


def test_refuses_to_overwrite_a_foreign_folder(tmp_path, tony_cli, digits_mlp):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    res = tony_cli("compile", digits_mlp / "model.onnx", "-o", out)
    assert res.returncode == 1 and "refusing" in res.stderr
    assert (out / "thesis.tex").read_text() == "precious"


def test_fusesoc_parses_the_generated_core(tmp_path, tony_cli, digits_mlp):
    import shutil
    import subprocess
    import sys

    out = tmp_path / "b"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--samples", "1").returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    vlnv = m["fusesoc"]["vlnv"]
    fusesoc = shutil.which("fusesoc") or str(Path(sys.executable).parent / "fusesoc")
    res = subprocess.run([fusesoc, "--cores-root", str(out), "core", "show", vlnv], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert vlnv in res.stdout and "lint" in res.stdout
    listed = (out / "filelist.f").read_text().split()
    assert listed == [f"rtl/{n}" for n in m["rtl"]] and all((out / f).is_file() for f in listed)


@pytest.mark.parametrize("fmt", ["hex", "bin"])
def test_compare_finds_a_single_flipped_bit(tmp_path, tony_cli, digits_mlp, fmt):
    out = tmp_path / "b"
    assert tony_cli("compile", digits_mlp / "model.onnx", "-o", out, "--samples", "3").returncode == 0
    m = json.loads((out / "manifest.json").read_text())
    key = m["device_outputs"][-1]
    want = np.load(out / "golden" / f"{key}.npy")
    dump = want.copy().reshape(-1)
    dump[17] ^= 1 << 3
    path = tmp_path / f"dump.{fmt}"
    if fmt == "hex":
        path.write_text("\n".join(to_hex_lines(dump, 8)) + "\n")
    else:
        path.write_bytes(b"\xaa" * 64 + dump.astype(np.int8).tobytes())
    extra = ["--offset", "64"] if fmt == "bin" else []
    res = tony_cli("compare", out, "--hw-dump", path, *extra)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 of 30 values" in res.stdout and key in res.stdout
    sample, idx = divmod(17, 10)
    assert f"({sample}, {idx})" in res.stdout and "0x8" in res.stdout
    good = tmp_path / "good.hex"
    good.write_text("\n".join(to_hex_lines(want, 8)) + "\n")
    res = tony_cli("compare", out, "--hw-dump", good)
    assert res.returncode == 0 and "PASS" in res.stdout
