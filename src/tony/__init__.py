"""Tony: quantized ONNX -> integer IR -> Verilog/HLS for a systolic MAC array, proven bit-exact."""
from __future__ import annotations

__version__ = "0.1.0"

from .errors import TonyError  # noqa: E402


def run_reference(model, inputs):
    """Run the bit-exact integer reference on `model` (path or onnx.ModelProto).

    `inputs` is one array (for a single-input model) or a dict name -> array. Returns the list of
    graph outputs with the ONNX graph's own output semantics (dequantized floats where the graph
    ends in DequantizeLinear).
    """
    from .api import run_reference as _run

    return _run(model, inputs)


def compile(model, *, backend: str = "hls", output_dir=None, **options):
    """Compile `model` (path, onnx.ModelProto or IR graph) for `backend` and load it.

    backend="hls" renders the HLS C++, builds it with g++ into a shared library and returns an
    object whose `.predict(x)` runs that C++ with the same semantics as `run_reference`
    (options: requant, rounding, array="8x8", acc_bits, weights="const"|"axi"). The build folder
    (`output_dir`, default a new temporary folder) also holds the testbench, Makefile and Tcl.
    """
    from .hls.backend import compile as _compile

    return _compile(model, backend=backend, output_dir=output_dir, **options)


__all__ = ["TonyError", "compile", "run_reference", "__version__"]
