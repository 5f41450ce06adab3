"""The build folder (tony.build.Build) and the package's shape: no import cycles, the IR as the
back ends' waist."""
import ast
import json
from pathlib import Path

import networkx as nx
import pytest

import tony
from tony.build import DONE, Build, fill_once, staged_output
from tony.errors import InputError, TonyError, show

SRC = Path(tony.__file__).parent


def _is_module(name: str) -> bool:
    p = SRC.parent / name.replace(".", "/")
    return p.with_suffix(".py").is_file() or (p / "__init__.py").is_file()


def _module_imports() -> nx.DiGraph:
    """tony.* module -> tony.* modules it imports at module level (not inside functions);
    `from pkg import sub` counts as importing the submodule pkg.sub."""
    g = nx.DiGraph()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        pkg = name if rel.name == "__init__" else name.rsplit(".", 1)[0]
        g.add_node(name)
        for node in ast.parse(path.read_text()).body:
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = pkg.split(".")
                    base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}") else base for a in node.names]
            for t in targets:
                if t.startswith("tony") and _is_module(t) and t != name:
                    g.add_edge(name, t)
    return g


def test_no_module_level_import_cycle():
    g = _module_imports()
    assert g.number_of_edges() > 50
    cycles = list(nx.simple_cycles(g))
    assert not cycles, f"import cycles: {cycles[:5]}"


@pytest.mark.parametrize("backend", ["tony.accel", "tony.hls", "tony.rtl", "tony.sim", "tony.board", "tony.ref",
                                     "tony.ir"])
def test_back_ends_do_not_import_onnx_or_the_frontend(backend):
    """Below the IR, nothing reads ONNX: the back ends take an ir.Graph (module-level imports)."""
    g = _module_imports()
    below = [n for n in g if n == backend or n.startswith(backend + ".")]
    reach = set().union(*(nx.descendants(g, n) | {n} for n in below))
    assert not {n for n in reach if n.startswith(("tony.frontend", "tony.quant", "tony.api", "tony.compiler"))}
    for n in below:
        path = SRC.parent / (n.replace(".", "/") + ".py")
        path = path if path.is_file() else SRC.parent / n.replace(".", "/") / "__init__.py"
        tree = ast.parse(path.read_text())
        top = [a.name for node in tree.body if isinstance(node, ast.Import) for a in node.names]
        top += [node.module for node in tree.body if isinstance(node, ast.ImportFrom) and node.module]
        assert "onnx" not in top and "onnxruntime" not in top, n


def test_a_folder_without_manifest_is_refused(tmp_path):
    with pytest.raises(InputError, match="not a Tony build"):
        Build.open(tmp_path)


def test_a_corrupt_manifest_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        Build.open(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"model": "m"}))
    with pytest.raises(InputError, match="compile it again"):
        Build.open(tmp_path)


def _manifest(kind: str, **over) -> str:
    from tony.build import FIELDS

    m = {"kind": kind, **{k: t() for k, t in FIELDS[kind].items()}, **over}
    return json.dumps(m)


@pytest.mark.parametrize("kind", ["accel", "hls"])
def test_a_manifest_missing_a_field_is_refused(tmp_path, kind):
    from tony.build import FIELDS

    for key in FIELDS[kind]:
        m = json.loads(_manifest(kind))
        m.pop(key)
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(InputError, match=f"'{key}' is missing"):
            Build.open(tmp_path)
        m[key] = True
        (tmp_path / "manifest.json").write_text(json.dumps(m))
        with pytest.raises(InputError, match=f"'{key}' is missing or not"):
            Build.open(tmp_path)


def test_a_build_of_another_kind_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text(_manifest("hls"))
    assert Build.open(tmp_path).kind == "hls"
    with pytest.raises(InputError, match="hls build, not accel"):
        Build.open(tmp_path, kind="accel")


def test_a_file_outside_the_build_is_never_read(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_text(_manifest("accel"))
    (tmp_path / "secret.npy").write_bytes(b"x")
    b = Build.open(tmp_path / "b")
    with pytest.raises(InputError, match="missing"):
        b.file("../secret.npy")


def test_staged_output_leaves_nothing_behind_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_output(tmp_path / "out") as t:
            (t / "half.txt").write_text("x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def _fill_slowly(folder, log):
    import time

    def make():
        with open(log, "a") as f:
            f.write("filled\n")
        time.sleep(0.3)   # the other process arrives while this one fills
        (folder / "data.txt").write_text("ok")
    return fill_once(folder, make, lock_file=folder.parent / "shared.lock", fresh=True)


def test_fill_once_fills_a_shared_folder_once_across_processes(tmp_path):
    import multiprocessing

    folder, log = tmp_path / "shared", tmp_path / "log.txt"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(3) as pool:
        ran = pool.starmap(_fill_slowly, [(folder, log)] * 3)
    assert sorted(ran) == [False, False, True]
    assert log.read_text() == "filled\n" and (folder / "data.txt").read_text() == "ok"
    assert not _fill_slowly(folder, log)   # finished: never filled again


def test_fill_once_starts_over_after_a_failed_fill(tmp_path):
    folder = tmp_path / "shared"

    def fail():
        (folder / "half.txt").write_text("x")
        raise RuntimeError("boom")
    with pytest.raises(RuntimeError):
        fill_once(folder, fail, lock_file=tmp_path / "shared.lock")
    assert not (folder / DONE).exists()
    assert fill_once(folder, lambda: (folder / "whole.txt").write_text("y"), lock_file=tmp_path / "shared.lock",
                     fresh=True)
    assert sorted(f.name for f in folder.iterdir()) == sorted([DONE, "whole.txt"])


def test_messages_show_newlines_and_escapes_escaped():
    e = TonyError("bad", where='node "a\nb\x1b[31m" (Conv)')
    assert "\n" not in str(e) and "\x1b" not in str(e) and "a\\nb\\x1b[31m" in str(e)
    assert show("ok name") == "ok name"
