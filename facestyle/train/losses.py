"""Triplet loss and in-batch triplet mining, as pure torch functions.

The loss is FaceNet's ``L = max(d(A, P) - d(A, N) + alpha, 0)`` on L2-normalised embeddings. Only a few
triplets of a random batch violate the margin, so which ones a batch trains on (the *mining*) decides
whether training moves at all:

- **batch-hard** (Hermans, Beyer & Leibe 2017): for every anchor, its farthest positive and its
  closest negative in the batch. Strong signal; sensitive to label noise.
- **semi-hard** (Schroff, Kalenichenko & Philbin 2015): for every anchor-positive pair, the closest
  negative that is still *farther* than the positive (``d(A,P) < d(A,N)``), so the gradient never asks
  to collapse the space. When no such negative exists (every negative is already closer than the
  positive), the farthest negative is used, as FaceNet's reference implementation does: the least
  aggressive choice, which keeps early training from collapsing all embeddings to a point.

Mining returns indices (so tests can check the chosen triplets by hand) and the loss functions only
gather and reduce. Distances are Euclidean by default (``squared=True`` gives FaceNet's squared form);
on unit vectors d lies in [0, 2] and alpha = 0.2 is the usual margin.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

_EPS = 1e-12


def pairwise_distances(x: torch.Tensor, squared: bool = False) -> torch.Tensor:
    """(N, D) -> (N, N) Euclidean distances, with a zero diagonal and a finite gradient at 0.

    Computed from the Gram matrix (one matmul) and clamped at 0 against rounding. The square root's
    gradient is infinite at 0 (the diagonal, duplicate images), so zeros are shifted by eps before the
    root and masked back afterwards.
    """
    gram = x @ x.t()
    sq = gram.diagonal()
    d2 = (sq.unsqueeze(0) - 2.0 * gram + sq.unsqueeze(1)).clamp_min(0.0)
    d2 = d2 * (1.0 - torch.eye(len(x), dtype=x.dtype, device=x.device))
    if squared:
        return d2
    zero = d2 == 0
    d = torch.sqrt(d2 + zero.to(d2.dtype) * _EPS)
    return d * (~zero).to(d.dtype)


def triplet_loss(
    anchor: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    margin: float = 0.2,
    squared: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """``max(d(a, p) - d(a, n) + margin, 0)`` for explicit (N, D) triplets."""
    d_ap = (anchor - positive).pow(2).sum(dim=1)
    d_an = (anchor - negative).pow(2).sum(dim=1)
    if not squared:
        d_ap, d_an = torch.sqrt(d_ap + _EPS), torch.sqrt(d_an + _EPS)
    losses = torch.relu(d_ap - d_an + margin)
    return _reduce(losses, reduction)


def _reduce(losses: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return losses.mean() if losses.numel() else losses.sum()
    if reduction == "sum":
        return losses.sum()
    if reduction == "none":
        return losses
    raise ValueError(f"unknown reduction {reduction!r}")


def _masks(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Boolean (N, N) masks: same identity excluding self, and different identity."""
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    eye = torch.eye(len(labels), dtype=torch.bool, device=labels.device)
    return same & ~eye, ~same


@dataclass
class Triplets:
    """Mined triplets as index tensors into the batch (all of equal length)."""

    anchor: torch.Tensor
    positive: torch.Tensor
    negative: torch.Tensor

    def __len__(self) -> int:
        return len(self.anchor)


def mine_batch_hard(dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """For each anchor with at least one positive and one negative: hardest positive and negative.

    Hardest positive = largest d(a, p); hardest negative = smallest d(a, n). Ties go to the lowest index.
    """
    pos_mask, neg_mask = _masks(labels)
    valid = pos_mask.any(dim=1) & neg_mask.any(dim=1)
    big = torch.finfo(dist.dtype).max
    hardest_pos = dist.masked_fill(~pos_mask, -1.0).argmax(dim=1)
    hardest_neg = dist.masked_fill(~neg_mask, big).argmin(dim=1)
    anchors = torch.nonzero(valid).flatten()
    return Triplets(anchors, hardest_pos[anchors], hardest_neg[anchors])


def mine_semi_hard(dist: torch.Tensor, labels: torch.Tensor) -> Triplets:
    """For each anchor-positive pair: the closest negative farther than the positive (else the farthest).

    Every ordered (a, p) pair with a != p of the same identity yields one triplet, when a has negatives.
    Ties go to the lowest index.
    """
    pos_mask, neg_mask = _masks(labels)
    a_idx, p_idx = torch.nonzero(pos_mask, as_tuple=True)
    has_neg = neg_mask[a_idx].any(dim=1)
    a_idx, p_idx = a_idx[has_neg], p_idx[has_neg]
    d_an = dist[a_idx]  # (T, N)
    d_ap = dist[a_idx, p_idx].unsqueeze(1)  # (T, 1)
    negs = neg_mask[a_idx]
    big = torch.finfo(dist.dtype).max
    farther = negs & (d_an > d_ap)
    semi = d_an.masked_fill(~farther, big).argmin(dim=1)
    easiest = d_an.masked_fill(~negs, -1.0).argmax(dim=1)
    n_idx = torch.where(farther.any(dim=1), semi, easiest)
    return Triplets(a_idx, p_idx, n_idx)


def mine(dist: torch.Tensor, labels: torch.Tensor, strategy: str) -> Triplets:
    """Dispatch on ``strategy`` ("batch-hard" or "semi-hard")."""
    if strategy == "batch-hard":
        return mine_batch_hard(dist, labels)
    if strategy == "semi-hard":
        return mine_semi_hard(dist, labels)
    raise ValueError(f"unknown mining strategy {strategy!r} (batch-hard, semi-hard)")


@dataclass
class TripletStats:
    """What one mined batch did: its loss, how many triplets, and the share still violating the margin."""

    loss: torch.Tensor
    n_triplets: int
    active_fraction: float


def mined_triplet_loss(
    embeddings: torch.Tensor,
    labels: torch.Tensor,
    margin: float = 0.2,
    strategy: str = "batch-hard",
    squared: bool = False,
    reduction: str = "mean",
) -> TripletStats:
    """Mine triplets in a labelled batch and return the triplet loss over them.

    Mining is done on detached distances (which triplet to use is a discrete choice) and the loss is
    recomputed on the mined distances, so gradients flow through the chosen pairs only.
    """
    dist = pairwise_distances(embeddings, squared=squared)
    trip = mine(dist.detach(), labels, strategy)
    d_ap = dist[trip.anchor, trip.positive]
    d_an = dist[trip.anchor, trip.negative]
    losses = torch.relu(d_ap - d_an + margin)
    active = float((losses > 0).float().mean()) if len(trip) else 0.0
    return TripletStats(_reduce(losses, reduction), len(trip), active)


def batch_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, squared: bool = False
) -> torch.Tensor:
    """Mean batch-hard triplet loss of a labelled batch."""
    return mined_triplet_loss(embeddings, labels, margin, "batch-hard", squared).loss


def semi_hard_triplet_loss(
    embeddings: torch.Tensor, labels: torch.Tensor, margin: float = 0.2, squared: bool = False
) -> torch.Tensor:
    """Mean semi-hard triplet loss of a labelled batch."""
    return mined_triplet_loss(embeddings, labels, margin, "semi-hard", squared).loss
