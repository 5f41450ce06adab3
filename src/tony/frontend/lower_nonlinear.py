"""Lowering of the transformer parts (docs/transformer.md): LayerNorm and GELU groups
(tony.frontend.patterns) into the integer LayerNorm op and a GELU table, Softmax over the last
axis into the integer Softmax, a MatMul's bias Add folded into it, and a Div of the attention
scores by a constant folded into the rescale of the MatMul before it. Mixed into
tony.frontend.lower's _Lowering.
"""
from __future__ import annotations

import math

import numpy as np
import onnx

from .. import ir
from ..errors import UnsupportedError, node_where
from ..ref import nonlinear as nl
from .lower_ops import quantize_exact, table_inputs
from .patterns import Group, match


def _erf(x):
    """erf in float64, rounded to float32 (onnxruntime's float32 Erf is within an ulp of it)."""
    return np.vectorize(math.erf, otypes=[np.float64])(np.asarray(x, np.float64)).astype(np.float32)


# float32 forms of the elementwise nodes a LayerNorm or GELU chain holds (chain_float)
_CHAIN_FUNCTIONS = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Erf": _erf,
                    "Tanh": np.tanh, "Sqrt": np.sqrt, "Pow": np.power}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class NonlinearLowering:
    """Handlers for the transformer parts; `self` is tony.frontend.lower._Lowering."""

    def find_groups(self):
        """The LayerNorm and GELU groups of the model: group by the id of its first node."""
        self.group_at = {id(grp.first): grp for grp in match(self.model, self.shapes)}
        self.score_fold: dict[str, tuple[int, float]] = {}   # scores tensor -> (pow2 exponent, divisor)

    def lower_group(self, grp: Group):
        last = next(n for n in grp.nodes if grp.y in n.output)
        x = self.act(grp.x, grp.first)
        for n in grp.nodes:
            self.done.add(id(n))
        if grp.kind == "gelu":
            self.gelu(grp, last, x)
        else:
            self.layernorm(grp, last, x)

    def gelu(self, grp: Group, last, x: ir.Tensor):
        """GELU as a table over the input's integers: table[q] = quantize(gelu(dequantize(q))),
        exact by construction (docs/transformer.md, 'GELU'). A chain with interior Q/DQ pairs
        (onnxruntime's quantize_static) is tabulated as written, its interior quantizations
        included (`chain_float`), so that the table is the function the model computes."""
        if x.dtype.bits > 16:
            raise UnsupportedError(f"input is {x.dtype}; a table needs at most 16 bits", where=node_where(last))
        appr = grp.params["approximate"]
        if appr not in ("none", "tanh"):
            raise UnsupportedError(f"Gelu approximate={appr!r}; 'none' or 'tanh' are defined", where=node_where(last))
        t, s, z, dt, _ = self.quantized_out(last)
        _, xf = table_inputs(x.dtype, x.scale, x.zero_point)
        f = self.chain_float(grp, xf) if grp.interior else nl.gelu_float(xf, appr)
        tab = quantize_exact(f, s, z, dt)
        cname = self.add_const(f"{t.name}.table", tab, dt, s, z)
        fn = "Gelu" if appr == "none" else "Gelu(tanh)"
        self.ops.append(ir.Table((x.name, cname), (t.name,), origin=last.name, function=fn, op_type="Gelu"))

    def chain_float(self, grp: Group, xf: np.ndarray) -> np.ndarray:
        """The group's nodes evaluated in float32 as onnxruntime runs them unoptimized, on the
        float inputs `xf`: each elementwise node on its float32 operands, each interior
        QuantizeLinear -> DequantizeLinear pair as quantize then dequantize (round half to even,
        saturation). Constants are the model's (dequantized where quantized)."""
        from ..ref import arith

        env = {grp.x: np.asarray(xf, np.float32)}

        def value(name, node):
            if name in env:
                return env[name]
            if name in self.const_q:
                arr, scale, zp, _, _ = self.const_q[name]
                return arith.dequantize(arr, float(np.ravel(scale)[0]), int(np.ravel(zp)[0]))
            if name in self.inits:
                return np.asarray(self.inits[name], np.float32)
            raise UnsupportedError(f"input '{name}' of the {grp.kind} chain is neither the chain's input nor a "
                                   "constant", where=node_where(node))

        for node in grp.nodes:
            if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
                scale, zp, dt, _ = self.qparams(node)
                sc, z = float(np.ravel(scale)[0]), int(np.ravel(zp)[0])
                v = value(node.input[0], node)
                out = arith.quantize(v, sc, z, dt) if node.op_type == "QuantizeLinear" else arith.dequantize(v, sc, z)
            elif node.op_type in _CHAIN_FUNCTIONS:
                out = _CHAIN_FUNCTIONS[node.op_type](*(value(i, node) for i in node.input))
            else:
                raise UnsupportedError(f"{node.op_type} inside a {grp.kind} chain has no float form here",
                                       where=node_where(node))
            env[node.output[0]] = np.asarray(out, np.float32) if node.op_type != "QuantizeLinear" else out
        return env[grp.y]

    def layernorm(self, grp: Group, last, x: ir.Tensor):
        """The integer LayerNorm (docs/transformer.md, 'LayerNorm') for any input and output scale
        and zero point: the kernel normalizes the input integers themselves (the mean and variance
        of q - zx are those of q, so the input zero point drops out, and the input scale sx only
        enters through eps / sx^2), and it writes y / sy + zy, so gamma and beta are taken as
        gamma / sy and beta / sy and the output zero point is added to beta on the final shift's
        grid. With power-of-two scales and zero points 0 this is `layernorm_spec` with x_exp and
        y_exp, integer for integer."""
        where = node_where(last)
        t, s, z, dt, _ = self.quantized_out(last)
        if x.dtype.bits > 16 or dt.bits > 16:
            raise UnsupportedError(f"the integer LayerNorm needs input and output of at most 16 bits (here {x.dtype} "
                                   f"and {dt})", where=where)
        n = x.shape[-1]
        p = grp.params
        gamma = np.ones(n) if p["gamma"] is None else p["gamma"]
        beta = np.zeros(n) if p["beta"] is None else p["beta"]
        spec = nl.layernorm_spec(n, 0, 0, gamma / s, beta / s, eps=p["eps"] / x.scale**2,
                                 in_bits=x.dtype.bits, out_bits=dt.bits)
        if spec.shift <= 0:
            raise UnsupportedError(f"the output scale {s:g} is too coarse for gamma (final shift {spec.shift})",
                                   where=where)
        beta_int = np.asarray(spec.beta, np.int64) + (z << spec.shift)
        gname = self.add_const(f"{t.name}.gamma", np.asarray(spec.gamma), ir.INT16)
        bname = self.add_const(f"{t.name}.beta", beta_int, ir.DType(64, True))
        self.ops.append(ir.LayerNorm((x.name, gname, bname), (t.name,), origin=last.name,
                                     op_type="LayerNormalization", eps_int=spec.eps_int, sqrt_bits=spec.sqrt_bits,
                                     norm_bits=spec.norm_bits, shift=spec.shift, lo=dt.min, hi=dt.max))

    def integer_softmax(self, node, x: ir.Tensor, axis: int) -> bool:
        """Softmax over the last axis as the integer kernel when the scales allow it (input at 2^e
        with e <= 9, output unsigned at 2^-k); False leaves it to the float island."""
        q, _, fname = self.output_of(node, fuse_activation=False)
        if q is None or axis != len(x.shape) - 1:
            return False
        scale, zp, dt, _ = self.qparams(q)
        if scale.size != 1 or zp.size != 1 or int(np.ravel(zp)[0]) or dt.signed:
            return False
        k = ir.pow2_exponent(float(np.ravel(scale)[0]))
        x_exp, log2e = x.exp, nl.LOG2E
        if x.name in self.score_fold:
            x_exp, c = self.score_fold[x.name]
            log2e = round(nl.LOG2E / c)
        if k is None or x_exp is None or x.zero_point or not 1 <= -k <= 16 or x_exp > nl.LOG2E_BITS - 6:
            return False
        t, _, _, _ = self.out_tensor(q, fname, node)
        self.ops.append(ir.Softmax((x.name,), (t.name,), origin=node.name, x_exp=x_exp, out_bits=-k, log2e=log2e))
        return True

    def score_fold_exp(self, t: ir.Tensor, a: ir.Tensor, b: ir.Tensor, c: float) -> int | None:
        """Attention scores divided by c (> 1, not a power of two) whose only reader is a Softmax
        over the last axis, outside multiplier mode: the exponent e of the pow2 grid 2^e = s 2^ceil(log2 c)
        (s the scores' quantized scale) on which the MatMul writes the undivided scores; the Softmax
        multiplies by round(LOG2E / c) in place of LOG2E. None when this does not apply."""
        if self.mode == "multiplier" or not c > 1 or ir.pow2_exponent(c) is not None \
                or None in (t.exp, a.exp, b.exp) or t.zero_point or a.zero_point or b.zero_point:
            return None
        dqs = self.consumers.get(t.name, [])
        if not dqs or any(dq.op_type != "DequantizeLinear" for dq in dqs) or t.name in self.graph_outputs:
            return None
        readers = [n for dq in dqs for n in self.consumers.get(dq.output[0], [])]
        if not readers or any(dq.output[0] in self.graph_outputs for dq in dqs):
            return None
        for r in readers:
            if r.op_type != "Softmax":
                return None
            rank = len(t.shape)
            if _attrs(r).get("axis", -1) % rank != rank - 1:
                return None
        return t.exp + math.ceil(math.log2(c))

    # MatMul + Add(bias), MatMul(two activations) + Div(constant) -----------------------------------
    def bias_add(self, node):
        """The Add after a MatMul with a constant weight whose other input is a quantized constant
        of one value per output column (its bias), or None."""
        cons = self.consumers.get(node.output[0], [])
        if len(cons) != 1 or node.output[0] in self.graph_outputs or cons[0].op_type != "Add":
            return None
        add = cons[0]
        other = [i for i in add.input if i != node.output[0]]
        if len(other) != 1 or other[0] not in self.const_q:
            return None
        arr, _, _, _, dt = self.const_q[other[0]]
        m = self.shapes.get(node.output[0], (None,))[-1]
        if arr.ndim != 1 or arr.shape[0] != m or dt.bits < 16:
            return None
        return add, other[0]

    def scaled_scores(self, node):
        """A Div by a positive scalar constant right after a MatMul (folded into its rescale), or None."""
        cons = self.consumers.get(node.output[0], [])
        if len(cons) != 1 or node.output[0] in self.graph_outputs or cons[0].op_type != "Div":
            return None
        div = cons[0]
        if div.input[0] != node.output[0] or div.input[1] not in self.inits:
            return None
        c = np.asarray(self.inits[div.input[1]], np.float64)
        if c.size != 1 or not float(c.reshape(-1)[0]) > 0:
            return None
        return div, float(c.reshape(-1)[0])
