"""Small QDQ graphs, one per host op, written by hand the way a quantizer writes them: each float
input goes through QuantizeLinear -> DequantizeLinear (power-of-two scales), the op runs in
float, its output is quantized and dequantized again. `conv_first` puts a 1x1 Conv (a device
op) in front of a 4-D first input so that the graph also has a device segment."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

F32 = T.FLOAT


def _q(x, s, name, signed=True):
    zt = np.int8 if signed else np.uint8
    inits = [nh.from_array(np.array(s, np.float32), f"{name}_s"), nh.from_array(np.array(0, zt), f"{name}_z")]
    nodes = [h.make_node("QuantizeLinear", [x, f"{name}_s", f"{name}_z"], [f"{name}_q"], name=f"{name}_Q"),
             h.make_node("DequantizeLinear", [f"{name}_q", f"{name}_s", f"{name}_z"], [f"{name}_dq"],
                         name=f"{name}_DQ")]
    return nodes, inits, f"{name}_dq"


def qconst(arr, s, name):
    """A constant as int8 + DequantizeLinear (a quantized weight)."""
    q = np.clip(np.rint(np.asarray(arr, np.float32) / s), -128, 127).astype(np.int8)
    inits = [nh.from_array(q, name + "_i8"), nh.from_array(np.array(s, np.float32), name + "_s"),
             nh.from_array(np.array(0, np.int8), name + "_z")]
    return [h.make_node("DequantizeLinear", [name + "_i8", name + "_s", name + "_z"], [name], name=name + "_DQ")], inits


def build(name, op_type, in_shapes, out_shape, *, attrs=None, in_scales=None, out_scale=2.0**-5, unsigned_out=False,
          consts=(), extra_nodes=(), conv_first=False, opset=14, float_out=False, int_inputs=(),
          drop_first_input=False):
    """in_shapes: activation inputs; consts: (position, onnx input name) pairs spliced into the op's
    inputs (initializers / DQ outputs given in extra_nodes[1]); int_inputs: (position, name, shape)
    integer graph inputs fed straight to the op."""
    nodes, inits, ins, graph_in = [], [], [], []
    in_scales = in_scales or [2.0**-4] * len(in_shapes)
    for k, (shp, s) in enumerate(zip(in_shapes, in_scales)):
        graph_in.append(h.make_tensor_value_info(f"x{k}", F32, list(shp)))
        src = f"x{k}"
        if conv_first and k == 0 and len(shp) == 4:
            n, i, _ = _q(src, s, "pre")
            nodes += n
            inits += i
            c = shp[1]
            w = np.eye(c, dtype=np.float32).reshape(c, c, 1, 1) * 0.5
            wn, wi = qconst(w, 2.0**-6, "pre_w")
            nodes += wn
            inits += wi
            nodes.append(h.make_node("Conv", [n[-1].output[0], "pre_w"], ["pre_conv"], name="pre_conv"))
            src = "pre_conv"
        n, i, _ = _q(src, s, f"in{k}")
        nodes += n
        inits += i
        ins.append(n[-1].output[0])
    for pos, nm, shp in int_inputs:
        graph_in.append(h.make_tensor_value_info(nm, T.INT64, list(shp)))
        ins.insert(pos, nm)
    en, ei = extra_nodes if extra_nodes else ([], [])
    nodes += en
    inits += ei
    if drop_first_input:  # the op reads what extra_nodes made of it
        ins = ins[1:]
    for pos, nm in consts:
        ins.insert(pos, nm)
    outs = [f"y{k}" for k in range(out_shape if isinstance(out_shape, int) else 1)]
    shapes = [None] * len(outs)
    nodes.append(h.make_node(op_type, ins, [o + "_f" for o in outs], name=f"the_{op_type.lower()}",
                             **(attrs or {})))
    graph_out = []
    for o in outs:
        if float_out:
            nodes[-1].output[outs.index(o)] = o
        else:
            n, i, _ = _q(o + "_f", out_scale, o + "_o", signed=not unsigned_out)
            n[-1].output[0] = o
            nodes += n
            inits += i
        graph_out.append(h.make_tensor_value_info(o, F32, shapes[outs.index(o)]))
    g = h.make_graph(nodes, name, graph_in, graph_out, inits)
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    m = onnx.shape_inference.infer_shapes(m)
    onnx.checker.check_model(m)
    return m


def _i64(name, vals):
    return nh.from_array(np.asarray(vals, np.int64), name)


def cases() -> dict:
    """name -> QDQ model."""
    c = {}
    c["mul_broadcast"] = build("mul_broadcast", "Mul", [(1, 4, 3, 3), (1, 4, 1, 1)], 1, conv_first=True)
    wn, wi = qconst(np.linspace(-1, 1, 4).reshape(4, 1, 1), 2.0**-6, "mulc")
    c["mul_const"] = build("mul_const", "Mul", [(1, 4, 3, 3)], 1, consts=[(1, "mulc")], extra_nodes=(wn, wi))
    bn_, bi_ = qconst(np.linspace(-0.5, 0.75, 4).reshape(1, 4, 1, 1), 2.0**-7, "addc")
    c["add_channel_const"] = build("add_channel_const", "Add", [(1, 4, 3, 3)], 1, consts=[(0, "addc")],
                                   extra_nodes=(bn_, bi_), conv_first=True)
    sn_, si_ = qconst(np.linspace(-0.5, 0.75, 4).reshape(4, 1, 1), 2.0**-3, "subc")
    c["sub_channel_const"] = build("sub_channel_const", "Sub", [(1, 4, 3, 3)], 1, consts=[(1, "subc")],
                                   extra_nodes=(sn_, si_))
    c["sub"] = build("sub", "Sub", [(1, 4, 3, 3), (1, 4, 3, 3)], 1, in_scales=[2.0**-4, 2.0**-6])
    for fn, at in [("Sigmoid", {}), ("Tanh", {}), ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}),
                   ("HardSwish", {}), ("LeakyRelu", {"alpha": 0.1})]:
        c[fn.lower()] = build(fn.lower(), fn, [(1, 4, 3, 3)], 1, attrs=at, conv_first=True,
                              out_scale=2.0**-7 if fn in ("Sigmoid", "Tanh", "HardSigmoid") else 2.0**-4)
    c["softmax_last"] = build("softmax_last", "Softmax", [(1, 10)], 1, out_scale=2.0**-8, unsigned_out=True)
    c["softmax_axis1"] = build("softmax_axis1", "Softmax", [(1, 4, 3, 3)], 1, attrs={"axis": 1}, out_scale=2.0**-8,
                               unsigned_out=True, conv_first=True)
    c["softmax_float_out"] = build("softmax_float_out", "Softmax", [(1, 10)], 1, float_out=True)
    c["lrn"] = build("lrn", "LRN", [(1, 8, 4, 4)], 1, attrs={"size": 5, "alpha": 1e-2, "beta": 0.75, "bias": 1.0},
                     conv_first=True)
    c["transpose"] = build("transpose", "Transpose", [(1, 2, 3, 4)], 1, attrs={"perm": [0, 2, 3, 1]},
                           out_scale=2.0**-4)
    c["pad_constant"] = build("pad_constant", "Pad", [(1, 4, 3, 3)], 1, consts=[(1, "pads")], out_scale=2.0**-4,
                              extra_nodes=([], [_i64("pads", [0, 0, 1, 2, 0, 0, 2, 1])]), conv_first=True)
    c["pad_reflect"] = build("pad_reflect", "Pad", [(1, 4, 3, 3)], 1, consts=[(1, "pads")], out_scale=2.0**-4,
                             attrs={"mode": "reflect"}, extra_nodes=([], [_i64("pads", [0, 0, 1, 1, 0, 0, 2, 1])]))
    c["slice"] = build("slice", "Slice", [(1, 6, 5, 5)], 1, consts=[(1, "st"), (2, "en"), (3, "ax"), (4, "sp")],
                       out_scale=2.0**-4, extra_nodes=([], [_i64("st", [1, 4, -1]), _i64("en", [5, 0, -6]),
                                                            _i64("ax", [1, 2, 3]), _i64("sp", [2, -1, -2])]))
    c["split"] = build("split", "Split", [(1, 6, 2, 2)], 3, attrs={"axis": 1}, consts=[(1, "sz")], out_scale=2.0**-4,
                       extra_nodes=([], [_i64("sz", [1, 2, 3])]), conv_first=True)
    c["resize_nearest"] = build("resize_nearest", "Resize", [(1, 2, 3, 3)], 1, consts=[(1, ""), (2, "sc")],
                                attrs={"mode": "nearest"}, out_scale=2.0**-4,
                                extra_nodes=([], [nh.from_array(np.array([1, 1, 2, 3], np.float32), "sc")]))
    c["resize_asym_floor"] = build("resize_asym_floor", "Resize", [(1, 2, 3, 4)], 1, consts=[(1, ""), (2, "sc")],
                                   attrs={"mode": "nearest", "coordinate_transformation_mode": "asymmetric",
                                          "nearest_mode": "floor"}, out_scale=2.0**-4,
                                   extra_nodes=([], [nh.from_array(np.array([1, 1, 2, 1.5], np.float32), "sc")]))
    c["reducemean_hw"] = build("reducemean_hw", "ReduceMean", [(1, 4, 3, 3)], 1, attrs={"axes": [2, 3]},
                               conv_first=True)
    c["reducemean_c"] = build("reducemean_c", "ReduceMean", [(1, 3, 2, 2)], 1, attrs={"axes": [1], "keepdims": 0},
                              out_scale=2.0**-4)
    c["concat_axis2"] = build("concat_axis2", "Concat", [(1, 2, 3, 2), (1, 2, 1, 2)], 1, attrs={"axis": 2},
                              in_scales=[2.0**-4, 2.0**-5], conv_first=True)
    c["channel_shuffle"] = _shuffle()
    c["matmul_two"] = build("matmul_two", "MatMul", [(1, 3, 4), (1, 4, 5)], 1, out_scale=2.0**-3)
    c["gather_act"] = build("gather_act", "Gather", [(1, 5, 3)], 1, attrs={"axis": 1}, consts=[(1, "gi")],
                            out_scale=2.0**-4, extra_nodes=([], [_i64("gi", [[4, 0], [-1, 2]])]))
    tn, ti = qconst(np.linspace(-2, 2, 24).reshape(6, 4), 2.0**-5, "table")
    c["gather_table"] = build("gather_table", "Gather", [], 1, consts=[(0, "table")], extra_nodes=(tn, ti),
                              int_inputs=[(1, "idx", (1, 3))], out_scale=2.0**-5)
    bn = [nh.from_array(v.astype(np.float32), n) for v, n in
          [(np.array([1.0, 0.5, 2.0, 1.5]), "g"), (np.array([0.1, -0.2, 0.0, 0.3]), "b"),
           (np.array([0.0, 0.25, -0.5, 0.1]), "mu"), (np.array([1.0, 0.5, 2.0, 0.8]), "var")]]
    c["batchnorm"] = build("batchnorm", "BatchNormalization", [(1, 4, 3, 3)], 1,
                           consts=[(1, "g"), (2, "b"), (3, "mu"), (4, "var")], extra_nodes=([], bn))
    w1n, w1i = qconst(np.linspace(-1, 1, 4 * 2 * 3).reshape(4, 2, 3), 2.0**-6, "w1d")
    c["conv1d"] = build("conv1d", "Conv", [(1, 2, 9)], 1, consts=[(1, "w1d")], extra_nodes=(w1n, w1i),
                        attrs={"pads": [1, 1], "strides": [2]}, out_scale=2.0**-4)
    c["maxpool1d"] = build("maxpool1d", "MaxPool", [(1, 2, 9)], 1, attrs={"kernel_shape": [3], "strides": [2]},
                           out_scale=2.0**-4)
    c["avgpool1d"] = build("avgpool1d", "AveragePool", [(1, 2, 9)], 1, attrs={"kernel_shape": [4], "pads": [2, 1],
                                                                              "count_include_pad": 1})
    c["avgpool_exclude_pad"] = build("avgpool_exclude_pad", "AveragePool", [(1, 3, 5, 5)], 1, conv_first=True,
                                     attrs={"kernel_shape": [3, 3], "pads": [1, 1, 1, 1], "strides": [2, 2]})
    return c


def _shuffle():
    """Reshape [1, 6, 2, 2] -> [1, 2, 3, 2, 2], Transpose [0, 2, 1, 3, 4], Reshape back (ShuffleNet)."""
    sh = [nh.from_array(np.array(v, np.int64), n) for v, n in (([1, 2, 3, 2, 2], "s5"), ([1, 6, 2, 2], "s4"))]
    nodes = [h.make_node("Reshape", ["in0_dq", "s5"], ["r5"], name="split_groups"),
             h.make_node("Transpose", ["r5"], ["t5"], name="swap", perm=[0, 2, 1, 3, 4])]
    return build("channel_shuffle", "Reshape", [(1, 6, 2, 2)], 1, consts=[(0, "t5"), (1, "s4")],
                 extra_nodes=(nodes, sh), conv_first=True, drop_first_input=True)


def inputs_for(m: onnx.ModelProto, rng, n: int = 4) -> dict:
    """Random inputs: floats spanning a little past each input quantizer's range, indices in range."""
    feeds = {}
    for i in m.graph.input:
        shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
        if i.type.tensor_type.elem_type == T.INT64:
            feeds[i.name] = rng.integers(-6, 6, size=[n] + shape).astype(np.int64)
        else:
            feeds[i.name] = (rng.standard_normal([n] + shape) * 3).astype(np.float32)
    return feeds
