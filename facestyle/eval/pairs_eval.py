"""Evaluate a face pipeline on a pairs file: embed every image once, score pairs, compute the metrics.

Pairs whose image has no detectable face are skipped and reported (with the line of the pairs file),
like pairs whose file is missing: the protocol's accuracy is then over the pairs used, and the report
says how many were left out so the number is never silently flattered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from facestyle.embed.features import FaceFeatures
from facestyle.eval import metrics
from facestyle.eval.pairs_file import PairList, SkippedPair
from facestyle.io.progress import Progress, no_progress

TARGET_FARS = (1e-2, 1e-3)


@dataclass
class PairsReport:
    """Everything ``eval pairs`` prints; :meth:`to_dict` is the ``--json`` document."""

    model: str
    score: str
    n_pairs: int
    n_same: int
    n_different: int
    accuracy: float
    accuracy_std: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    auc: float
    eer: float
    eer_threshold: float
    best_threshold: float
    best_threshold_accuracy: float
    tar_at_far: list[dict]
    skipped: list[dict]
    n_images: int
    seconds: float
    warnings: list[str] = field(default_factory=list)
    scores: np.ndarray | None = None
    labels: np.ndarray | None = None

    def to_dict(self) -> dict:
        d = {k: v for k, v in self.__dict__.items() if k not in ("scores", "labels")}
        d["n_skipped"] = len(self.skipped)
        return d


def score_pair_list(
    pairs: PairList, features: FaceFeatures, progress: Progress = no_progress
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[SkippedPair], int]:
    """(scores, labels, folds, skipped, n_images): each unique image embedded once, in batches."""
    images = pairs.image_paths()
    table = features.embed(images, progress)
    row = {p: i for i, p in enumerate(images)}
    skipped = list(pairs.skipped)
    keep = []
    for idx, p in enumerate(pairs.pairs):
        bad = [row[q] for q in (p.path1, p.path2) if table.status[row[q]] != "ok"]
        if bad:
            reason = "; ".join(
                f"{table.status[i].replace('_', ' ')}: {table.paths[i]}"
                + (f" ({table.errors[i]})" if table.errors[i] else "")
                for i in bad
            )
            skipped.append(SkippedPair(p.line, str(p.path1), str(p.path2), p.same, reason))
        else:
            keep.append(idx)
    used = [pairs.pairs[i] for i in keep]
    emb = table.values
    a = emb[[row[p.path1] for p in used]] if used else np.zeros((0, emb.shape[1]), np.float32)
    b = emb[[row[p.path2] for p in used]] if used else np.zeros((0, emb.shape[1]), np.float32)
    scores = features.embedder.score_pairs(a, b) if used else np.zeros(0)
    labels = np.array([p.same for p in used], dtype=bool)
    if pairs.n_folds:
        folds = np.array([p.fold for p in used], dtype=np.int64)
    else:  # folds from the complete file order, so a skipped pair does not shift every later fold
        all_folds = metrics.default_folds([p.same for p in pairs.pairs])
        folds = all_folds[keep] if keep else np.zeros(0, np.int64)
    skipped.sort(key=lambda s: s.line)
    return scores, labels, folds, skipped, len(images)


def summarise(
    scores: np.ndarray,
    labels: np.ndarray,
    folds: np.ndarray | None,
    *,
    model: str,
    score_kind: str = "cosine",
    skipped: list[SkippedPair] = (),
    n_images: int = 0,
    seconds: float = 0.0,
    warnings: list[str] = (),
) -> PairsReport:
    """All verification metrics of scored pairs (needs both same and different pairs)."""
    from facestyle.errors import UsageError

    if labels.all() or (~labels).all():
        raise UsageError(f"need both same and different pairs to evaluate; usable pairs: {len(labels)}")
    kf = metrics.kfold_accuracy(scores, labels, folds)
    roc = metrics.roc_curve(scores, labels)
    eer, eer_thr = metrics.equal_error_rate(scores, labels)
    thr, thr_acc = metrics.best_threshold(scores, labels)
    ops = [metrics.tar_at_far(scores, labels, far) for far in TARGET_FARS]
    return PairsReport(
        model=model,
        score=score_kind,
        n_pairs=int(len(labels)),
        n_same=int(labels.sum()),
        n_different=int((~labels).sum()),
        accuracy=kf.mean,
        accuracy_std=kf.std,
        fold_accuracies=kf.accuracies.tolist(),
        fold_thresholds=kf.thresholds.tolist(),
        auc=metrics.auc(roc),
        eer=eer,
        eer_threshold=eer_thr,
        best_threshold=thr,
        best_threshold_accuracy=thr_acc,
        tar_at_far=[op.__dict__ for op in ops],
        skipped=[s.to_dict() for s in skipped],
        n_images=n_images,
        seconds=seconds,
        warnings=list(warnings),
        scores=scores,
        labels=labels,
    )


def evaluate_pairs(pairs: PairList, features: FaceFeatures, progress: Progress = no_progress) -> PairsReport:
    """Embed, score and summarise one pairs list with one model (``features``: the pipeline's feature
    service, e.g. ``FacePipeline(...).features(face="central")``)."""
    t0 = time.perf_counter()
    scores, labels, folds, skipped, n_images = score_pair_list(pairs, features, progress)
    emb = features.embedder
    return summarise(
        scores,
        labels,
        folds,
        model=emb.name,
        score_kind=emb.score_kind,
        skipped=skipped,
        n_images=n_images,
        seconds=time.perf_counter() - t0,
        warnings=pairs.warnings,
    )
