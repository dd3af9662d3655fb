"""The trainable embedding head that sits on the (frozen) backbone's embedding.

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
