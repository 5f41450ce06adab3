"""Device inputs of many samples as the accelerator's per-run memory contents.

A build's manifest lists each device input with its place in memory (`ext`, `beats`, `offset`
in a run's row) and its layout (n samples per run, c channels, h x w pixels; docs/isa.md,
'Activation layout'). `run_beats` turns the integer inputs of any number of samples into one
row of external-memory beats per run, so `tony compile` and `tony sim --inputs` write the same.
"""
from __future__ import annotations

import numpy as np

from .schedule import AccelConfig, pack_act, words_to_beats


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
