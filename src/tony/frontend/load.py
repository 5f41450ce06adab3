"""Load and check an ONNX model: parse, checker, opset, static shapes, shape inference."""
from __future__ import annotations

import os
from pathlib import Path

import onnx
from onnx import shape_inference

from ..errors import ModelError, UnsupportedError, not_a_file

MIN_OPSET = 13


def load_model(src) -> onnx.ModelProto:
    """Read `src` (path, bytes or ModelProto), check it, and return it with shapes inferred.

    Raises ModelError for a file that is not a valid ONNX model and UnsupportedError for
    models Tony cannot take (old opsets, dynamic shapes).
    """
    if isinstance(src, onnx.ModelProto):
        model, where = src, "model"
    else:
        path = Path(os.fspath(src))
        where = str(path)
        if not path.is_file():
            raise not_a_file(path, where)
        data = path.read_bytes()
        try:
            model = onnx.load_model_from_string(data)
        except Exception as e:  # protobuf DecodeError and friends
            raise ModelError(f"not a valid ONNX file ({type(e).__name__}: could not parse the protobuf; "
                             "is it truncated or another format?)", where=where) from None
        if not model.graph.node and not model.graph.input:
            raise ModelError("not an ONNX model (no graph found in the file)", where=where)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"the ONNX checker rejects the model: {first}", where=where) from None
    except UnicodeDecodeError:  # a name or string attribute that is not UTF-8
        raise ModelError("the ONNX checker rejects the model: a name or string is not valid UTF-8",
                         where=where) from None
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset < MIN_OPSET:
        raise UnsupportedError(f"opset {opset} is too old (Tony reads opset {MIN_OPSET} and newer)",
                               where=where, hint="convert it with onnx.version_converter.convert_version(model, 13)")
    newest = onnx.defs.onnx_opset_version()
    if opset > newest:
        raise UnsupportedError(f"opset {opset} is newer than the newest this onnx package knows ({newest})",
                               where=where, hint=f"convert it with onnx.version_converter.convert_version(model, {newest})")
    model = fix_batch(model, where)
    try:
        model = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as e:
        first = str(e).strip().splitlines()[0]
        raise ModelError(f"shape inference failed: {first}", where=where) from None
    return model


def fix_batch(model: onnx.ModelProto, where: str) -> onnx.ModelProto:
    """Set a symbolic batch dimension (axis 0) of every graph input to 1; refuse other dynamic dims."""
    model_copy = onnx.ModelProto()
    model_copy.CopyFrom(model)
    inits = {i.name for i in model_copy.graph.initializer}
    for inp in model_copy.graph.input:
        if inp.name in inits:
            continue
        dims = inp.type.tensor_type.shape.dim
        for axis, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                continue
            if axis == 0:
                d.Clear()
                d.dim_value = 1
            else:
                raise UnsupportedError(
                    f"graph input '{inp.name}' has a dynamic dimension at axis {axis} ({d.dim_param or '?'})",
                    where=where, hint="export the model with static shapes (only the batch axis may be symbolic)")
    # intermediate value_info may carry stale symbolic shapes; drop them and re-infer
    del model_copy.graph.value_info[:]
    for out in model_copy.graph.output:
        out.type.tensor_type.ClearField("shape")
    return model_copy


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int, ...]]:
    """Static shapes of every named value (after shape inference)."""
    shapes = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in t.shape.dim)
    for init in model.graph.initializer:
        shapes[init.name] = tuple(init.dims)
    return shapes
