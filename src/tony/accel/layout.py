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
    return words_to_beat_array(words, lane_bits, mem_bits).tolist()


def words_to_beat_array(words: np.ndarray, lane_bits: int, mem_bits: int) -> np.ndarray:
    """words_to_beats as a uint64 array (one bit plane per lane bit, no Python loop per word)."""
    w = np.asarray(words, np.int64)
    n, cols = w.shape
    per = -(-cols * lane_bits // mem_bits)
    if not (1 <= lane_bits <= 62 and 1 <= mem_bits <= 64):
        raise ValueError(f"{lane_bits}-bit lanes in {mem_bits}-bit beats: lanes of 1..62 bits, beats of 1..64 bits")
    v = (w & ((1 << lane_bits) - 1)).astype(np.uint64)
    if mem_bits % lane_bits == 0:  # whole lanes in each beat: shift each into place, OR them together
        lpb = mem_bits // lane_bits
        vp = np.zeros((n, per * lpb), np.uint64)
        vp[:, :cols] = v
        return np.bitwise_or.reduce(vp.reshape(n * per, lpb) << (np.arange(lpb, dtype=np.uint64) * np.uint64(lane_bits)),
                                    axis=1)
    bits = ((v[:, :, None] >> np.arange(lane_bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8)
    flat = np.zeros((n, per * mem_bits), np.uint8)
    flat[:, :cols * lane_bits] = bits.reshape(n, cols * lane_bits)
    planes = flat.reshape(n * per, mem_bits).astype(np.uint64) << np.arange(mem_bits, dtype=np.uint64)
    return np.bitwise_or.reduce(planes, axis=1)


def beats_to_words(beats, cols: int, lane_bits: int, mem_bits: int) -> np.ndarray:
    per = -(-cols * lane_bits // mem_bits)
    n = len(beats) // per
    if not (1 <= lane_bits <= 62 and 1 <= mem_bits <= 64):
        raise ValueError(f"{lane_bits}-bit lanes in {mem_bits}-bit beats: lanes of 1..62 bits, beats of 1..64 bits")
    b = np.asarray([int(x) for x in beats[:n * per]] if not isinstance(beats, np.ndarray) else beats[:n * per],
                   dtype=np.uint64).reshape(n * per, 1)
    bits = ((b >> np.arange(mem_bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(n, per * mem_bits)
    lanes = bits[:, :cols * lane_bits].reshape(n, cols, lane_bits).astype(np.int64)
    return (lanes << np.arange(lane_bits, dtype=np.int64)).sum(axis=2, dtype=np.int64)


def _bits(v: np.ndarray, lane_bits: int) -> np.ndarray:
    """[n, k] integers -> [n, k * lane_bits] bits (two's complement, lane 0 and bit 0 first)."""
    v = (np.asarray(v, np.int64) & ((1 << lane_bits) - 1)).astype(np.uint64)
    n, k = v.shape
    return ((v[:, :, None] >> np.arange(lane_bits, dtype=np.uint64)) & np.uint64(1)).astype(np.uint8).reshape(n, k * lane_bits)


def bias_parts(cfg: AccelConfig) -> list[tuple[int, int]]:
    """The parts of a bias word, low bits first: (index into a [3, COLS] bias entry, bits per lane)."""
    from .program import PER_CHANNEL_BITS

    parts = [(0, cfg.acc_bits)]
    if cfg.pc_lane_bits:
        shift_bits = PER_CHANNEL_BITS["shift"]
        parts.append((1, shift_bits))
        if cfg.pc_lane_bits > shift_bits:
            parts.append((2, cfg.pc_lane_bits - shift_bits))
    return parts


def bias_words_to_beats(words: np.ndarray, cfg: AccelConfig) -> list[int]:
    """Bias words [n, 3, COLS] (bias, shift, mult per lane) -> external-memory beats: the biases in
    the low COLS*ACC_BITS bits, then (per-channel builds) the shifts, then the mults (docs/isa.md)."""
    w = np.asarray(words, np.int64)
    if w.ndim == 2:
        w = w[:, None, :]
    flat = np.concatenate([_bits(w[:, i], b) for i, b in bias_parts(cfg)], axis=1)
    per = cfg.bias_beats
    pad = np.zeros((flat.shape[0], per * cfg.mem_bits), np.uint8)
    pad[:, :flat.shape[1]] = flat
    planes = pad.reshape(-1, cfg.mem_bits).astype(np.uint64) << np.arange(cfg.mem_bits, dtype=np.uint64)
    return np.bitwise_or.reduce(planes, axis=1).tolist()


def beats_to_bias_words(beats, cfg: AccelConfig) -> np.ndarray:
    """Inverse of bias_words_to_beats: [n, 3, COLS] with the bias and shift signed, the mult
    unsigned (zero where the build stores no shift or mult)."""
    per = cfg.bias_beats
    n = len(beats) // per
    b = np.asarray([int(x) for x in beats[:n * per]], dtype=np.uint64).reshape(n * per, 1)
    bits = ((b >> np.arange(cfg.mem_bits, dtype=np.uint64)) & np.uint64(1)).astype(np.int64).reshape(n, -1)
    out = np.zeros((n, 3, cfg.cols), np.int64)
    pos = 0
    for i, lb in bias_parts(cfg):
        lanes = bits[:, pos:pos + cfg.cols * lb].reshape(n, cfg.cols, lb)
        v = (lanes << np.arange(lb, dtype=np.int64)).sum(axis=2)
        out[:, i] = np.where(v >> (lb - 1), v - (1 << lb), v) if i < 2 else v
        pos += cfg.cols * lb
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
    runs = -(-n // batch)
    if runs == 0:
        return np.asarray([], dtype=np.uint64)
    out = np.empty((runs, sum(inp["beats"] for inp in inputs)), np.uint64)
    col = 0
    for inp in inputs:  # blocks of runs at once: pack_act's words of run r are images r*batch.. of each group
        x = np.asarray(arrays[inp["key"]])
        if x.shape[0] < runs * batch:
            x = np.concatenate([x, np.zeros((runs * batch - x.shape[0],) + x.shape[1:], x.dtype)])
        g = -(-inp["c"] // cfg.cols)
        step = max(1, _RUN_BLOCK // max(g * cfg.cols * batch * inp["h"] * inp["w"], 1))
        for r0 in range(0, runs, step):
            r1 = min(r0 + step, runs)
            words = pack_act(x[r0 * batch:r1 * batch], inp["c"], inp["h"], inp["w"], cfg.cols, cfg.a_bits)
            words = words.reshape(g, r1 - r0, -1, cfg.cols).transpose(1, 0, 2, 3).reshape(-1, cfg.cols)
            beats = words_to_beat_array(words, cfg.a_bits, cfg.mem_bits).reshape(r1 - r0, -1)
            assert beats.shape[1] == inp["beats"], (inp["key"], beats.shape[1], inp["beats"])
            out[r0:r1, col:col + inp["beats"]] = beats
        col += inp["beats"]
    return out


_RUN_BLOCK = 1 << 16
"""Lane values per block of runs in run_beats (the temporaries stay in cache)."""
