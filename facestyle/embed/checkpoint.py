"""Fine-tuned model files: the head's tensors plus plain JSON metadata, loadable with weights_only.

A checkpoint never pickles code or objects: it is a dict of tensors and one JSON string, so loading
one from an untrusted source with ``torch.load(weights_only=True)`` cannot execute anything. The JSON
records what is needed to rebuild and to trust the model: the base embedder it sits on (whose own
weights are found and checksummed by the registry, not copied here), the head's shape, the training
options, the metrics before and after, and the threshold measured on held-out identities.

A checkpoint is a first-class embedder: :func:`load_checkpoint_embedder` returns an
:class:`~facestyle.embed.embedder.Embedder`, so ``embed``, ``compare``, ``enroll`` and ``eval`` accept
``--checkpoint model.pt`` (or a ``.pt`` path as the model name) unchanged.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from facestyle.device import resolve_device
from facestyle.embed.embedder import NetworkEmbedder, cosine_rows, embed_tapped, load_network_embedder
from facestyle.embed.heads import EmbeddingHead, SiamesePairHead
from facestyle.errors import UsageError
from facestyle.io.files import load_tensor_file, save_tensor_file

FORMAT = "facestyle-head-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """A loaded checkpoint: rebuilt heads (in eval mode) and the metadata dict."""

    meta: dict[str, Any]
    head: EmbeddingHead
    pair_head: SiamesePairHead | None

    @property
    def base_model(self) -> str:
        return self.meta["base_model"]


def save_checkpoint(
    path: str | Path,
    *,
    base_model: str,
    head: EmbeddingHead,
    pair_head: SiamesePairHead | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write atomically (temp file + rename), so an interrupted save never leaves a half file."""
    path = Path(path)
    full_meta = dict(meta or {})
    full_meta.update(
        base_model=base_model,
        head_config=head.config(),
        pair_head_config=pair_head.config() if pair_head is not None else None,
    )
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "meta_json": json.dumps(full_meta, allow_nan=True),
        "head": {k: v.detach().cpu().clone() for k, v in head.state_dict().items()},
        "pair_head": {k: v.detach().cpu().clone() for k, v in pair_head.state_dict().items()}
        if pair_head
        else {},
    }
    return save_tensor_file(path, payload)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Load and validate a checkpoint; anything else is a one-line :class:`UsageError`."""
    path = Path(path)
    payload = load_tensor_file(path, "facestyle checkpoint")
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UsageError(f"{path} is not a facestyle checkpoint (no '{FORMAT}' marker)")
    if payload.get("version") != VERSION:
        raise UsageError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (expected {VERSION})"
        )
    try:
        meta = json.loads(payload["meta_json"])
        head = EmbeddingHead(**meta["head_config"])
        head.load_state_dict(payload["head"])
        pair_head = None
        if meta.get("pair_head_config"):
            pair_head = SiamesePairHead(**meta["pair_head_config"])
            pair_head.load_state_dict(payload["pair_head"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UsageError(f"{path}: damaged checkpoint ({exc})") from None
    head.eval()
    if pair_head is not None:
        pair_head.eval()
    return Checkpoint(meta, head, pair_head)


def is_checkpoint_path(name: str | Path) -> bool:
    """True when a model name means a checkpoint file (``*.pt``/``*.pth``, or an existing file)."""
    return str(name).endswith((".pt", ".pth")) or Path(name).is_file()


class CheckpointEmbedder:
    """The base embedder followed by the trained head: an :class:`~facestyle.embed.embedder.Embedder`.

    Detection and alignment are the base model's (the head was trained on its chips). When the
    checkpoint has a Siamese pair head, :meth:`score_pairs` returns its probability instead of the
    cosine similarity, and ``default_threshold`` is on that scale.
    """

    def __init__(
        self, checkpoint: Checkpoint, base: NetworkEmbedder, path: Path, device: torch.device | None = None
    ) -> None:
        self.checkpoint = checkpoint
        self.base = base
        self.path = path
        self.name = str(path)
        self.base_name = checkpoint.base_model
        self.input_size = base.input_size
        self.embedding_size = checkpoint.head.out_dim
        self.module = base.module  # the frozen base network (its final layer may be the tapped one)
        self.template = base.template
        self.device = device or torch.device("cpu")
        self.head = checkpoint.head.to(self.device)
        self.pair_head = checkpoint.pair_head.to(self.device) if checkpoint.pair_head is not None else None
        thr = checkpoint.meta.get("threshold")
        self.default_threshold = float(thr) if thr is not None else base.default_threshold
        # Galleries compare versions to refuse mixing embeddings of different models: a head changes them.
        self.version = f"{base.version}+head:{_file_digest(path)[:12]}"
        self.score_kind = "siamese-probability" if self.pair_head is not None else "cosine"

    def align(self, image_rgb: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return self.base.align(image_rgb, landmarks)

    @torch.no_grad()
    def embed_features(self, features: np.ndarray) -> np.ndarray:
        """Base-model embeddings (N, D) -> this model's embeddings, L2-normalised."""
        x = torch.as_tensor(np.asarray(features, dtype=np.float32), device=self.device)
        if len(x) == 0:
            return np.zeros((0, self.embedding_size), np.float32)
        return self.head(x).cpu().numpy().astype(np.float32)

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        # With a tapped layer the head replaces the backbone's last layer and takes that layer's input.
        return self.embed_features(embed_tapped(self.base, chips, self.checkpoint.meta.get("tap")))

    @torch.no_grad()
    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of row-aligned embeddings: pair-head probability, or cosine without one."""
        a32, b32 = np.asarray(a, np.float32), np.asarray(b, np.float32)
        if self.pair_head is None:
            return cosine_rows(a32, b32)
        ta, tb = (torch.as_tensor(v, device=self.device) for v in (a32, b32))
        return self.pair_head.probability(ta, tb).cpu().numpy().astype(np.float32)


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unknown"


def load_checkpoint_embedder(
    path: str | Path, device: str | torch.device | None = None
) -> CheckpointEmbedder:
    """Open a checkpoint as an embedder on its registered base model."""
    path = Path(path).expanduser().resolve()
    ckpt = read_checkpoint(path)
    dev = resolve_device(device)
    base = load_network_embedder(ckpt.base_model, device=dev)
    return CheckpointEmbedder(ckpt, base, path, dev)
