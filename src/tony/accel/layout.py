"""The activation layout in words and external-memory beats (docs/isa.md, 'Activation layout').

A tensor with C channels, N samples of H x W pixels is ceil(C/COLS) channel groups of N*H*W
words; word base + g*N*H*W + n*H*W + y*W + x holds channels g*COLS .. g*COLS+COLS-1 of that
pixel, channel c in lane c % COLS (A_BITS bits per lane, lane 0 in the low bits). A dense
layer's [N, K] input is a K-channel 1x1 image per sample. External memory holds the same words,
ceil(COLS*A_BITS / MEM_BITS) beats each.
"""
from __future__ import annotations

import numpy as np

from .program import AccelConfig, Program


def pack_act(x: np.ndarray, c: int, h: int, w: int, cols: int, a_bits: int) -> np.ndarray:
    """Logical [N, C, H, W] (any shape with N*C*H*W elements) -> words [G*N*H*W, COLS] of raw lane bits."""
    x = np.asarray(x, np.int64).reshape(-1, c, h, w)
    n = x.shape[0]
    g = -(-c // cols)
    xp = np.zeros((n, g * cols, h, w), np.int64)
    xp[:, :c] = x
    words = xp.reshape(n, g, cols, h, w).transpose(1, 0, 3, 4, 2).reshape(g * n * h * w, cols)
    return words & ((1 << a_bits) - 1)


def unpack_act(words: np.ndarray, n: int, c: int, h: int, w: int, cols: int, a_bits: int, signed: bool) -> np.ndarray:
    """Inverse of pack_act: words [G*N*H*W, COLS] -> [N, C, H, W] integers."""
    g = -(-c // cols)
    v = np.asarray(words, np.int64).reshape(g, n, h, w, cols).transpose(1, 0, 4, 2, 3).reshape(n, g * cols, h, w)[:, :c]
    v = v & ((1 << a_bits) - 1)
    if signed:
        v = np.where(v >> (a_bits - 1), v - (1 << a_bits), v)
    return v


def words_to_beats(words: np.ndarray, lane_bits: int, mem_bits: int) -> list[int]:
    """Buffer words [n, COLS] (lane 0 low) -> external-memory beats (ceil(COLS*lane_bits/mem_bits) per word)."""
    cols = words.shape[1]
    per = -(-cols * lane_bits // mem_bits)
    mask, bmask = (1 << lane_bits) - 1, (1 << mem_bits) - 1
    out = []
    for row in np.asarray(words, np.int64):
        wv = 0
        for i, v in enumerate(row.tolist()):
            wv |= (int(v) & mask) << (i * lane_bits)
        out.extend((wv >> (b * mem_bits)) & bmask for b in range(per))
    return out


def beats_to_words(beats, cols: int, lane_bits: int, mem_bits: int) -> np.ndarray:
    per = -(-cols * lane_bits // mem_bits)
    mask = (1 << lane_bits) - 1
    n = len(beats) // per
    out = np.zeros((n, cols), np.int64)
    for i in range(n):
        wv = 0
        for b in range(per):
            wv |= int(beats[i * per + b]) << (b * mem_bits)
        out[i] = [(wv >> (l * lane_bits)) & mask for l in range(cols)]
    return out


def input_beats(prog: Program, feeds: dict) -> dict[str, list[int]]:
    """Device inputs (tensor name -> [N, ...] integers of one batch) as external-memory beats."""
    cfg = prog.cfg
    out = {}
    for name, info in prog.inputs.items():
        s = info["stored"]
        words = pack_act(feeds[name], s.c, s.h, s.w, cfg.cols, cfg.a_bits)
        out[name] = words_to_beats(words, cfg.a_bits, cfg.mem_bits)
    return out


def read_outputs(prog: Program, mem) -> dict[str, np.ndarray]:
    """Device outputs from an external-memory image after a run."""
    cfg = prog.cfg
    res = {}
    for name, info in prog.outputs.items():
        s = info["stored"]
        beats = mem[info["ext"]:info["ext"] + info["beats"]]
        words = beats_to_words(beats, cfg.cols, cfg.a_bits, cfg.mem_bits)
        res[name] = unpack_act(words, s.n, s.c, s.h, s.w, cfg.cols, cfg.a_bits, info["signed"]).reshape(info["shape"])
    return res


def run_beats(cfg: AccelConfig, batch: int, inputs: list[dict], arrays: dict[str, np.ndarray]) -> np.ndarray:
    """uint64 [runs, sum of input beats]: run r holds samples r*batch .. r*batch+batch-1 of every
    input in `inputs` order (the last run padded with zero samples). `arrays`: key -> [N, ...]."""
    n = next(iter(arrays.values())).shape[0]
    rows = []
    for r in range(-(-n // batch)):
        row = []
        for inp in inputs:
            x = np.asarray(arrays[inp["key"]][r * batch:(r + 1) * batch])
            if x.shape[0] < batch:
                x = np.concatenate([x, np.zeros((batch - x.shape[0],) + x.shape[1:], x.dtype)])
            words = pack_act(x, inp["c"], inp["h"], inp["w"], cfg.cols, cfg.a_bits)
            beats = words_to_beats(words, cfg.a_bits, cfg.mem_bits)
            assert len(beats) == inp["beats"], (inp["key"], len(beats), inp["beats"])
            row.extend(beats)
        rows.append(row)
    return np.asarray(rows, dtype=np.uint64)
