"""`tony compile`: an ONNX model, lowered to the IR, into a build folder for one back end.

Above this module is ONNX (`compile_model` loads and lowers the model); below it every back end
takes only the IR graph and a hardware configuration: `compile_accel` writes the accelerator's
program, memory image, Verilog, bring-up files and golden vectors (docs/isa.md, docs/golden.md);
`tony.hls.backend.compile_hls` writes the HLS C++. Build folders appear whole or not at all
(tony.build.staged_output).
"""
from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from . import __version__, ir
from .accel import model as accel_model
from .accel.compiler import compile_program
from .accel.program import PER_CHANNEL_CODES, AccelConfig
from .api import load_ir, normalize_inputs
from .ir import bounds
from .board.bringup import AXI_READ_LATENCY, write_bringup
from .budget import check_ir, samples_in
from .build import MANIFEST, staged_output, write_json, write_onnx
from .errors import InputError, UnsupportedError
from .ir.partition import Partition, first_host_op, partition, subgraph
from .ir.partition import report as placement_report
from .golden import default_inputs, hex_text, tensor_keys, write_golden
from .accel import placement
from .accel.layout import run_beats
from .rtl import render_to
from .rtl.fusesoc import write_core

DEFAULT_ARRAY = "8x8"


def parse_array(text: str) -> tuple[int, int]:
    """'ROWSxCOLS' -> (rows, cols), each 1..64."""
    try:
        r, c = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise InputError(f"--array {text!r}: expected ROWSxCOLS, e.g. 8x8") from None
    if not (1 <= r <= 64 and 1 <= c <= 64):
        raise InputError(f"--array {text!r}: rows and columns must be between 1 and 64")
    return r, c


def _feeds(g: ir.Graph, inputs, samples: int, seed: int) -> dict:
    if inputs is not None:
        return normalize_inputs(g, inputs)[0]
    if samples < 1:
        raise InputError("--samples must be at least 1")
    return default_inputs(g, samples, seed)


def compile_model(model, out_dir, *, backend: str = "rtl", config=None, inputs=None, samples: int = 20,
                  seed: int = 0, requant: str = "pow2", rounding: str | None = None, batch: int = 1,
                  hw=None, device_only: bool = False) -> dict:
    """Load and lower `model` (path or ModelProto), then compile it with `backend` ("rtl": the
    accelerator, `config` an AccelConfig; "hls": `config` an HlsConfig) into `out_dir`. With `hw`
    (an overlay folder from `tony hw`, docs/overlay.md) the accelerator is that overlay's: its
    configuration and rounding, its Verilog copied. Ops the back end cannot run go to host
    segments (tony.ir.partition); with `device_only` that is refused instead, naming the first
    such op. Returns the manifest."""
    import onnx

    overlay = None
    if hw is not None:
        overlay, rounding = _overlay_for(hw, backend, config, rounding)
        config = overlay.overlay.cfg
    g = load_ir(model, requant=requant, rounding=rounding or "half_even")
    if all(op.host for op in g.ops):
        raise UnsupportedError("the model has no operator that runs on the device", where="model",
                               hint="`tony run` executes it in the reference")
    feeds = _feeds(g, inputs, samples, seed)
    source = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    if backend == "hls":
        from .hls.backend import HlsConfig, compile_hls

        return compile_hls(g, out_dir, config=config or HlsConfig(), feeds=feeds, source=source,
                           device_only=device_only)
    if backend != "rtl":
        raise InputError(f"backend {backend!r}: choose rtl or hls")
    return compile_accel(g, out_dir, config or AccelConfig(), feeds, batch=batch, source=source, hw=overlay,
                         device_only=device_only)


def _overlay_for(hw, backend: str, config, rounding):
    """The overlay folder `hw` (a path or tony.hw.HwFolder), checked against the other options;
    returns it and the rounding mode to lower the model with."""
    from .hw import HwFolder, open_overlay

    folder = hw if isinstance(hw, HwFolder) else open_overlay(hw)
    where = f"--hw {folder.path}"
    if backend != "rtl":
        raise InputError(f"--backend {backend}: an overlay is accelerator hardware (the rtl back end)", where=where)
    if config is not None and config != folder.overlay.cfg:
        raise InputError("the overlay fixes the accelerator's configuration; give no other", where=where)
    ov = folder.overlay
    if rounding is not None and rounding != ov.rounding:
        raise InputError(f"--rounding {rounding}: the overlay's post-processing rounds {ov.rounding} "
                         f"(ROUND_MODE {ov.round_mode})", where=where,
                         hint=f"compile with --rounding {ov.rounding}, or render an overlay with rounding = "
                              f"\"{rounding}\"")
    return folder, ov.rounding


def refuse_host_ops(p: Partition, backend: str) -> None:
    """--device-only: refuse a partition with an op off the device, naming the first one."""
    first = first_host_op(p)
    if first is not None:
        raise UnsupportedError(f"runs on the host ({first.reason}) but --device-only was given",
                               where=first.op.where, hint=f"drop --device-only to run it on the host between "
                                                          f"{backend} segments")


def accel_partition(g: ir.Graph, cfg: AccelConfig) -> Partition:
    """The host/device split of `g` for the accelerator `cfg` (one function for compile and sim)."""
    return partition(g, placement.refuse(g, cfg))


def compile_accel(g: ir.Graph, out_dir, cfg: AccelConfig, feeds: dict, *, batch: int = 1, source=None,
                  hw=None, device_only: bool = False) -> dict:
    """Compile the IR graph `g` for the accelerator `cfg` with `batch` samples per run, golden
    vectors from `feeds`; `source` (an onnx ModelProto) is kept in the build as model.onnx.

    A graph whose device ops form one segment (between the float boundary's Quantize and
    Dequantize) is one program. Otherwise every device segment is compiled as its own program in
    its own build folder seg<k>/ (the same accelerator, its own memory image), and `tony sim` runs
    the host segments in the reference between them. With `hw` (a tony.hw.HwFolder) the
    accelerator is the overlay's and its Verilog is copied."""
    if batch < 1:
        raise InputError("--batch must be at least 1")
    if hw is not None:
        cfg = hw.overlay.cfg
        if ir.Rounding(g.meta["rounding"]).code != hw.overlay.round_mode:
            raise InputError(f"the model is lowered with rounding {g.meta['rounding']}; the overlay's "
                             f"post-processing rounds {hw.overlay.rounding}", where=f"--hw {hw.path}",
                             hint=f"lower it with rounding {hw.overlay.rounding}")
    if cfg.mem_bits > 64:
        raise InputError(f"--mem-bits {cfg.mem_bits}: the memory image is written as 64-bit words; use 32 or 64")
    check_ir(g, samples_in(g, feeds), "compiling (the golden vectors)")
    bounds.check_overflow(g, cfg.acc_bits)
    p = accel_partition(g, cfg)
    if device_only:
        refuse_host_ops(p, "device")
    where = placement_report(g, p)
    if p.simple:
        prog = compile_program(g, cfg, batch=batch)
        with staged_output(out_dir) as out:
            return _write_accel(g, out, prog, feeds, source, where, hw)
    subs = {k: subgraph(g, s, f"{g.name}.seg{k}") for k, s in enumerate(p.segments) if s.device}
    progs = {k: compile_program(sub, cfg, batch=batch) for k, sub in subs.items()}
    # one accelerator for every segment: each buffer as deep as the deepest segment needs
    shared = replace(cfg, **{f: getattr(cfg, f) or max(getattr(pr.cfg, f) for pr in progs.values())
                             for f in ("abuf_words", "wbuf_words", "bbuf_words", "imem_words")},
                     per_channel=cfg.per_channel or max((pr.cfg.per_channel for pr in progs.values()),
                                                        key=PER_CHANNEL_CODES.get))
    progs = {k: compile_program(sub, shared, batch=batch) for k, sub in subs.items()}
    with staged_output(out_dir) as out:
        return _write_segmented(g, out, p, progs, feeds, source, where, shared, batch, hw)


def _write_segmented(g: ir.Graph, out: Path, p: Partition, progs: dict, feeds: dict, source, where: dict,
                     cfg: AccelConfig, batch: int, hw=None) -> dict:
    """The top folder (whole-graph golden vectors, model, manifest with the segments) and one
    accelerator build per device segment, its golden inputs the reference's values there."""
    keys = tensor_keys(g)
    files, env = write_golden(g, feeds, out / "golden", keys)
    if source is not None:
        write_onnx(out / "model.onnx", source)
    np.save(out / "inputs.npy", *[feeds[n] for n in g.inputs][:1])
    (out / "ir.txt").write_text(ir.format_graph(g) + "\n")
    segs, cycles, macs = [], 0, 0
    for k, s in enumerate(p.segments):
        entry = {"index": k, "kind": s.kind, "ops": [op.origin or op.outputs[0] for op in s.ops],
                 "inputs": [keys[n] for n in s.inputs], "outputs": [keys[n] for n in s.outputs]}
        if s.device:
            sub = subgraph(g, s, f"{g.name}.seg{k}")
            (out / f"seg{k}").mkdir()
            m = _write_accel(sub, out / f"seg{k}", progs[k], {n: env[n] for n in sub.inputs}, None, None, hw)
            entry.update(build=f"seg{k}", predicted_cycles=m["predicted_cycles"], macs_per_run=m["macs_per_run"],
                         layers=[{f: row[f] for f in ("name", "op", "K", "M", "macs", "predicted", "utilization",
                                                      "row_length") if f in row}
                                 for row in m["layers"] if row["macs"] or row["op"] in UNIT_LAYERS])
            cycles += m["predicted_cycles"]
            macs += m["macs_per_run"]
        segs.append(entry)
    manifest = {
        "kind": "accel", "tony_version": __version__, "model": g.name, "accel": asdict(cfg),
        "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
        "samples": int(next(iter(feeds.values())).shape[0]), "batch": batch,
        "segments": segs, "placement": where, "golden": files,
        "predicted_cycles": cycles, "macs_per_run": macs,   # per run of a batch, as the cycles
        "program": {"length": sum(len(pr.words) for pr in progs.values())},
        "outputs": [{"key": keys[n]} for n in g.outputs],
    }
    write_json(out / MANIFEST, manifest)
    return manifest


def _io_entries(prog, keys: dict[str, str]) -> tuple[list, list]:
    """The manifest's device inputs and outputs: where each lives in memory and how it is laid out."""
    off, inputs = 0, []
    for name, info in prog.inputs.items():
        st = info["stored"]
        inputs.append({"key": keys[name], "ext": info["ext"], "beats": info["beats"], "offset": off,
                       "n": st.n, "c": st.c, "h": st.h, "w": st.w})
        off += info["beats"]
    outputs = []
    for name, info in prog.outputs.items():
        st = info["stored"]
        outputs.append({"key": keys[name], "ext": info["ext"], "beats": info["beats"], "n": st.n, "c": st.c,
                        "h": st.h, "w": st.w, "signed": info["signed"], "shape": list(info["shape"])})
    return inputs, outputs


def _write_memory(out: Path, prog) -> None:
    cfg = prog.cfg
    mem = out / "mem"
    mem.mkdir()
    np.save(mem / "image.npy", np.asarray(prog.image, dtype=np.uint64))
    (mem / "image.hex").write_text(f"// tony_accel memory image: {len(prog.image)} beats of {cfg.mem_bits} bits, "
                                   "program at beat 0\n" + hex_text(np.asarray(prog.image, np.uint64), cfg.mem_bits))


def _rtl(g: ir.Graph, out: Path, cfg: AccelConfig, hw) -> list[Path]:
    """The accelerator's Verilog: rendered for `cfg`, or with an overlay copied from it."""
    if hw is None:
        return render_to(out / "rtl", ["tony_accel"], ROUND_MODE=ir.Rounding(g.meta["rounding"]).code,
                         **cfg.hdl_params())
    hw.copy_rtl(out)
    return [out / "rtl" / name for name in hw.info["rtl"]]


UNIT_LAYERS = ("softmax", "layernorm")
"""Device layers without MACs that the compile report lists with their cycles beside the MAC layers:
those of the accelerator's nonlinear units, whose cycles weigh next to the array's."""


def _write_accel(g: ir.Graph, out: Path, prog, feeds: dict, source, where: dict | None, hw=None) -> dict:
    cfg = prog.cfg
    keys = tensor_keys(g)
    rtl = _rtl(g, out, cfg, hw)
    files, env = write_golden(g, feeds, out / "golden", keys)
    if source is not None:
        write_onnx(out / "model.onnx", source)
    np.save(out / "inputs.npy", *[feeds[n] for n in g.inputs][:1])
    (out / "ir.txt").write_text(ir.format_graph(g) + "\n")
    (out / "program.txt").write_text("".join(f"{i:5d}  {t}\n" for i, t in enumerate(prog.text)))
    _write_memory(out, prog)
    inputs, outputs = _io_entries(prog, keys)
    runs = run_beats(cfg, prog.batch, inputs, {k["key"]: env[n] for n, k in zip(prog.inputs, inputs)})
    np.save(out / "mem" / "runs.npy", runs)
    timing = accel_model.cycles(prog)
    table = accel_model.layer_table(prog, timing)
    axi_timing = accel_model.cycles(replace(prog, cfg=replace(cfg, mem_latency=AXI_READ_LATENCY)))
    manifest = {
        "kind": "accel",
        "tony_version": __version__,
        "model": g.name,
        "accel": asdict(cfg),
        "requant": g.meta.get("requant"), "rounding": g.meta.get("rounding"),
        "samples": int(next(iter(feeds.values())).shape[0]),
        "batch": prog.batch,
        "runs": int(runs.shape[0]),
        "rtl": [p.name for p in rtl],
        "toplevel": "tony_accel",
        "program": {"addr": prog.prog_addr, "length": len(prog.words), "boot": prog.boot_words,
                    "text": "program.txt"},
        "inputs": inputs,
        "outputs": outputs,
        "device_outputs": [o["key"] for o in outputs],
        "predicted_cycles": timing.total,
        "predicted_issue": timing.issue,
        "layers": table,
        "golden": files,
        "macs_per_run": sum(r["macs"] for r in table),
    }
    if hw is not None:
        manifest["hw"] = {"name": hw.overlay.name, "part": hw.overlay.part, "path": str(hw.path),
                          "hw_json_sha256": hw.sha256, "templates_sha256": hw.info["templates_sha256"]}
    if where is not None:
        manifest["placement"] = where
    manifest.update(write_bringup(out, manifest, len(prog.image)))  # AXI wrapper RTL, C header, driver
    if hw is not None:
        hw.copy_rtl(out)  # the wrapper too, byte for byte (write_bringup rendered the same text)
    manifest["axi"].update(predicted_cycles=axi_timing.total, predicted_issue=axi_timing.issue)
    manifest["fusesoc"] = write_core(out, model=g.name, version=__version__, toplevel="tony_accel",
                                     rtl=manifest["rtl"], params=cfg.hdl_params(),
                                     description="Tony instruction-driven systolic accelerator (generated)",
                                     axi=manifest["axi"])
    write_json(out / MANIFEST, manifest)
    return manifest
