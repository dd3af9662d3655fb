"""An embedder: a face network plus everything needed to feed it (chip template, size, threshold).

:class:`Embedder` is the interface every part of the toolkit programs against: the pipeline, the
gallery, evaluation, calibration and training only need ``align``, ``embed_chips`` and
``score_pairs``. Two implementations: :class:`NetworkEmbedder` (a registered pretrained network) and
:class:`~facestyle.embed.checkpoint.CheckpointEmbedder` (a base network plus a head trained with
``facestyle train``). :func:`facestyle.embed.load_embedder` picks one from a name or a file.

Networks are plain ``nn.Module``s that take float RGB pixels (0..255, NCHW) and do their own input
normalisation, so the only preprocessing left here is "cut the chip and stack it". Embeddings leave
this module L2-normalised, so cosine similarity is a dot product everywhere downstream.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch import nn

from facestyle.align.warp import align_face
from facestyle.device import resolve_device
from facestyle.errors import ImageError, UsageError
from facestyle.models.registry import create, get_model


@runtime_checkable
class Embedder(Protocol):
    """Face chips in, unit-length embeddings out; and how two embeddings are scored."""

    #: Registry name, or the checkpoint file's path.
    name: str
    #: What the embeddings came from (name + weight digest): galleries and caches key on it.
    version: str
    input_size: int
    embedding_size: int
    #: Score above which two faces are the same person (on ``score_kind``'s scale), if measured.
    default_threshold: float | None
    #: ``cosine``, or ``siamese-probability`` for a checkpoint with a pair head.
    score_kind: str
    device: torch.device

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The ``(input_size, input_size, 3)`` uint8 chip of the face with these five landmarks."""
        ...

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 RGB chips -> ``(N, D)`` float32 unit vectors."""
        ...

    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Similarity of row-aligned embeddings ``(N, D)`` x ``(N, D)`` -> ``(N,)``."""
        ...


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products of unit vectors (cosine similarities), float64."""
    return np.sum(np.asarray(a, np.float64) * np.asarray(b, np.float64), axis=1)


@dataclass
class NetworkEmbedder:
    """A registered face network (``facestyle models list``) as an :class:`Embedder`."""

    name: str
    module: nn.Module
    input_size: int
    embedding_size: int
    template: np.ndarray
    default_threshold: float | None
    device: torch.device
    version: str = ""
    batch_size: int = 64
    score_kind: str = "cosine"
    info: dict = field(default_factory=dict)

    def align(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Cut this model's ``input_size`` chip from ``image`` using five ``landmarks``."""
        return align_face(image, landmarks, self.template, self.input_size)

    @torch.inference_mode()
    def embed_chips(self, chips: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """``(N, S, S, 3)`` uint8 RGB chips -> ``(N, D)`` float32 unit vectors."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            chips = chips[None]
        size = self.input_size
        if chips.ndim != 4 or chips.shape[1:] != (size, size, 3):
            raise ImageError(f"{self.name} needs {size}x{size} RGB chips, got array of shape {chips.shape}")
        outputs = []
        use_half = self.device.type == "cuda"
        for start in range(0, len(chips), self.batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(chips[start : start + self.batch_size]))
            x = batch.to(self.device).permute(0, 3, 1, 2).float()
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=torch.float16, enabled=use_half):
                y = self.module(x)
            outputs.append(nn.functional.normalize(y.float(), dim=1).cpu())
        if not outputs:
            return np.zeros((0, self.embedding_size), dtype=np.float32)
        return torch.cat(outputs).numpy()

    def score_pairs(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return cosine_rows(a, b)


_CACHE: dict[tuple[str, str], NetworkEmbedder] = {}


def load_network_embedder(name: str, device: str | torch.device | None = None) -> NetworkEmbedder:
    """The registered embedder ``name`` on ``device``, built once per process and device."""
    dev = resolve_device(device)
    key = (name, str(dev))
    if key not in _CACHE:
        spec = get_model(name)
        if spec.kind != "embedder":
            raise UsageError(f"{spec.name!r} is a {spec.kind}, not a face embedder")
        module = create(name, dev).eval()
        _CACHE[key] = NetworkEmbedder(
            name=spec.name,
            module=module.to(memory_format=torch.channels_last),
            input_size=int(spec.input_size or 0),
            embedding_size=int(spec.embedding_size or 0),
            template=spec.template,
            default_threshold=spec.default_threshold,
            device=dev,
            version=f"{spec.name}@{spec.files[0].sha256[:12]}",
        )
    return _CACHE[key]


# ------------------------------------------------------------------------------------------ layer inputs


def tap_layer(embedder: Embedder, name: str) -> nn.Linear:
    """The network's final linear layer ``name``; a :class:`UsageError` when the model has none."""
    module = getattr(embedder, "module", None)
    try:
        layer = module.get_submodule(name) if module is not None else None
    except AttributeError:
        layer = None
    if not isinstance(layer, nn.Linear):
        raise UsageError(f"{embedder.name} has no final linear layer {name!r} to train")
    return layer


@contextlib.contextmanager
def capture_inputs(layer: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Collect what ``layer`` receives during the forward passes made inside the block."""
    store: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, inp, _out: store.append(inp[0].detach().float().cpu()))
    try:
        yield store
    finally:
        handle.remove()


def embed_tapped(embedder: Embedder, chips: np.ndarray, tap: str | None) -> np.ndarray:
    """Embeddings of chips (``tap`` None), or the inputs of the network layer ``tap`` (N, in_features):
    what a head that replaces that layer is trained on."""
    if not tap:
        return embedder.embed_chips(chips)
    with capture_inputs(tap_layer(embedder, tap)) as store:
        embedder.embed_chips(chips)
    return torch.cat(store).numpy().astype(np.float32)
