"""A corpus of bad inputs for every command: each gets one line on stderr and a non-zero exit, no
traceback, no output left behind and nothing written outside the output.

The CLI runs in-process (tony.cli.main, stdout/stderr captured); a sample also runs as a
subprocess. Randomized mutations (random bytes, truncations, bit flips) print their seed. A
mutated model that is still valid may compile; it then must succeed (exit 0) — every other
case must be refused.
"""
import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from tony.cli import main

SEED = int(os.environ.get("TONY_SEED", "0")) or 20240901
COUNT = {"cases": 0}
# the whole module on one worker under pytest-xdist (`--dist loadgroup`, pyproject.toml), so that
# test_corpus_has_at_least_300_inputs counts every case above it, not one worker's share
pytestmark = pytest.mark.xdist_group("bad_inputs")


# ---- the check ------------------------------------------------------------------------------------

def _snapshot(root: Path, skip=()) -> dict:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        if any(d == s or s in d.parents for s in skip):
            continue
        for f in filenames + dirnames:
            p = d / f
            if any(p == s or s in p.parents for s in skip):
                continue
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns) if p.is_file() else None
    return out


class Corpus:
    """Runs commands in-process under `root` and collects every violation."""

    def __init__(self, root: Path, capsys):
        self.root, self.capsys, self.bad, self.n, self.known = root, capsys, [], 0, []
        self.last_err = ""

    def refuse(self, name, argv, out=None, may_succeed=False, build=None, known=None, may_mismatch=False):
        """... `known`: an open defect that mishandles this input (reported, and the case must still
        be mishandled: tests/test_bad_inputs.py::test_open_defect_* hold it strictly)."""
        nbad = len(self.bad)
        self._refuse(name, argv, out, may_succeed, build, may_mismatch)
        if known and len(self.bad) > nbad:
            self.known.append(f"{known}: {self.bad.pop()}")

    def _refuse(self, name, argv, out=None, may_succeed=False, build=None, may_mismatch=False):
        """`argv` must fail cleanly (or, with may_succeed, succeed); `out` (file or folder) must not be
        left behind on failure; nothing else under root may change (`build`: a build folder the
        command reads and may write its reports into)."""
        self.n += 1
        COUNT["cases"] += 1
        argv = [str(a) for a in argv]
        skip = [Path(out)] if out else []
        skip += [Path(build)] if build else []
        before = _snapshot(self.root, skip)
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code if isinstance(e.code, int) else 1
        except BaseException as e:  # noqa: BLE001 - the CLI would print a traceback
            self.capsys.readouterr()
            self.bad.append(f"{name}: {type(e).__name__}: {str(e)[:200]} (a traceback) argv={argv}")
            self._clean(out)
            return
        cap = self.capsys.readouterr()
        err = self.last_err = cap.err.strip()
        if rc == 0 and may_succeed or (may_mismatch and rc == 1 and not err and "FAIL" in cap.out):
            self._clean(out)  # a readable dump of other values: `tony compare` reports the mismatches
            return
        problems = []
        if rc == 0:
            problems.append("exit 0")
        if "Traceback" in cap.err or "Traceback" in cap.out:
            problems.append("a traceback")
        if len(err.splitlines()) != 1:
            problems.append(f"stderr has {len(err.splitlines())} lines: {err[:300]!r}")
        if out and Path(out).exists():
            problems.append(f"left {Path(out).name} behind")
        after = _snapshot(self.root, skip)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))[:3]
            problems.append(f"wrote outside the output: {changed}")
        if problems:
            self.bad.append(f"{name}: {'; '.join(problems)} argv={argv}")
        self._clean(out)

    @staticmethod
    def _clean(out):
        if out and Path(out).is_dir():
            shutil.rmtree(out)
        elif out and Path(out).exists():
            Path(out).unlink()

    def verdict(self, at_least):
        print(f"{self.n} bad inputs, {len(self.known)} mishandled by open defects")
        for k in self.known:
            print("  open:", k[:300])
        assert self.n >= at_least, self.n
        assert not self.bad, f"{len(self.bad)} of {self.n} bad inputs mishandled:\n" + "\n".join(self.bad)


@pytest.fixture
def corpus(tmp_path, capsys):
    root = tmp_path / "work"
    root.mkdir()
    return Corpus(root, capsys)


# ---- models ---------------------------------------------------------------------------------------

def _qdq_model(shape=(1, 4), *, name="g", node_name="the_matmul", op="MatMul", opset=13, domain="",
               tensor="x", extra=None):
    """A small pow2 QDQ MatMul (or another op in its place) on a float input of `shape`."""
    k = shape[-1] if isinstance(shape[-1], int) and 0 < shape[-1] <= 64 else 4
    x = helper.make_tensor_value_info(tensor, TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape[:-1]) + [3])
    inits = [numpy_helper.from_array(np.array(0.125, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((k, 3), np.int8), "w"),
             numpy_helper.from_array(np.array(0.0625, np.float32), "ws")]
    N = helper.make_node
    nodes = [N("QuantizeLinear", [tensor, "s", "z"], ["xq"], name="qx"),
             N("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="dqx"),
             N("DequantizeLinear", ["w", "ws", "z"], ["wd"], name="dqw"),
             N(op, ["xd", "wd"], ["mm"], name=node_name, domain=domain),
             N("QuantizeLinear", ["mm", "s", "z"], ["yq"], name="qy"),
             N("DequantizeLinear", ["yq", "s", "z"], ["y"], name="dqy")]
    if extra:
        nodes = extra(nodes)
    ops = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(helper.make_graph(nodes, name, [x], [y], inits), opset_imports=ops)
    m.ir_version = 8
    return m


def _conv_model(shape, m=2, float_model=False):
    """A QDQ 1x1 Conv of `shape` to `m` channels (a float Conv with `float_model`)."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [shape[0], m] + list(shape[2:]))
    c = shape[1]
    inits = [numpy_helper.from_array(np.array(0.125, np.float32), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z"),
             numpy_helper.from_array(np.ones((m, c, 1, 1), np.float32 if float_model else np.int8), "w"),
             numpy_helper.from_array(np.array(0.0625, np.float32), "ws")]
    N = helper.make_node
    nodes = [N("QuantizeLinear", ["x", "s", "z"], ["xq"]), N("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             N("DequantizeLinear", ["w", "ws", "z"], ["wd"]), N("Conv", ["xd", "wd"], ["c"], name="big_conv"),
             N("QuantizeLinear", ["c", "s", "z"], ["cq"]), N("DequantizeLinear", ["cq", "s", "z"], ["y"])]
    if float_model:
        inits = inits[2:3]
        nodes = [N("Conv", ["x", "w"], ["y"], name="big_conv")]
    m = helper.make_model(helper.make_graph(nodes, "big", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def _raw_save(m: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(m.SerializeToString())
    return path


def _model_commands(model, root: Path, x):
    """(name, argv, output) for every command that reads a model."""
    out = root / "out"
    return [("ir", ["ir", model], None),
            ("run", ["run", model, "--inputs", x, "-o", root / "y.npy"], root / "y.npy"),
            ("compile", ["compile", model, "-o", out, "--array", "2x2", "--samples", "2"], out),
            ("compile-hls", ["compile", "--backend", "hls", model, "-o", out, "--samples", "2"], out),
            ("quantize", ["quantize", model, "--calib", x, "-o", root / "q.onnx"], root / "q.onnx"),
            ("snap-pow2", ["quantize", "--snap-pow2", model, "-o", root / "q.onnx"], root / "q.onnx")]


@pytest.fixture(scope="module")
def mlp(tmp_path_factory):
    from tony.models import build_example

    d = tmp_path_factory.mktemp("bad_inputs_mlp")
    build_example("digits-mlp", d)
    return d


# ---- corrupt model files --------------------------------------------------------------------------

def test_random_bytes_truncations_and_bit_flips(corpus, mlp):
    rng = np.random.default_rng(SEED)
    print(f"seed={SEED}")
    root = corpus.root
    x = root / "x.npy"
    shutil.copy(mlp / "inputs.npy", x)
    data = (mlp / "model.onnx").read_bytes()
    fdata = (mlp / "float.onnx").read_bytes()
    p = root / "m.onnx"
    cmds = lambda: _model_commands(p, root, x)  # noqa: E731
    for i in range(24):  # random bytes, of every size class, through every command
        p.write_bytes(rng.integers(0, 256, size=int(rng.choice([0, 1, 7, 100, 5000]))).astype(np.uint8).tobytes())
        name, argv, out = cmds()[i % 6]
        corpus.refuse(f"random bytes {i} {name}", argv, out)
    for i in range(30):  # truncated protobufs
        src = data if i % 2 else fdata
        p.write_bytes(src[:int(rng.integers(1, len(src) - 1))])
        name, argv, out = cmds()[i % 6]
        corpus.refuse(f"truncated {i} {name}", argv, out)
    for i in range(42):  # bit flips: still a valid model sometimes; then it must run
        b = bytearray(data)
        for _ in range(int(rng.integers(1, 5))):
            k = int(rng.integers(0, len(b)))
            b[k] ^= 1 << int(rng.integers(0, 8))
        p.write_bytes(bytes(b))
        name, argv, out = [c for c in cmds() if c[0] in ("ir", "run", "snap-pow2")][i % 3]
        corpus.refuse(f"bit flip {i} {name}", argv, out, may_succeed=True)
    corpus.verdict(96)


def test_structurally_bad_graphs(corpus, mlp):
    root = corpus.root
    x = root / "x.npy"
    np.save(x, np.zeros((2, 1, 4), np.float32))
    models = {}
    models["empty graph"] = helper.make_model(helper.make_graph(
        [], "e", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])]), opset_imports=[helper.make_opsetid("", 13)])
    models["no nodes no outputs"] = helper.make_model(helper.make_graph([], "e", [], []),
                                                      opset_imports=[helper.make_opsetid("", 13)])

    def cyclic(nodes):
        nodes[1].input[0] = "yq"  # dqx reads the graph's last quantizer: a cycle
        return nodes
    models["cyclic graph"] = _qdq_model(extra=cyclic)
    models["undefined input"] = _qdq_model(extra=lambda n: n[:3] + [helper.make_node("MatMul", ["nowhere", "wd"], ["mm"])] + n[4:])
    models["duplicate output"] = _qdq_model(extra=lambda n: n + [helper.make_node("Relu", ["xd"], ["mm"])])
    models["dynamic feature dim"] = _qdq_model(("N", "K"))
    models["zero dim"] = _qdq_model((0, 4))  # a zero batch axis is a symbolic one (batch 1): it runs
    models["zero feature dim"] = _conv_model((1, 0, 4, 4))
    models["negative dim"] = _qdq_model((1, -4))
    models["unknown domain"] = _qdq_model(op="FancyMatMul", domain="com.example.fancy")
    models["unknown op"] = _qdq_model(op="Softsign", node_name="weird")
    models["made-up op"] = _qdq_model(op="NoSuchOperator")
    models["opset 7"] = _qdq_model(opset=7)
    models["opset 12"] = _qdq_model(opset=12)
    models["opset 99"] = _qdq_model(opset=99)
    models["opset 1000000"] = _qdq_model(opset=1000000)
    models["no default opset"] = _qdq_model()
    del models["no default opset"].opset_import[0]
    models["float only"] = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])]), opset_imports=[helper.make_opsetid("", 13)])
    models["string input"] = _qdq_model()
    models["string input"].graph.input[0].type.tensor_type.elem_type = TensorProto.STRING
    models["weight zero point"] = _qdq_model(extra=lambda n: n)
    models["weight zero point"].graph.initializer.append(numpy_helper.from_array(np.array(3, np.int8), "wz"))
    models["weight zero point"].graph.node[2].input[2] = "wz"
    models["NaN scale"] = _qdq_model()
    models["NaN scale"].graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(np.nan, np.float32), "s"))
    models["zero scale"] = _qdq_model()
    models["zero scale"].graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32), "s"))
    models["negative scale"] = _qdq_model()
    models["negative scale"].graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(-0.5, np.float32), "s"))
    models["inf scale"] = _qdq_model()
    models["inf scale"].graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array(np.inf, np.float32), "s"))
    for name, m in models.items():
        p = _raw_save(m, root / "m.onnx")
        for cname, argv, out in _model_commands(p, root, x):
            if cname == "quantize" and name in ("weight zero point",):
                continue  # a quantized model: quantize refuses it too, checked below
            corpus.refuse(f"{name} / {cname}", argv, out,
                          may_succeed=cname == "snap-pow2" and name not in ("cyclic graph", "undefined input") or
                          (name, cname) in {("zero dim", c) for c in ("ir", "run", "compile", "compile-hls")} |
                          {("weight zero point", "compile-hls")} | {("float only", "quantize"), ("empty graph", "ir"),
                                                        ("empty graph", "run"), ("weight zero point", "ir"),
                                                        ("weight zero point", "run"), ("dynamic feature dim", "ir"),
                                                        ("float only", "ir"), ("opset 12", "ir")})
    corpus.verdict(140)


def test_terabyte_dims_are_refused_before_allocating(corpus):
    root = corpus.root
    x = root / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    for shape in [(1, 1 << 40, 4), (1, 1 << 30, 1 << 12, 4), (1, 1 << 20, 1 << 20, 4)]:
        p = _raw_save(_qdq_model(shape), root / "m.onnx")
        for cname, argv, out in _model_commands(p, root, x):
            corpus.refuse(f"dims {shape} / {cname}", argv, out, may_succeed=cname in ("ir", "snap-pow2"))
    for shape in [(1, 3, 1 << 20, 1 << 20), (1, 1 << 16, 1 << 16, 1 << 8)]:
        p = _raw_save(_conv_model(shape), root / "m.onnx")
        for cname, argv, out in _model_commands(p, root, x):
            corpus.refuse(f"conv dims {shape} / {cname}", argv, out, may_succeed=cname in ("ir", "snap-pow2"))
    corpus.verdict(30)


def test_dims_needing_gigabytes_are_refused_by_the_memory_budget_before_allocating(corpus):
    """About 10 GB (an input of 2^31 values), terabytes, and a small input whose convolution output
    needs 32 GiB: every command that would run the graph says so in one line (tony.budget) before it
    allocates -- not a MemoryError from numpy, not an out-of-memory kill."""
    root = corpus.root
    small = root / "small.npy"
    np.save(small, np.zeros((1, 1, 1024, 1024), np.float32))
    cases = []
    for shape in [(1, 1 << 15, 1 << 14, 4), (1, 1 << 40, 4)]:
        p = _raw_save(_qdq_model(shape), root / f"m{len(cases)}.onnx")
        cases += [(f"dims {shape} / {c}", a, o) for c, a, o in _model_commands(p, root, small) if c.startswith("compile")]
    wide = _raw_save(_conv_model((1, 1, 1024, 1024), m=4096), root / "wide.onnx")
    cases += [(f"1024x1024 conv to 4096 channels / {c}", a, o) for c, a, o in _model_commands(wide, root, small)
              if c in ("run", "compile", "compile-hls")]
    wide_float = _raw_save(_conv_model((1, 1, 1024, 1024), m=4096, float_model=True), root / "wide_float.onnx")
    cases += [("float 1024x1024 conv to 4096 channels / quantize",
               ["quantize", wide_float, "--calib", small, "-o", root / "q.onnx"], root / "q.onnx")]
    for name, argv, out in cases:
        corpus.refuse(name, argv, out)
        if "would need about" not in corpus.last_err or "TONY_MEMORY_LIMIT" not in corpus.last_err:
            corpus.bad.append(f"{name}: not refused by the memory budget: {corpus.last_err[:200]!r}")
    corpus.verdict(len(cases))


def test_memory_budget_follows_tony_memory_limit(monkeypatch):
    """The same graph is refused under a lower TONY_MEMORY_LIMIT and runs under a higher one; a bad
    value of the variable is one line too."""
    from tony.api import load_ir
    from tony.budget import check_ir, ir_bytes
    from tony.errors import InputError

    g = load_ir(_conv_model((1, 1, 64, 64), m=16))
    need = ir_bytes(g, 3)[0]
    assert need > 3 * 64 * 64 * 17 * 8   # every tensor, 8 bytes a value
    monkeypatch.setenv("TONY_MEMORY_LIMIT", str(need - 1))
    with pytest.raises(InputError, match="would need about"):
        check_ir(g, 3)
    monkeypatch.setenv("TONY_MEMORY_LIMIT", f"{need / (1 << 20) + 1:.3f}M")
    check_ir(g, 3)
    for bad in ("lots", "-5G", "nan"):
        monkeypatch.setenv("TONY_MEMORY_LIMIT", bad)
        with pytest.raises(InputError, match="TONY_MEMORY_LIMIT"):
            check_ir(g, 3)


# ---- hostile names and paths ------------------------------------------------------------------------

HOSTILE = ['m"q\'', "a */ b /* c", "x\ny\r\nz", "$(touch PWNED) `touch PWNED`; rm -rf .. | & > <",
           "$(MAKE) %: ; @echo", "../../../etc/passwd", "..", "n" * 5000, "\x00\x01\x1b[2J", "名前\u202e"]


def test_hostile_names_in_failing_models_and_paths(corpus):
    root = corpus.root
    x = root / "x.npy"
    np.save(x, np.zeros((1, 4), np.float32))
    for i, h in enumerate(HOSTILE):
        for where in ("node", "graph", "tensor"):
            kw = {"node_name": h, "op": "Softsign"} if where == "node" else \
                {"name": h, "op": "Softsign"} if where == "graph" else {"tensor": h, "op": "Softsign"}
            p = _raw_save(_qdq_model(**kw), root / "m.onnx")
            for cname, argv, out in _model_commands(p, root, x)[:4]:
                corpus.refuse(f"hostile {where} {i} / {cname}", argv, out)
    # non-UTF-8 bytes in a name: not a valid protobuf string
    m = _qdq_model(node_name="PLACEHOLDER_NAME", op="Softsign")
    raw = m.SerializeToString().replace(b"PLACEHOLDER_NAME", b"bad\xff\xfe\xc0name")
    (root / "m.onnx").write_bytes(raw)
    for cname, argv, out in _model_commands(root / "m.onnx", root, x):
        corpus.refuse(f"non-UTF-8 name / {cname}", argv, out)
    # hostile paths: missing model files and output folders under them
    for i, h in enumerate(HOSTILE[:8]):
        missing = root / h.replace("\x00", "")[:200] / "m.onnx"
        corpus.refuse(f"hostile missing path {i}", ["ir", missing])
        corpus.refuse(f"hostile missing inputs {i}", ["run", root / "m.onnx", "--inputs", missing])
    corpus.verdict(130)


# ---- bad .npy inputs and calibration data -----------------------------------------------------------

def _bad_arrays(root: Path, shape) -> dict:
    n = int(np.prod(shape[1:]))
    arrs = {
        "nan": np.full(shape, np.nan, np.float32), "inf": np.full(shape, np.inf, np.float32),
        "-inf": np.full(shape, -np.inf, np.float32), "some nan": np.where(np.arange(n) % 7 == 0, np.nan, 0.5)
        .reshape(shape[1:])[None].astype(np.float32),
        "empty": np.zeros((0,) + tuple(shape[1:]), np.float32), "0-d": np.array(1.0, np.float32),
        "wrong shape": np.zeros((2, 3, 5), np.float32), "wrong rank": np.zeros(shape + (1,), np.float32),
        "strings": np.array(["a"] * n).reshape(shape), "complex": np.ones(shape, np.complex64),
        "bool": np.ones(shape, bool), "datetime": np.zeros(shape, "datetime64[s]"),
        "structured": np.zeros(shape, [("a", "f4"), ("b", "i4")]), "float64 huge": np.full(shape, 1e300),
        "float16": np.ones(shape, np.float16) * np.float16(np.inf),
    }
    files = {}
    for k, a in arrs.items():
        files[k] = root / f"{k.replace(' ', '_')}.npy"
        np.save(files[k], a)
    files["object (pickled)"] = root / "obj.npy"
    np.save(files["object (pickled)"], np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    files["pickle file"] = root / "pickle.npy"
    files["pickle file"].write_bytes(pickle.dumps([1, 2, 3]))
    files["text"] = root / "text.npy"
    files["text"].write_text("1 2 3\n")
    files["truncated npy"] = root / "trunc.npy"
    np.save(files["truncated npy"], np.zeros(shape, np.float32))
    files["truncated npy"].write_bytes(files["truncated npy"].read_bytes()[:100])
    files["npz"] = root / "arch.npy"
    np.savez(root / "arch.npz", x=np.zeros(shape, np.float32))
    (root / "arch.npz").rename(files["npz"])
    files["folder"] = root / "adir.npy"
    files["folder"].mkdir()
    files["missing"] = root / "missing.npy"
    return files


def test_bad_npy_inputs_and_calibration_data(corpus, mlp):
    root = corpus.root
    shutil.copy(mlp / "model.onnx", root / "model.onnx")
    shutil.copy(mlp / "float.onnx", root / "float.onnx")
    shape = np.load(mlp / "inputs.npy").shape[1:]
    files = _bad_arrays(root, tuple(shape))
    out = root / "out"
    for k, f in files.items():
        corpus.refuse(f"run --inputs {k}", ["run", root / "model.onnx", "--inputs", f, "-o", root / "y.npy"],
                      root / "y.npy")
        corpus.refuse(f"compile --inputs {k}", ["compile", root / "model.onnx", "-o", out, "--array", "2x2",
                                                "--inputs", f], out)
        corpus.refuse(f"compile hls --inputs {k}", ["compile", "--backend", "hls", root / "model.onnx", "-o", out,
                                                    "--inputs", f], out)
        corpus.refuse(f"quantize --calib {k}", ["quantize", root / "float.onnx", "--calib", f, "-o",
                                                root / "q.onnx"], root / "q.onnx")
        corpus.refuse(f"snap --inputs {k}", ["quantize", "--snap-pow2", root / "model.onnx", "--inputs", f,
                                             "-o", root / "q.onnx"], root / "q.onnx")
    for k in ("strings", "nan", "empty", "object (pickled)", "wrong shape", "folder"):
        corpus.refuse(f"snap --labels {k}", ["quantize", "--snap-pow2", root / "model.onnx", "--inputs",
                                             mlp / "inputs.npy", "--labels", files[k], "-o", root / "q.onnx"],
                      root / "q.onnx")
        corpus.refuse(f"tqt --train-data {k}", ["quantize", root / "float.onnx", "--calib", mlp / "inputs.npy",
                                                "--train-data", files[k], "-o", root / "q.onnx"], root / "q.onnx")
    np.savez(root / "nolabels.npz", x=np.zeros((2,) + tuple(shape), np.float32))
    corpus.refuse("tqt --train-data without y", ["quantize", root / "float.onnx", "--calib", mlp / "inputs.npy",
                                                 "--train-data", root / "nolabels.npz", "-o", root / "q.onnx"],
                  root / "q.onnx")
    corpus.verdict(120)


# ---- flags --------------------------------------------------------------------------------------------

def test_bad_flag_values(corpus, mlp):
    root = corpus.root
    model, out = mlp / "model.onnx", root / "out"
    comp = ["compile", model, "-o", out]
    cases = [comp + ["--array", a] for a in ("0x0", "65x1", "8x", "x8", "8x8x8", "-1x4", "1e3x2", "")]
    cases += [comp + ["--samples", v] for v in ("0", "-3", "nan", "1e9x")]
    cases += [comp + ["--batch", v] for v in ("0", "-1")]
    cases += [comp + ["--abuf-words", v] for v in ("-5", "3")]
    cases += [comp + ["--acc-bits", v] for v in ("15", "33", "0")]
    cases += [comp + ["--mem-bits", "128"], comp + ["--requant", "float"], comp + ["--rounding", "up"],
              comp + ["--backend", "vhdl"], comp + ["--weights", "rom"], comp[:2]]
    cases += [["compile", "--backend", "hls", model, "-o", out, "--array", "0x9"],
              ["compile", "--backend", "hls", model, "-o", out, "--samples", "0"]]
    cases += [["example", "no-such-model", "-o", out], ["quantize", model, "-o", root / "q.onnx"],
              ["quantize", model, "--calib", mlp / "inputs.npy", "--weight-bits", "3", "-o", root / "q.onnx"],
              ["quantize", mlp / "float.onnx", "--calib", mlp / "inputs.npy", "--method", "best", "-o", out],
              ["nosuchcommand"], [], ["--debug"], ["ir"], ["run", model]]
    for i, argv in enumerate(cases):
        corpus.refuse(f"flags {i}", argv, out if "-o" in argv and argv[argv.index("-o") + 1] == out else
                      (root / "q.onnx" if "quantize" in argv else None))
    # an output path that cannot be a folder: a file in the way, or under a file
    (root / "afile").write_text("mine")
    for o in (root / "afile", root / "afile" / "sub"):
        corpus.refuse(f"output {o.name}", ["compile", model, "-o", o, "--array", "2x2"], None)
        corpus.refuse(f"hls output {o.name}", ["compile", "--backend", "hls", model, "-o", o], None)
        corpus.refuse(f"quantize output {o.name}", ["quantize", "--snap-pow2", model, "-o", o / "q.onnx"], None)
        corpus.refuse(f"example output {o.name}", ["example", "digits-mlp", "-o", o / "x"], None)
    assert (root / "afile").read_text() == "mine"
    corpus.verdict(40)


# ---- corrupt build folders ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def builds(tmp_path_factory, mlp):
    from tony.accel.program import AccelConfig
    from tony.compiler import compile_model
    from tony.hls.backend import HlsConfig

    d = tmp_path_factory.mktemp("bad_builds")
    x = np.load(mlp / "inputs.npy")[:2]
    compile_model(mlp / "model.onnx", d / "accel", config=AccelConfig(2, 2), inputs=x)
    compile_model(mlp / "model.onnx", d / "hls", backend="hls", config=HlsConfig(2, 2), inputs=x)
    return d


def _corruptions():
    """name -> function(build folder) that breaks it."""
    def manifest(fn):
        def f(b):
            p = b / "manifest.json"
            p.write_text(fn(p.read_text()))
        return f

    def edit(fn):
        def f(b):
            m = json.loads((b / "manifest.json").read_text())
            fn(m)
            (b / "manifest.json").write_text(json.dumps(m))
        return f

    def rm(rel):
        def f(b):
            p = b / rel
            shutil.rmtree(p) if p.is_dir() else p.unlink()
        return f

    return {
        "no manifest": rm("manifest.json"),
        "empty manifest": manifest(lambda t: ""),
        "truncated manifest": manifest(lambda t: t[: len(t) // 2]),
        "manifest is a list": manifest(lambda t: "[1, 2]"),
        "manifest is a string": manifest(lambda t: '"accel"'),
        "manifest binary": lambda b: (b / "manifest.json").write_bytes(b"\xff\xfe\x00garbage"),
        "manifest is a folder": lambda b: ((b / "manifest.json").unlink(), (b / "manifest.json").mkdir()),
        "no kind": edit(lambda m: m.pop("kind")),
        "unknown kind": edit(lambda m: m.update(kind="fpga")),
        "kind is a number": edit(lambda m: m.update(kind=7)),
        "no golden key": edit(lambda m: m.pop("golden")),
        "golden is null": edit(lambda m: m.update(golden=None)),
        "no layers": edit(lambda m: m.pop("layers", None) or m.pop("model")),
        "samples is a string": edit(lambda m: m.update(samples="many")),
        "no golden folder": rm("golden"),
        "no model.onnx": rm("model.onnx"),
    }


def _accel_only():
    return {
        "no rtl folder": lambda b: shutil.rmtree(b / "rtl"),
        "no memory image": lambda b: shutil.rmtree(b / "mem"),
        "corrupt image.npy": lambda b: (b / "mem" / "image.npy").write_bytes(b"\x93NUMPY garbage"),
        "no accel section": lambda b: _edit_json(b, lambda m: m.pop("accel")),
        "accel is a list": lambda b: _edit_json(b, lambda m: m.update(accel=[8, 8])),
        "no outputs": lambda b: _edit_json(b, lambda m: m.update(outputs=[], device_outputs=[])),
        "rtl names a missing file": lambda b: _edit_json(b, lambda m: m["rtl"].append("missing.v")),
        "rtl names a path outside": lambda b: _edit_json(b, lambda m: m.update(rtl=["../../../etc/passwd"])),
    }


def _edit_json(b, fn):
    m = json.loads((b / "manifest.json").read_text())
    fn(m)
    (b / "manifest.json").write_text(json.dumps(m))


def test_corrupt_build_folders(corpus, builds):
    root = corpus.root
    dump = root / "dump.hex"
    dump.write_text("00\n" * 10)
    for kind in ("accel", "hls"):
        cases = dict(_corruptions())
        if kind == "accel":
            cases.update(_accel_only())
        for name, corrupt in cases.items():
            b = root / f"b_{kind}"
            if b.exists():
                shutil.rmtree(b)
            shutil.copytree(builds / kind, b)
            corrupt(b)
            cmds = [("report", ["report", b]), ("compare", ["compare", b, "--hw-dump", dump]),
                    ("compare --memory", ["compare", b, "--hw-dump", dump, "--memory"])]
            if kind == "hls" and name not in ("no golden key", "golden is null", "no layers", "samples is a string",
                                              "no model.onnx"):   # fields csim does not read: it would run
                cmds.append(("csim", ["csim", b]))
            elif name.startswith(("no manifest", "empty", "truncated", "manifest", "no kind", "unknown kind",
                                  "kind is", "no rtl", "rtl names")):
                cmds.append(("sim", ["sim", b, "-q"]))   # refusals that come before Verilator starts
            unread = {"csim": ("no golden key", "golden is null", "no layers", "samples is a string", "no model.onnx"),
                      "sim": ("golden is null",)}  # manifest fields the command does not read
            for cname, argv in cmds:
                corpus.refuse(f"{kind} build: {name} / {cname}", argv, build=b,
                              may_succeed=name in unread.get(cname, ()))
    # the wrong kind of build, a missing build, a file for a build
    corpus.refuse("csim of an accel build", ["csim", builds / "accel"], build=builds / "accel")
    corpus.refuse("sim of an hls build", ["sim", builds / "hls", "-q"], build=builds / "hls")
    corpus.refuse("report of an hls build", ["report", builds / "hls"], build=builds / "hls")
    corpus.refuse("report without a simulation", ["report", builds / "accel"], build=builds / "accel")
    for cmd in (["sim", "-q"], ["csim"], ["report"], ["compare", "--hw-dump", dump], ["synth"]):
        corpus.refuse(f"{cmd[0]} of a missing folder", [cmd[0], root / "nope"] + cmd[1:])
        corpus.refuse(f"{cmd[0]} of a file", [cmd[0], dump] + cmd[1:])
        corpus.refuse(f"{cmd[0]} of an empty folder", [cmd[0], root / "empty"] + cmd[1:])
        (root / "empty").mkdir(exist_ok=True)
    corpus.verdict(90)


def test_dumps_of_the_wrong_size_and_format(corpus, builds):
    """Dumps built from the golden values themselves: the right one passes, a short or garbled one
    is refused on one line (a longer one is read up to the tensor's size, as documented)."""
    root = corpus.root
    b = builds / "accel"
    m = json.loads((b / "manifest.json").read_text())
    key = m["device_outputs"][-1]
    hexfile = b / "golden" / m["golden"][key]["hex"]
    lines = [ln for ln in hexfile.read_text().splitlines() if not ln.startswith("//")]
    n = len(lines)
    vals = np.load(b / "golden" / f"{key}.npy").reshape(-1)
    width = -(-int(m["golden"][key]["dtype"].lstrip("uint")) // 8)
    raw = b"".join((int(v) & ((1 << (8 * width)) - 1)).to_bytes(width, "little") for v in vals)
    image = np.load(b / "mem" / "image.npy")
    good = root / "good.hex"
    good.write_text("\n".join(lines) + "\n")
    assert main(["compare", str(b), "--hw-dump", str(good)]) == 0   # the check can pass
    corpus.capsys.readouterr()
    dumps = {
        "empty": b"", "one value short": ("\n".join(lines[:-1]) + "\n").encode(),
        "half": ("\n".join(lines[: n // 2]) + "\n").encode(), "not hex": b"zz\n" * n,
        "binary short": raw[:-1], "binary half": raw[: len(raw) // 2], "only comments": b"// nothing\n" * 5,
        "address lines only": b"@0\n" * n, "memory short": b"\x00" * (image.size * 8 - 1),
        "utf-16": "\n".join(lines).encode("utf-16"), "nul bytes": b"\x00" * 3,
    }
    for k, data in dumps.items():
        p = root / "dump.bin"
        p.write_bytes(data)
        for extra in ([], ["--format", "hex"], ["--format", "bin"], ["--memory"], ["--memory", "--format", "bin"],
                      ["--memory", "--format", "hex"]):
            readable = "bin" in extra or (not extra or extra == ["--memory"]) and k in ("not hex", "utf-16", "nul bytes",
                                                                                      "binary short", "binary half")
            corpus.refuse(f"dump {k} {extra}", ["compare", b, "--hw-dump", p] + extra, build=b,
                          may_mismatch=readable and not k.startswith("memory") or k == "memory short" and
                          "--memory" not in extra)
    p = root / "dump.bin"
    p.write_bytes(raw)
    for extra in (["--offset", "-1"], ["--offset", str(len(raw))], ["--offset", str(1 << 62)], ["--tensor", "nope"],
                  ["--tensor", "../manifest"], ["--format", "elf"], ["--offset", "x"]):
        corpus.refuse(f"dump flags {extra}", ["compare", b, "--hw-dump", p, "--format", "bin"] + extra, build=b)
    corpus.refuse("dump is a folder", ["compare", b, "--hw-dump", root], build=b)
    corpus.refuse("dump is missing", ["compare", b, "--hw-dump", root / "nope.bin"], build=b)
    corpus.refuse("sim --inputs not an array", ["sim", b, "-q", "--inputs", root / "dump.bin"], build=b)
    for v in ("-0.1", "1.5", "nan", "inf", "x"):
        corpus.refuse(f"sim --axi-stall {v}", ["sim", b, "-q", "--axi-stall", v], build=b)
    corpus.verdict(80)


def test_corpus_has_at_least_300_inputs():
    """Runs last in this module (in file order): the cases above add up."""
    if COUNT["cases"] == 0:
        pytest.skip("run with the rest of the module")
    assert COUNT["cases"] >= 300, COUNT


# ---- a sample through a real process --------------------------------------------------------------------

@pytest.mark.parametrize("argv", [["ir", "{root}/random.onnx"], ["compile", "{root}/random.onnx", "-o", "{root}/o"],
                                  ["run", "{mlp}/model.onnx", "--inputs", "{root}/obj.npy"],
                                  ["compare", "{root}", "--hw-dump", "{root}/random.onnx"],
                                  ["csim", "{root}"], ["sim", "{root}/random.onnx"]])
def test_a_sample_as_a_subprocess(argv, tmp_path, mlp):
    root = tmp_path
    (root / "random.onnx").write_bytes(np.random.default_rng(SEED).integers(0, 256, 999).astype(np.uint8).tobytes())
    np.save(root / "obj.npy", np.array([None, {}], dtype=object), allow_pickle=True)
    before = sorted(p.name for p in root.iterdir())
    args = [a.format(root=root, mlp=mlp) for a in argv]
    r = subprocess.run([sys.executable, "-m", "tony.cli", *args], capture_output=True, text=True, cwd=root,
                       timeout=120)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert sorted(p.name for p in root.iterdir()) == before


# ---- manifests missing a field ----------------------------------------------------------------------

@pytest.mark.parametrize("field", ["golden", "accel"])
def test_manifest_without_a_field_is_one_line_error(field, builds, tmp_path, capsys):
    b = tmp_path / "b"
    shutil.copytree(builds / "accel", b)
    _edit_json(b, lambda m: m.pop(field))
    dump = tmp_path / "d.hex"
    dump.write_text("00\n")
    argv = ["compare", str(b), "--hw-dump", str(dump)] + (["--memory"] if field == "accel" else [])
    rc = main(argv)
    assert rc == 1 and len(capsys.readouterr().err.strip().splitlines()) == 1
