"""Helpers shared by the unit testbenches: clock/reset, idle patterns, seeds, signed reads."""
from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge, RisingEdge

CLOCK_PERIOD_NS = 10


def start_clock(clk, impl: str | None = None) -> None:
    """A CLOCK_PERIOD_NS clock on `clk`; impl "gpi" toggles it in the simulator interface (C++), no
    Python woken per edge (cocotb's default, "py", wakes a coroutine at every edge)."""
    Clock(clk, CLOCK_PERIOD_NS, unit="ns", impl=impl).start()


async def reset(clk, rst_n, cycles: int = 2) -> None:
    """Hold the synchronous active-low reset for `cycles` rising edges; return at a falling edge."""
    await FallingEdge(clk)
    rst_n.value = 0
    for _ in range(cycles):
        await RisingEdge(clk)
    await FallingEdge(clk)
    rst_n.value = 1


def log_seed(dut) -> random.Random:
    """Log this test's seed and return an RNG seeded from it.

    cocotb derives each test's seed from the regression seed (COCOTB_RANDOM_SEED, logged at
    start-up as "Seeding Python random module with N") and the test's name, so rerunning
    with the same COCOTB_RANDOM_SEED repeats the test exactly.
    """
    dut._log.info("test seed %d (set COCOTB_RANDOM_SEED to the start-up seed to repeat it)", cocotb.RANDOM_SEED)
    return random.Random(cocotb.RANDOM_SEED)


# Idle ("pause") patterns, as in cocotbext-axi: an iterator yielding True for a cycle in which
# the driver must not present data.
def no_pause() -> Iterator[bool]:
    return itertools.repeat(False)


def cycle_pause() -> Iterator[bool]:
    return itertools.cycle([True, True, True, False])


def random_pause(rng: random.Random, p_idle: float = 0.3) -> Iterator[bool]:
    while True:
        yield rng.random() < p_idle


PAUSES = {"none": no_pause, "cycle": cycle_pause, "random": random_pause}


def make_pause(kind: str, rng: random.Random) -> Iterator[bool]:
    return random_pause(rng) if kind == "random" else PAUSES[kind]()


def signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def unpack(word: int, count: int, bits: int, is_signed: bool = True) -> list[int]:
    """Split a packed bus (element i at word[i*bits +: bits]) into `count` integers."""
    mask = (1 << bits) - 1
    out = [(word >> (i * bits)) & mask for i in range(count)]
    return [signed(v, bits) for v in out] if is_signed else out


def pack(values, bits: int) -> int:
    """Inverse of unpack: element i goes to word[i*bits +: bits] (two's complement)."""
    mask = (1 << bits) - 1
    word = 0
    for i, v in enumerate(values):
        word |= (int(v) & mask) << (i * bits)
    return word


def run_unit_bench(module_name: str, toplevel: str, tmp_path, *, parameters=None, render_params=None,
                   extra_env=None, extra_sources=(), build_args=None) -> None:
    """Render `toplevel` (and what it instantiates) into tmp_path/rtl and run the cocotb tests of
    `module_name` on it with HDL `parameters` (or defaults baked in by `render_params`), with
    `extra_sources` (models of vendor primitives) and simulator `build_args` (defines) added.
    COCOTB_RANDOM_SEED in the environment repeats a run."""
    import os

    from tony.rtl import render_to
    from tony.sim import run_cocotb

    sources = render_to(tmp_path / "rtl", toplevel, **(render_params or {}))
    seed = os.environ.get("COCOTB_RANDOM_SEED")
    run_cocotb([*sources, *extra_sources], toplevel, module_name, parameters=parameters, build_dir=tmp_path / "build",
               extra_env=extra_env, seed=int(seed) if seed else None, build_args=build_args)


def load_runs(build, golden, n_samples: int, batch: int):
    """The device inputs' memory contents, one row per run: beside the golden vectors for new
    inputs (`tony sim --inputs` writes them there), else the build's own (mem/runs.npy)."""
    import numpy as np
    from pathlib import Path

    path = Path(golden) / "runs.npy"
    if not path.is_file():
        path = Path(build) / "mem" / "runs.npy"
    runs = np.load(path, allow_pickle=False).astype(np.uint64)
    n_runs = -(-n_samples // batch)
    assert len(runs) == n_runs, f"{path}: {len(runs)} runs for {n_samples} golden samples in batches of {batch}"
    return runs


def compare_run(report: dict, hw: dict, key: str, run: int, lo: int, y, want, keep: int = 10) -> None:
    """Compare one run's output `y` of tensor `key` (samples lo..) with `want`: count the compared
    values and mismatches in `report`, keep the first `keep` mismatches, collect `y` in hw[key]."""
    import numpy as np

    hw[key].append(y)
    bad = np.argwhere(y != want)
    for idx in bad[: max(0, keep - len(report["first_mismatches"]))]:
        report["first_mismatches"].append({"tensor": key, "run": run,
                                           "index": [int(lo + idx[0])] + [int(i) for i in idx[1:]],
                                           "expected": int(want[tuple(idx)]), "got": int(y[tuple(idx)])})
    report["mismatches"] += int(len(bad))
    report["compared"] += int(y.size)


def finish_report(dut, report: dict, hw: dict, result_path) -> None:
    """Total cycles, the hardware's outputs as hw_<key>.npy beside the result, the result JSON."""
    import json

    import numpy as np

    report["cycles"] = sum(r["cycles"] for r in report["runs"])
    for k, parts in hw.items():
        if parts:
            np.save(result_path.parent / f"hw_{k}.npy", np.concatenate(parts))
    result_path.write_text(json.dumps(report, indent=1) + "\n")
    if report["mismatches"]:
        dut._log.error("%d mismatching elements; first: %s", report["mismatches"], report["first_mismatches"][:3])
