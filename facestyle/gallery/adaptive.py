"""A gallery's own threshold: how high a stranger scores against *this* population.

One-shot identification says "unknown" when the best score is below a threshold. The model's default
(0.908 cosine for dlib's ResNet) was measured on LFW, where faces differ a lot. In a homogeneous
population (badge photos, one camera, one light) every face looks alike to the embedder and strangers
score higher, so the default lets them in. The gallery already holds a sample of exactly that: the
scores between templates of *different* enrolled identities are impostor scores of this population.

The estimate kept here is, for every identity, its **nearest other identity**: the highest cosine
between one of its templates and any template of another identity. A stranger's probe is compared
with all N identities and is accepted when its best score reaches the threshold, so what matters is
the distribution of a *maximum over N* impostor scores, and each identity's nearest other identity is
a draw of just that (a maximum over the N - 1 others). As N grows, these maxima grow, and so does the
threshold: the per-probe chance of a stranger getting in is accounted for without a model of the
tail of single scores. The threshold is the ``1 - target`` quantile of a normal fit to these N maxima
(mean + z * std). Measured on AT&T (benchmarks/open_set.py, 10 draws of who is enrolled, target 0.05),
strangers accepted at N = 10 / 20 / 30: 0.054 / 0.023 / 0.020 with rank-1 accepted 0.993 / 0.991 /
0.988, where the model default lets in 0.218 / 0.385 / 0.501. The plain empirical quantile of the N
maxima was noisier (0.115 / 0.066 / 0.074), and a normal fit of all pair scores pushed to the
``(1 - target) ** (1 / N)`` quantile too strict (rank-1 down to 0.962 at N = 30).

The effective threshold is never below the model's default, and with fewer than
:data:`MIN_IDENTITIES` identities the estimate is not trusted: the default is used, and the source
says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from facestyle.checks import require

#: The share of strangers accepted per probe the adaptive threshold aims at.
DEFAULT_TARGET = 0.05
#: Below this many identities the population says too little about itself: the default applies.
MIN_IDENTITIES = 5


@dataclass(frozen=True)
class ImpostorEstimate:
    """Per identity, the highest cosine between its templates and any other identity's."""

    nearest: np.ndarray  # (N,) float64, one per identity

    @property
    def identities(self) -> int:
        return int(self.nearest.size)

    def to_dict(self) -> dict:
        """The estimate as JSON (what a gallery stores and ``gallery stats`` shows)."""
        return {"identities": self.identities, "nearest": [round(float(v), 6) for v in self.nearest]}

    @classmethod
    def from_dict(cls, data: dict) -> ImpostorEstimate:
        return cls(np.asarray(data.get("nearest", []), dtype=np.float64))


def nearest_other_identity(vectors: np.ndarray, labels: Sequence[int] | np.ndarray) -> np.ndarray:
    """For each identity (labels ``0..N-1`` in order of first appearance is not required: sorted
    unique labels), the highest cosine between one of its unit-length ``vectors`` and any vector of
    another identity. Exact and brute force: ``(T, T)`` scores for ``T`` templates, in blocks."""
    vectors = np.asarray(vectors, dtype=np.float32)
    labels = np.asarray(labels)
    ids, codes = np.unique(labels, return_inverse=True)
    best = np.full(ids.size, -np.inf)
    block = 2048
    for start in range(0, len(vectors), block):
        scores = vectors[start : start + block] @ vectors.T  # (b, T)
        own = codes[start : start + block]
        scores[own[:, None] == codes[None, :]] = -np.inf  # the same identity is not an impostor
        np.maximum.at(best, own, scores.max(axis=1))
    return best


def estimate(vectors: np.ndarray, labels: Sequence[int] | np.ndarray) -> ImpostorEstimate:
    """The impostor estimate of templates ``vectors`` enrolled under ``labels``."""
    nearest = nearest_other_identity(vectors, labels) if len(vectors) else np.zeros(0)
    return ImpostorEstimate(nearest[np.isfinite(nearest)])


@dataclass(frozen=True)
class AdaptiveThreshold:
    """The threshold a gallery derives, and in words where it comes from."""

    threshold: float
    source: str
    adapted: bool  # False when the model's default applies (too few identities, or not higher)


def adaptive_threshold(
    est: ImpostorEstimate, default: float, target: float = DEFAULT_TARGET
) -> AdaptiveThreshold:
    """The threshold that accepts about ``target`` of strangers per probe in this population, never
    below ``default``: the ``1 - target`` quantile of a normal fit to the identities' nearest-other-
    identity scores."""
    require(0.0 < target < 1.0, "{target} must be between 0 and 1 (a share of strangers)", target=target)
    n = est.identities
    if n < MIN_IDENTITIES:
        why = f"model default (gallery of {n} identities; adapts from {MIN_IDENTITIES})"
        return AdaptiveThreshold(float(default), why, adapted=False)
    value = NormalDist(float(est.nearest.mean()), float(est.nearest.std(ddof=1))).inv_cdf(1.0 - target)
    if value <= default:
        why = f"model default (above the gallery's {value:.3f}: N={n}, target stranger rate {target:g})"
        return AdaptiveThreshold(float(default), why, adapted=False)
    return AdaptiveThreshold(value, f"gallery (N={n}, target stranger rate {target:g})", adapted=True)
