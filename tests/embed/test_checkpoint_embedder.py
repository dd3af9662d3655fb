"""The checkpoint embedder and the tapped last layer, checked against the base embedder itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from facestyle.embed.checkpoint import save_checkpoint
from facestyle.embed.embedder import embed_tapped, tap_layer
from facestyle.embed.heads import EmbeddingHead
from facestyle.errors import UsageError


@pytest.fixture(scope="module")
def base():
    from facestyle.embed.loader import load_embedder

    return load_embedder("dlib-resnet-v1")


@pytest.fixture(scope="module")
def chips(att_dir: Path) -> np.ndarray:
    """Three real faces as rough chips (AT&T images resized), enough to exercise the forward pass."""
    import cv2

    from facestyle.io.images import load_image

    return np.stack([cv2.resize(load_image(att_dir / f"s{s}" / "1.pgm"), (150, 150)) for s in (1, 2, 3)])


def test_tapped_fc_inputs_reproduce_the_embedding(base, chips):
    x = embed_tapped(base, chips, "fc")
    assert x.shape == (3, 256)
    w = tap_layer(base, "fc").weight.detach().numpy()
    y = x @ w.T
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    assert np.allclose(y, base.embed_chips(chips), atol=1e-5)
    with pytest.raises(UsageError, match="no final linear layer"):
        tap_layer(base, "stem")


def test_untrained_checkpoints_equal_the_base_model(base, chips, tmp_path: Path):
    from facestyle.embed.checkpoint import load_checkpoint_embedder

    want = base.embed_chips(chips)
    # identity head on the embedding
    save_checkpoint(
        tmp_path / "id.pt", base_model="dlib-resnet-v1", head=EmbeddingHead(128), meta={"threshold": 0.5}
    )
    # head replacing the last layer, started from its weights
    fc = EmbeddingHead(256, 128, init="random")
    with torch.no_grad():
        fc.net[0].weight.copy_(tap_layer(base, "fc").weight)
        fc.net[0].bias.zero_()
    save_checkpoint(tmp_path / "fc.pt", base_model="dlib-resnet-v1", head=fc, meta={"tap": "fc"})
    for name in ("id.pt", "fc.pt"):
        emb = load_checkpoint_embedder(tmp_path / name)
        assert emb.input_size == 150 and emb.embedding_size == 128
        assert np.allclose(emb.embed_chips(chips), want, atol=1e-5)
        assert emb.version.startswith(base.version + "+head:")
    assert load_checkpoint_embedder(tmp_path / "id.pt").default_threshold == 0.5
