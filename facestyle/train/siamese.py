"""The Siamese pair head of the classic formulation (Koch, Zemel & Salakhutdinov 2015).

``p(same | x1, x2) = sigmoid(sum_k w_k |f(x1)_k - f(x2)_k| + b)``: a learned, per-dimension weighting
of the absolute embedding difference, trained with binary cross-entropy on labelled pairs. Unlike a
cosine threshold it can learn that some dimensions matter more for a given population. Its score is a
probability, so "same" at 0.5 is meaningful, though thresholds are still calibrated like any score.
"""

from __future__ import annotations

import torch
from torch import nn


class SiamesePairHead(nn.Module):
    """Scores a pair of embeddings; ``forward`` returns logits, :meth:`probability` the sigmoid."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.linear = nn.Linear(dim, 1)
        # Start as a (negated) scaled L1 distance: a sensible verifier before any training step. On
        # unit vectors the L1 distance of same-person pairs is small, so -w * |d| + b is high for them.
        with torch.no_grad():
            self.linear.weight.fill_(-4.0 / dim**0.5)
            self.linear.bias.fill_(2.0)

    def config(self) -> dict:
        return {"dim": self.dim}

    def forward(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return self.linear((f1 - f2).abs()).squeeze(-1)

    def probability(self, f1: torch.Tensor, f2: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward(f1, f2))


def pair_bce_loss(
    head: SiamesePairHead, f1: torch.Tensor, f2: torch.Tensor, same: torch.Tensor
) -> torch.Tensor:
    """Binary cross-entropy of the head's logits against the same/different labels."""
    return nn.functional.binary_cross_entropy_with_logits(head(f1, f2), same.to(f1.dtype))


def pairs_from_batch(
    labels: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, ...]:
    """All positive pairs of a P x K batch and as many random negative pairs, as (i, j, same) tensors.

    Balancing keeps BCE from learning the prior: a P x K batch has far more negative than positive pairs.
    """
    same = labels.unsqueeze(0) == labels.unsqueeze(1)
    iu = torch.triu_indices(len(labels), len(labels), offset=1)
    is_same = same[iu[0], iu[1]]
    pos = iu[:, is_same]
    neg = iu[:, ~is_same]
    if neg.shape[1] > pos.shape[1]:
        pick = torch.randperm(neg.shape[1], generator=generator)[: pos.shape[1]]
        neg = neg[:, pick]
    i = torch.cat([pos[0], neg[0]])
    j = torch.cat([pos[1], neg[1]])
    y = torch.cat([torch.ones(pos.shape[1]), torch.zeros(neg.shape[1])])
    return i, j, y
