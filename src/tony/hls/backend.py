"""`tony compile --backend hls`: IR -> Vitis-HLS C++ that also compiles with plain g++.

The build folder holds the C++ sources (the static headers tony_types.h, tony_kernels.h,
tony_host.h and the rendered model.h, model.cpp, weights.h, tb.cpp, capi.cpp), a Makefile, a
Vitis HLS Tcl script, golden vectors (golden/*.hex, *.npy from the reference) and manifest.json.
`csim` builds the testbench with g++ and runs it; `run_csim` and `compile` run the same sources
from Python through a shared library (ctypes).
"""
from __future__ import annotations

import ctypes
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import __version__, ir
from ..ref.feeds import normalize_inputs, restack
from ..ir import bounds
from ..build import MANIFEST, Build, staged_output, write_json, write_onnx
from ..errors import InputError, TonyError, UnsupportedError
from ..golden import tensor_keys, write_golden, write_tensor
from ..names import safe_id
from ..ir.partition import partition, subgraph
from ..ir.partition import report as placement_report
from ..ref import execute_segments

REPORT = "csim_report.json"
TOP = "tony_top"
LIB = "libtony_hls.so"
STATIC = ("tony_types.h", "tony_kernels.h", "tony_host.h")
CXXFLAGS = ["-std=c++17", "-O1", "-Wall", "-Wextra", "-Werror"]


class BuildError(TonyError):
    """The generated C++ did not compile or the testbench could not run (a Tony bug or a broken toolchain)."""


@dataclass(frozen=True)
class HlsConfig:
    rows: int = 8
    cols: int = 8
    acc_bits: int = 32
    weights: str = "const"      # "const": constant arrays (ROM); "axi": one int32 word each over m_axi
    part: str = "xc7z020clg400-1"
    clock_ns: float = 10.0

    def __post_init__(self):
        if not (1 <= self.rows <= 64 and 1 <= self.cols <= 64):
            raise InputError(f"array {self.rows}x{self.cols}: rows and columns must be between 1 and 64")
        if self.weights not in ("const", "axi"):
            raise InputError(f"weights mode {self.weights!r}: expected 'const' or 'axi'")
        if not 16 <= self.acc_bits <= 32:
            raise InputError(f"--acc-bits {self.acc_bits}: expected 16..32")


def _env():
    import jinja2

    return jinja2.Environment(loader=jinja2.PackageLoader("tony.hls", "templates"),
                              undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                              autoescape=False)


def ctype(dt: ir.DType) -> str:
    return f"tony_{'int' if dt.signed else 'uint'}<{dt.bits}>"


def _lit(v: int) -> str:
    """A long long literal that is valid for every 64-bit value."""
    v = int(v)
    return f"({v + 1}LL - 1)" if v < -(1 << 62) else f"{v}LL"


def _float_lit(x: float) -> str:
    return float(np.float32(x)).hex()


_HLS_OPS = (ir.Conv, ir.Dense, ir.Add, ir.Concat, ir.MaxPool, ir.AvgPool, ir.Clamp, ir.Reshape, ir.Table, ir.Softmax,
            ir.LayerNorm)


def refuse(g: ir.Graph, cfg: HlsConfig):
    """op -> why the HLS back end cannot render it (None: it can); tony.ir.partition puts it on the host."""
    def why(op) -> str | None:
        if not isinstance(op, _HLS_OPS):
            return f"no HLS mapping for {op.kind}"
        rqs = list(op.requants) if isinstance(op, ir.Concat) else [getattr(op, "requant", None)]
        for rq in rqs:
            if rq is None:
                continue
            if rq.per_channel and not isinstance(op, (ir.Conv, ir.Dense)):
                return "per-channel requantization outside Conv and Gemm/MatMul"
            shifts = rq.shift if isinstance(rq.shift, tuple) else (rq.shift,)
            if any(s > 62 for s in shifts):
                return f"rescale shift {max(shifts)} exceeds 62"
        for name in op.inputs + op.outputs:
            t = g.tensors[name]
            if isinstance(op, ir.LayerNorm) and name in op.inputs[1:] and name in g.constants:
                continue   # gamma and beta: constant arrays (beta 64-bit, as the kernel computes in 64 bits)
            if t.dtype.is_float or t.dtype.bits > 32:
                return f"tensor '{name}' is {t.dtype} (the device takes integers of <= 32 bits)"
        if isinstance(op, ir.Concat) and op.axis == 0:
            return "Concat along the batch axis"
        if isinstance(op, ir.AvgPool) and op.partial:
            return "count_include_pad=0 with padding"
        if isinstance(op, ir.Add) and (op.subtract or len({g.tensors[n].shape for n in op.inputs + op.outputs}) > 1):
            return "Sub or Add with broadcasting"
        if isinstance(op, ir.Table) and op.inputs[1] not in g.constants:
            return "a table that is not a constant"
        if isinstance(op, ir.Dense) and (len(g.tensors[op.inputs[0]].shape) != 2
                                         or len(g.tensors[op.inputs[1]].shape) != 2):
            return "MatMul/Gemm is not [N, K] x [K, M]"
        return None
    return why


def check_hls(g: ir.Graph, cfg: HlsConfig) -> None:
    """Refuse, naming the node, what the HLS back end cannot render at all."""
    bounds.check_overflow(g, cfg.acc_bits)


# ---- layer descriptors ----------------------------------------------------------------------

def _rq_consts(rq: ir.Requant | None) -> list:
    if rq is None:
        return [("int", "ROUND", 0), ("long long", "MULT", _lit(1)), ("int", "SHIFT", 0),
                ("long long", "ZP", _lit(0)), ("long long", "LO", _lit(0)), ("long long", "HI", _lit(0))]
    return [("int", "ROUND", rq.rounding.code), ("long long", "MULT", _lit(rq.mult)), ("int", "SHIFT", rq.shift),
            ("long long", "ZP", _lit(rq.zero_point)), ("long long", "LO", _lit(rq.lo)),
            ("long long", "HI", _lit(rq.hi))]


def _per_sample(t: ir.Tensor) -> int:
    return math.prod(t.shape[1:])


class _Builder:
    def __init__(self, g: ir.Graph, cfg: HlsConfig, arg_of: dict[str, str]):
        self.g, self.cfg, self.arg = g, cfg, arg_of
        self.arrays: list[dict] = []   # weights and biases
        self.param_words = 0
        self.used: set[str] = set()

    def const_array(self, name: str, values, dt: ir.DType) -> str:
        vals = np.asarray(values, np.int64).reshape(-1)
        text = [str(int(v)) for v in vals]
        rows = [", ".join(text[i:i + 24]) for i in range(0, len(text), 24)] or ["0"]
        self.arrays.append({"name": name, "ctype": ctype(dt), "size": max(len(vals), 1), "rows": rows,
                            "values": vals, "offset": self.param_words,
                            "partition": max(1, self.cfg.rows)})
        self.param_words += max(len(vals), 1)
        return name

    def softmax(self, op: ir.Softmax, lname: str, a: str, o: str) -> dict:
        """tony::softmax_op: rows of the axis's LEN elements, the spec's table a constant array and its
        shift limited to the input's width plus 17 (any larger shift rounds every u to 0, as
        tony.rtl.softmax.unit_inputs gives the Softmax unit), so it stays a 64-bit rounding shift."""
        from ..ref.nonlinear import SoftmaxSpec

        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        ax = op.axis % len(x.shape)
        spec = SoftmaxSpec(x_exp=op.x_exp, frac_bits=op.frac_bits, table_bits=op.table_bits, out_bits=op.out_bits,
                           log2e=op.log2e)
        tname = self.const_array(f"{lname}_exp2", spec.table, ir.INT32)
        consts = [("int", "N", _per_sample(y)), ("int", "OUTER", math.prod(x.shape[1:ax])),
                  ("int", "LEN", x.shape[ax]), ("int", "INNER", math.prod(x.shape[ax + 1:])),
                  ("int", "F", spec.frac_bits), ("int", "TB", spec.table_bits), ("int", "K", spec.recip_exp),
                  ("int", "OUT_BITS", spec.out_bits), ("int", "SHIFT", min(spec.shift, x.dtype.bits + 17)),
                  ("long long", "LOG2E", spec.log2e), ("long long", "LO", _lit(y.dtype.min)),
                  ("long long", "HI", _lit(y.dtype.max))]
        return {"structs": [{"name": f"{lname}_p", "consts": consts,
                             "types": [("in_t", ctype(x.dtype)), ("t_t", ctype(ir.INT32)), ("out_t", ctype(y.dtype))]}],
                "small": [], "call": f"tony::softmax_op<{lname}_p>({a}, {tname}, {o})",
                "describe": f"Softmax over axis {op.axis}, rows of {x.shape[ax]}"}

    def layernorm(self, op: ir.LayerNorm, lname: str, a: str, o: str) -> dict:
        """tony::layernorm_op: rows of the axis's LEN elements (over the channels of the residual
        stream's pixel layout, or the last axis), gamma and beta constant arrays."""
        from ..ref.nonlinear import ISQRT_ITERATIONS, NORM_RECIP_BITS

        g = self.g
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        gt, bt = g.tensors[op.inputs[1]], g.tensors[op.inputs[2]]
        ax = op.axis % len(x.shape)
        gname = self.const_array(f"{lname}_gamma", g.constants[op.inputs[1]], gt.dtype)
        bname = self.const_array(f"{lname}_beta", g.constants[op.inputs[2]], bt.dtype)
        consts = [("int", "N", _per_sample(y)), ("int", "OUTER", math.prod(x.shape[1:ax])),
                  ("int", "LEN", x.shape[ax]), ("int", "INNER", math.prod(x.shape[ax + 1:])),
                  ("int", "A", op.sqrt_bits), ("int", "F", op.norm_bits), ("int", "SHIFT", op.shift),
                  ("int", "ITER", ISQRT_ITERATIONS), ("int", "RECIP", NORM_RECIP_BITS),
                  ("long long", "EPS", _lit(op.eps_int)), ("long long", "LO", _lit(op.lo)),
                  ("long long", "HI", _lit(op.hi))]
        return {"structs": [{"name": f"{lname}_p", "consts": consts,
                             "types": [("in_t", ctype(x.dtype)), ("g_t", ctype(gt.dtype)), ("b_t", ctype(bt.dtype)),
                                       ("out_t", ctype(y.dtype))]}],
                "small": [], "call": f"tony::layernorm_op<{lname}_p>({a}, {gname}, {bname}, {o})",
                "describe": f"LayerNorm over axis {op.axis}, rows of {x.shape[ax]}"}

    def mac(self, op, lname: str) -> dict:
        g, cfg = self.g, self.cfg
        x, wt, y = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]], g.tensors[op.outputs[0]]
        w = g.constants[op.inputs[1]]
        rq = op.requant
        m = w.shape[0] if isinstance(op, ir.Conv) else w.shape[1]
        has_bias = len(op.inputs) > 2
        bdt = g.tensors[op.inputs[2]].dtype if has_bias else ir.INT32
        bias = g.constants[op.inputs[2]] if has_bias else np.zeros(m, np.int64)
        wname = self.const_array(f"{lname}_w", w, wt.dtype)
        bname = self.const_array(f"{lname}_b", bias, bdt)
        shift = np.broadcast_to(np.asarray(rq.shift, np.int64), (m,)) if rq.per_channel else [rq.shift]
        mult = np.broadcast_to(np.asarray(rq.mult, np.int64), (m,)) if rq.per_channel else [rq.mult]
        small = [{"name": f"{lname}_shift", "vals": [int(v) for v in shift]},
                 {"name": f"{lname}_mult", "vals": [int(v) for v in mult]}]
        types = [("in_t", ctype(x.dtype)), ("w_t", ctype(wt.dtype)), ("b_t", ctype(bdt)),
                 ("out_t", ctype(y.dtype)), ("acc_t", f"tony_int<{cfg.acc_bits}>")]
        common = [("int", "ROWS", cfg.rows), ("int", "COLS", cfg.cols), ("int", "M", m),
                  ("long long", "XZP", _lit(x.zero_point)), ("long long", "WZP", _lit(wt.zero_point)),
                  ("int", "HAS_BIAS", int(has_bias)), ("int", "PER_CHANNEL", int(rq.per_channel)),
                  ("int", "ROUND", rq.rounding.code), ("long long", "ZP", _lit(rq.zero_point)),
                  ("long long", "LO", _lit(rq.lo)), ("long long", "HI", _lit(rq.hi))]
        if isinstance(op, ir.Conv):
            _, c, h, wd = x.shape
            _, _, oh, ow = y.shape
            kh, kw = w.shape[2:]
            geo = [("int", "C", c), ("int", "H", h), ("int", "W", wd), ("int", "KH", kh), ("int", "KW", kw),
                   ("int", "OH", oh), ("int", "OW", ow), ("int", "SH", op.strides[0]), ("int", "SW", op.strides[1]),
                   ("int", "PT", op.pads[0]), ("int", "PL", op.pads[1]), ("int", "DH", op.dilations[0]),
                   ("int", "DW", op.dilations[1]), ("int", "G", op.group)]
            fn = "conv2d"
            desc = (f"Conv {c}x{h}x{wd} -> {m}x{oh}x{ow}, kernel {kh}x{kw}, stride {tuple(op.strides)}, "
                    f"pads {tuple(op.pads)}, dilation {tuple(op.dilations)}, group {op.group}")
        else:
            geo = [("int", "K", w.shape[0])]
            fn = "dense"
            desc = f"Dense {w.shape[0]} -> {m}"
        struct = {"name": f"{lname}_p", "types": types, "consts": geo + common}
        call = (f"tony::{fn}<{lname}_p>({self.arg[op.inputs[0]]}, {wname}, {bname}, {lname}_shift, "
                f"{lname}_mult, {self.arg[op.outputs[0]]})")
        return {"structs": [struct], "small": small, "call": call, "describe": f"{desc}, requant {rq.describe()}"}

    def layer(self, op, lname: str) -> dict:
        g = self.g
        if isinstance(op, (ir.Conv, ir.Dense)):
            return self.mac(op, lname)
        x, y = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
        a, o = self.arg[op.inputs[0]], self.arg[op.outputs[0]]
        rq = getattr(op, "requant", None)
        if isinstance(op, ir.Add):
            b = g.tensors[op.inputs[1]]
            consts = [("int", "N", _per_sample(y)), ("long long", "AZP", _lit(x.zero_point)),
                      ("long long", "BZP", _lit(b.zero_point)), ("long long", "MULT_A", _lit(op.mult_a)),
                      ("long long", "MULT_B", _lit(op.mult_b)), ("int", "SHIFT_A", op.shift_a),
                      ("int", "SHIFT_B", op.shift_b)] + _rq_consts(rq)
            types = [("a_t", ctype(x.dtype)), ("b_t", ctype(b.dtype)), ("out_t", ctype(y.dtype))]
            return {"structs": [{"name": f"{lname}_p", "types": types, "consts": consts}], "small": [],
                    "call": f"tony::add<{lname}_p>({a}, {self.arg[op.inputs[1]]}, {o})",
                    "describe": f"Add a<<{op.shift_a} + b<<{op.shift_b}, requant {rq.describe()}"}
        if isinstance(op, ir.Concat):
            structs, calls, off = [], [], 0
            outer = math.prod(y.shape[1:op.axis])
            inner = math.prod(y.shape[op.axis + 1:])
            for i, (name, prq) in enumerate(zip(op.inputs, op.requants)):
                t = g.tensors[name]
                consts = [("int", "OUTER", outer), ("int", "LEN", t.shape[op.axis]), ("int", "INNER", inner),
                          ("int", "OUT_LEN", y.shape[op.axis]), ("int", "OFFSET", off),
                          ("long long", "XZP", _lit(t.zero_point))] + _rq_consts(prq)
                structs.append({"name": f"{lname}_p{i}", "consts": consts,
                                "types": [("in_t", ctype(t.dtype)), ("out_t", ctype(y.dtype))]})
                calls.append(f"tony::concat_part<{lname}_p{i}>({self.arg[name]}, {o})")
                off += t.shape[op.axis]
            return {"structs": structs, "small": [], "call": ";\n    ".join(calls),
                    "describe": f"Concat {len(op.inputs)} inputs along axis {op.axis}"}
        if isinstance(op, (ir.MaxPool, ir.AvgPool)):
            _, c, h, wd = x.shape
            _, _, oh, ow = y.shape
            consts = [("int", "C", c), ("int", "H", h), ("int", "W", wd), ("int", "OH", oh), ("int", "OW", ow),
                      ("int", "KH", op.kernel[0]), ("int", "KW", op.kernel[1]), ("int", "SH", op.strides[0]),
                      ("int", "SW", op.strides[1]), ("int", "PT", op.pads[0]), ("int", "PL", op.pads[1]),
                      ("long long", "XZP", _lit(x.zero_point))]
            if isinstance(op, ir.MaxPool):
                consts += [("int", "DH", op.dilations[0]), ("int", "DW", op.dilations[1]),
                           ("long long", "PAD", _lit(x.dtype.min)), ("int", "REQUANT", int(rq is not None))]
            fn = "maxpool" if isinstance(op, ir.MaxPool) else "avgpool"
            return {"structs": [{"name": f"{lname}_p", "consts": consts + _rq_consts(rq),
                                 "types": [("in_t", ctype(x.dtype)), ("out_t", ctype(y.dtype))]}],
                    "small": [], "call": f"tony::{fn}<{lname}_p>({a}, {o})",
                    "describe": f"{type(op).__name__} kernel {tuple(op.kernel)} stride {tuple(op.strides)} "
                                f"pads {tuple(op.pads)}" + (f", requant {rq.describe()}" if rq else "")}
        if isinstance(op, ir.Clamp):
            consts = [("int", "N", _per_sample(y)), ("long long", "XZP", _lit(x.zero_point))] + _rq_consts(rq)
            return {"structs": [{"name": f"{lname}_p", "consts": consts,
                                 "types": [("in_t", ctype(x.dtype)), ("out_t", ctype(y.dtype))]}],
                    "small": [], "call": f"tony::clamp_op<{lname}_p>({a}, {o})",
                    "describe": f"Clamp, requant {rq.describe()}"}
        if isinstance(op, ir.Table):
            tab = np.asarray(g.constants[op.inputs[1]], np.int64)
            ax = op.channel_axis
            inner = math.prod(x.shape[ax + 1:]) if ax is not None else 1
            consts = [("int", "N", _per_sample(y)), ("int", "ENTRIES", tab.shape[-1]),
                      ("int", "TABS", tab.shape[0] if ax is not None else 1), ("int", "INNER", inner),
                      ("long long", "XMIN", _lit(x.dtype.min))]
            tname = self.const_array(f"{lname}_tab", tab, g.tensors[op.inputs[1]].dtype)
            return {"structs": [{"name": f"{lname}_p", "consts": consts,
                                 "types": [("in_t", ctype(x.dtype)), ("t_t", ctype(g.tensors[op.inputs[1]].dtype)),
                                           ("out_t", ctype(y.dtype))]}],
                    "small": [], "call": f"tony::table_op<{lname}_p>({a}, {tname}, {o})",
                    "describe": f"Table {op.function or op.op_type}" + (f", one per index of axis {ax}" if ax is not None
                                                                       else "")}
        if isinstance(op, ir.Softmax):
            return self.softmax(op, lname, a, o)
        if isinstance(op, ir.LayerNorm):
            return self.layernorm(op, lname, a, o)
        if isinstance(op, ir.Reshape):
            return {"structs": [], "small": [],
                    "call": f"tony::reshape<{ctype(x.dtype)}, {_per_sample(x)}>({a}, {o})",
                    "describe": f"Reshape {list(x.shape)} -> {list(y.shape)}"}
        raise UnsupportedError(f"{type(op).__name__} has no HLS mapping", where=op.where)  # pragma: no cover


def _boundary(g: ir.Graph, name: str, key: str, arg: str, index: int, golden_dir: str,
              host_ops) -> dict:
    t = g.tensors[name]
    d = {"name": name, "key": key, "arg": arg, "index": index, "ctype": ctype(t.dtype), "size": _per_sample(t),
         "dtype": t.dtype.name, "shape": list(t.shape), "bits": t.dtype.bits, "signed": t.dtype.signed,
         "lo": _lit(t.dtype.min), "hi": _lit(t.dtype.max), "golden": f"{golden_dir}/{key}.hex",
         "quant": None, "dequant": None}
    for op in host_ops:
        if isinstance(op, ir.Quantize) and op.outputs[0] == name and not getattr(op, "param_shape", ()):
            d["quant"] = {"scale": _float_lit(op.scale), "zp": _lit(op.zero_point)}
        if isinstance(op, ir.Dequantize) and op.inputs[0] == name and not getattr(op, "param_shape", ()):
            d["dequant"] = {"scale": _float_lit(t.scale), "zp": _lit(t.zero_point)}
    return d


def render(g: ir.Graph, cfg: HlsConfig, keys: dict[str, str], out: Path, part=None) -> dict:
    """Write the C++ sources, Makefile and Tcl for `g` (one device segment) into `out`; return
    the source description."""
    pre, dev, post, dins, douts = (part or partition(g, refuse(g, cfg))).parts()
    arg = {name: f"{'in' if name in dins else 'out' if name in douts else 't'}_{keys[name]}"
           for name in keys}
    b = _Builder(g, cfg, arg)
    used: set[str] = set()
    layers = []
    for op in dev:
        lname = "L" + safe_id(op.origin or op.outputs[0], used, prefix="layer")
        d = b.layer(op, lname)
        d["name"] = lname
        d["op"] = op.kind
        layers.append(d)
    host_ops = pre + post
    inputs = [_boundary(g, n, keys[n], arg[n], i, "golden", host_ops) for i, n in enumerate(dins)]
    outputs = [_boundary(g, n, keys[n], arg[n], i, "golden", host_ops) for i, n in enumerate(douts)]
    internal = [o for op in dev for o in op.outputs if o not in douts]
    buffers = [{"arg": arg[n], "ctype": ctype(g.tensors[n].dtype), "size": _per_sample(g.tensors[n])}
               for n in internal]
    consumers: dict[str, int] = {}
    for op in dev:
        for i in op.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    dataflow = len(dev) > 1 and all(consumers.get(n, 0) == 1 for n in internal + dins)
    axi = cfg.weights == "axi"
    sig = [f"const {t['ctype']} {t['arg']}[{t['size']}]" for t in inputs]
    sig += [f"{t['ctype']} {t['arg']}[{t['size']}]" for t in outputs]
    call_args = [t["arg"] for t in inputs + outputs]
    if axi:
        sig.append(f"const int32_t params[{max(b.param_words, 1)}]")
        call_args.append("params")
    ctx = {"version": __version__, "model": safe_id(g.name, prefix="model"), "rows": cfg.rows, "cols": cfg.cols,
           "acc_bits": cfg.acc_bits, "axi": axi, "top": TOP, "signature": ", ".join(sig),
           "call_args": ", ".join(call_args), "inputs": inputs, "outputs": outputs, "layers": layers,
           "buffers": buffers, "arrays": b.arrays, "param_words": max(b.param_words, 1), "dataflow": dataflow,
           "cxxflags": " ".join(CXXFLAGS), "part": cfg.part, "clock_ns": cfg.clock_ns}
    env = _env()
    out.mkdir(parents=True, exist_ok=True)
    names = ["model.h", "model.cpp", "tb.cpp", "capi.cpp", "Makefile", "run_hls.tcl"]
    if not axi:
        names.append("weights.h")
    for n in names:
        (out / n).write_text(env.get_template(n + ".j2").render(**ctx))
    from importlib.resources import files

    for n in STATIC:
        (out / n).write_text(files("tony.hls").joinpath("templates", n).read_text())
    if axi:
        words = np.concatenate([a["values"] for a in b.arrays]) if b.arrays else np.zeros(1, np.int64)
        write_tensor(out / "params", words, 32, comment="weights and biases, one int32 word each")
    return {"sources": sorted(names + list(STATIC)), "inputs": inputs, "outputs": outputs, "dataflow": dataflow,
            "param_words": b.param_words, "layers": [{"name": l["name"], "op": l["op"], "describe": l["describe"]}
                                                    for l in layers]}


# ---- compile ----------------------------------------------------------------------------------

def compile_hls(g: ir.Graph, out_dir, *, config: HlsConfig = HlsConfig(), feeds: dict, source=None,
                device_only: bool = False) -> dict:
    """Compile the IR graph `g` to HLS C++ in `out_dir`, golden vectors from `feeds`; `source` (an
    onnx ModelProto) is kept in the build as model.onnx. Returns the manifest.

    As for the accelerator (tony.compiler.compile_accel), a graph with several device segments
    gets one build per device segment in seg<k>/; the host runs the segments between them."""
    from ..budget import check_ir, samples_in

    check_ir(g, samples_in(g, feeds), "compiling (the golden vectors)")
    check_hls(g, config)
    part = partition(g, refuse(g, config))
    if device_only:
        from ..compiler import refuse_host_ops

        refuse_host_ops(part, "HLS")
    where = placement_report(g, part)
    with staged_output(out_dir) as tmp:
        if part.simple:
            return _write_hls(g, tmp, config, feeds, source, part, where)
        keys = tensor_keys(g)
        files, env = write_golden(g, feeds, tmp / "golden", keys)
        if source is not None:
            write_onnx(tmp / "model.onnx", source)
        (tmp / "ir.txt").write_text(ir.format_graph(g) + "\n")
        np.save(tmp / "inputs.npy", feeds[g.inputs[0]])
        segs = []
        for k, s in enumerate(part.segments):
            entry = {"index": k, "kind": s.kind, "ops": [op.origin or op.outputs[0] for op in s.ops],
                     "inputs": [keys[n] for n in s.inputs], "outputs": [keys[n] for n in s.outputs]}
            if s.device:
                sub = subgraph(g, s, f"{g.name}.seg{k}")
                sp = partition(sub, refuse(sub, config))
                _write_hls(sub, tmp / f"seg{k}", config, {n: env[n] for n in sub.inputs}, None, sp, None)
                entry["build"] = f"seg{k}"
            segs.append(entry)
        manifest = {"kind": "hls", "tony_version": __version__, "model": g.name, "top": TOP,
                    "hls": asdict(config), "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
                    "samples": int(next(iter(feeds.values())).shape[0]), "segments": segs, "placement": where,
                    "golden": files, "layers": [], "outputs": [{"key": keys[n]} for n in g.outputs]}
        write_json(tmp / MANIFEST, manifest)
    return manifest


def _write_hls(g: ir.Graph, tmp: Path, config: HlsConfig, feeds: dict, source, part, where) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    keys = tensor_keys(g)
    src = render(g, config, keys, tmp, part)
    files, _ = write_golden(g, feeds, tmp / "golden", keys)
    if source is not None:
        write_onnx(tmp / "model.onnx", source)
    (tmp / "ir.txt").write_text(ir.format_graph(g) + "\n")
    for name in g.inputs:
        np.save(tmp / f"inputs.{keys[name]}.npy", feeds[name])
    np.save(tmp / "inputs.npy", feeds[g.inputs[0]])
    manifest = {
        "kind": "hls", "tony_version": __version__, "model": g.name, "top": TOP,
        "hls": asdict(config), "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
        "samples": int(next(iter(feeds.values())).shape[0]), "cxxflags": CXXFLAGS,
        "device_inputs": [{k: t[k] for k in ("name", "key", "dtype", "shape", "golden")} for t in src["inputs"]],
        "device_outputs": [{k: t[k] for k in ("name", "key", "dtype", "shape", "golden")} for t in src["outputs"]],
        "layers": src["layers"], "sources": src["sources"], "dataflow": src["dataflow"],
        "param_words": src["param_words"], "golden": files,
    }
    if where is not None:
        manifest["placement"] = where
    write_json(tmp / MANIFEST, manifest)
    return manifest


# ---- build and run ------------------------------------------------------------------------------

def _cxx() -> str:
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        raise BuildError(f"C++ compiler {cxx!r} not found", hint="install g++ or set CXX")
    return cxx


def _gxx(build: Path, args: list[str], target: str) -> float:
    """Run the compiler in `build`, writing `target` atomically; returns seconds."""
    tmp = f".{target}.{os.getpid()}.tmp"
    cmd = [_cxx(), *CXXFLAGS, "-I.", *args, "-o", tmp]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=build, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        (build / tmp).unlink(missing_ok=True)
        first = (r.stderr.strip().splitlines() or ["(no output)"])[0]
        raise BuildError(f"g++ failed on the generated sources: {first}", where=str(build),
                         hint="run `make -C BUILD csim` to see every message")
    os.replace(build / tmp, build / target)
    return dt


def build_tb(build_dir) -> float:
    return _gxx(Path(build_dir), ["model.cpp", "tb.cpp"], "tb")


def build_lib(build_dir) -> float:
    return _gxx(Path(build_dir), ["-fPIC", "-shared", "model.cpp", "capi.cpp"], LIB)


_TB_LINE = re.compile(r"TONY_CSIM samples=(\d+) compared=(\d+) mismatches=(\d+)")


def csim(build_dir, *, rebuild: bool = True, graph: ir.Graph | None = None) -> dict:
    """Build the testbench with g++, run it on the golden vectors, write csim_report.json."""
    build = Path(build_dir)
    m = Build.open(build, kind="hls").manifest
    if "segments" in m:
        return _csim_segmented(Build.open(build, kind="hls"), rebuild, graph)
    compile_s = build_tb(build) if rebuild or not (build / "tb").is_file() else 0.0
    t0 = time.perf_counter()
    r = subprocess.run([str(build.resolve() / "tb"), "."], cwd=build, capture_output=True, text=True)
    run_s = time.perf_counter() - t0
    hit = _TB_LINE.search(r.stdout)
    if hit is None or r.returncode not in (0, 1):
        msg = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[0]
        raise BuildError(f"testbench did not complete (exit {r.returncode}): {msg}", where=str(build))
    samples, compared, mism = (int(v) for v in hit.groups())
    shown = [ln for ln in r.stdout.splitlines() if ln.startswith("MISMATCH")]
    rep = {"backend": "hls", "model": m["model"], "bit_exact": mism == 0 and r.returncode == 0,
           "mismatches": mism, "compared": compared, "samples": samples, "first_mismatches": shown,
           "compile_s": round(compile_s, 3), "run_s": round(run_s, 4), "cxxflags": CXXFLAGS}
    (build / REPORT).write_text(json.dumps(rep, indent=2) + "\n")
    return rep


def _csim_segmented(build: Build, rebuild: bool, graph: ir.Graph | None) -> dict:
    """Every device segment's testbench on its golden vectors, then the whole graph end to end:
    device segments in the C++ (through ctypes), host segments in the reference, compared with
    the reference of the whole graph."""
    m = build.manifest
    parts = [csim(build.path / s["build"], rebuild=rebuild) for s in m["segments"] if s["kind"] == "device"]
    g = graph if graph is not None else build.graph()
    from ..golden import tensor_keys as _keys

    keys = _keys(g)
    feeds = {n: build.golden(keys[n]) for n in g.inputs}
    outs = _run_segmented(g, feeds, build.path, m, {})
    shown, mism, compared = [], 0, 0
    for n in g.outputs:
        want = build.golden(keys[n])
        got = np.asarray(outs[n]).reshape(want.shape)
        bad = np.argwhere(got != want)
        mism += len(bad)
        compared += want.size
        shown += [f"MISMATCH {keys[n]}[{','.join(map(str, i))}] expected {want[tuple(i)]} got {got[tuple(i)]}"
                  for i in bad[:5]]
    rep = {"backend": "hls", "model": m["model"], "segments": parts,
           "bit_exact": mism == 0 and all(p["bit_exact"] for p in parts),
           "mismatches": mism + sum(p["mismatches"] for p in parts), "compared": compared,
           "samples": int(next(iter(feeds.values())).shape[0]),
           "first_mismatches": shown + [x for p in parts for x in p["first_mismatches"]],
           "compile_s": round(sum(p["compile_s"] for p in parts), 3),
           "run_s": round(sum(p["run_s"] for p in parts), 4), "cxxflags": CXXFLAGS}
    (build.path / REPORT).write_text(json.dumps(rep, indent=2) + "\n")
    return rep


class _Lib:
    """The shared library built from a build folder's sources, called through ctypes."""

    def __init__(self, build_dir, manifest: dict):
        build = Path(build_dir)
        lib = build / LIB
        srcs = [build / s for s in manifest["sources"] if (build / s).exists()]
        if not lib.is_file() or any(s.stat().st_mtime > lib.stat().st_mtime for s in srcs):
            build_lib(build)
        self.dll = ctypes.CDLL(str(lib.resolve()))
        self.dll.tony_run.restype = ctypes.c_int
        self.manifest = manifest
        self.params = None
        if manifest["hls"]["weights"] == "axi":
            self.params = np.ascontiguousarray(np.load(build / "params.npy").astype(np.int32))

    def run(self, dins: list[np.ndarray]) -> list[np.ndarray]:
        m = self.manifest
        n = dins[0].shape[0]
        P = ctypes.POINTER(ctypes.c_longlong)
        ins = [np.ascontiguousarray(x.reshape(n, -1), dtype=np.int64) for x in dins]
        outs = [np.zeros((n, math.prod(t["shape"][1:])), np.int64) for t in m["device_outputs"]]
        in_ptrs = (P * max(len(ins), 1))(*[a.ctypes.data_as(P) for a in ins])
        out_ptrs = (P * max(len(outs), 1))(*[a.ctypes.data_as(P) for a in outs])
        pp = self.params.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)) if self.params is not None else None
        rc = self.dll.tony_run(in_ptrs, out_ptrs, ctypes.c_int(n), pp)
        if rc:
            t = m["device_inputs"][rc - 1]
            raise InputError(f"device input '{t['name']}' holds values outside {t['dtype']}")
        return [o.reshape((n,) + tuple(t["shape"][1:])) for o, t in zip(outs, m["device_outputs"])]


def _run_graph(g: ir.Graph, feeds: dict, lib: _Lib) -> dict:
    """Host ops in the reference, device ops in the compiled C++."""
    part = partition(g, refuse(g, HlsConfig(**lib.manifest["hls"])))
    env = execute_segments(g, part, feeds, lambda k, seg, ins: lib.run([ins[n] for n in seg.inputs]))
    return {name: env[name] for name in g.outputs}


def _run_segmented(g: ir.Graph, feeds: dict, build: Path, manifest: dict, libs: dict) -> dict:
    """Host segments in the reference, each device segment in its own build's C++."""
    part = partition(g, refuse(g, HlsConfig(**manifest["hls"])))

    def device(k, seg, ins):
        if k not in libs:
            libs[k] = _Lib(build / f"seg{k}", json.loads((build / f"seg{k}" / MANIFEST).read_text()))
        return libs[k].run([ins[n] for n in seg.inputs])
    env = execute_segments(g, part, feeds, device)
    return {name: env[name] for name in g.outputs}


def run_csim(build_dir, inputs, *, graph: ir.Graph | None = None) -> list[np.ndarray]:
    """Run the build's HLS C++ on `inputs` (like tony.run_reference: one input or a dict, single or
    stacked); returns the list of graph outputs with the same semantics as the reference."""
    return HlsModel(build_dir, graph).predict(inputs)


class HlsModel:
    """A model compiled to HLS C++ and loaded as a shared library (one per device segment);
    `predict` runs it."""

    def __init__(self, build_dir, graph: ir.Graph | None = None):
        build = Build.open(build_dir, kind="hls")
        self.build_dir = build.path
        self.manifest = build.manifest
        self.graph = graph if graph is not None else build.graph()
        self.segmented = "segments" in self.manifest
        self._lib = None if self.segmented else _Lib(self.build_dir, self.manifest)
        self._libs: dict = {}

    def predict(self, x) -> list[np.ndarray]:
        """Outputs for `x`, with the same semantics as tony.run_reference."""
        feeds, stacked = normalize_inputs(self.graph, x)
        if self.segmented:
            outs = _run_segmented(self.graph, feeds, self.build_dir, self.manifest, self._libs)
        else:
            outs = _run_graph(self.graph, feeds, self._lib)
        return restack(self.graph, outs, stacked)

    def csim(self) -> dict:
        return csim(self.build_dir, graph=self.graph)


def compile(model, *, backend: str = "hls", output_dir=None, requant: str = "auto", rounding: str = "half_even",
            array: str = "8x8", acc_bits: int = 32, weights: str = "const", samples: int = 4, seed: int = 0):
    """See tony.compile."""
    from ..compiler import compile_model, parse_array
    from ..golden import default_inputs

    if backend != "hls":
        raise InputError(f"backend {backend!r}: tony.compile runs 'hls' from Python; "
                         "use `tony compile` and `tony sim` for the RTL")
    r, c = parse_array(array)
    cfg = HlsConfig(rows=r, cols=c, acc_bits=acc_bits, weights=weights)
    out = Path(output_dir) if output_dir else Path(tempfile.mkdtemp(prefix="tony_hls_")) / "build"
    if isinstance(model, ir.Graph):
        compile_hls(model, out, config=cfg, feeds=default_inputs(model, samples, seed))
        return HlsModel(out, graph=model)
    compile_model(model, out, backend="hls", config=cfg, samples=samples, seed=seed, requant=requant,
                  rounding=rounding)
    return HlsModel(out)
