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
from .accel.program import AccelConfig
from .api import load_ir, normalize_inputs
from .ir import bounds
from .board.bringup import AXI_READ_LATENCY, write_bringup
from .build import MANIFEST, staged_output, write_json, write_onnx
from .errors import InputError
from .ir.partition import partition
from .golden import default_inputs, hex_text, tensor_keys, write_golden
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
                  hw=None) -> dict:
    """Load and lower `model` (path or ModelProto), then compile it with `backend` ("rtl": the
    accelerator, `config` an AccelConfig; "hls": `config` an HlsConfig) into `out_dir`. With `hw`
    (an overlay folder from `tony hw`, docs/overlay.md) the accelerator is that overlay's: its
    configuration and rounding, its Verilog copied. Returns the manifest."""
    import onnx

    overlay = None
    if hw is not None:
        overlay, rounding = _overlay_for(hw, backend, config, rounding)
        config = overlay.overlay.cfg
    g = load_ir(model, requant=requant, rounding=rounding or "half_even")
    partition(g)  # refuses a graph with nothing for the device, naming what to do
    feeds = _feeds(g, inputs, samples, seed)
    source = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    if backend == "hls":
        from .hls.backend import HlsConfig, compile_hls

        return compile_hls(g, out_dir, config=config or HlsConfig(), feeds=feeds, source=source)
    if backend != "rtl":
        raise InputError(f"backend {backend!r}: choose rtl or hls")
    return compile_accel(g, out_dir, config or AccelConfig(), feeds, batch=batch, source=source, hw=overlay)


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


def compile_accel(g: ir.Graph, out_dir, cfg: AccelConfig, feeds: dict, *, batch: int = 1, source=None,
                  hw=None) -> dict:
    """Compile the IR graph `g` for the accelerator `cfg` with `batch` samples per run, golden
    vectors from `feeds`; `source` (an onnx ModelProto) is kept in the build as model.onnx. With
    `hw` (a tony.hw.HwFolder) the accelerator is the overlay's and its Verilog is copied."""
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
    bounds.check_overflow(g, cfg.acc_bits)
    prog = compile_program(g, cfg, batch=batch)
    with staged_output(out_dir) as out:
        return _write_accel(g, out, prog, feeds, source, hw)


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


def _write_accel(g: ir.Graph, out: Path, prog, feeds: dict, source, hw=None) -> dict:
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
        "program": {"addr": prog.prog_addr, "length": len(prog.words), "text": "program.txt"},
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
