"""The "light" model graphs the onnx wheel ships (onnx/backend/test/data/light/: squeezenet 1.1,
inception v1, shufflenet, densenet121), made runnable: their weights are ConstantOfShape
placeholders (or graph inputs), which become seeded random initializers (He-scaled convolution
and Gemm weights, BatchNorm statistics near 1 and 0); the graph is upgraded to opset 13 and its
image input resized to `size` x `size`. At sizes below 224, Reshapes whose target holds the
feature map's height and width get the new ones, and a pool whose window no longer fits the last
feature map becomes GlobalAveragePool (the window covered the whole map at 224).
"""
from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import helper, numpy_helper, shape_inference, version_converter

NAMES = {"squeezenet": "light_squeezenet.onnx", "inception_v1": "light_inception_v1.onnx",
         "shufflenet": "light_shufflenet.onnx", "densenet121": "light_densenet121.onnx"}


def light_path(name: str) -> str:
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light", NAMES[name])


def _role(name: str, consumers: dict) -> tuple[str, int]:
    """(op type, input index) of the first real consumer of a parameter, through Unsqueeze."""
    for n, k in consumers.get(name, []):
        if n.op_type in ("Unsqueeze", "Reshape", "Identity") and k == 0:
            return _role(n.output[0], consumers)
        return n.op_type, k
    return "", -1


def _param(rng, shape, role: tuple[str, int], name: str) -> np.ndarray:
    op, k = role
    shape = tuple(int(d) for d in shape)
    if op in ("Conv", "Gemm") and k == 1:
        fan_in = int(np.prod(shape[1:])) if op == "Conv" else int(shape[-1])
        return (rng.standard_normal(shape) * np.sqrt(2.0 / max(fan_in, 1))).astype(np.float32)
    if op == "BatchNormalization" and k in (1, 4):      # scale, variance
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    if op == "Mul":
        return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return (rng.standard_normal(shape) * 0.1).astype(np.float32)


def _materialize(m: onnx.ModelProto, rng, data: str) -> None:
    """ConstantOfShape outputs and parameter graph inputs -> random initializers."""
    g = m.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers: dict = {}
    for n in g.node:
        for k, i in enumerate(n.input):
            consumers.setdefault(i, []).append((n, k))
    keep, new = [], []
    for n in g.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            new.append(numpy_helper.from_array(_param(rng, inits[n.input[0]], _role(n.output[0], consumers),
                                                      n.output[0]), n.output[0]))
        else:
            keep.append(n)
    for inp in list(g.input):
        if inp.name != data and inp.name not in inits:
            shape = [d.dim_value for d in inp.type.tensor_type.shape.dim]
            new.append(numpy_helper.from_array(_param(rng, shape, _role(inp.name, consumers), inp.name), inp.name))
    del g.node[:]
    g.node.extend(keep)
    g.initializer.extend(new)
    names = {i.name for i in g.initializer}
    kept = [i for i in g.input if i.name not in names]
    del g.input[:]
    g.input.extend(kept)
    used = {i for n in g.node for i in n.input}
    kept_init = [i for i in g.initializer if i.name in used]
    del g.initializer[:]
    g.initializer.extend(kept_init)


def _shapes(m: onnx.ModelProto) -> dict:
    inf = shape_inference.infer_shapes(m)
    out = {}
    for vi in list(inf.graph.value_info) + list(inf.graph.input) + list(inf.graph.output):
        dims = vi.type.tensor_type.shape.dim
        out[vi.name] = [d.dim_value for d in dims]
    return out


def _resize_input(m: onnx.ModelProto, data: str, size: int) -> onnx.ModelProto:
    before = _shapes(m)
    inp = next(i for i in m.graph.input if i.name == data)
    dims = inp.type.tensor_type.shape.dim
    dims[2].dim_value = dims[3].dim_value = size
    inits = {i.name: i for i in m.graph.initializer}
    del m.graph.value_info[:]
    for o in m.graph.output:
        del o.type.tensor_type.shape.dim[:]
    # Reshape targets that spell out the old height and width
    after = None
    for n in m.graph.node:
        if n.op_type == "Reshape" and n.input[1] in inits:
            shp = numpy_helper.to_array(inits[n.input[1]]).copy()
            old_in = before.get(n.input[0], [])
            if len(old_in) >= 4 and len(shp) >= 4 and list(shp[-2:]) == old_in[-2:]:
                after = after or _shapes(m)
                shp[-2:] = after[n.input[0]][-2:]
                inits[n.input[1]].CopyFrom(numpy_helper.from_array(shp.astype(np.int64), n.input[1]))
                after = _shapes(m)
    # pools whose window no longer fits the last feature map
    for n in m.graph.node:
        if n.op_type in ("AveragePool", "MaxPool"):
            hw = _shapes(m).get(n.input[0], [])
            k = next((list(a.ints) for a in n.attribute if a.name == "kernel_shape"), [])
            old = before.get(n.input[0], [0, 0, 0, 0])[2:]
            if len(hw) == 4 and k and (k[0] > hw[2] or k[1] > hw[3]) and k[0] >= old[0] and k[1] >= old[1]:
                n.op_type = "GlobalAveragePool" if n.op_type == "AveragePool" else "GlobalMaxPool"
                del n.attribute[:]
    return m


def light_model(name: str, *, size: int = 224, seed: int = 0) -> onnx.ModelProto:
    """The light model `name` (see NAMES) with seeded random weights, opset 13, input size x size."""
    m = onnx.load(light_path(name))
    data = next(i.name for i in m.graph.input if len(i.type.tensor_type.shape.dim) == 4
                and i.type.tensor_type.shape.dim[1].dim_value == 3)
    rng = np.random.default_rng(seed)
    _materialize(m, rng, data)
    for i in m.graph.initializer:  # the converter wants initializers listed as inputs (IR version 3)
        m.graph.input.append(helper.make_tensor_value_info(i.name, i.data_type, list(i.dims)))
    m = version_converter.convert_version(m, 13)
    names = {i.name for i in m.graph.initializer}
    kept = [i for i in m.graph.input if i.name not in names]
    del m.graph.input[:]
    m.graph.input.extend(kept)
    m.ir_version = max(m.ir_version, 7)
    if size != 224:
        m = _resize_input(m, data, size)
    shapes = _shapes(m)  # Shape of a static tensor (the opset converter's Softmax) -> a constant
    keep = []
    for n in m.graph.node:
        if n.op_type == "Shape" and all(d > 0 for d in shapes.get(n.input[0], [0])):
            m.graph.initializer.append(numpy_helper.from_array(np.asarray(shapes[n.input[0]], np.int64), n.output[0]))
        else:
            keep.append(n)
    del m.graph.node[:]
    m.graph.node.extend(keep)
    for k, n in enumerate(m.graph.node):
        if not n.name:
            n.name = f"{n.op_type.lower()}_{k}"
    shapes = _shapes(m)
    for o in m.graph.output:
        if not o.type.tensor_type.shape.dim:
            for d in shapes[o.name]:
                o.type.tensor_type.shape.dim.add().dim_value = d
    del m.graph.value_info[:]
    onnx.checker.check_model(m)
    return m
