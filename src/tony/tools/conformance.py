"""ONNX node-test conformance of the integer operators: `python -m tony.tools.conformance`.

Runs the onnx package's own node test cases (built in memory by
`onnx.backend.test.loader.load_model_tests(kind="node")`) for QLinearConv, QLinearMatMul,
ConvInteger, MatMulInteger, QuantizeLinear, DequantizeLinear and DynamicQuantizeLinear through
Tony's reference and compares every output with the case's expected output, bit for bit.

How a case becomes a Tony model: a node test feeds every operand (weights, scales, zero points) as a
graph input; Tony compiles constants into the program, so every input but the first is frozen
into an initializer with the case's own value. Cases written for opsets below 13 are converted with
`onnx.version_converter` (what Tony's error message tells a user to do). Integer outputs must have
the same values and an IR dtype of the same width and signedness; float outputs must be equal
float32 arrays.

Cases with float8/float4 quantized types and DynamicQuantizeLinear (a data-dependent scale, which a
compiled integer program cannot have) must be refused with an UnsupportedError.
"""
from __future__ import annotations

import argparse
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper, version_converter

OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QuantizeLinear",
       "DequantizeLinear", "DynamicQuantizeLinear")
_FLOAT_Q = {getattr(TensorProto, n) for n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                              "FLOAT4E2M1", "FLOAT8E8M0") if hasattr(TensorProto, n)}
_REFUSED_OPS = {"DynamicQuantizeLinear": "the scale depends on the data; a compiled integer program has constant scales"}


@dataclass
class CaseResult:
    name: str
    op: str
    expect: str      # "pass" or "refuse"
    status: str      # "pass", "fail", "refused"
    detail: str = ""

    @property
    def ok(self) -> bool:
        return (self.expect == "pass" and self.status == "pass") or (
            self.expect == "refuse" and self.status == "refused")


def node_cases() -> list:
    """The onnx node test cases of OPS (single-node models), sorted by name."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = load_model_tests(kind="node")
    out = []
    for c in cases:
        nodes = c.model.graph.node
        if len(nodes) == 1 and nodes[0].op_type in OPS:
            out.append(c)
    return sorted(out, key=lambda c: c.name)


def _types(model: onnx.ModelProto) -> set[int]:
    g = model.graph
    return {vi.type.tensor_type.elem_type for vi in list(g.input) + list(g.output)} | {
        i.data_type for i in g.initializer}


def expectation(case) -> tuple[str, str]:
    """("pass" | "refuse", why) for a case."""
    op = case.model.graph.node[0].op_type
    if op in _REFUSED_OPS:
        return "refuse", _REFUSED_OPS[op]
    bad = _types(case.model) & _FLOAT_Q
    if bad:
        names = ", ".join(sorted(TensorProto.DataType.Name(t) for t in bad))
        return "refuse", f"float quantized type {names}: Tony's integer contract has integer types only"
    return "pass", ""


def _array(t):
    return numpy_helper.to_array(t) if isinstance(t, onnx.TensorProto) else np.asarray(t)


def as_tony_model(case) -> tuple[onnx.ModelProto, dict, list]:
    """(model with every input but the first frozen, feeds {first input: array}, expected outputs)."""
    m = onnx.ModelProto()
    m.CopyFrom(case.model)
    ins, outs = case.data_sets[0]
    g = m.graph
    first = g.input[0].name
    feeds = {}
    frozen = []
    for vi, t in zip(list(g.input), ins):
        arr = _array(t)
        if vi.name == first:
            feeds[first] = arr
        else:
            frozen.append(vi)
            init = numpy_helper.from_array(arr, vi.name) if not isinstance(t, onnx.TensorProto) else t
            init = onnx.TensorProto.FromString(init.SerializeToString())
            init.name = vi.name
            g.initializer.append(init)
    for vi in frozen:
        g.input.remove(vi)
    opset = next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))
    if opset < 13:
        m = version_converter.convert_version(m, 13)
    return m, feeds, [_array(t) for t in outs]


def _feed(x: np.ndarray) -> np.ndarray:
    """Integer inputs of the narrow onnx types (int4, uint2, ...) as int64; floats unchanged."""
    if x.dtype.kind in "iu" or x.dtype.kind == "V" or "int" in str(x.dtype):
        return x.astype(np.int64)
    return x


def _onnx_type_of(dt) -> tuple[int, bool]:
    name = str(dt)
    signed = not name.startswith("u")
    bits = int("".join(ch for ch in name if ch.isdigit()))
    return bits, signed


def run_case(case) -> CaseResult:
    from ..api import load_ir, normalize_inputs, restack
    from ..errors import TonyError, UnsupportedError
    from ..ref import execute

    op = case.model.graph.node[0].op_type
    expect, why = expectation(case)
    try:
        model, feeds, want = as_tony_model(case)
        g = load_ir(model, requant="multiplier")
        feeds = {k: _feed(v) for k, v in feeds.items()}
        fd, stacked = normalize_inputs(g, feeds)
        got = restack(g, execute(g, fd), stacked)
    except UnsupportedError as e:
        return CaseResult(case.name, op, expect, "refused", str(e))
    except TonyError as e:
        return CaseResult(case.name, op, expect, "fail", f"{type(e).__name__}: {e}")
    for name, y, w in zip(g.outputs, got, want):
        t = g.tensors[name]
        if w.dtype.kind == "f" and str(w.dtype) in ("float32", "float16", "float64"):
            if not t.dtype.is_float or y.dtype != w.dtype:
                return CaseResult(case.name, op, expect, "fail", f"{name}: dtype {y.dtype} (IR {t.dtype}), want {w.dtype}")
            if not np.array_equal(y.reshape(w.shape), w):
                n = int((y.reshape(w.shape) != w).sum())
                return CaseResult(case.name, op, expect, "fail", f"{name}: {n} of {w.size} elements differ")
        else:
            bits, signed = _onnx_type_of(w.dtype)
            if t.dtype.is_float or (t.dtype.bits, t.dtype.signed) != (bits, signed):
                return CaseResult(case.name, op, expect, "fail", f"{name}: IR dtype {t.dtype}, want {w.dtype}")
            wi = w.astype(np.int64)
            if not np.array_equal(np.asarray(y).reshape(wi.shape), wi):
                n = int((np.asarray(y).reshape(wi.shape) != wi).sum())
                return CaseResult(case.name, op, expect, "fail", f"{name}: {n} of {wi.size} elements differ")
    return CaseResult(case.name, op, expect, "pass", "")


def run_all() -> list[CaseResult]:
    return [run_case(c) for c in node_cases()]


def table(results: list[CaseResult]) -> str:
    """docs/conformance.md: per-op summary, then one line per case."""
    lines = ["# ONNX node-test conformance", "",
             "Generated by `python -m tony.tools.conformance` (onnx " + onnx.__version__ + "): the onnx package's "
             "own node test cases run through Tony's bit-exact reference in multiplier mode. *pass* means every "
             "output equals the expected one exactly (integer outputs: same values and the same width and "
             "signedness; float outputs: equal float32 arrays). *refused* means Tony raised UnsupportedError, "
             "which is the expected answer for float8/float4 types and data-dependent scales.", "",
             "Every operand but the first input is frozen into a constant (a compiled program's weights and "
             "scales are constants); opset-10 cases are converted to opset 13 with `onnx.version_converter`.", "",
             "| operator | cases | pass | refused as expected | failing |", "|---|---|---|---|---|"]
    for op in OPS:
        rs = [r for r in results if r.op == op]
        if not rs:
            continue
        lines.append(f"| {op} | {len(rs)} | {sum(r.status == 'pass' and r.ok for r in rs)} | "
                     f"{sum(r.status == 'refused' and r.ok for r in rs)} | {sum(not r.ok for r in rs)} |")
    lines += ["", "| case | expected | result | detail |", "|---|---|---|---|"]
    for r in results:
        detail = r.detail.replace("|", "\\|")
        lines.append(f"| {r.name} | {r.expect} | {r.status}{'' if r.ok else ' **(wrong)**'} | {detail} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tony.tools.conformance", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", help="write the markdown table here (e.g. docs/conformance.md)")
    a = p.parse_args(argv)
    results = run_all()
    text = table(results)
    if a.output:
        Path(a.output).write_text(text)
        print(f"wrote {a.output}")
    for r in results:
        print(f"{'ok  ' if r.ok else 'FAIL'} {r.name:50s} {r.status:8s} {r.detail}")
    bad = [r for r in results if not r.ok]
    print(f"{len(results) - len(bad)} of {len(results)} cases as expected")
    return 1 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
