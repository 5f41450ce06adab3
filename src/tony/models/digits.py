"""Models trained on scikit-learn's 8x8 digits set (shipped inside scikit-learn: no download)."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import TonyError

OPSET = 13


def digits_data(seed: int = 0):
    """(x_train, y_train, x_test, y_test) with pixels scaled to [0, 1], as float32."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - dev extra
        raise TonyError("the digits models need scikit-learn", hint="pip install 'tony[dev]'") from None
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32)
    y = d.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(x))
    x, y = x[idx], y[idx]
    n_test = 360
    return x[n_test:], y[n_test:], x[:n_test], y[:n_test]


def train_mlp(hidden: tuple[int, ...] = (32,), seed: int = 0):
    """Train an MLP (ReLU) on digits; returns (weights list [(W [in,out], b)], test accuracy)."""
    from sklearn.neural_network import MLPClassifier

    xtr, ytr, xte, yte = digits_data(seed)
    clf = MLPClassifier(hidden_layer_sizes=hidden, activation="relu", max_iter=400, random_state=seed,
                        alpha=1e-3)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf.fit(xtr, ytr)
    layers = [(w.astype(np.float32), b.astype(np.float32)) for w, b in zip(clf.coefs_, clf.intercepts_)]
    return layers, float(clf.score(xte, yte))


def mlp_onnx(layers, name: str = "digits_mlp") -> onnx.ModelProto:
    """Float ONNX MLP: Gemm (transB) + Relu between layers; input [1, 64] float, output logits [1, 10]."""
    nodes, inits = [], []
    x = "input"
    for i, (w, b) in enumerate(layers):
        inits += [numpy_helper.from_array(np.ascontiguousarray(w.T), f"fc{i}.weight"),
                  numpy_helper.from_array(b, f"fc{i}.bias")]
        last = i == len(layers) - 1
        y = "logits" if last else f"fc{i}"
        nodes.append(helper.make_node("Gemm", [x, f"fc{i}.weight", f"fc{i}.bias"], [y], name=f"fc{i}", transB=1))
        if not last:
            nodes.append(helper.make_node("Relu", [y], [f"relu{i}"], name=f"relu{i}"))
            y = f"relu{i}"
        x = y
    g = helper.make_graph(nodes, name,
                          [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, layers[0][0].shape[0]])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, layers[-1][0].shape[1]])],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="tony")
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m
