"""External-memory traffic of a program: the bytes its DMA instructions move, per layer and in total.

Read from the instructions themselves (as the controller decodes them), so it holds for a program
in memory (`of_program`) and for a build folder's memory image (`of_image`). Per layer it counts
the LOADs into the activation, weight and bias buffers and the STOREs of activations between the
layer's first and last instruction (the rows of `model.layer_table`); the program's own reads (at
boot and, for a program in pages, each page's LOAD into the instruction memory) are counted once, as
`program`.
"""
from __future__ import annotations

from . import isa
from .program import AccelConfig, Program

KINDS = ("act_in", "weights", "bias", "act_out")
_LOAD_KIND = {isa.B_ACT: "act_in", isa.B_WGT: "weights", isa.B_BIAS: "bias"}


def decode_image(cfg: AccelConfig, image, prog_addr: int, n_instr: int) -> list[dict]:
    """The instructions of a memory image (beats) as the controller decodes them."""
    per = cfg.instr_beats
    out = []
    for i in range(n_instr):
        beats = [int(b) for b in image[prog_addr + i * per:prog_addr + (i + 1) * per]]
        out.append(isa.decode(sum(b << (k * cfg.mem_bits) for k, b in enumerate(beats))))
    return out


def _bytes(cfg: AccelConfig, instrs: list[dict]) -> dict:
    out = dict.fromkeys(KINDS, 0)
    for d in instrs:
        if d["op"] == isa.LOAD and d["buf"] in _LOAD_KIND:
            out[_LOAD_KIND[d["buf"]]] += d["nwords"] * cfg.buf_beats(d["buf"]) * cfg.mem_bits // 8
        elif d["op"] == isa.STORE:
            out["act_out"] += d["nwords"] * cfg.act_beats * cfg.mem_bits // 8
    return out


def traffic(cfg: AccelConfig, instrs: list[dict], layers: list[dict]) -> dict:
    """{"layers": [{name, act_in, weights, bias, act_out, total}], "program": boot bytes,
    "total": {kind: bytes, "total": all bytes of one run}} for `layers` (rows with first/last)."""
    rows = []
    for L in layers:
        b = _bytes(cfg, instrs[L["first"]:L["last"]])
        rows.append({"name": L["name"], **b, "total": sum(b.values())})
    total = _bytes(cfg, instrs)
    boot = len(instrs) * cfg.instr_beats * cfg.mem_bits // 8
    return {"layers": rows, "program": boot,
            "total": {**total, "program": boot, "total": sum(total.values()) + boot}}


def of_program(prog: Program, layers: list[dict]) -> dict:
    from .model import decode_program

    return traffic(prog.cfg, decode_program(prog), layers)


def of_manifest(manifest: dict, image) -> dict:
    """The traffic of a build folder's program, from its manifest and memory image (mem/image.npy)."""
    fields = set(AccelConfig.__dataclass_fields__)
    cfg = AccelConfig(**{k: v for k, v in manifest["accel"].items() if k in fields})
    p = manifest["program"]
    return traffic(cfg, decode_image(cfg, image, p["addr"], p["length"]), manifest["layers"])
