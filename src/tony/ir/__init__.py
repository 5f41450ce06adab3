"""The integer IR: the waist of the compiler. Above it ONNX, below it only this."""
from .ops import (Add, AvgPool, Clamp, Concat, Conv, Dense, Dequantize, FloatIsland, Graph, HostOp, LayerNorm,
                  MatMul, MaxPool, Mul, Op, Pad, PixelMatMul, Quantize, ReduceMean, Reshape, Resize, Slice, Softmax, Table, Take,
                  Transpose)
from .printer import format_graph
from .types import (FLOAT32, INT4, INT8, INT16, INT32, UINT8, DType, Requant, Rounding, Tensor,
                    dtype, pow2_exponent)
from .verify import IRVerifyError, verify

__all__ = [
    "FloatIsland", "HostOp", "LayerNorm", "MatMul", "PixelMatMul", "Softmax", "Mul", "Pad", "ReduceMean", "Resize", "Slice",
    "Table", "Take",
    "Transpose", "Add", "AvgPool", "Clamp", "Concat", "Conv", "Dense", "Dequantize", "Graph", "MaxPool", "Op",
    "Quantize", "Reshape", "format_graph", "FLOAT32", "INT4", "INT8", "INT16", "INT32", "UINT8",
    "DType", "Requant", "Rounding", "Tensor", "dtype", "pow2_exponent", "IRVerifyError", "verify",
]
