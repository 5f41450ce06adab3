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


__all__ = ["TonyError", "run_reference", "__version__"]
