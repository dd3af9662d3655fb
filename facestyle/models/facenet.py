"""facenet-pytorch's InceptionResnetV1 (D. Sandberg's facenet, VGGFace2 weights) as an embedder network.

The architecture is facenet-pytorch's own class (imported only when this model is asked for); the
weights are the release file the user imports (``facestyle models import facenet-vggface2 FILE``).
The module takes RGB pixels 0..255 like every embedder network here and applies facenet's fixed
standardisation itself.
"""

from __future__ import annotations

import torch
from torch import nn


class Standardize(nn.Module):
    """facenet-pytorch's fixed standardisation, (x - 127.5) / 128, as a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) / 128.0


def facenet_embedder(state: dict[str, torch.Tensor]) -> nn.Module:
    """Standardize + InceptionResnetV1 loaded with ``state`` (the release's classifier is dropped)."""
    from facenet_pytorch import InceptionResnetV1

    net = InceptionResnetV1(pretrained=None, classify=False)
    # The release file also holds the 8631-way VGGFace2 classifier; embeddings do not use it.
    net.load_state_dict({k: v for k, v in state.items() if not k.startswith("logits.")})
    return nn.Sequential(Standardize(), net).eval().requires_grad_(False)
