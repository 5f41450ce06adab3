"""Unit testbench of tony_accel (controller, DMA, buffers, address generator, array, PPU, vector
unit) on a small network with every instruction kind: convolution with padding, depthwise
convolution with stride, residual Add, max and average pooling, a table lookup (Sigmoid of an
unsigned input: LOAD tab and EWISE with the table flag), a dense layer.

Against the Python model of the accelerator (tony.accel.model): with the memory the
cycle model assumes, every output byte and the cycle count must equal the model's; with random
back-pressure and random read latencies on the memory port, the outputs must still be equal.
"""
from __future__ import annotations

import json
import os

import cocotb
import numpy as np
from cocotb.triggers import FallingEdge, RisingEdge, with_timeout

from tony.sim.benches.common import run_unit_bench, log_seed, reset, start_clock


def small_net(path, seed: int = 0, per_channel: bool = False) -> None:
    """A float ONNX net with Conv, depthwise Conv (stride 2), Add, MaxPool, Sigmoid, GlobalAveragePool,
    Gemm, quantized to pow2 QDQ; written to `path`. With `per_channel`: quantized by onnxruntime
    with per-channel weight scales (int8 symmetric activations), then snapped to powers of two, so
    that every Conv and the Gemm shift each output channel by its own amount."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from tony.quant.qdq import quantize_static

    rng = np.random.default_rng(seed)
    inits = []

    def init(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    nodes = [
        helper.make_node("Conv", ["x", init("w1", rng.normal(0, 0.3, (10, 3, 3, 3))), init("b1", rng.normal(0, .1, 10))],
                         ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        helper.make_node("Relu", ["c1"], ["a"], name="relu1"),
        helper.make_node("Conv", ["a", init("w2", rng.normal(0, 0.3, (10, 1, 3, 3))), init("b2", rng.normal(0, .1, 10))],
                         ["c2"], pads=[1, 1, 1, 1], group=10, name="dw2"),
        helper.make_node("Relu", ["c2"], ["b"], name="relu2"),
        helper.make_node("Add", ["a", "b"], ["s"], name="add3"),
        helper.make_node("Relu", ["s"], ["sr"], name="relu3"),
        helper.make_node("MaxPool", ["sr"], ["m0"], kernel_shape=[2, 2], strides=[2, 2], name="pool4"),
        helper.make_node("Sigmoid", ["m0"], ["m"], name="sig4"),
        helper.make_node("Conv", ["m", init("w5", rng.normal(0, 0.3, (12, 10, 1, 1))), init("b5", rng.normal(0, .1, 12))],
                         ["c5"], strides=[2, 1], name="pw5"),
        helper.make_node("GlobalAveragePool", ["c5"], ["g"], name="gap6"),
        helper.make_node("Flatten", ["g"], ["f"], name="flat7"),
        helper.make_node("Gemm", ["f", init("w8", rng.normal(0, 0.3, (12, 6))), init("b8", rng.normal(0, .1, 6))],
                         ["y"], name="fc8"),
    ]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 9, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6])
    m = helper.make_model(helper.make_graph(nodes, "small", [x], [y], inits), opset_imports=[helper.make_opsetid("", 13)])
    calib = rng.uniform(-1, 1, (16, 3, 9, 7)).astype(np.float32)
    if per_channel:
        onnx.save(_ort_per_channel_pow2(m, calib), path)
        return
    onnx.save(quantize_static(m, calib), path)


def _ort_per_channel_pow2(m, calib):
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static as ort_quantize_static

    from tony.quant.snap import snap_pow2

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{"x": c[None]} for c in calib])

        def get_next(self):
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        onnx.save(m, Path(d) / "float.onnx")
        ort_quantize_static(str(Path(d) / "float.onnx"), str(Path(d) / "q.onnx"), Reader(),
                            quant_format=QuantFormat.QDQ, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8, per_channel=True, extra_options={"ActivationSymmetric": True})
        q, _ = snap_pow2(onnx.load(Path(d) / "q.onnx"))
    return q


def _program(cfg_env: dict):
    from tony.api import load_ir
    from tony.accel.compiler import compile_program
    from tony.accel.program import AccelConfig

    g = load_ir(cfg_env["model"], requant="pow2")
    cfg = AccelConfig(cfg_env["rows"], cfg_env["cols"], mem_bits=cfg_env["mem_bits"], mem_latency=cfg_env["latency"])
    return g, compile_program(g, cfg, batch=cfg_env["batch"])


async def _run(dut, prog, beats, mem, limit: int):
    for name, b in beats.items():
        e = prog.inputs[name]["ext"]
        mem.mem[e:e + len(b)] = b
    await FallingEdge(dut.clk_i)
    dut.start_i.value = 1
    await FallingEdge(dut.clk_i)
    dut.start_i.value = 0
    if not int(dut.done_o.value):
        try:
            await with_timeout(RisingEdge(dut.done_o), 10 * limit, "ns")
        except Exception:
            dut._log.error("stuck: pc %d, cycle %d, dma busy %s, agu busy %s", int(dut.pc_o.value),
                           int(dut.cycles_o.value), dut.u_dma.busy_o.value, dut.u_conv.stream_busy_o.value)
            raise
    return int(dut.cycles_o.value)


async def _start(dut):
    """Clock, reset, program registers and the memory model (with random back-pressure and read
    latencies when the configuration asks for stress); returns what the tests need."""
    from tony.accel import model as accel_model

    from tony.sim.benches.memory import Memory

    rng = log_seed(dut)
    env = json.loads(os.environ["TONY_ACCEL_TEST"])
    g, prog = _program(env)
    start_clock(dut.clk_i)
    dut.start_i.value = 0
    dut.prog_addr_i.value = prog.prog_addr
    dut.prog_len_i.value = prog.boot_words   # the first page
    await reset(dut.clk_i, dut.rst_ni)
    stress = env["stress"]
    pause = (iter(lambda: rng.random() < 0.4, None)) if stress else None
    lats = (iter(lambda: rng.randint(1, 9), None)) if stress else None
    mem = Memory(dut, prog.image, latency=env["latency"], pause=pause, latencies=lats)
    qin = next(op.outputs[0] for op in g.ops if op.host and op.kind == "quantize")
    return rng, env, g, prog, mem, qin, accel_model.cycles(prog).total


@cocotb.test()
async def test_accel_matches_model(dut):
    from tony.accel import model as accel_model
    from tony.accel.layout import input_beats, read_outputs
    from tony.ref import execute


    rng, env, g, prog, mem, qin, want_cycles = await _start(dut)
    for run in range(3):
        x = np.asarray([[rng.uniform(-1, 1) for _ in range(3 * 9 * 7)] for _ in range(prog.batch)], np.float32)
        feeds = {g.inputs[0]: x.reshape(prog.batch, 3, 9, 7)}
        ref = execute(g, feeds, keep_all=True)
        beats = input_beats(prog, {qin: ref[qin]})
        dut._log.info("run %d starts", run)
        cycles = await _run(dut, prog, beats, mem, 20 * want_cycles + 10000)
        model_mem = accel_model.run(prog, beats)
        got, model = read_outputs(prog, mem.mem), read_outputs(prog, model_mem)
        for name in got:
            assert np.array_equal(got[name], model[name]), (run, name, got[name], model[name])
            assert np.array_equal(got[name], ref[name]), (run, name)
        if not env["stress"]:
            assert cycles == want_cycles, (cycles, want_cycles)
        dut._log.info("run %d: %d cycles (model %d), outputs equal", run, cycles, want_cycles)


def _illegal_words(cfg, rng) -> list[tuple[str, int]]:
    """Instructions docs/isa.md calls illegal, one of each kind (a random unknown opcode)."""
    from tony.accel import isa

    return [
        ("unknown opcode", rng.randint(isa.EWISE + 1, 15)),
        ("LOAD past the end of the instruction memory (a page too long)",
         isa.encode(isa.LOAD, buf=isa.B_IMEM, baddr=cfg.imem_words - 1, eaddr=0, nwords=2)),
        ("buffer id out of range", isa.encode(isa.LOAD, buf=rng.randint(isa.B_TAB + 1, 7), baddr=0, eaddr=0, nwords=1)),
        ("STORE from the weight buffer", isa.encode(isa.STORE, buf=isa.B_WGT, baddr=0, eaddr=0, nwords=1)),
        ("LOAD of no words", isa.encode(isa.LOAD, buf=isa.B_BIAS, baddr=0, eaddr=0, nwords=0)),
        ("LOAD past the end of the buffer", isa.encode(isa.LOAD, buf=isa.B_ACT, baddr=cfg.abuf_words - 1, eaddr=0,
                                                       nwords=2)),
    ]


@cocotb.test()
async def test_illegal_instruction_stops_then_next_run_is_exact(dut):
    """An illegal instruction in the middle of the program: the controller stops on it (done_o,
    illegal_o, pc_o = its index) and makes no further memory request; with the program restored,
    the next start runs exactly, without a reset."""
    from tony.accel import isa, model as accel_model
    from tony.accel.layout import input_beats, read_outputs
    from tony.ref import execute


    rng, env, g, prog, mem, qin, want_cycles = await _start(dut)
    per = isa.INSTR_BITS // prog.cfg.mem_bits
    n = len(prog.words)
    x = np.asarray([[rng.uniform(-1, 1) for _ in range(3 * 9 * 7)] for _ in range(prog.batch)], np.float32)
    ref = execute(g, {g.inputs[0]: x.reshape(prog.batch, 3, 9, 7)}, keep_all=True)
    beats = input_beats(prog, {qin: ref[qin]})
    for what, word in _illegal_words(prog.cfg, rng):
        k = rng.randint(n // 4, n - 2)  # after the first loads, before END
        at = prog.prog_addr + k * per
        mem.mem[at:at + per] = isa.to_words([word], prog.cfg.mem_bits)
        await _run(dut, prog, beats, mem, 20 * want_cycles + 10000)
        assert int(dut.illegal_o.value) == 1 and int(dut.done_o.value) == 1, what
        # pc_o is the index in the instruction memory: in the page that holds instruction k
        page0 = max([0] + [i + 1 for i, t in enumerate(prog.text) if t.startswith("LOAD imem") and i < k])
        assert int(dut.pc_o.value) == k - page0, (what, int(dut.pc_o.value), k, page0)
        reads, writes = mem.reads, mem.writes
        for _ in range(64):
            await RisingEdge(dut.clk_i)
            assert int(dut.mem_req_valid_o.value) == 0, f"{what}: memory request after the stop"
        assert (mem.reads, mem.writes) == (reads, writes)
        dut._log.info("%s at PC %d: stopped after %d cycles", what, k, int(dut.cycles_o.value))
        mem.mem[at:at + per] = [int(v) for v in prog.image[at:at + per]]
        cycles = await _run(dut, prog, beats, mem, 20 * want_cycles + 10000)
        assert int(dut.illegal_o.value) == 0
        got, model = read_outputs(prog, mem.mem), read_outputs(prog, accel_model.run(prog, beats))
        for name in got:
            assert np.array_equal(got[name], model[name]), (what, name)
            assert np.array_equal(got[name], ref[name]), (what, name)
        if not env["stress"]:
            assert cycles == want_cycles, (what, cycles, want_cycles)


try:
    import pytest
except ImportError:
    pytest = None

if pytest is not None:

    @pytest.mark.sim
    @pytest.mark.parametrize("rows,cols,mem_bits,batch,latency,stress,per_channel", [
        (4, 4, 64, 1, 2, False, False),
        (3, 5, 32, 2, 1, False, False),
        (2, 6, 64, 1, 3, True, False),
        (2, 6, 64, 1, 3, True, True),    # per-channel shifts in the bias words (PER_CHANNEL 1)
    ], ids=lambda v: str(v))
    def test_accel(rows, cols, mem_bits, batch, latency, stress, per_channel, tmp_path):
        from tony.api import load_ir
        from tony.accel.compiler import compile_program
        from tony.accel.program import AccelConfig

        model = tmp_path / "small.onnx"
        small_net(model, per_channel=per_channel)
        cfg = {"model": str(model), "rows": rows, "cols": cols, "mem_bits": mem_bits, "batch": batch,
               "latency": latency, "stress": stress}
        g = load_ir(model, requant="pow2")
        prog = compile_program(g, AccelConfig(rows, cols, mem_bits=mem_bits, mem_latency=latency), batch=batch)
        run_unit_bench(__name__, "tony_accel", tmp_path, render_params=prog.cfg.hdl_params(),
                       extra_env={"TONY_ACCEL_TEST": json.dumps(cfg)})
