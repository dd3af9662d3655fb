"""Verification metrics against hand-computed cases and brute-force recomputation (no sklearn here)."""

from __future__ import annotations

import numpy as np
import pytest

from facestyle.eval.metrics import (
    accuracy_at,
    auc,
    best_threshold,
    default_folds,
    equal_error_rate,
    kfold_accuracy,
    roc_curve,
    tar_at_far,
    threshold_for_far,
)


def _scored_pairs(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.r_[np.ones(n // 2, bool), np.zeros(n // 2, bool)]
    scores = np.where(labels, rng.normal(0.6, 0.15, n), rng.normal(0.2, 0.15, n))
    return np.round(scores, 3), labels  # rounding creates ties on purpose


def _brute_best_accuracy(s: np.ndarray, y: np.ndarray) -> float:
    grid = np.r_[s, s - 1e-9, s + 1e-9, s.min() - 1, s.max() + 1]
    return max(np.mean((s >= t) == y) for t in grid)


def test_best_threshold_hand_case():
    s = np.array([0.9, 0.8, 0.3, 0.7, 0.2, 0.1])
    y = np.array([True, True, True, False, False, False])
    # thresholds in (0.7, 0.8] accept 0.9, 0.8: 5/6 correct; (0.3, 0.7] also accepts 0.7: 4/6; (0.2,0.3]: 5/6
    thr, acc = best_threshold(s, y)
    assert acc == pytest.approx(5 / 6)
    assert accuracy_at(s, y, thr) == pytest.approx(5 / 6)
    assert thr in (pytest.approx(0.75), pytest.approx(0.25))


def test_best_threshold_matches_brute_force():
    s, y = _scored_pairs()
    thr, acc = best_threshold(s, y)
    assert acc == pytest.approx(_brute_best_accuracy(s, y))
    assert accuracy_at(s, y, thr) == pytest.approx(acc)


def test_default_folds_are_balanced_contiguous_blocks():
    y = np.r_[np.ones(20, bool), np.zeros(20, bool)]
    f = default_folds(y, 10)
    assert f[:20].tolist() == [i // 2 for i in range(20)]
    assert f[20:].tolist() == [i // 2 for i in range(20)]


def test_kfold_accuracy_matches_independent_loop():
    s, y = _scored_pairs(600, seed=1)
    folds = np.r_[np.arange(300) // 30, np.arange(300) // 30]
    res = kfold_accuracy(s, y)
    accs = []
    for k in range(10):
        test = folds == k
        train_s, train_y = s[~test], y[~test]
        # Independent tuning: exhaustive search over every observed score as a threshold.
        cands = np.unique(train_s)
        train_acc = [np.mean((train_s >= t) == train_y) for t in cands]
        best = max(train_acc)
        # the chosen threshold is optimal on the nine tuning folds, and the fold's accuracy is its accuracy
        assert np.mean((train_s >= res.thresholds[k]) == train_y) == pytest.approx(best)
        assert res.accuracies[k] == pytest.approx(np.mean((s[test] >= res.thresholds[k]) == y[test]))
        assert test.sum() == 60 and y[test].sum() == 30
        accs.append(res.accuracies[k])
    assert res.mean == pytest.approx(np.mean(accs))
    assert res.std == pytest.approx(np.std(accs))
    assert 0.8 < res.mean < 1.0


def test_roc_auc_equals_mann_whitney_probability():
    s, y = _scored_pairs(300, seed=2)
    gen, imp = s[y], s[~y]
    wins = sum((g > i) + 0.5 * (g == i) for g in gen for i in imp) / (len(gen) * len(imp))
    roc = roc_curve(s, y)
    assert auc(roc) == pytest.approx(wins, abs=1e-12)
    assert roc.fpr[0] == 0 and roc.tpr[0] == 0 and roc.fpr[-1] == 1 and roc.tpr[-1] == 1
    # each point's rates are what its threshold gives
    for far, tar, t in zip(roc.fpr[1:], roc.tpr[1:], roc.thresholds[1:], strict=True):
        assert far == pytest.approx(np.mean(imp >= t)) and tar == pytest.approx(np.mean(gen >= t))


def test_auc_perfect_and_reversed():
    y = np.array([True, True, False, False])
    assert auc(roc_curve([0.9, 0.8, 0.2, 0.1], y)) == 1.0
    assert auc(roc_curve([0.1, 0.2, 0.8, 0.9], y)) == 0.0


def test_equal_error_rate_hand_case_and_brute_force():
    # genuine 0.9 0.8 0.6 0.4 ; impostor 0.7 0.3 0.2 0.1. At t in (0.6, 0.7]: FRR=2/4... at t in (0.4, 0.6]:
    # FRR = 1/4 (0.4 rejected), FAR = 1/4 (0.7 accepted) -> EER 0.25
    s = np.array([0.9, 0.8, 0.6, 0.4, 0.7, 0.3, 0.2, 0.1])
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0], bool)
    eer, thr = equal_error_rate(s, y)
    assert eer == pytest.approx(0.25)
    assert np.mean(s[~y] >= thr) == pytest.approx(0.25) and np.mean(s[y] < thr) == pytest.approx(0.25)

    s, y = _scored_pairs(500, seed=4)
    eer, _ = equal_error_rate(s, y)
    grid = np.linspace(s.min() - 0.01, s.max() + 0.01, 20001)
    far = np.array([np.mean(s[~y] >= t) for t in grid])
    frr = np.array([np.mean(s[y] < t) for t in grid])
    k = np.argmin(np.abs(far - frr))
    assert eer == pytest.approx((far[k] + frr[k]) / 2, abs=0.01)


def test_threshold_for_far_hand_cases():
    imp = np.arange(100) / 100.0  # 0.00 .. 0.99
    t = threshold_for_far(imp, 0.05)  # may accept 5: 0.95..0.99
    assert np.sum(imp >= t) == 5 and t > 0.94
    t0 = threshold_for_far(imp, 1e-3)  # 0.1 of a pair: accept none
    assert np.sum(imp >= t0) == 0 and t0 == pytest.approx(0.99)


def test_tar_at_far_reports_resolvability():
    s, y = _scored_pairs(400, seed=5)  # 200 impostors
    op = tar_at_far(s, y, 1e-2)
    assert op.resolvable and op.far <= 1e-2
    assert op.tar == pytest.approx(np.mean(s[y] >= op.threshold))
    # lowering the threshold any further would exceed the FAR target (no slack left)
    imp = np.sort(s[~y])[::-1]
    assert np.mean(s[~y] >= imp[int(0.01 * 200)]) > 1e-2
    assert not tar_at_far(s, y, 1e-3).resolvable
