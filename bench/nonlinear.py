"""Error of the integer nonlinear kernels (tony.ref.nonlinear) against float64, in output LSBs:
the tables of docs/transformer.md.

    python bench/nonlinear.py [--rows 20000] [--seed 0]

Softmax: rows of 32 int8 values (uniform over int8, and Gaussian with std 24), or 128 int32
scores (Gaussian, std 2^12 at scale 2^-10: Q.K^T accumulators); float = softmax of the
dequantized row times 256, saturated at 255. LayerNorm: int8 rows (uniform, Gaussian std 20) at
2^-4, output int8 at 2^-5, float = LayerNorm of the dequantized row with the float gamma/beta.
GELU: every int8 input; float = ONNX Gelu of the dequantized value over the output scale.
"""
from __future__ import annotations

import argparse

import numpy as np

from tony.ref import nonlinear as nl


def float_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def stats(err) -> str:
    err = np.abs(err)
    return f"{err.max():.3f} | {err.mean():.4f}"


def softmax_rows(rng, kind: str, rows: int):
    if kind == "int8 uniform":
        return rng.integers(-128, 128, (rows, 32)), 8
    if kind == "int8 gaussian":
        return np.clip(np.rint(rng.normal(0, 24, (rows, 32))), -128, 127).astype(np.int64), 8
    return np.rint(rng.normal(0, 2**12, (rows, 128))).astype(np.int64), 32


def softmax_table(rng, rows: int) -> list[str]:
    out = ["| input | x_exp | F (table entries) | max err (LSB) | mean err (LSB) | max abs(sum - 256) |",
           "|---|---|---|---|---|---|"]
    cases = [("int8 uniform", e) for e in (-3, -4, -5)] + [("int8 gaussian", -4), ("int32 scores", -10)]
    for kind, x_exp in cases:
        q, _ = softmax_rows(rng, kind, rows)
        ref = np.minimum(float_softmax(q * 2.0**x_exp) * 256, 255)
        out.append(f"| {kind} | {x_exp} | float, rounded | {stats(np.rint(ref) - ref)} | "
                   f"{np.abs(np.rint(ref).sum(-1) - 256).max():.0f} |")
        for f in (4, 5, 6, 8):
            y = nl.softmax(q, nl.SoftmaxSpec(x_exp=x_exp, frac_bits=f))
            out.append(f"| {kind} | {x_exp} | {f} ({2**f}) | {stats(y - ref)} | {np.abs(y.sum(-1) - 256).max()} |")
    return out


def float_layernorm(x, gamma, beta, eps=1e-5):
    return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + eps) * gamma + beta


def layernorm_table(rng, rows: int) -> list[str]:
    out = ["| n | input | gamma, beta | gamma bits | A (sqrt fraction bits) | max err (LSB) | mean err (LSB) |",
           "|---|---|---|---|---|---|---|"]
    x_exp, y_exp = -4, -5
    for n in (64, 768):
        r = max(rows * 64 // n, 200)
        for kind in ("uniform", "gaussian"):
            q = (rng.integers(-128, 128, (r, n)) if kind == "uniform"
                 else np.clip(np.rint(rng.normal(0, 20, (r, n))), -128, 127).astype(np.int64))
            for affine in ("1, 0", "random"):
                gamma = np.ones(n) if affine == "1, 0" else rng.uniform(0.25, 2.0, n)
                beta = np.zeros(n) if affine == "1, 0" else rng.uniform(-1, 1, n)
                ref = np.clip(float_layernorm(q * 2.0**x_exp, gamma, beta) / 2**y_exp, -128, 127)
                out.append(f"| {n} | int8 {kind} | {affine} | float, rounded | - | {stats(np.rint(ref) - ref)} |")
                for gb in (8, 16):
                    spec = nl.layernorm_spec(n, x_exp, y_exp, gamma, beta, gamma_bits=gb)
                    y = nl.layernorm(q, spec)
                    out.append(f"| {n} | int8 {kind} | {affine} | {gb} | {spec.sqrt_bits} | {stats(y - ref)} |")
    return out


def gelu_table() -> list[str]:
    out = ["| approximate | x_exp | y_exp | max err (LSB) | mean err (LSB) |", "|---|---|---|---|---|"]
    q = np.arange(-128, 128)
    for approx in ("none", "tanh"):
        for x_exp in (-3, -4, -5):
            y_exp = nl.pow2_exp(float(nl.gelu_float(127 * 2.0**x_exp, approx)), 8)
            y = nl.lookup(q, nl.gelu_table(x_exp, y_exp, approx))
            ref = np.clip(nl.gelu_float(q * 2.0**x_exp, approx) / 2.0**y_exp, -128, 127)
            out.append(f"| {approx} | {x_exp} | {y_exp} | {stats(y - ref)} |")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=20000)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    rng = np.random.default_rng(a.seed)
    for title, lines in (("Softmax (output uint8 at 2^-8)", softmax_table(rng, a.rows)),
                         ("LayerNorm (int8 at 2^-4 -> int8 at 2^-5, eps 1e-5)", layernorm_table(rng, a.rows)),
                         ("GELU table (int8 -> int8)", gelu_table())):
        print(f"\n{title}\n")
        print("\n".join(lines))


if __name__ == "__main__":
    main()
