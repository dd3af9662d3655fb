"""Training the Siamese pair head (:class:`facestyle.embed.heads.SiamesePairHead`): its loss and pairs.

The head's score is a probability, so "same" at 0.5 is meaningful, though thresholds are still
calibrated like any score.
"""

from __future__ import annotations

import torch
from torch import nn

from facestyle.embed.heads import SiamesePairHead


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
