"""A pretrained network with named activation taps: the one way heads and style get deep features.

:class:`FeatureExtractor` wraps any ``nn.Module`` and returns the activations of chosen submodules,
captured with forward hooks. Once the deepest requested tap has fired, the rest of the network is
skipped, so only the layers that matter are ever run. It takes an RGB image in [0, 1] and applies the
network's own input normalisation, so callers never need to know a backbone's preprocessing.

Build one by name with :func:`facestyle.models.registry.backbone` (``models list`` shows the taps of
every entry).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from facestyle.errors import UsageError

#: ImageNet statistics of RGB in [0, 1] (torchvision's classification weights expect them).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class _StopForward(Exception):
    """Raised from a hook once every tap is captured: the layers after the deepest tap are not run."""


class FeatureExtractor(nn.Module):
    """Normalise an RGB image in [0, 1] the way the backbone expects, run it, return named activations.

    ``taps`` maps public tap names (``relu4_2``) to qualified submodule names of ``body`` (``"22"``).
    ``method`` is the body's method that runs the network (``forward``, or e.g. ``features`` for a
    face network whose ``forward`` insists on its chip size). ``trained`` is False for a network with
    random weights, which every result built on it must say.
    """

    def __init__(
        self,
        body: nn.Module,
        taps: dict[str, str],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
        trained: bool,
        description: str,
        input_transform: Callable[[Tensor], Tensor] | None = None,
        method: str = "forward",
    ) -> None:
        super().__init__()
        self.body = body.eval().requires_grad_(False)
        self.name, self.trained, self.description = name, trained, description
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_transform = input_transform
        self._run = getattr(body, method)
        modules = dict(body.named_modules())
        missing = [q for q in taps.values() if q not in modules]
        if missing:
            raise UsageError(f"backbone {name!r} has no submodule(s) {missing}")
        self.taps = dict(taps)
        self._captured: dict[str, Tensor] = {}
        self._pending: set[str] = set()
        for public, qualified in taps.items():
            modules[qualified].register_forward_hook(self._make_hook(public))

    def _make_hook(self, public: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            if public in self._pending:
                self._captured[public] = output
                self._pending.discard(public)
                if not self._pending:
                    raise _StopForward

        return hook

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``image``: (N, 3, H, W) RGB in [0, 1]. Returns {tap name: activation}."""
        x = (image - self.mean) / self.std
        if self.input_transform is not None:
            x = self.input_transform(x)
        self._captured, self._pending = {}, set(self.taps)
        with contextlib.suppress(_StopForward):
            self._run(x)
        captured, self._captured = self._captured, {}
        if self._pending:
            raise RuntimeError(f"taps never reached: {sorted(self._pending)}")
        return {name: captured[name] for name in self.taps}


def check_taps(name: str, taps: Sequence[str], offered: Sequence[str]) -> list[str]:
    """``taps`` without repeats, or a one-line error naming the taps ``name`` offers."""
    unknown = [t for t in taps if t not in offered]
    if unknown:
        raise UsageError(f"backbone {name!r} has no tap(s) {unknown}; it offers {', '.join(offered)}")
    if not taps:
        raise UsageError(f"backbone {name!r}: ask for at least one tap")
    return list(dict.fromkeys(taps))
