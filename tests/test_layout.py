"""tony.ir.layout.keep_pixels on small integer graphs built by hand: views that compose to the
identity are read through, elementwise ops of tokens move into the pixel layout, and every tensor
that stays holds the same integers (the reference on random inputs)."""
from __future__ import annotations

import numpy as np
import pytest

from tony import ir
from tony.ir.layout import keep_pixels
from tony.ir.tokens import tokens_as_pixels
from tony.ir.types import INT8, INT32, Requant, Tensor
from tony.ref import execute

N, T, K, M = 1, 6, 5, 7
RQ = Requant(shift=6, lo=-128, hi=127)


class _Builder:
    """An integer graph of token-wise Dense layers (made 1x1 Convs by tokens_as_pixels) and the
    ops between them, on int8 [1, T, C] activations."""

    def __init__(self, rng, x: str = "x", c: int = K):
        self.rng, self.tensors, self.constants, self.ops = rng, {}, {}, []
        self.inputs = []
        self.input(x, c)

    def input(self, name: str, c: int) -> str:
        self.tensors[name] = Tensor(name, (N, T, c), INT8, 2.0 ** -4)
        self.inputs.append(name)
        return name

    def dense(self, x: str, m: int, name: str) -> str:
        k = self.tensors[x].shape[-1]
        self.constants[f"{name}.w"] = self.rng.integers(-128, 128, (k, m))
        self.constants[f"{name}.b"] = self.rng.integers(-500, 500, (m,))
        self.tensors[f"{name}.w"] = Tensor(f"{name}.w", (k, m), INT8, 2.0 ** -7)
        self.tensors[f"{name}.b"] = Tensor(f"{name}.b", (m,), INT32, 2.0 ** -11)
        self.tensors[name] = Tensor(name, (N, T, m), INT8, 2.0 ** -4)
        self.ops.append(ir.Dense((x, f"{name}.w", f"{name}.b"), (name,), origin=name, op_type="MatMul", requant=RQ))
        return name

    def op(self, op: ir.Op, like: str) -> str:
        for o in op.outputs:
            self.tensors[o] = Tensor(o, self.tensors[like].shape, INT8, 2.0 ** -4)
        self.ops.append(op)
        return op.outputs[0]

    def table(self, x: str, name: str, per_channel: bool = False) -> str:
        c = self.tensors[x].shape[-1]
        tab = self.rng.integers(-128, 128, (c, 256) if per_channel else (256,))
        self.constants[f"{name}.t"] = tab
        self.tensors[f"{name}.t"] = Tensor(f"{name}.t", tab.shape, INT8, 2.0 ** -4)
        return self.op(ir.Table((x, f"{name}.t"), (name,), origin=name, function="f",
                                channel_axis=2 if per_channel else None), x)

    def add(self, a: str, b: str, name: str) -> str:
        return self.op(ir.Add((a, b), (name,), origin=name, requant=Requant(shift=1, lo=-128, hi=127)), a)

    def graph(self, *outputs: str) -> ir.Graph:
        g = ir.Graph("g", tensors=self.tensors, constants=self.constants, ops=tuple(self.ops),
                     inputs=tuple(self.inputs), outputs=outputs)
        return ir.verify(tokens_as_pixels(ir.verify(g)))


def _run_both(g: ir.Graph, rng, samples: int = 5) -> tuple[ir.Graph, dict, dict]:
    """(keep_pixels(g), every tensor of g, every tensor of the rewritten graph) on random int8 inputs;
    asserts that every tensor both graphs have holds the same integers."""
    h = ir.verify(keep_pixels(g))
    feeds = {n: rng.integers(-128, 128, (samples,) + g.tensors[n].shape[1:]) for n in g.inputs}
    a, b = execute(g, feeds, keep_all=True), execute(h, feeds, keep_all=True)
    shared = [n for n in h.tensors if n in g.tensors and n in a]
    assert set(g.outputs) <= set(shared)
    for n in shared:
        assert np.array_equal(a[n], b[n]), n
    return h, a, b


def _made_by(g: ir.Graph, name: str) -> str:
    return type(g.producer(name)).__name__


def test_a_conv_reads_the_previous_convs_output_without_the_views_between_them(rng):
    b = _Builder(rng)
    y = b.dense(b.dense("x", M, "fc1"), K, "fc2")
    g = b.graph(y)
    h, _, _ = _run_both(g, rng)
    convs = [op for op in h.ops if isinstance(op, ir.Conv)]
    assert _made_by(h, convs[1].inputs[0]) == "Conv"
    # fc1's output out of pixels and back in is gone: the views left are x's way in and y's way out
    assert sum(isinstance(op, (ir.Reshape, ir.Transpose)) for op in g.ops) == 8
    assert sum(isinstance(op, (ir.Reshape, ir.Transpose)) for op in h.ops) == 4


@pytest.mark.parametrize("per_channel", [False, True])
def test_a_table_between_two_dense_layers_runs_in_the_pixel_layout(rng, per_channel):
    b = _Builder(rng)
    y = b.dense(b.table(b.dense("x", M, "fc1"), "gelu", per_channel), K, "fc2")
    g = b.graph(y)
    h, _, _ = _run_both(g, rng)
    (tab,) = [op for op in h.ops if isinstance(op, ir.Table)]
    assert _made_by(h, tab.inputs[0]) == "Conv" and h.tensors[tab.outputs[0]].shape == (N, M, 1, T)
    assert tab.channel_axis == (1 if per_channel else None)
    fc2 = [op for op in h.ops if isinstance(op, ir.Conv)][1]
    assert fc2.inputs[0] == tab.outputs[0]
    assert sum(isinstance(op, (ir.Reshape, ir.Transpose)) for op in h.ops) == 4


def test_a_residual_add_converts_its_host_operand_once_and_keeps_the_3d_sum_for_a_host_reader(rng):
    """x + fc(x) and (x + fc(x)) + fc'(...): x gets one conversion into pixels (the Conv's and the
    Add's), both Adds run on [N, C, 1, T]; the first sum is made 3-D again for the graph output, and
    the Softmax over the second sum's last axis runs on its pixel layout (over the channels, axis 1:
    each of its rows is one pixel), its own output made 3-D for the graph."""
    b = _Builder(rng)
    r1 = b.add("x", b.dense("x", K, "o"), "r1")
    r2 = b.add(r1, b.dense(r1, K, "f"), "r2")
    sm = b.op(ir.Softmax((r2,), ("sm",), origin="sm", x_exp=-4), r2)
    b.tensors["sm"] = Tensor("sm", (N, T, K), ir.UINT8, 2.0 ** -8)
    g = b.graph(sm, r1)
    h, _, _ = _run_both(g, rng)
    adds = [op for op in h.ops if isinstance(op, ir.Add)]
    assert all(len(h.tensors[i].shape) == 4 for op in adds for i in op.inputs + op.outputs)
    assert sum(isinstance(op, ir.Transpose) and op.inputs == ("x",) for op in h.ops) == 1
    assert _made_by(h, adds[1].inputs[0]) == "Add" and _made_by(h, adds[1].inputs[1]) == "Conv"
    # r1 is a graph output: made 3-D again; the Softmax reads r2's pixel layout, the second Add's output
    (sm,) = [op for op in h.ops if isinstance(op, ir.Softmax)]
    assert _made_by(h, "r1") == "Transpose" and "r2" not in h.tensors
    assert sm.inputs == adds[1].outputs and sm.axis == 1 and h.tensors[sm.outputs[0]].shape == (N, K, 1, T)
    assert _made_by(h, "sm") == "Reshape"   # [N, K, 1, T] -> [N, 1, T, K] -> [N, T, K]


def test_elementwise_ops_without_a_pixel_operand_or_with_a_constant_stay_as_they_are(rng):
    b = _Builder(rng)
    b.input("z", K)
    s = b.add("x", "z", "s")                       # neither operand exists in pixels
    b.constants["c"] = rng.integers(-128, 128, (N, T, K))
    b.tensors["c"] = Tensor("c", (N, T, K), INT8, 2.0 ** -4)
    y = b.add(b.dense(s, K, "fc"), "c", "yc")      # a constant operand
    cl = b.op(ir.Clamp((y,), ("cl",), origin="cl", requant=Requant(shift=0, lo=0, hi=127)), y)
    g = b.graph(cl)
    h, _, _ = _run_both(g, rng)
    assert [len(h.tensors[op.outputs[0]].shape) for op in h.ops if isinstance(op, (ir.Add, ir.Clamp))] == [3, 3, 3]


def test_a_clamp_of_a_conv_output_moves_and_a_per_channel_clamp_does_not(rng):
    for per_channel, dims in ((False, 4), (True, 3)):
        b = _Builder(rng)
        y = b.dense("x", K, "fc")
        rq = Requant(shift=(0,) * T if per_channel else 0, lo=0, hi=127)
        g = b.graph(b.op(ir.Clamp((y,), ("cl",), origin="cl", requant=rq), y))
        h, _, _ = _run_both(g, rng)
        (cl,) = [op for op in h.ops if isinstance(op, ir.Clamp)]
        assert len(h.tensors[cl.outputs[0]].shape) == dims


def test_a_graph_without_token_views_is_returned_unchanged():
    t = {"x": Tensor("x", (1, 4, 3, 3), INT8), "y": Tensor("y", (1, 36), INT8)}
    g = ir.verify(ir.Graph("g", tensors=t, ops=(ir.Reshape(("x",), ("y",), shape=(1, 36)),),
                           inputs=("x",), outputs=("y",)))
    assert keep_pixels(g) is g


@pytest.mark.parametrize("heads,d", [(3, 4), (2, 8)])
def test_a_projection_of_merged_heads_reads_the_pixel_matmul_output_as_rows(rng, heads, d):
    """P.V's output [1, d, H, T] merged into [1, T, H d] (Transposes, Reshape) and projected: the
    projection's Conv reads the PixelMatMul's output with an H x 1 kernel, the same integers."""
    b = _Builder(rng, x="a", c=K)
    b.tensors["a"] = Tensor("a", (N, K, heads, T), INT8, 2.0 ** -4)
    b.tensors["v"] = Tensor("v", (N, d, heads, K), INT8, 2.0 ** -4)
    b.inputs.append("v")
    b.tensors["ctx"] = Tensor("ctx", (N, d, heads, T), INT8, 2.0 ** -4)
    b.ops.append(ir.PixelMatMul(("a", "v"), ("ctx",), origin="pv", requant=RQ))
    for name, shape, op in (("h", (N, heads, T, d), ir.Transpose(("ctx",), ("h",), perm=(0, 2, 3, 1))),
                            ("th", (N, T, heads, d), ir.Transpose(("h",), ("th",), perm=(0, 2, 1, 3))),
                            ("merged", (N, T, heads * d), ir.Reshape(("th",), ("merged",), shape=(N, T, heads * d)))):
        b.tensors[name] = Tensor(name, shape, INT8, 2.0 ** -4)
        b.ops.append(op)
    g = b.graph(b.dense("merged", M, "o"))
    h, _, _ = _run_both(g, rng)
    (conv,) = [op for op in h.ops if isinstance(op, ir.Conv)]
    assert conv.inputs[0] == "ctx" and h.tensors[conv.inputs[1]].shape == (M, d, heads, 1)
    assert not any(isinstance(op, (ir.Reshape, ir.Transpose)) and op.inputs == ("ctx",) for op in h.ops)
