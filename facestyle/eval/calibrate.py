"""Pick the operating threshold for a target false-accept rate from real pairs.

Input is either a pairs file (LFW or CSV) or a folder-per-identity directory, from which every pair of
images is scored (n images give n(n-1)/2 pairs, so a few hundred images already give tens of thousands
of impostor pairs, enough to resolve a FAR of 1e-3). The threshold is the lowest one whose measured FAR
is at most the target; the report says how many impostor pairs the estimate rests on and whether that is
enough (at least 1/FAR of them).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facestyle.embed.features import FaceFeatures
from facestyle.errors import ParameterError, UsageError
from facestyle.eval import metrics
from facestyle.eval.pairs_eval import score_pair_list
from facestyle.eval.pairs_file import read_pairs
from facestyle.io.folders import scan_labelled_folder
from facestyle.io.progress import Progress, no_progress


@dataclass
class Calibration:
    model: str
    source: str
    target_far: float
    threshold: float
    far: float
    tar: float
    n_genuine: int
    n_impostor: int
    resolvable: bool
    n_skipped: int
    seconds: float

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def describe(self) -> str:
        """The provenance string stored next to the threshold."""
        return (
            f"calibrated at FAR {self.target_far:g} on {self.source} "
            f"({self.n_genuine} genuine / {self.n_impostor} impostor pairs; measured FAR {self.far:.2e}, "
            f"TAR {self.tar:.4f})"
        )


def folder_scores(
    root: Path, features: FaceFeatures, progress: Progress = no_progress
) -> tuple[np.ndarray, np.ndarray, int]:
    """(scores, same, n_skipped) over every pair of images of a folder-per-identity tree."""
    data = scan_labelled_folder(root)
    table = features.embed(data.paths, progress)
    ok = table.ok
    emb, labels = table.values[ok], data.labels[ok]
    i, j = np.triu_indices(len(labels), k=1)
    scores = features.embedder.score_pairs(emb[i], emb[j])
    return scores, labels[i] == labels[j], int((~ok).sum())


def calibrate(
    source: str | Path,
    features: FaceFeatures,
    far: float,
    images_dir: str | Path | None = None,
    progress: Progress = no_progress,
) -> Calibration:
    """The threshold for false-accept rate ``far`` on ``source`` (a pairs file, or a folder per person)."""
    if not 0 < far < 1:
        raise ParameterError("{far} must be between 0 and 1", far=far)
    t0 = time.perf_counter()
    source = Path(source)
    if source.is_dir():
        scores, same, n_skipped = folder_scores(source, features, progress)
    elif source.is_file():
        scores, same, _, skipped, _ = score_pair_list(read_pairs(source, images_dir), features, progress)
        n_skipped = len(skipped)
    else:
        raise UsageError(f"not a pairs file or an identity folder: {source}")
    if (~same).sum() == 0 or same.sum() == 0:
        raise UsageError("calibration needs both same-person and different-person pairs")
    op = metrics.tar_at_far(scores, same, far)
    return Calibration(
        model=features.embedder.name,
        source=str(source),
        target_far=far,
        threshold=op.threshold,
        far=op.far,
        tar=op.tar,
        n_genuine=int(same.sum()),
        n_impostor=int((~same).sum()),
        resolvable=op.resolvable,
        n_skipped=n_skipped,
        seconds=time.perf_counter() - t0,
    )
