"""Closed- and open-set identification on folder-per-identity data.

Each gallery image is a template; a probe's score for an identity is its best cosine similarity over
that identity's templates (what a nearest-neighbour gallery search returns). Probes whose identity has
no gallery folder are *unknown* people: an open-set system must reject them, so the figures are the
detection-and-identification rate (DIR: known probes ranked first correctly AND scoring above the
threshold) at the threshold giving a chosen false-alarm rate (FAR: unknown probes accepted as someone).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facestyle.embed.features import FaceFeatures, FeatureTable
from facestyle.errors import UsageError
from facestyle.eval import metrics
from facestyle.io.folders import scan_labelled_folder
from facestyle.io.progress import Progress, no_progress

DEFAULT_FARS = (1e-2, 1e-1)


@dataclass
class IdentifyReport:
    model: str
    n_gallery_images: int
    n_gallery_identities: int
    n_known_probes: int
    n_unknown_probes: int
    rank1: float
    rank5: float
    open_set: list[dict]
    at_default_threshold: dict | None
    skipped: list[dict]
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def identity_scores(
    probe: np.ndarray, gallery: np.ndarray, gallery_labels: np.ndarray, n_ids: int
) -> np.ndarray:
    """(P, n_ids) best cosine similarity of each probe to each identity's templates (-inf: no template)."""
    sims = probe @ gallery.T
    out = np.full((len(probe), n_ids), -np.inf)
    for k in range(n_ids):
        cols = gallery_labels == k
        if cols.any():
            out[:, k] = sims[:, cols].max(axis=1)
    return out


def open_set_rates(
    scores: np.ndarray, truth: np.ndarray, known: np.ndarray, threshold: float
) -> tuple[float, float]:
    """(DIR, FAR) at ``threshold``: truth is each probe's gallery index (-1 for unknown people)."""
    top = scores.argmax(axis=1)
    best = scores.max(axis=1)
    accepted = best >= threshold
    dir_ = float(np.mean((top[known] == truth[known]) & accepted[known])) if known.any() else float("nan")
    far = float(np.mean(accepted[~known])) if (~known).any() else float("nan")
    return dir_, far


def evaluate_identification(
    gallery_dir: str | Path,
    probe_dir: str | Path,
    features: FaceFeatures,
    fars: tuple[float, ...] = DEFAULT_FARS,
    progress: Progress = no_progress,
) -> IdentifyReport:
    """Rank-1/5 and open-set figures: each gallery image a template, each probe scored against them."""
    t0 = time.perf_counter()
    gal = scan_labelled_folder(gallery_dir)
    pro = scan_labelled_folder(probe_dir)
    g_table = features.embed(gal.paths, progress)
    p_table = features.embed(pro.paths, progress)
    skipped = _skipped(g_table) + _skipped(p_table)
    g_ok, p_ok = g_table.ok, p_table.ok
    g_emb, p_emb = g_table.values, p_table.values
    if not g_ok.any() or not p_ok.any():
        raise UsageError("no usable faces in the gallery or in the probes")
    g_lab = gal.labels[g_ok]
    index_of = {name: i for i, name in enumerate(gal.names)}
    truth = np.array([index_of.get(pro.names[lab], -1) for lab in pro.labels[p_ok]])
    known = truth >= 0
    scores = identity_scores(
        p_emb[p_ok].astype(np.float64), g_emb[g_ok].astype(np.float64), g_lab, len(gal.names)
    )
    order = np.argsort(-scores, axis=1)
    rank1 = float(np.mean(order[known, 0] == truth[known])) if known.any() else float("nan")
    rank5 = (
        float(np.mean((order[known, :5] == truth[known, None]).any(axis=1))) if known.any() else float("nan")
    )
    notes = []
    open_set = []
    if (~known).any():
        unknown_best = scores[~known].max(axis=1)
        for far in fars:
            thr = metrics.threshold_for_far(unknown_best, far)
            dir_, got = open_set_rates(scores, truth, known, thr)
            open_set.append(
                {
                    "target_far": far,
                    "threshold": thr,
                    "far": got,
                    "dir": dir_,
                    "resolvable": bool(len(unknown_best) * far >= 1 - 1e-9),
                }
            )
    else:
        notes.append(
            "no unknown people among the probes: open-set figures need probe folders not in the gallery"
        )
    at_default = None
    thr = features.embedder.default_threshold
    if thr is not None:
        dir_, far = open_set_rates(scores, truth, known, float(thr))
        at_default = {"threshold": float(thr), "dir": dir_, "far": far}
    return IdentifyReport(
        model=features.embedder.name,
        n_gallery_images=int(g_ok.sum()),
        n_gallery_identities=len(np.unique(g_lab)),
        n_known_probes=int(known.sum()),
        n_unknown_probes=int((~known).sum()),
        rank1=rank1,
        rank5=rank5,
        open_set=open_set,
        at_default_threshold=at_default,
        skipped=skipped,
        seconds=time.perf_counter() - t0,
        notes=notes,
    )


def _skipped(table: FeatureTable) -> list[dict]:
    return [
        {"path": str(p), "reason": s if not e else f"{s}: {e}"}
        for p, s, e in zip(table.paths, table.status, table.errors, strict=True)
        if s != "ok"
    ]
