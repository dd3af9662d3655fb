"""Verification metrics over scored pairs, in plain numpy.

Convention everywhere: a *score* is a similarity (higher means "same person"), a pair is accepted as
"same" when ``score >= threshold``, labels are booleans (True = same identity). Genuine pairs are the
same-identity ones, impostor pairs the others; FAR is the share of impostor pairs accepted and TAR the
share of genuine pairs accepted.

The 10-fold accuracy follows the LFW protocol: for each fold the threshold is the one with the best
accuracy on the other nine folds, and the reported number is the mean (and population std) of the ten
held-out accuracies, so no pair is ever scored with a threshold tuned on itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


def _as_arrays(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{len(s)} scores but {len(y)} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite")
    return s, y


def accuracy_at(scores, labels, threshold: float) -> float:
    """Share of pairs classified correctly by ``score >= threshold``."""
    s, y = _as_arrays(scores, labels)
    return float(np.mean((s >= threshold) == y)) if len(s) else float("nan")


def candidate_thresholds(scores) -> np.ndarray:
    """Every threshold that gives a distinct decision: midpoints between sorted unique scores, plus ends.

    Accuracy is a step function of the threshold that only changes at a score, so checking one point
    per interval (its midpoint, robust to rounding when applied to new pairs) is exhaustive.
    """
    u = np.unique(np.asarray(scores, dtype=np.float64))
    if len(u) == 0:
        return np.array([0.0])
    mids = (u[:-1] + u[1:]) / 2.0
    pad = max(1e-6, 1e-6 * float(np.max(np.abs(u))))
    return np.concatenate([[u[0] - pad], mids, [u[-1] + pad]])


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy; among equal-accuracy thresholds, the median one.

    Sorting once and counting with cumulative sums makes this O(n log n) rather than O(n^2).
    """
    s, y = _as_arrays(scores, labels)
    cands = candidate_thresholds(s)
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    # Pairs with score < t are rejected: how many are below each candidate.
    below = np.searchsorted(s_sorted, cands, side="left")
    genuine_below = np.concatenate([[0], np.cumsum(y_sorted)])[below]
    impostor_below = below - genuine_below
    n_gen = int(y.sum())
    correct = impostor_below + (n_gen - genuine_below)
    acc = correct / max(len(s), 1)
    best = np.flatnonzero(correct == correct.max())
    pick = best[len(best) // 2]
    return float(cands[pick]), float(acc[pick])


def default_folds(labels, n_folds: int = 10) -> np.ndarray:
    """Fold index per pair: genuine and impostor pairs each cut into ``n_folds`` contiguous blocks.

    LFW View 2 lists each fold as a block of same then different pairs; View 1 lists all same pairs
    then all different ones. Splitting each label's pairs in file order into contiguous blocks gives
    View 2's folds exactly and balanced folds for View 1 and CSV files.
    """
    y = np.asarray(labels).astype(bool).ravel()
    folds = np.empty(len(y), dtype=np.int64)
    for value in (True, False):
        idx = np.flatnonzero(y == value)
        folds[idx] = (np.arange(len(idx)) * n_folds) // max(len(idx), 1)
    return folds


@dataclass
class KFoldResult:
    """Held-out accuracies and the thresholds that produced them, one per fold."""

    accuracies: np.ndarray
    thresholds: np.ndarray
    mean: float = field(init=False)
    std: float = field(init=False)

    def __post_init__(self) -> None:
        self.mean = float(np.mean(self.accuracies)) if len(self.accuracies) else float("nan")
        self.std = float(np.std(self.accuracies)) if len(self.accuracies) else float("nan")


def kfold_accuracy(scores, labels, folds=None, n_folds: int = 10) -> KFoldResult:
    """LFW-protocol accuracy: threshold tuned on the other folds, accuracy measured on each fold."""
    s, y = _as_arrays(scores, labels)
    f = default_folds(y, n_folds) if folds is None else np.asarray(folds, dtype=np.int64).ravel()
    if f.shape != s.shape:
        raise ValueError("one fold index per pair is needed")
    accs, thrs = [], []
    for k in np.unique(f):
        test = f == k
        if test.all():  # a single fold: nothing to tune on
            continue
        thr, _ = best_threshold(s[~test], y[~test])
        accs.append(np.mean((s[test] >= thr) == y[test]))
        thrs.append(thr)
    return KFoldResult(np.asarray(accs, dtype=np.float64), np.asarray(thrs, dtype=np.float64))


@dataclass
class Roc:
    """ROC points for decreasing thresholds, starting at (0, 0) and ending at (1, 1)."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores, labels) -> Roc:
    """All (FAR, TAR) operating points, one per distinct score (ties move both rates at once)."""
    s, y = _as_arrays(scores, labels)
    n_gen, n_imp = int(y.sum()), int((~y).sum())
    if n_gen == 0 or n_imp == 0:
        raise ValueError("a ROC needs both genuine and impostor pairs")
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s_sorted)), len(s) - 1]
    tp = np.cumsum(y_sorted)[last_of_tie]
    fp = (last_of_tie + 1) - tp
    fpr = np.r_[0.0, fp / n_imp]
    tpr = np.r_[0.0, tp / n_gen]
    thr = np.r_[np.inf, s_sorted[last_of_tie]]
    return Roc(fpr, tpr, thr)


def auc(roc: Roc) -> float:
    """Area under the ROC curve by the trapezoid rule (exact for the step curve with ties as diagonals)."""
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2.0))


def equal_error_rate(scores, labels) -> tuple[float, float]:
    """(EER, threshold): where the false-reject rate equals the false-accept rate.

    The ROC is piecewise linear between operating points, so the crossing of FRR = 1 - TAR with FAR is
    found by linear interpolation on the segment where their difference changes sign.
    """
    roc = roc_curve(scores, labels)
    frr = 1.0 - roc.tpr
    diff = frr - roc.fpr  # decreasing from 1 to -1
    i = int(np.flatnonzero(diff <= 0)[0])
    if diff[i] == 0 or i == 0:
        thr = (
            roc.thresholds[i] if np.isfinite(roc.thresholds[i]) else roc.thresholds[min(i + 1, len(diff) - 1)]
        )
        return float(roc.fpr[i]), float(thr)
    t = diff[i - 1] / (diff[i - 1] - diff[i])
    eer = roc.fpr[i - 1] + t * (roc.fpr[i] - roc.fpr[i - 1])
    hi = roc.thresholds[i - 1] if np.isfinite(roc.thresholds[i - 1]) else roc.thresholds[i]
    thr = hi + t * (roc.thresholds[i] - hi)
    return float(eer), float(thr)


def threshold_for_far(impostor_scores, far: float) -> float:
    """The lowest threshold whose false-accept rate on these impostor scores is at most ``far``.

    With n impostor scores at most floor(far * n) of them may be accepted, so the threshold sits just
    above the (floor(far * n) + 1)-th highest one. When far * n < 1 that is above every impostor score:
    the measured FAR is then 0 and the target is only resolved if n >= 1 / far (callers should say so).
    """
    imp = np.sort(np.asarray(impostor_scores, dtype=np.float64).ravel())[::-1]
    if len(imp) == 0:
        raise ValueError("no impostor scores")
    allowed = int(np.floor(far * len(imp) + 1e-9))
    if allowed >= len(imp):
        return float(imp[-1])
    return float(np.nextafter(imp[allowed], np.inf))


@dataclass
class OperatingPoint:
    """A threshold and the rates it gives on the measured pairs."""

    target_far: float
    threshold: float
    far: float
    tar: float
    resolvable: bool  # enough impostor pairs to measure this FAR (n_impostor >= 1 / far)


def tar_at_far(scores, labels, far: float) -> OperatingPoint:
    """True-accept rate at the threshold :func:`threshold_for_far` picks on the impostor pairs."""
    s, y = _as_arrays(scores, labels)
    thr = threshold_for_far(s[~y], far)
    return OperatingPoint(
        target_far=far,
        threshold=thr,
        far=float(np.mean(s[~y] >= thr)),
        tar=float(np.mean(s[y] >= thr)) if y.any() else float("nan"),
        resolvable=bool((~y).sum() * far >= 1.0 - 1e-9),
    )
