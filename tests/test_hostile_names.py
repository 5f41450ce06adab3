"""Model, graph and node names are data, never code: a build of a model with hostile names has
every generated file parse as its language with nothing of the name outside comments and string
literals, and nothing runs or appears outside the build."""
import json
import py_compile
import shutil
import subprocess
import sys

import onnx
import pytest
import yaml

HOSTILE = [
    'm"""; import os; os.system("touch PWNED"); """',
    "a */ int pwned_symbol; /* b",
    "x\n#include <pwned.h>\ny",
    "$(touch PWNED) `touch PWNED`; rm -rf ..; echo \\",
    "../../etc/passwd",
    "q'''\u202e\u540d\\",
    "n" * 300,
]


def _hostile_model(src, name):
    """The model at `src` with `name` as its graph's name and in every node and tensor name."""
    m = _hostile_tensors(src, name)
    m.graph.name = name
    for i, n in enumerate(m.graph.node):
        n.name = f"{name}{i}"
    return m


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_generated_files_parse_and_hold_the_name_only_as_data(name, digits_mlp, tmp_path, tony_cli):
    onnx.save(_hostile_model(digits_mlp / "model.onnx", name), tmp_path / "evil.onnx")
    work = tmp_path / "cwd"
    work.mkdir()
    out = tmp_path / "b"
    r = subprocess.run([sys.executable, "-m", "tony.cli", "compile", str(tmp_path / "evil.onnx"), "-o", str(out),
                        "--array", "4x4", "--samples", "2"], cwd=work, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.strip().splitlines()) == 1, r.stdout  # the name is shown escaped, on one line
    m = json.loads((out / "manifest.json").read_text())
    assert m["model"] == name  # JSON keeps the real name

    driver = out / "bringup" / "tony_driver.py"
    py_compile.compile(str(driver), doraise=True)
    r = subprocess.run([sys.executable, "-c", "import tony_driver; print(tony_driver.PROG_LEN)"],
                       cwd=driver.parent, capture_output=True, text=True, env={"PYTHONPATH": str(driver.parent)})
    assert "PWNED" not in r.stderr
    assert not any(p.name == "PWNED" for p in tmp_path.rglob("*")), "a name ran as code"

    core = next(out.glob("*.core"))
    assert yaml.safe_load(core.read_text())["name"].startswith("tony:generated:")
    header = next((out / "bringup").glob("*.h"))
    if shutil.which("gcc"):
        r = subprocess.run(["gcc", "-E", "-P", "-x", "c", str(header)], capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert "pwned" not in r.stdout.lower() and "PWNED" not in r.stdout
        r = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Werror", "-x", "c", str(header)],
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
    for f in list((out / "rtl").iterdir()) + list((out / "rtl_axi").iterdir()) + [out / "filelist.f"]:
        text = f.read_text()
        for frag in ("pwned", "PWNED", "#include <pwned", "../../etc", "$(touch"):
            assert frag not in text, (f.name, frag)


def test_sim_report_table_shows_a_model_name_on_one_line_without_markup():
    """`tony sim` / `tony report`: a layer or model name with a newline and rich markup is printed
    as text, its newline escaped, so each layer stays one row."""
    from rich.console import Console

    from tony.report import print_sim_report

    name = "evil\n[bold red]x[/]"
    rep = {"model": name, "accel": {"rows": 8, "cols": 8}, "cycles": 10, "predicted_cycles": 10,
           "cycles_match": True, "layers": [{"name": name, "op": "conv", "K": 9, "M": 8, "macs": 64, "cycles": 10,
                                             "predicted": 10, "utilization": 0.1, "bound": 1.0}]}
    console = Console(width=200, record=True, color_system=None)
    print_sim_report(rep, console)
    text = console.export_text()
    assert text.count("evil\\n[bold red]x[/]") == 2 and "evil\n" not in text
    row = next(line for line in text.splitlines() if "conv" in line)   # each value in its own column
    assert [c.strip() for c in row.split("│")[2:-1]] == ["conv", "9 x 8", "64", "10", "10", "10.0%", "100.0%"]


def _hostile_tensors(src, name):
    """The model at `src` with `name` (plus a counter) as every tensor name: graph inputs, outputs
    and the values between nodes (initializers keep theirs)."""
    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    vals = [v.name for v in m.graph.input if v.name not in inits] + [o for n in m.graph.node for o in n.output]
    new = {v: f"{name}{k}" for k, v in enumerate(dict.fromkeys(vals))}
    for n in m.graph.node:
        n.input[:] = [new.get(i, i) for i in n.input]
        n.output[:] = [new.get(o, o) for o in n.output]
    for v in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        v.name = new.get(v.name, v.name)
    return m


def test_ir_and_run_print_tensor_names_escaped_one_per_line(digits_mlp, tmp_path, tony_cli):
    """`tony ir` (and a build's ir.txt, the same text) and `tony run` print each value on one line:
    a newline or a bidirectional override in a tensor or graph name is shown escaped."""
    name = "t\n#x\u202e"
    m = _hostile_tensors(digits_mlp / "model.onnx", name)
    m.graph.name = name
    onnx.save(m, tmp_path / "evil.onnx")
    r = tony_cli("ir", tmp_path / "evil.onnx")
    assert r.returncode == 0, r.stderr
    assert "\u202e" not in r.stdout and "\n#x" not in r.stdout
    assert r.stdout.splitlines()[0].startswith("graph t\\n#x\\u202e (")
    assert all(line.startswith(("graph ", "  ")) for line in r.stdout.splitlines())   # no line broken in two
    r = tony_cli("run", tmp_path / "evil.onnx", "--inputs", digits_mlp / "inputs.npy")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("t\\n#x\\u202e") and "\u202e" not in r.stdout and "\n#x" not in r.stdout


def test_compile_host_reasons_show_tensor_names_escaped():
    """`tony compile`'s lines on ops kept on the host: a reason that quotes a tensor name with a
    newline or control character stays on its one line, escaped."""
    from tony.report import placement_lines

    where = {"ops": [{"node": "n\n1", "op": "Reshape", "segment": 2, "where": "host",
                      "reason": "'x\ny\u202e' has 3 dimensions"}],
             "segments": [{"kind": "host"}], "device_macs": 0, "host_macs": 0, "device_mac_share": 0.0}
    lines = placement_lines(where)
    assert lines[0] == "  host: n\\n1 (Reshape, segment 2): 'x\\ny\\u202e' has 3 dimensions"
    assert not any("\n" in line or "\u202e" in line for line in lines)


def test_sim_report_table_keeps_a_long_layer_name_with_spaces_on_one_row():
    """A layer name longer than its column, with spaces where rich would wrap it, is cut with '…'
    on its row rather than folded onto a second one."""
    from rich.console import Console

    from tony.report import print_sim_report

    long = "a b " * 60
    rep = {"model": "m", "accel": {"rows": 4, "cols": 8}, "cycles": 10, "predicted_cycles": 10, "cycles_match": True,
           "layers": [{"name": n, "op": op, "K": 9, "M": 8, "macs": 64, "cycles": 5, "predicted": 5,
                       "utilization": 0.1, "bound": 1.0} for n, op in ((long, "conv"), ("short", "dense"))]}
    console = Console(width=120, record=True, color_system=None)
    print_sim_report(rep, console)
    rows = [line for line in console.export_text().splitlines() if line.startswith("│")]
    assert len(rows) == 2, rows   # one row per layer
    assert [c.strip() for c in rows[0].split("│")[2:-1]] == ["conv", "9 x 8", "64", "5", "5", "10.0%", "100.0%"]
    assert rows[0].split("│")[1].strip().endswith("…") and "dense" in rows[1]
