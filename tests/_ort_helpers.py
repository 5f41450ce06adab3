"""Helpers shared by the tests that predict, element by element, where onnxruntime and the
reference round differently (test_ort_contrib, test_ort_quantized, test_tiny_models).

Each side's integers are predicted independently with exact fractions (or, for onnxruntime's
float kernels, a numpy model of its float32 arithmetic); `compare_predictions` then checks that
each side equals its prediction and that they differ only at .5 ties.
"""
import ctypes
import functools
import mmap
from fractions import Fraction

import numpy as np
import onnxruntime as ort


def rhe(v: Fraction) -> int:
    """round half to even of an exact fraction"""
    fl = v.numerator // v.denominator
    r = v - fl
    return fl + (1 if r > Fraction(1, 2) or (r == Fraction(1, 2) and fl % 2) else 0)


def tie_between(u: Fraction, v: Fraction) -> bool:
    """Is some k + 1/2 in [min(u, v), max(u, v)]? (then round-half-to-even of u and v may differ)"""
    lo, hi = min(u, v) - Fraction(1, 2), max(u, v) - Fraction(1, 2)
    return -((-lo.numerator) // lo.denominator) <= hi.numerator // hi.denominator


def compare_predictions(name, ort_y, ref_y, ort_pred, ref_pred, ort_val, ref_val):
    """ort_val / ref_val: each side's value before rounding, in output LSBs, as exact fractions."""
    assert np.array_equal(ort_y, ort_pred), f"{name}: onnxruntime differs from its predicted rounding"
    assert np.array_equal(ref_y, ref_pred), f"{name}: the reference differs from its integer formula"
    diff = ort_y != ref_y
    predicted = int((ort_pred != ref_pred).sum())
    print(f"{name}: {int(diff.sum())} of {diff.size} elements differ from onnxruntime (predicted {predicted})")
    assert int(diff.sum()) == predicted
    assert all(tie_between(u, v) for u, v in zip(ort_val[diff], ref_val[diff])), "a difference not at a tie"
    assert (np.abs(ort_y - ref_y) <= 1).all()


def ort_run(path_or_model, feeds_list, level=ort.GraphOptimizationLevel.ORT_DISABLE_ALL, name="input"):
    """Run each sample of `feeds_list` through onnxruntime (CPU); every graph output stacked over samples."""
    so = ort.SessionOptions()
    so.graph_optimization_level = level
    src = path_or_model if isinstance(path_or_model, str) else path_or_model.SerializeToString()
    sess = ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {name: x}) for x in feeds_list]
    return [np.stack([o[k] for o in outs]) for k in range(len(outs[0]))]


def calibration_reader(x, name: str = "input", *, add_batch_axis: bool = True):
    """An onnxruntime.quantization CalibrationDataReader over the samples of x, one feed each
    (with a batch axis of 1 added unless the samples already have it)."""
    from onnxruntime.quantization import CalibrationDataReader

    class _Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: xi[None] if add_batch_axis else xi} for xi in x])

        def get_next(self):
            return next(self.it, None)

    return _Reader()


# ---- which onnxruntime int8 kernels give exact integers on this CPU -------------------------------
# onnxruntime picks its int8 GEMM/convolution kernels by CPU feature. With VNNI (AVX-512 VNNI,
# AVX-VNNI) or AMX, uint8 x int8 products are summed into int32 (vpdpbusd): exact. On x86-64
# without them, its u8s8 kernels multiply with vpmaddubsw, which adds each pair of products in
# saturating 16-bit arithmetic, so large products clip and the sum is not the exact integer
# result (onnxruntime documents `reduce_range` for such machines). Its graph optimizer also turns
# int8 QDQ groups into uint8 kernels there. Exact comparisons therefore rest on its unoptimized
# Q/DQ path (float ops between QuantizeLinear and DequantizeLinear, the same on every CPU); the
# fused or QOperator int8 kernels are a second comparison where the CPU makes them exact.
# The features are read with CPUID itself, as onnxruntime's kernel dispatch does (an emulator or
# a VM may report other flags in /proc/cpuinfo than it executes).
_CPUID = bytes.fromhex(  # push rbx; mov eax,edi; mov ecx,esi; mov r8,rdx; cpuid; store eax..edx at [r8]; pop rbx; ret
    "53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808" "4189500c" "5b" "c3")


@functools.lru_cache(maxsize=None)
def _cpuid_fn():
    """The x86 CPUID instruction itself (what onnxruntime's kernel dispatch reads), callable as
    f(leaf, subleaf, out) with out a c_uint32 * 4 receiving eax, ebx, ecx, edx."""
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_CPUID)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.c_void_p)(
        ctypes.addressof(ctypes.c_char.from_buffer(buf)))
    fn.page = buf  # the code page lives as long as the function
    return fn


def _cpuid(leaf: int, sub: int = 0) -> tuple[int, int, int, int]:
    out = (ctypes.c_uint32 * 4)()
    _cpuid_fn()(leaf, sub, out)
    return tuple(out)


def exact_int8_features() -> list[str]:
    """The CPU features that make onnxruntime's uint8 x int8 kernels exact, those this CPU has."""
    max_leaf = _cpuid(0)[0]
    if max_leaf < 7:
        return []
    _, _, ecx, edx = _cpuid(7, 0)
    eax1 = _cpuid(7, 1)[0]
    have = {"AVX-512 VNNI": ecx >> 11 & 1, "AVX-VNNI": eax1 >> 4 & 1, "AMX-INT8": edx >> 25 & 1}
    return [k for k, v in have.items() if v]


def _cpu_name() -> str:
    import platform
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def int8_kernels_exact_reason() -> str | None:
    """None where onnxruntime's uint8 x int8 kernels sum exactly on this CPU; otherwise why not."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return (f"onnxruntime's int8 kernels are characterized here for x86-64 only (this CPU: {platform.machine()}); "
                "the exact comparison runs on its unoptimized Q/DQ path")
    if exact_int8_features():
        return None
    return (f"this CPU ({_cpu_name()}) has no AVX-512 VNNI, AVX-VNNI or AMX-INT8: onnxruntime's uint8 x int8 kernels "
            "add product pairs in saturating 16-bit arithmetic (vpmaddubsw), so fused/QOperator int8 output is not "
            "the exact integer result; the exact comparison runs on its unoptimized Q/DQ path")


def require_exact_int8_kernels() -> None:
    """Skip the calling test, naming the CPU feature, where onnxruntime's int8 kernels are not exact."""
    import pytest

    reason = int8_kernels_exact_reason()
    if reason:
        pytest.skip(reason)


# ---- QOperator -> QDQ, for onnxruntime's CPU-independent Q/DQ path --------------------------------
def qoperator_to_qdq(model):
    """The same model with each QLinear*/QGemm node written as DequantizeLinear -> float op ->
    QuantizeLinear (ONNX's definition of those ops), so that onnxruntime runs it, unoptimized,
    without its CPU-dependent int8 kernels. Written here, independently of the compiler's own
    QOperator rewrite; only the node kinds onnxruntime's quantize_static emits are handled."""
    import onnx
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    nodes, fresh = [], iter(range(1 << 30))

    def tmp(base):
        return f"{base}__qdq{next(fresh)}"

    def dq(x, s, z, axis=None):
        y = tmp(x)
        kw = {"axis": axis} if axis is not None and np.ndim(inits.get(s, 0)) == 1 else {}
        nodes.append(helper.make_node("DequantizeLinear", [x, s] + ([z] if z else []), [y], **kw))
        return y

    def q(x, s, z, y):
        nodes.append(helper.make_node("QuantizeLinear", [x, s] + ([z] if z else []), [y]))

    def bias(b, xs, ws):
        """int32 bias at scale x_scale * w_scale (float32, per channel when w_scale is)"""
        s = tmp(b + "_scale")
        g.initializer.append(numpy_helper.from_array((inits[xs] * inits[ws]).astype(np.float32), s))
        inits[s] = inits[xs] * inits[ws]
        return dq(b, s, "", axis=0)

    for n in g.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
        i, o = list(n.input), n.output[0]
        if n.op_type == "QLinearConv":
            args = [dq(i[0], i[1], i[2]), dq(i[3], i[4], i[5], axis=0)] + ([bias(i[8], i[1], i[4])] if len(i) > 8 and i[8] else [])
            y = tmp(o)
            nodes.append(helper.make_node("Conv", args, [y], **attrs))
            q(y, i[6], i[7], o)
        elif n.op_type == "QLinearMatMul":
            y = tmp(o)
            nodes.append(helper.make_node("MatMul", [dq(i[0], i[1], i[2]), dq(i[3], i[4], i[5], axis=1)], [y]))
            q(y, i[6], i[7], o)
        elif n.op_type == "QGemm":
            assert attrs.get("alpha", 1.0) == 1.0
            wax = 0 if attrs.get("transB", 0) else 1
            args = [dq(i[0], i[1], i[2]), dq(i[3], i[4], i[5], axis=wax)]
            if len(i) > 6 and i[6]:
                args.append(bias(i[6], i[1], i[4]))
            if len(i) > 7 and i[7]:
                y = tmp(o)
                nodes.append(helper.make_node("Gemm", args, [y], **attrs))
                q(y, i[7], i[8] if len(i) > 8 else "", o)
            else:
                nodes.append(helper.make_node("Gemm", args, [o], **attrs))
        elif n.op_type == "QLinearAdd":
            y = tmp(o)
            nodes.append(helper.make_node("Add", [dq(i[0], i[1], i[2]), dq(i[3], i[4], i[5])], [y]))
            q(y, i[6], i[7], o)
        elif n.op_type == "QLinearConcat":
            y = tmp(o)
            xs = [dq(*i[k:k + 3]) for k in range(2, len(i), 3)]
            nodes.append(helper.make_node("Concat", xs, [y], axis=attrs["axis"]))
            q(y, i[0], i[1], o)
        elif n.op_type in ("QLinearGlobalAveragePool", "QLinearAveragePool"):
            assert not attrs.pop("channels_last", 0)
            y = tmp(o)
            nodes.append(helper.make_node(n.op_type.replace("QLinear", ""), [dq(i[0], i[1], i[2])], [y], **attrs))
            q(y, i[3], i[4], o)
        else:
            assert n.domain in ("", "ai.onnx"), f"{n.op_type} ({n.domain}) has no Q/DQ form here"
            nodes.append(n)
    del g.node[:]
    g.node.extend(nodes)
    keep = [o for o in m.opset_import if o.domain in ("", "ai.onnx")]
    del m.opset_import[:]
    m.opset_import.extend(keep)
    onnx.checker.check_model(m)
    return m
