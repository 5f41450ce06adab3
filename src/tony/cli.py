"""The `tony` command line. Errors a user can cause print one line; --debug shows the traceback."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from .build import write_onnx
from .errors import InputError, TonyError, not_a_file, show
from .names import safe_id


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _load_npy(path: str, flag: str = "--inputs") -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise not_a_file(p, f"{flag} {path}")
    try:
        arr = np.load(p, allow_pickle=False)
    except Exception as e:
        raise InputError(f"not a .npy array file ({type(e).__name__})", where=f"{flag} {path}") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "biuf":
        kind = type(arr).__name__ if not isinstance(arr, np.ndarray) else str(arr.dtype)
        raise InputError(f"holds {kind}, not real numbers", where=f"{flag} {path}")
    return arr


def _need(*modules: str, what: str) -> None:
    """Refuse in one line when an optional dependency of `what` is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"needs {', '.join(missing)}", where=what, hint="pip install 'tony[sweep]'")


def cmd_ir(a) -> int:
    from .api import load_ir
    from .ir import format_graph

    print(format_graph(load_ir(a.model, requant=a.requant, rounding=a.rounding)))
    return 0


def cmd_run(a) -> int:
    from .api import load_ir, normalize_inputs, restack
    from .ref import execute

    g = load_ir(a.model, requant=a.requant, rounding=a.rounding)
    feeds, stacked = normalize_inputs(g, _load_npy(a.inputs))
    outs = restack(g, execute(g, feeds), stacked)
    if a.output:
        from .build import write_npy

        write_npy(a.output, outs[0])
        print(f"wrote {show(a.output)} {tuple(outs[0].shape)} {outs[0].dtype}")
        used: set[str] = set()   # one file per output, even where two names sanitize alike
        for extra, name in zip(outs[1:], g.outputs[1:]):
            path = str(Path(a.output).with_suffix("")) + f".{safe_id(name, used)}.npy"
            write_npy(path, extra)
            print(f"wrote {show(path)} {tuple(extra.shape)} {extra.dtype} (output {show(name)})")
    else:
        for name, y in zip(g.outputs, outs):
            print(f"{show(name)}: shape {tuple(y.shape)}")
            print(np.array2string(y, threshold=200))
    return 0


def _unit_size(n: int | None, key: str, flag: str, op: str) -> int:
    """--softmax-unit / --layernorm-unit N as AccelConfig.smx_n / ln_n: -1 (sized to the model) when
    not given; N within the range an overlay's field has (tony.hw.LIMITS[key])."""
    from .hw import LIMITS

    if n is None:
        return -1
    lo, hi, what = LIMITS[key]
    if not lo <= n <= hi:
        raise InputError(f"{flag} {n}: {what} must be an integer from {lo} to {hi}",
                         hint=f"give 0 to run every {op} on the host")
    return n


def _softmax_unit(n: int | None) -> int:
    return _unit_size(n, "smx_n", "--softmax-unit", "Softmax")


def _layernorm_unit(n: int | None) -> int:
    return _unit_size(n, "ln_n", "--layernorm-unit", "LayerNorm")


HW_FIXED = ("array", "acc_bits", "mem_bits", "abuf_words", "wbuf_words", "bbuf_words", "imem_words", "per_channel",
            "softmax_unit", "layernorm_unit")
"""`tony compile` options that an overlay (--hw) fixes."""
BACKEND_ONLY = {"rtl": ("hw", "batch", "mem_bits", "abuf_words", "wbuf_words", "bbuf_words", "imem_words",
                        "per_channel", "softmax_unit", "layernorm_unit"),
                "hls": ("weights",)}
"""`tony compile` options of one back end (their help says rtl: or hls:); given with the other, refused
rather than ignored."""


def cmd_compile(a) -> int:
    from .compiler import compile_model, parse_array

    for backend, names in BACKEND_ONLY.items():
        given = [k for k in names if getattr(a, k) is not None]
        if given and a.backend != backend:
            flag = "--" + given[0].replace("_", "-")
            raise InputError(f"applies to --backend {backend} only", where=f"{flag} with --backend {a.backend}",
                             hint=f"drop {flag}, or compile with --backend {backend}")
    if a.inputs and a.samples is not None:
        raise InputError("the golden samples are those of --inputs", where="--samples with --inputs",
                         hint="drop --samples (or --inputs for seeded random samples)")
    a.batch, a.weights = 1 if a.batch is None else a.batch, a.weights or "const"
    a.samples = 20 if a.samples is None else a.samples
    inputs = _load_npy(a.inputs) if a.inputs else None
    opts = dict(inputs=inputs, samples=a.samples, seed=a.seed, requant=a.requant, rounding=a.rounding,
                device_only=a.device_only)
    if a.hw:
        given = [k for k in HW_FIXED if getattr(a, k) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InputError("the overlay fixes the accelerator's configuration", where=f"{flag} with --hw",
                             hint=f"drop {flag}, or render another overlay with `tony hw`")
        m = compile_model(a.model, a.output, backend=a.backend, batch=a.batch, hw=a.hw, **opts)
        _print_placement(m)
        acc = m["accel"]
        if "segments" in m:
            print(f"compiled {show(m['model'])} for overlay {show(a.hw)}: "
                  f"{sum(s['kind'] == 'device' for s in m['segments'])} device segment(s) in seg<k>/ -> {show(a.output)}")
            return 0
        print(f"compiled {show(m['model'])} for overlay {show(m['hw']['name'])}: {m['program']['length']} of "
              f"{acc['imem_words']} instruction words on a {acc['rows']}x{acc['cols']} accelerator, batch "
              f"{m['batch']}, {m['macs_per_run']} MACs and {m['predicted_cycles']} predicted cycles per run, "
              f"{m['samples']} golden samples -> {show(a.output)} (rtl/ copied from {show(a.hw)})")
        return 0
    rows, cols = parse_array("8x8" if a.array is None else a.array)
    acc_bits = 32 if a.acc_bits is None else a.acc_bits
    if a.backend == "hls":
        from .hls.backend import HlsConfig

        cfg = HlsConfig(rows=rows, cols=cols, acc_bits=acc_bits, weights=a.weights)
        m = compile_model(a.model, a.output, backend="hls", config=cfg, **opts)
        _print_placement(m)
        if "segments" in m:
            print(f"compiled {show(m['model'])} to HLS C++: {sum(s['kind'] == 'device' for s in m['segments'])} device "
                  f"segment(s) in seg<k>/, {rows}x{cols} MAC array, {m['samples']} golden samples -> {show(a.output)}")
            return 0
        print(f"compiled {show(m['model'])} to HLS C++: {len(m['layers'])} layers, {rows}x{cols} MAC array, "
              f"weights {cfg.weights}, {m['samples']} golden samples -> {show(a.output)}")
        return 0
    from .accel.program import AccelConfig

    cfg = AccelConfig(rows, cols, acc_bits=acc_bits, mem_bits=a.mem_bits or 64, abuf_words=a.abuf_words or 0,
                      wbuf_words=a.wbuf_words or 0, bbuf_words=a.bbuf_words or 0, imem_words=a.imem_words or 0,
                      per_channel=a.per_channel or "", smx_n=_softmax_unit(a.softmax_unit),
                      ln_n=_layernorm_unit(a.layernorm_unit))
    m = compile_model(a.model, a.output, config=cfg, batch=a.batch, **opts)
    _print_placement(m)
    if "segments" in m:
        from .report import device_layer_lines

        for line in device_layer_lines(m):
            print(line)
        print(f"compiled {show(m['model'])}: {sum(s['kind'] == 'device' for s in m['segments'])} device segment(s), "
              f"{m['program']['length']} instructions in all for a {rows}x{cols} accelerator, batch {m['batch']}, "
              f"{m['macs_per_run']} device MACs and {m['predicted_cycles']} predicted cycles per run, "
              f"{m['samples']} golden samples -> {show(a.output)}")
        return 0
    print(f"compiled {show(m['model'])}: {m['program']['length']} instructions for a {rows}x{cols} accelerator, "
          f"batch {m['batch']}, {m['macs_per_run']} MACs and {m['predicted_cycles']} predicted cycles per run, "
          f"{m['samples']} golden samples -> {show(a.output)}")
    return 0


def cmd_hw(a) -> int:
    from .hw import PARTS, from_toml, preset, render_overlay

    if (a.preset is None) == (a.config is None):
        raise InputError("give one of --preset NAME or --config HW.toml", where="tony hw")
    ov = preset(a.preset) if a.preset else from_toml(a.config)
    info = render_overlay(ov, a.output)
    c = ov.cfg
    print(f"overlay {show(ov.name)}: {c.rows}x{c.cols} array, activation {c.abuf_words} x {c.cols * c.a_bits} bits, "
          f"weight {c.wbuf_words} x {c.cols * c.w_bits}, bias {c.bbuf_words} x {c.bias_bits}, instruction "
          f"{c.imem_words} x 512, memory port {c.mem_bits} bits, rounding {ov.rounding} -> {show(a.output)}")
    est = info["estimate"]
    if est:
        part = PARTS[ov.part]
        b, d = est["bram"], est["dsp"]
        per = ", ".join(f"{k} {v}" for k, v in b["per_buffer"].items())
        print(f"{part.device} ({part.boards}), estimate: {b['used']} of {b['available']} {b['cell']} ({per}); "
              f"{d['used']} of {d['available']} {d['cell']}")
        for k in est["over"]:
            print(f"warning: the estimated {k} ({est[k]['used']}) exceeds the part's {est[k]['available']} "
                  f"{est[k]['cell']}", file=sys.stderr)
    return 0
def _print_placement(m: dict) -> None:
    if m.get("placement") and any(r["where"] == "host" for r in m["placement"]["ops"]):
        from .report import placement_lines  # rich: imported only when there is a table to print

        for line in placement_lines(m["placement"]):
            print(line)


def cmd_csim(a) -> int:
    from .hls.backend import csim

    rep = csim(a.build)
    for line in rep["first_mismatches"]:
        print(show(line))
    print(f"csim {show(rep['model'])}: {rep['samples']} samples, {rep['compared']} values compared, "
          f"{rep['mismatches']} mismatches (g++ {rep['compile_s']:.2f} s) -> "
          f"{'PASS, bit-exact' if rep['bit_exact'] else 'FAIL'}")
    return 0 if rep["bit_exact"] else 1


def cmd_sim(a) -> int:
    from .sim.accel import simulate

    inputs = _load_npy(a.inputs) if a.inputs else None
    rep = simulate(a.build, inputs=inputs, waves=a.waves, progress=not a.quiet, axi_stall=a.axi_stall)
    from .report import print_sim_report

    print_sim_report(rep)
    return 0 if rep["bit_exact"] else 1


def cmd_report(a) -> int:
    from .report import read_sim_report, print_sim_report

    if a.html:
        _need("matplotlib", what="tony report --html")
    if (Path(a.build) / "results.parquet").is_file():  # a sweep folder
        _need("pyarrow", "matplotlib", what="tony report SWEEP")
        from .sweep.report import print_sweep, write_sweep_report
        from .sweep.store import read_results

        rows = read_results(a.build)
        if a.html:
            print(f"wrote {show(write_sweep_report(a.build, rows))}")
        else:
            print_sweep(rows)
        return 0
    if a.html:
        from .report_html import build_report

        print(f"wrote {show(build_report(a.build))}")
        return 0

    from .build import Build
    from .sim.accel import REPORT
    from .synth.report import SYNTH_REPORT, print_synth_report, read_synth_report

    build = Build.open(a.build, kind="accel")
    have_sim, have_synth = (build.path / REPORT).is_file(), (build.path / SYNTH_REPORT).is_file()
    if not have_sim and not have_synth:
        raise InputError(f"no {REPORT} or {SYNTH_REPORT} in {build.path}", hint="run `tony sim` or `tony synth` first")
    cycles = None
    if have_sim:
        sim = read_sim_report(build.path)
        print_sim_report(sim)
        cycles = (sim.get("cycles_per_run") or [None])[0]
    if have_synth:
        print_synth_report(read_synth_report(build.path), manifest=build.manifest, cycles_per_run=cycles)
    return 0


def cmd_synth(a) -> int:
    from .build import Build
    from .synth import synthesize
    from .synth.report import print_synth_report

    rep = synthesize(a.build, target=a.target, pnr=a.pnr, freq=a.freq, top=a.top, progress=not a.quiet,
                     timeout=a.timeout, seed=a.seed, placer=a.placer, router=a.router,
                     untimed_route=a.untimed_route)
    print_synth_report(rep, manifest=Build.open(a.build).manifest)
    print(f"wrote {show(Path(a.build) / 'synth_report.json')}")
    return 0


def cmd_sweep(a) -> int:
    _need("distributed", "pyarrow", "matplotlib", what="tony sweep")
    from .compiler import parse_array
    from .sweep.report import print_sweep
    from .sweep.runner import Settings, run_sweep
    from .sweep.spec import parse_list

    settings = Settings(scheduler=a.scheduler, workers=a.workers, serial=a.serial, max_points=a.max_points,
                        synth=a.target if a.synth else None, pnr=a.pnr, keep_builds=a.keep_builds,
                        progress=not a.quiet)
    if a.pnr and not a.synth:
        raise InputError("needs --synth", where="--pnr")
    out = run_sweep(a.models, a.output, arrays=parse_list(a.array, "--array", parse_array),
                    abuf_words=parse_list(a.abuf_words, "--abuf-words"), mem_bits=parse_list(a.mem_bits, "--mem-bits"),
                    batches=parse_list(a.batch, "--batch"), sim=a.sim, settings=settings)
    print_sweep(out.rows)
    failed = sum(r["status"] != "ok" for r in out.rows)
    print(f"{len(out.computed)} points computed, {out.skipped} already in the results, {len(out.synthesized)} "
          f"overlays synthesized, {failed} failed ({out.mode}, {out.wall_s:.1f} s) -> "
          f"{show(Path(a.output) / 'results.parquet')}, {show(Path(a.output) / 'report.html')}")
    bad_sim = [r for r in out.rows if r.get("sim_samples") and not (r["bit_exact"] and r["cycles_match"])]
    return 1 if bad_sim else 0


def cmd_compare(a) -> int:
    from .board.compare import compare, print_compare
    from .build import Build

    Build.open(a.build, kind="accel")  # golden vectors of the accelerator's layout

    if a.memory:
        from .board.compare import compare_memory, print_compare_memory

        rep = compare_memory(a.build, a.hw_dump, fmt=a.format)
        print_compare_memory(rep)
        return 0 if rep["mismatches"] == 0 and rep["image_mismatches"] == 0 else 1
    rep = compare(a.build, a.hw_dump, tensor=a.tensor, fmt=a.format, offset=a.offset)
    print_compare(rep)
    return 0 if rep["mismatches"] == 0 else 1


def cmd_example(a) -> int:
    from .models import build_example

    info = build_example(a.name, a.output)
    if "float_accuracy" in info:
        print(f"wrote example {a.name} to {a.output} (float accuracy {info['float_accuracy']:.4f})")
    else:  # MLPerf Tiny workloads: random weights, no accuracy
        print(f"wrote example {a.name} to {a.output} ({info['params']:,} parameters, {info['macs']:,} MACs/sample, "
              "random weights)")
    return 0


def _load_train_npz(path: str):
    """(x, y, val): val = (x_val, y_val) when the archive has them, else None."""
    p = Path(path)
    if not p.is_file():
        raise not_a_file(p, f"--train-data {path}")
    try:
        with np.load(p, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise InputError(f"needs arrays 'x' (inputs) and 'y' (labels), has {sorted(z.files)}",
                                 where=f"--train-data {path}")
            if ("x_val" in z) != ("y_val" in z):
                raise InputError("has only one of 'x_val' and 'y_val' (the validation split needs both)",
                                 where=f"--train-data {path}")
            val = (z["x_val"], z["y_val"]) if "x_val" in z else None
            return z["x"], z["y"], val
    except TonyError:
        raise
    except Exception as e:
        raise InputError(f"not a .npz archive ({type(e).__name__})", where=f"--train-data {path}") from None


def _snap_pow2(a) -> int:

    from .frontend.load import load_model
    from .frontend.qop import expand_qoperators
    from .quant.snap import compare, snap_pow2

    m = expand_qoperators(load_model(a.model))
    x = _load_npy(a.inputs) if a.inputs else None  # checked before anything is written
    labels = _load_npy(a.labels, "--labels") if a.inputs and a.labels else None
    if labels is not None and (labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(x)):
        raise InputError(f"needs {len(x)} integer labels (one per input), has shape {labels.shape} {labels.dtype}",
                         where=f"--labels {a.labels}")
    q, changed = snap_pow2(m)
    r = compare(m, q, x, labels) if x is not None else None
    write_onnx(a.output, q)
    print(f"wrote {a.output}: {changed} scale values moved up to the next power of two")
    if r is not None:
        print(f"outputs changed: {100 * r['changed']:.2f}%, max {r['max_lsb']:.0f} LSB, mean {r['mean_lsb']:.3f} LSB")
        if labels is not None:
            print(f"accuracy: {r['acc_original']:.4f} -> {r['acc_snapped']:.4f} "
                  f"({100 * (r['acc_snapped'] - r['acc_original']):+.2f} points)")
    return 0


def cmd_quantize(a) -> int:

    from .frontend.load import load_model
    from .quant.qdq import quantize_static
    from .ref.feeds import as_float32

    if a.snap_pow2:
        return _snap_pow2(a)
    if not a.calib:
        raise InputError("--calib is required to quantize a float model", where="--calib",
                         hint="pass a .npy stack of model inputs, or --snap-pow2 for an already quantized model")
    m = load_model(a.model)
    calib = _load_npy(a.calib, "--calib")
    if calib.size == 0 or not np.all(np.isfinite(as_float32(calib))):
        raise InputError("the calibration data is empty or holds NaN or infinity (in float32)",
                         where=f"--calib {a.calib}")
    if a.train_data:
        from .quant.tqt import train_thresholds

        x, y, val = _load_train_npz(a.train_data)
        q = train_thresholds(m, calib, x, y, epochs=a.epochs, weight_bits=a.weight_bits, method=a.method,
                             first_last_8bit=a.first_last_8bit, val=val, progress=not a.quiet,
                             log=None if a.quiet else print)
    else:
        q = quantize_static(m, calib, weight_bits=a.weight_bits, method=a.method,
                            first_last_8bit=a.first_last_8bit, sequential=not a.one_pass, progress=not a.quiet)
    write_onnx(a.output, q)
    print(f"wrote {show(a.output)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="tony", description="Quantized ONNX -> integer IR -> RTL for a systolic MAC array, "
                                          "proven bit-exact on Verilator.")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    p.add_argument("--version", action="version", version=f"tony {__import__('tony').__version__}")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    def model_opts(sp, default_requant="auto"):
        sp.add_argument("model", help="ONNX model file")
        sp.add_argument("--requant", choices=["pow2", "multiplier", "auto"], default=default_requant,
                        help="rescale by shifts only (pow2), by multiplier+shift, or pick per op (auto)")
        sp.add_argument("--rounding", choices=["half_even", "half_up", "floor"], default="half_even")

    sp = sub.add_parser("ir", help="print the integer IR of a model")
    model_opts(sp)
    sp.set_defaults(fn=cmd_ir)

    sp = sub.add_parser("run", help="run the bit-exact reference")
    model_opts(sp)
    sp.add_argument("--inputs", required=True, help=".npy: one input of the model's shape, or a stack")
    sp.add_argument("-o", "--output", help="write the (first) output to this .npy")
    sp.set_defaults(fn=cmd_run)

    sp = sub.add_parser("compile", help="render RTL, memory images, golden vectors and a manifest")
    model_opts(sp, default_requant="pow2")
    sp.add_argument("-o", "--output", required=True, help="output folder")
    sp.set_defaults(rounding=None)  # half_even, or the overlay's
    sp.add_argument("--hw", metavar="HW", help="rtl: compile for the overlay in folder HW (from `tony hw`): its fixed "
                                               "configuration, its Verilog copied (docs/overlay.md)")
    sp.add_argument("--array", default=None, help="systolic array ROWSxCOLS (default 8x8)")
    sp.add_argument("--acc-bits", type=int, default=None, choices=range(16, 33), metavar="{16..32}")
    sp.add_argument("--inputs", help=".npy inputs for the golden vectors (default: seeded random)")
    sp.add_argument("--samples", type=int, default=None,
                    help="seeded random golden samples, without --inputs (default 20)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--batch", type=int, default=None, help="rtl: samples per accelerator run (default 1)")
    sp.add_argument("--mem-bits", type=int, default=None, choices=[32, 64],
                    help="rtl: width of the accelerator's memory port (default 64)")
    sp.add_argument("--abuf-words", type=int, default=None,
                    help="rtl: activation-buffer words (default: what the model needs); with fewer, tensors "
                         "spill to external memory")
    sp.add_argument("--wbuf-words", type=int, default=None,
                    help="rtl: weight-buffer words (default: twice the largest weight block)")
    sp.add_argument("--bbuf-words", type=int, default=None,
                    help="rtl: bias-buffer words (default: every bias word; with fewer, biases are reloaded)")
    sp.add_argument("--imem-words", type=int, default=None,
                    help="rtl: instruction-memory words (default: the program's length)")
    sp.add_argument("--per-channel", choices=["none", "shift", "mult"], default=None,
                    help="rtl: per-channel requantization in the bias words: none, a shift per channel (pow2), or a "
                         "multiplier and a shift per channel (default: what the model needs; docs/isa.md)")
    sp.add_argument("--softmax-unit", type=int, default=None, metavar="N",
                    help="rtl: the Softmax unit's longest row, 0 for no unit: every Softmax then runs on the host "
                         "(default: sized to the model's longest device Softmax row; docs/transformer.md)")
    sp.add_argument("--layernorm-unit", type=int, default=None, metavar="N",
                    help="rtl: the LayerNorm unit's longest row, 0 for no unit: every LayerNorm then runs on the host "
                         "(default: sized to the model's longest device LayerNorm row; docs/transformer.md)")
    sp.add_argument("--backend", choices=["rtl", "hls"], default="rtl",
                    help="rtl: Verilog for the array (default); hls: Vitis-HLS C++ that also builds with g++")
    sp.add_argument("--weights", choices=["const", "axi"], default=None,
                    help="hls: weights as constant arrays (default) or read over m_axi from params.hex")
    sp.add_argument("--device-only", action="store_true",
                    help="refuse a model with an operator the device cannot run (instead of running it on the host)")
    sp.set_defaults(fn=cmd_compile)

    from .hw import PRESETS

    sp = sub.add_parser("hw", help="render one accelerator (an overlay) for an FPGA part: HW/hw.json, HW/rtl/; "
                                   "then `tony compile MODEL --hw HW` compiles models for it")
    sp.add_argument("--preset", choices=list(PRESETS), help="a part's overlay")
    sp.add_argument("--config", metavar="HW.toml", help="the overlay's fields (rows, cols, abuf_words, wbuf_words, "
                                                        "bbuf_words, imem_words, mem_bits, acc_bits, per_channel, rounding, "
                                                        "part; "
                                                        "preset = NAME to start from a preset)")
    sp.add_argument("-o", "--output", required=True, help="output folder")
    sp.set_defaults(fn=cmd_hw)

    sp = sub.add_parser("csim", help="build an HLS build's C++ with g++ and run its testbench on the golden vectors")
    sp.add_argument("build", help="folder written by `tony compile --backend hls`")
    sp.set_defaults(fn=cmd_csim)

    sp = sub.add_parser("sim", help="simulate a compiled build on Verilator and compare with the golden vectors")
    sp.add_argument("build", help="folder written by `tony compile`")
    sp.add_argument("--inputs", help=".npy inputs (default: the compiled golden inputs)")
    sp.add_argument("--waves", action="store_true", help="dump waveforms")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.add_argument("--axi-stall", type=float, default=None, metavar="P",
                    help="run through the AXI SoC wrapper (tony_axi_top) with idle/back-pressure on every "
                         "AXI channel in a fraction P of the cycles (0 = none)")
    sp.set_defaults(fn=cmd_sim)

    sp = sub.add_parser("compare", help="compare a hardware memory dump with a build's golden vectors")
    sp.add_argument("build", help="folder written by `tony compile`")
    sp.add_argument("--hw-dump", required=True, help="dump file: hex (one value per line) or raw little-endian binary")
    sp.add_argument("--tensor", help="golden tensor the dump holds (default: the final device output)")
    sp.add_argument("--format", choices=["auto", "hex", "bin"], default="auto")
    sp.add_argument("--offset", type=int, default=0, help="byte offset of the tensor in a binary dump")
    sp.add_argument("--memory", action="store_true",
                    help="the dump is the accelerator's whole memory after each run (images back to back): "
                         "check every device output")
    sp.set_defaults(fn=cmd_compare)

    sp = sub.add_parser("report", help="print the reports of the last simulation and synthesis of a build "
                                       "(or the Pareto fronts of a sweep folder)")
    sp.add_argument("build", help="build folder (tony compile) or sweep folder (tony sweep)")
    sp.add_argument("--html", action="store_true", help="write BUILD/report.html (or SWEEP/report.html): plots "
                                                        "and tables in one self-contained page")
    sp.set_defaults(fn=cmd_report)

    from .synth.targets import PLACERS, ROUTERS, TARGETS

    sp = sub.add_parser("synth", help="synthesize a build for an FPGA with Yosys (and place and route with "
                                      "nextpnr): resources per module, warnings, Fmax -> synth_report.json")
    sp.add_argument("build", help="folder written by `tony compile`")
    sp.add_argument("--target", choices=list(TARGETS), default="ecp5-85k", help="FPGA (default ecp5-85k)")
    sp.add_argument("--pnr", action="store_true", help="also place and route (ecp5-*, ice40-up5k): Fmax, critical path")
    sp.add_argument("--freq", type=float, default=None, metavar="MHZ",
                    help="with --pnr: the clock constraint in MHz (default 100)")
    sp.add_argument("--placer", choices=PLACERS, default=None,
                    help="with --pnr: nextpnr's placer (default heap; static spreads a large design over the part)")
    sp.add_argument("--router", choices=ROUTERS, default=None,
                    help="with --pnr: nextpnr's router (default router1)")
    sp.add_argument("--untimed-route", action="store_true",
                    help="with --pnr: place timing-driven, then route for congestion alone (nextpnr --no-tmdriv on "
                         "the placed design); the timing-driven router does not finish an 8x8 ECP5 build "
                         "(docs/synthesis.md)")
    sp.add_argument("--seed", type=int, default=None, metavar="N",
                    help="with --pnr: nextpnr's placement seed (default 1); the 8x8 ECP5 build's Fmax moves by "
                         "several MHz from seed to seed (docs/synthesis.md)")
    sp.add_argument("--top", default=None, help="top module (default: the build's, tony_accel; tony_axi_top for the "
                                                "AXI wrapper)")
    sp.add_argument("--timeout", type=float, default=None, metavar="S", help="stop a tool after S seconds")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress spinner")
    sp.set_defaults(fn=cmd_synth)

    sp = sub.add_parser("sweep", help="compile many models for many accelerator configurations (dask tasks), "
                                      "cycles, Pareto fronts -> SWEEP/results.parquet and SWEEP/report.html")
    sp.add_argument("models", nargs="+", metavar="MODEL", help="ONNX files or bundled example names (tony example)")
    sp.add_argument("-o", "--output", required=True, help="sweep folder (rerun to resume)")
    sp.add_argument("--array", default="4x4,8x8,8x16,16x16", help="array shapes ROWSxCOLS, comma-separated")
    sp.add_argument("--abuf-words", default="0", help="activation-buffer depths (0: sized to each model)")
    sp.add_argument("--mem-bits", default="64", help="memory-port widths: 32, 64")
    sp.add_argument("--batch", default="1", help="samples per accelerator run")
    sp.add_argument("--sim", type=int, default=0, metavar="N", help="also simulate N samples per point on Verilator")
    sp.add_argument("--synth", action="store_true", help="synthesize each distinct overlay once (tony synth)")
    sp.add_argument("--target", choices=list(TARGETS), default="ecp5-85k", help="with --synth: FPGA (default ecp5-85k)")
    sp.add_argument("--pnr", action="store_true", help="with --synth: place and route too (Fmax -> µs)")
    sp.add_argument("--scheduler", metavar="ADDRESS", help="a dask scheduler (tcp://host:8786); default: an "
                                                           "embedded LocalCluster")
    sp.add_argument("--workers", type=int, default=2, help="LocalCluster worker processes (default 2)")
    sp.add_argument("--serial", action="store_true", help="run every task in this process, one after another")
    sp.add_argument("--max-points", type=int, default=None, metavar="N",
                    help="compute at most N new points, then stop (a rerun continues)")
    sp.add_argument("--keep-builds", action="store_true",
                    help="keep simulation/synthesis build folders under SWEEP/builds (a folder the workers share)")
    sp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    sp.set_defaults(fn=cmd_sweep)

    sp = sub.add_parser("example", help="build a bundled example model (trained here or seeded random; no download)")
    sp.add_argument("name", choices=["digits-mlp", "digits-cnn", "digits-mobilenet", "text-langid", "resnet8", "dscnn",
                                     "mobilenet-v1-025", "fc-autoencoder", "kws", "kws-conv1d",
                                     "kws-transformer"])
    sp.add_argument("-o", "--output", required=True)
    sp.set_defaults(fn=cmd_example)

    sp = sub.add_parser("quantize", help="float ONNX + one calibration batch -> pow2 QDQ ONNX")
    sp.add_argument("model")
    sp.add_argument("--calib", help=".npy stack of model inputs (required unless --snap-pow2)")
    sp.add_argument("--snap-pow2", action="store_true", help="rewrite an already quantized model's scales to the "
                                                             "next power of two up (pow2 mode), report the change")
    sp.add_argument("--inputs", help="with --snap-pow2: .npy stack of inputs to measure the change on")
    sp.add_argument("--labels", help="with --snap-pow2 --inputs: .npy int labels, to report the accuracy change")
    sp.add_argument("--weight-bits", type=int, default=8, choices=[4, 8])
    sp.add_argument("--method", choices=["kl-j", "max", "percentile", "mse"], default="kl-j",
                    help="activation calibration (default kl-j)")
    sp.add_argument("--first-last-8bit", action="store_true", help="keep 8-bit weights in the first and last layers")
    sp.add_argument("--one-pass", action="store_true",
                    help="calibrate every tensor on the float model in one pass (default: in order, each tensor on "
                         "the model quantized up to it; one pass is much faster on graphs of hundreds of layers)")
    sp.add_argument("--train-data", help=".npz with x (stack of inputs) and y (int labels), optionally x_val and "
                                         "y_val (else 15%% of x is held out): train thresholds and weights "
                                         "(TQT, needs tony[train])")
    sp.add_argument("--epochs", type=int, default=10, help="threshold-training epochs (default 10)")
    sp.add_argument("-q", "--quiet", action="store_true")
    sp.add_argument("-o", "--output", required=True)
    sp.set_defaults(fn=cmd_quantize)
    return p


def main(argv=None) -> int:
    parser = build_parser()
    a = parser.parse_args(argv)
    try:
        return a.fn(a)
    except TonyError as e:
        if a.debug:
            raise
        print(f"tony {a.cmd}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("tony: interrupted", file=sys.stderr)
        return 130
    except MemoryError as e:  # a model whose tensors do not fit this machine's memory
        if a.debug:
            raise
        print(f"tony {a.cmd}: error: not enough memory ({show(str(e) or type(e).__name__)})", file=sys.stderr)
        return 1
    except OSError as e:  # the file system refuses a path the user gave (a file where a folder is needed, ...)
        if a.debug:
            raise
        print(f"tony {a.cmd}: error: {show(e.filename or '')}: {show(e.strerror or e)}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
