"""One call for "the embedder called X": a registered network, or a checkpoint file from training."""

from __future__ import annotations

from pathlib import Path

import torch

from facestyle.embed.checkpoint import is_checkpoint_path, load_checkpoint_embedder
from facestyle.embed.embedder import Embedder, load_network_embedder
from facestyle.models.registry import MODELS


def load_embedder(
    name_or_checkpoint: str | Path = "dlib-resnet-v1", device: str | torch.device | None = None
) -> Embedder:
    """The embedder for a registered model name, or for a checkpoint file from ``facestyle train``.

    Registered networks are loaded once per process and device (weights hashed and parsed once).
    """
    name = str(name_or_checkpoint)
    if name not in MODELS and is_checkpoint_path(name):
        return load_checkpoint_embedder(name, device=device)
    return load_network_embedder(name, device=device)
