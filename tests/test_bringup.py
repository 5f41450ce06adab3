"""Bring-up files of `tony compile` (C header, PYNQ driver, FuseSoC AXI target, register map
docs) and `tony compare --memory` on whole-memory dumps."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def build(tmp_path_factory, digits_mlp):
    from tony.compiler import compile_model

    out = tmp_path_factory.mktemp("bringup") / "b"
    compile_model(digits_mlp / "model.onnx", out, samples=3)
    return out


def golden_memory(build: Path) -> list[int]:
    """The memory the accelerator must leave after each run, back to back: the image with that
    run's inputs, and the reference's outputs packed as the accelerator stores them."""
    from tony.accel.layout import pack_act, words_to_beats

    m = json.loads((build / "manifest.json").read_text())
    a = m["accel"]
    image = [int(v) for v in np.load(build / "mem" / "image.npy").astype(np.uint64)]
    runs = np.load(build / "mem" / "runs.npy").astype(np.uint64)
    out = []
    for r in range(m["runs"]):
        mem = list(image)
        for i in m["inputs"]:
            mem[i["ext"]:i["ext"] + i["beats"]] = [int(b) for b in runs[r][i["offset"]:i["offset"] + i["beats"]]]
        for o in m["outputs"]:
            y = np.load(build / "golden" / f"{o['key']}.npy")[r * m["batch"]:(r + 1) * m["batch"]]
            y = np.concatenate([y, np.zeros((m["batch"] - y.shape[0],) + y.shape[1:], y.dtype)])
            beats = words_to_beats(pack_act(y, o["c"], o["h"], o["w"], a["cols"], a["a_bits"]), a["a_bits"], a["mem_bits"])
            mem[o["ext"]:o["ext"] + o["beats"]] = beats
        out += mem
    return out


def write_dump(path: Path, beats: list[int], mem_bits: int, fmt: str) -> None:
    if fmt == "hex":
        path.write_text("// whole-memory dump\n" + "".join(format(b, f"0{mem_bits // 4}x") + "\n" for b in beats))
    else:
        path.write_bytes(np.asarray(beats, dtype=np.uint64).astype(f"<u{mem_bits // 8}").tobytes())


@pytest.mark.parametrize("fmt", ["hex", "bin"])
def test_compare_memory_finds_a_single_flipped_bit(build, tmp_path, tony_cli, fmt):
    m = json.loads((build / "manifest.json").read_text())
    mem_bits = m["accel"]["mem_bits"]
    good = golden_memory(build)
    path = tmp_path / f"good.{fmt}"
    write_dump(path, good, mem_bits, fmt)
    res = tony_cli("compare", build, "--hw-dump", path, "--memory")
    assert res.returncode == 0 and "PASS" in res.stdout, res.stdout + res.stderr
    # flip bit 2 of output element (sample 1, index 3): lane 3 of the first word of run 1's output
    o = m["outputs"][0]
    n = len(good) // m["runs"]
    bad = list(good)
    a_bits = m["accel"]["a_bits"]
    lane = 3 % m["accel"]["cols"]
    word = 3 // m["accel"]["cols"]  # channel group of index 3 (a dense output is a 1x1 image)
    beats_per_word = -(-m["accel"]["cols"] * a_bits // mem_bits)
    bit = lane * a_bits + 2
    beat = n + o["ext"] + word * m["batch"] * beats_per_word + bit // mem_bits
    bad[beat] ^= 1 << (bit % mem_bits)
    path = tmp_path / f"bad.{fmt}"
    write_dump(path, bad, mem_bits, fmt)
    res = tony_cli("compare", build, "--hw-dump", path, "--memory")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 of" in res.stdout and o["key"] in res.stdout and "(1, 3)" in res.stdout and "0x4" in res.stdout


def test_compare_memory_refuses_a_dump_of_the_wrong_size(build, tmp_path, tony_cli):
    path = tmp_path / "short.bin"
    path.write_bytes(b"\0" * 24)
    res = tony_cli("compare", build, "--hw-dump", path, "--memory")
    assert res.returncode == 1 and "memory image" in res.stderr + res.stdout


def test_compare_memory_flags_a_changed_weight(build, tmp_path, tony_cli):
    m = json.loads((build / "manifest.json").read_text())
    mem = golden_memory(build)
    mem[m["program"]["length"] * 512 // m["accel"]["mem_bits"]] ^= 1  # first parameter beat
    path = tmp_path / "w.bin"
    write_dump(path, mem, m["accel"]["mem_bits"], "bin")
    res = tony_cli("compare", build, "--hw-dump", path, "--memory")
    assert res.returncode == 1 and "program/parameter region" in res.stdout


def test_c_header_compiles_and_matches_the_register_map(build, tmp_path):
    from tony.board.bringup import REGISTERS

    m = json.loads((build / "manifest.json").read_text())
    header = build / m["bringup"]["header"]
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    src = tmp_path / "t.c"
    checks = "".join(f'  printf("%u\\n", (unsigned)TONY_REG_{r.name});\n' for r in REGISTERS)
    src.write_text(f'#include <stdio.h>\n#include "{header}"\nint main(void) {{\n{checks}'
                   '  printf("%u %u %u\\n", (unsigned)TONY_PROG_LEN, (unsigned)TONY_IMAGE_BEATS, (unsigned)TONY_BUILD_ID);\n'
                   "  return 0;\n}\n")
    exe = tmp_path / "t"
    subprocess.run([cc, "-Wall", "-Werror", "-o", exe, src], check=True)
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout.split("\n")
    assert [int(v) for v in out[:len(REGISTERS)]] == [r.offset for r in REGISTERS]
    plen, beats, bid = (int(v) for v in out[len(REGISTERS)].split())
    assert plen == m["program"]["boot"] <= m["program"]["length"] and bid == m["axi"]["build_id"]
    assert beats == len(np.load(build / "mem" / "image.npy"))


def test_driver_sketch_compiles(build):
    import py_compile

    m = json.loads((build / "manifest.json").read_text())
    py_compile.compile(str(build / m["bringup"]["driver"]), doraise=True)


def test_build_id_names_the_parameters(build):
    from tony.board.bringup import build_id

    p = json.loads((build / "manifest.json").read_text())["axi"]["params"]
    assert build_id(p) == p["BUILD_ID"]
    assert build_id({**p, "ROWS": p["ROWS"] + 1}) != p["BUILD_ID"]


@pytest.mark.sim
def test_fusesoc_axi_target_lints(build):
    fusesoc = shutil.which("fusesoc") or str(Path(sys.executable).parent / "fusesoc")
    m = json.loads((build / "manifest.json").read_text())
    res = subprocess.run([fusesoc, "--cores-root", str(build), "core", "show", m["fusesoc"]["vlnv"]],
                         capture_output=True, text=True)
    assert res.returncode == 0 and "axi_lint" in res.stdout, res.stdout + res.stderr
    from tony.sim import lint

    files = (build / m["fusesoc"]["filelist_axi"]).read_text().split()
    lint([build / f for f in files], "tony_axi_top", m["axi"]["params"])


def test_register_docs_show_the_register_map():
    from tony.board.bringup import markdown_table

    assert markdown_table() in (DOCS / "registers.md").read_text()
