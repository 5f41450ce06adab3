"""Frontend passes: constant folding, BatchNorm folding, topological order — each alone."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tony.errors import ModelError
from tony.frontend.passes import fold_batchnorm, fold_constants, toposort


def _run(m, x):
    """onnxruntime with its own graph optimizations off (so its BatchNorm is really run)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


def test_fold_constants_evaluates_constant_subgraphs_and_keeps_qdq():
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    nodes = [helper.make_node("Constant", [], ["wT"], value=numpy_helper.from_array(w.T.copy())),
             helper.make_node("Transpose", ["wT"], ["w"]),
             helper.make_node("QuantizeLinear", ["w", "s", "z"], ["wq"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "z"], ["wd"]),
             helper.make_node("MatMul", ["x", "wd"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
                          [numpy_helper.from_array(np.array(0.125, np.float32), "s"),
                           numpy_helper.from_array(np.array(0, np.int8), "z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    f = fold_constants(m)
    assert [n.op_type for n in f.graph.node] == ["QuantizeLinear", "DequantizeLinear", "MatMul"]
    assert np.array_equal(numpy_helper.to_array(next(i for i in f.graph.initializer if i.name == "w")), w)
    x = np.random.default_rng(0).standard_normal((1, 3)).astype(np.float32)
    assert np.array_equal(_run(m, x), _run(f, x))


def test_fold_batchnorm_into_conv_matches_the_unfolded_model():
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    gamma, beta = rng.uniform(0.5, 2, 4).astype(np.float32), rng.standard_normal(4).astype(np.float32)
    mean, var = rng.standard_normal(4).astype(np.float32), rng.uniform(0.5, 2, 4).astype(np.float32)
    inits = [numpy_helper.from_array(a, n) for a, n in
             [(w, "w"), (b, "b"), (gamma, "g"), (beta, "be"), (mean, "mu"), (var, "var")]]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "g", "be", "mu", "var"], ["y"], epsilon=1e-3)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 5, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    f = fold_batchnorm(m)
    assert [n.op_type for n in f.graph.node] == ["Conv"]
    x = rng.standard_normal((1, 2, 5, 5)).astype(np.float32)
    np.testing.assert_allclose(_run(f, x), _run(m, x), rtol=1e-5, atol=1e-5)  # float model: float tolerance


def test_toposort_orders_nodes_and_refuses_cycles():
    nodes = [helper.make_node("Relu", ["a"], ["y"], name="second"),
             helper.make_node("Relu", ["x"], ["a"], name="first")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    assert [n.name for n in toposort(m).graph.node] == ["first", "second"]
    nodes = [helper.make_node("Add", ["x", "b"], ["a"]), helper.make_node("Relu", ["a"], ["b"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("b", TensorProto.FLOAT, [1])])
    with pytest.raises(ModelError, match="cycle"):
        toposort(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
