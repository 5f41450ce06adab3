"""Whole-model bench: run a compiled build on tony_core, layer by layer, and compare every layer
output with the golden vectors.

The bench is the host of this slice: it reads the manifest written by `tony compile`, lays out
each layer's operands (im2col for convolutions), streams tiles through the systolic array,
drains them through the post-processing unit, and feeds each layer the hardware's own output of
the previous one. Configured by environment variables set by `tony sim`:
TONY_BUILD (the build folder), TONY_GOLDEN (golden vectors), TONY_RESULT (JSON written here),
TONY_PROGRESS (a file the driver polls for its progress bar).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge

from tony.ref.kernels import im2col
from tony.testbench.common import pack, reset, start_clock, unpack


class CoreDriver:
    """Drives tony_core: tiles through the array, rows through the post-processing unit."""

    def __init__(self, dut, array: dict):
        self.dut = dut
        self.rows, self.cols = array["rows"], array["cols"]
        self.a_bits, self.w_bits, self.acc_bits = array["a_bits"], array["w_bits"], array["acc_bits"]
        self.cycles = 0

    async def start(self):
        d = self.dut
        start_clock(d.clk_i)
        for sig in (d.clear_i, d.in_valid_i, d.a_signed_i, d.a_i, d.b_i, d.pp_valid_i, d.pp_row_i, d.bias_i,
                    d.mult_i, d.shift_i, d.lo_i, d.hi_i):
            sig.value = 0
        await reset(d.clk_i, d.rst_ni)

    async def cycle(self):
        """One clock: the DUT samples at the rising edge; outputs are read after the falling edge."""
        await RisingEdge(self.dut.clk_i)
        await FallingEdge(self.dut.clk_i)
        self.cycles += 1

    async def matmul(self, a: np.ndarray, w: np.ndarray, bias: np.ndarray, rq: dict, a_signed: bool,
                     out_signed: bool, progress) -> np.ndarray:
        """y = requant(a @ w + bias) on the hardware; a [P, K], w [K, M]."""
        d = self.dut
        P, K = a.shape
        M = w.shape[1]
        R, C = self.rows, self.cols
        y = np.zeros((P, M), dtype=np.int64)
        d.a_signed_i.value = int(a_signed)
        d.mult_i.value = rq["mult"]
        d.shift_i.value = rq["shift"]
        d.lo_i.value = rq["lo"]
        d.hi_i.value = rq["hi"]
        b_words = {c0: [pack(w[k, c0:c0 + C], self.w_bits) for k in range(K)] for c0 in range(0, M, C)}
        bias_words = {c0: pack(bias[c0:c0 + C], self.acc_bits) for c0 in range(0, M, C)}
        for p0 in range(0, P, R):
            rows = a[p0:p0 + R]
            a_words = [pack(rows[:, k], self.a_bits) for k in range(K)]
            for c0 in range(0, M, C):
                ncols = min(C, M - c0)
                for k in range(K):
                    d.clear_i.value = int(k == 0)
                    d.in_valid_i.value = 1
                    d.a_i.value = a_words[k]
                    d.b_i.value = b_words[c0][k]
                    await self.cycle()
                d.clear_i.value = 0
                d.in_valid_i.value = 0
                while int(d.busy_o.value):
                    await self.cycle()
                d.bias_i.value = bias_words[c0]
                pending = len(rows)
                issued = 0
                while pending:
                    if issued < len(rows):
                        d.pp_valid_i.value = 1
                        d.pp_row_i.value = issued
                        issued += 1
                    else:
                        d.pp_valid_i.value = 0
                    await self.cycle()
                    if int(d.pp_valid_o.value):
                        r = len(rows) - pending
                        vals = unpack(int(d.y_o.value), C, 8, out_signed)
                        y[p0 + r, c0:c0 + ncols] = vals[:ncols]
                        pending -= 1
                d.pp_valid_i.value = 0
                progress()
        return y


def _tiles(m: dict, n: int) -> int:
    a = m["array"]
    total = 0
    for l in m["layers"]:
        if l["op"] in ("dense", "conv"):
            oh_ow = int(np.prod(l["out_shape"][2:])) if l["op"] == "conv" else 1
            p = n * oh_ow
            total += l.get("group", 1) * -(-p // a["rows"]) * -(-(l["M"] // l.get("group", 1)) // a["cols"])
    return total


@cocotb.test()
async def run_model(dut):
    build = Path(os.environ["TONY_BUILD"])
    golden = Path(os.environ["TONY_GOLDEN"])
    result_path = Path(os.environ["TONY_RESULT"])
    progress_path = os.environ.get("TONY_PROGRESS")
    m = json.loads((build / "manifest.json").read_text())
    drv = CoreDriver(dut, m["array"])
    await drv.start()

    x = np.load(golden / f"{m['device_input']}.npy")
    n = x.shape[0]
    total, done = _tiles(m, n), 0

    def progress(what=""):
        nonlocal done
        done += 1
        if progress_path and (done % 8 == 0 or done == total):
            Path(progress_path).write_text(f"{done} {total} {what}\n")

    values = {m["device_input"]: x}
    report = {"samples": n, "layers": [], "mismatches": 0, "compared": 0, "first_mismatches": []}
    t0 = time.perf_counter()
    for l in m["layers"]:
        c_start = drv.cycles
        inp = values[l["input"]]
        signed = not l["in_dtype"].startswith("u")
        out_signed = not l["out_dtype"].startswith("u")
        if l["op"] == "reshape":
            y = inp.reshape((n,) + tuple(l["out_shape"][1:]))
        else:
            w = np.load(build / (l["weight"] + ".npy"))
            b = np.load(build / (l["bias"] + ".npy"))
            if l["op"] == "dense":
                y = await drv.matmul(inp.reshape(n, l["K"]), w, b, l["requant"], signed, out_signed,
                                     lambda: progress(l["name"]))
            else:
                g = l["group"]
                mats, (oh, ow) = im2col(inp, tuple(l["kernel"]), tuple(l["strides"]), tuple(l["pads"]),
                                        tuple(l["dilations"]), g)
                mg = l["M"] // g
                y = np.zeros((n, l["M"], oh, ow), dtype=np.int64)
                for gi, a in enumerate(mats):
                    yg = await drv.matmul(a, w[:, gi * mg:(gi + 1) * mg], b[gi * mg:(gi + 1) * mg], l["requant"],
                                          signed, out_signed, lambda: progress(l["name"]))
                    y[:, gi * mg:(gi + 1) * mg] = yg.reshape(n, oh, ow, mg).transpose(0, 3, 1, 2)
        want = np.load(golden / f"{l['output']}.npy").reshape(y.shape)
        bad = np.argwhere(y != want)
        for idx in bad[: max(0, 10 - len(report["first_mismatches"]))]:
            report["first_mismatches"].append({"layer": l["name"], "tensor": l["output"],
                                               "index": [int(i) for i in idx],
                                               "expected": int(want[tuple(idx)]), "got": int(y[tuple(idx)])})
        report["layers"].append({"name": l["name"], "cycles": drv.cycles - c_start, "mismatches": int(len(bad)),
                                 "compared": int(y.size)})
        report["mismatches"] += int(len(bad))
        report["compared"] += int(y.size)
        np.save(result_path.parent / f"hw_{l['output']}.npy", y)
        values[l["output"]] = y
    report["cycles"] = drv.cycles
    report["sim_seconds"] = time.perf_counter() - t0
    result_path.write_text(json.dumps(report, indent=2) + "\n")
    if report["mismatches"]:
        dut._log.error("%d mismatching elements; first: %s", report["mismatches"], report["first_mismatches"][:3])
