"""The small trained heads a checkpoint puts on a frozen embedder: an embedding head and a pair head.

They live with the embedders because a checkpoint *is* an embedder (:mod:`facestyle.embed.checkpoint`);
training them is :mod:`facestyle.train`'s job.

The embedding head sits on the (frozen) backbone's embedding.
A pretrained face embedder is already good; fine-tuning should start from it, not from scratch. With
``init="identity"`` (square head, the default) the head begins as the identity map, so the model before
the first step *is* the base model and every change training makes is measured against it. The output
is L2-normalised because the triplet margin and the cosine threshold are both defined on the unit
sphere.
"""

from __future__ import annotations

import torch
from torch import nn


class EmbeddingHead(nn.Module):
    """``normalize(W2 relu(W1 x))`` (with ``hidden``) or ``normalize(W x + b)`` on base embeddings."""

    def __init__(
        self, in_dim: int, out_dim: int | None = None, hidden: int = 0, init: str = "identity"
    ) -> None:
        super().__init__()
        out_dim = out_dim or in_dim
        self.in_dim, self.out_dim, self.hidden = in_dim, out_dim, hidden
        if hidden:
            self.net = nn.Sequential(
                nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_dim)
            )
        else:
            self.net = nn.Sequential(nn.Linear(in_dim, out_dim))
        if init == "identity" and not hidden and in_dim == out_dim:
            with torch.no_grad():
                self.net[0].weight.copy_(torch.eye(in_dim))
                self.net[0].bias.zero_()
        elif init not in ("identity", "random"):
            raise ValueError(f"unknown init {init!r}")

    def config(self) -> dict:
        """Constructor arguments, stored in checkpoints so the head can be rebuilt without pickle."""
        return {"in_dim": self.in_dim, "out_dim": self.out_dim, "hidden": self.hidden}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.net(x), dim=1)


class SiamesePairHead(nn.Module):
    """The Siamese pair head of the classic formulation (Koch, Zemel & Salakhutdinov 2015).

    ``p(same | x1, x2) = sigmoid(sum_k w_k |f(x1)_k - f(x2)_k| + b)``: a learned, per-dimension weighting
    of the absolute embedding difference, trained with binary cross-entropy on labelled pairs
    (:mod:`facestyle.train.siamese`). Unlike a cosine threshold it can learn that some dimensions matter
    more for a given population. ``forward`` returns logits, :meth:`probability` the sigmoid.
    """

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
