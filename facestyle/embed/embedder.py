"""An embedder: a face network plus everything needed to feed it (chip template, size, threshold).

Networks are plain ``nn.Module``s that take float RGB pixels (0..255, NCHW) and do their own input
normalisation, so the only preprocessing left here is "cut the chip and stack it". Embeddings leave
this module L2-normalised, so cosine similarity is a dot product everywhere downstream (gallery, eval).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facestyle.align import DLIB_150, FACENET_160, align_face
from facestyle.device import default_device
from facestyle.errors import ImageError, UsageError
from facestyle.models.registry import ModelSpec, get_model


@dataclass
class Embedder:
    """Face chips in, unit-length embeddings out."""

    name: str
    module: nn.Module
    input_size: int
    embedding_size: int
    template: np.ndarray
    default_threshold: float | None
    device: torch.device
    batch_size: int = 64
    #: What the embedding came from, recorded by galleries and checkpoints (model name + weight digest).
    version: str = ""
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


def _dlib_module() -> nn.Module:
    from facestyle.models.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet()


class _Standardize(nn.Module):
    """facenet-pytorch's fixed standardisation, (x - 127.5) / 128, as a layer."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 127.5) / 128.0


def _facenet_module() -> nn.Module:
    from facenet_pytorch import InceptionResnetV1

    from facestyle.models.weights import load_torch_state

    state = load_torch_state("facenet-vggface2")
    net = InceptionResnetV1(pretrained=None, classify=False)
    # The release file also holds the 8631-way VGGFace2 classifier; embeddings do not use it.
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    net.load_state_dict(state)
    return nn.Sequential(_Standardize(), net)


#: Builders of the face networks known to the registry, and their chip templates.
BUILDERS: dict[str, tuple[Callable[[], nn.Module], np.ndarray]] = {
    "dlib-resnet-v1": (_dlib_module, DLIB_150),
    "facenet-vggface2": (_facenet_module, FACENET_160),
}

_CACHE: dict[tuple[str, str], Embedder] = {}


def load_embedder(name_or_checkpoint: str = "dlib-resnet-v1", device: str | None = None) -> Embedder:
    """The embedder for a registered model name, or for a trained checkpoint file (``*.pt``).

    Loaded once per process and device (weights are hashed and parsed once).
    """
    dev = default_device(device)
    key = (str(name_or_checkpoint), str(dev))
    if key in _CACHE:
        return _CACHE[key]
    if name_or_checkpoint.endswith((".pt", ".pth")) or Path(name_or_checkpoint).is_file():
        from facestyle.train.checkpoint import load_checkpoint_embedder

        embedder = load_checkpoint_embedder(Path(name_or_checkpoint), device=str(dev))
    else:
        spec = get_model(name_or_checkpoint)
        if spec.kind != "embedder" or spec.name not in BUILDERS:
            raise UsageError(f"{spec.name!r} is a {spec.kind}, not a face embedder")
        embedder = _build(spec, dev)
    _CACHE[key] = embedder
    return embedder


def _build(spec: ModelSpec, device: torch.device) -> Embedder:
    builder, template = BUILDERS[spec.name]
    module = builder().to(device).eval()
    module = module.to(memory_format=torch.channels_last)
    return Embedder(
        name=spec.name,
        module=module,
        input_size=int(spec.input_size or 0),
        embedding_size=int(spec.embedding_size or 0),
        template=template,
        default_threshold=spec.default_threshold,
        device=device,
        version=f"{spec.name}@{spec.files[0].sha256[:12]}",
    )
