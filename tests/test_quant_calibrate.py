"""Calibrators: KL-J against a hand-computed case, the others against their definitions."""
import math

import numpy as np
import pytest

from tony.quant.calibrate import (kl_j_divergences, pow2_scale, threshold_kl_j, threshold_max, threshold_mse,
                                  threshold_percentile, weight_threshold)


def _j(p, q):
    return sum((a - b) * math.log(a / b) for a, b in zip(p, q))


def test_kl_j_threshold_equals_hand_computed_value():
    # 16 values -> sqrt(16) = 4 bins of width 1 over [0, 4]; counts 8, 4, 3, 1.
    # 2 bits signed -> M = 2 levels; candidates: bins 3 (t = 3) and 4 (t = 4).
    v = np.array([0.5] * 8 + [-1.5] * 4 + [2.5] * 3 + [-4.0])
    # t = 3: P = [8, 4, 3+1]/16; coarse CDF at 0, 1.5, 3 = 0, 0.625, 1; back at 1, 2, 3:
    # 0.625/1.5, 0.625 + 0.375/3, 1  ->  Q = [5/12, 1/3, 1/4]
    j3 = _j([1 / 2, 1 / 4, 1 / 4], [5 / 12, 1 / 3, 1 / 4])
    # t = 4: P = [8, 4, 3, 1]/16; coarse CDF at 0, 2, 4 = 0, 0.75, 1; back at 1..4: .375 .75 .875 1
    j4 = _j([1 / 2, 1 / 4, 3 / 16, 1 / 16], [3 / 8, 3 / 8, 1 / 8, 1 / 8])
    ts, js = kl_j_divergences(v, bits=2, signed=True)
    assert ts.tolist() == [3.0, 4.0]
    assert js == pytest.approx([j3, j4], rel=1e-12)
    assert j3 < j4
    assert threshold_kl_j(v, bits=2, signed=True) == 3.0
    assert pow2_scale(threshold_kl_j(v, 2, True), 2, True) == 4.0 / 2  # 2^ceil(log2 3) / 2^(2-1)


def test_kl_j_clips_a_long_tail_and_keeps_a_compact_distribution():
    rng = np.random.default_rng(0)
    print("seed=0")
    compact = rng.uniform(-1, 1, 20000)
    assert pow2_scale(threshold_kl_j(compact, 8, True), 8, True) * 128 == 1.0  # no clipping after the ceil
    tail = np.concatenate([rng.normal(0, 1, 20000), [60.0]])
    t = threshold_kl_j(tail, 4, True)  # 141 bins of 0.43: candidates from bin 9 (t = 3.8) on
    assert 3.8 < t < 20.0


def test_max_percentile_and_weight_thresholds():
    v = np.arange(-1000, 1001, dtype=np.float64)
    assert threshold_max(v) == 1000
    assert threshold_percentile(v) == pytest.approx(np.percentile(np.abs(v), 99.99))
    w = np.array([1.0, -1.0] * 50 + [8.0])
    assert weight_threshold(w, "max") == 8.0
    assert abs(w.mean()) + 3 * w.std() < 8.0
    assert weight_threshold(w, "3sd") == pytest.approx(abs(w.mean()) + 3 * w.std())


def test_mse_threshold_is_the_best_power_of_two():
    rng = np.random.default_rng(1)
    print("seed=1")
    v = np.concatenate([rng.normal(0, 1, 5000), [100.0]])
    t = threshold_mse(v, 4, True)
    assert math.log2(t) == int(math.log2(t))

    def err(tt):
        s = tt / 8
        return np.mean((np.clip(np.rint(v / s), -8, 7) * s - v) ** 2)
    assert all(err(t) <= err(2.0**e) for e in range(-3, 8))
