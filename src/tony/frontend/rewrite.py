"""The shared part of the ONNX -> ONNX rewrites (QOperator and QONNX into QDQ)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper


class GraphRewriter:
    """A copy of a model being rewritten node by node: hands out unused value names and
    collects the new constants (`new_inits`) the rewrite adds."""

    def __init__(self, model: onnx.ModelProto):
        self.m = onnx.ModelProto()
        self.m.CopyFrom(model)
        self.g = self.m.graph
        self.names = ({n for node in self.g.node for n in list(node.input) + list(node.output)}
                      | {i.name for i in self.g.initializer})
        self.new_inits: list[onnx.TensorProto] = []

    def fresh(self, base: str) -> str:
        name, k = base, 0
        while name in self.names:
            k += 1
            name = f"{base}_{k}"
        self.names.add(name)
        return name

    def const(self, base: str, arr: np.ndarray, elem_type: int | None = None) -> str:
        name = self.fresh(base)
        if elem_type is None:
            t = numpy_helper.from_array(arr, name)
        else:  # packed sub-byte types (int2/int4...) need make_tensor
            t = helper.make_tensor(name, elem_type, arr.shape, arr.reshape(-1).astype(np.int64).tolist())
        self.new_inits.append(t)
        return name
