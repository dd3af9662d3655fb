"""VGG19's convolutional part (Simonyan & Zisserman, 2015), indexed like torchvision's ``features``.

Keeping torchvision's child indices means a torchvision state dict maps key for key
(``features.21.weight`` -> child ``21``). The network is built only up to the deepest layer a caller
taps, which saves the memory of the unused weights (conv5_2..conv5_4 hold 28 MB). ReLUs are in place
(halves activation memory); a ReLU right after a tapped conv output would overwrite that tap, so taps
are relu and pool layers only (:data:`VGG19_TAPS`). With ``winograd`` the wide layers (conv3_1 onwards)
are :class:`~facestyle.models.winograd.WinogradConv2d`: the same parameters and state-dict keys, but
fewer multiplications on the CPU (facestyle/models/winograd.py says when it pays).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from facestyle.errors import ChecksumError, UsageError
from facestyle.models.winograd import WinogradConv2d, worth_winograd

#: VGG19 ("configuration E"): channels per conv, "M" for 2x2 max pooling.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` children in order: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for item in VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


VGG19_LAYERS = vgg19_layer_names()
VGG19_TAPS = tuple(n for n in VGG19_LAYERS if not n.startswith("conv"))


def deepest_tap(taps: Sequence[str]) -> str:
    """The deepest of ``taps`` (all must be in :data:`VGG19_TAPS`)."""
    for t in taps:
        if t not in VGG19_TAPS:
            raise UsageError(f"unknown VGG19 tap {t!r}; choose from relu1_1..relu5_4, pool1..pool5")
    return max(taps, key=VGG19_LAYERS.index)


def build_vgg19_features(deepest: str, *, winograd: bool = True) -> nn.Sequential:
    """VGG19 ``features`` up to and including layer ``deepest`` (randomly initialised by torch)."""
    if deepest not in VGG19_LAYERS:
        raise UsageError(f"unknown VGG19 layer {deepest!r}; taps are relu1_1..relu5_4 and pool1..pool5")
    channels = [int(v) for v in VGG19_CFG if v != "M"]
    layers: list[nn.Module] = []
    in_ch, conv = 3, 0
    for name in VGG19_LAYERS[: VGG19_LAYERS.index(deepest) + 1]:
        if name.startswith("conv"):
            out_ch = channels[conv]
            conv += 1
            if winograd and worth_winograd(in_ch, out_ch):
                layers.append(WinogradConv2d(in_ch, out_ch))
            else:
                layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            in_ch = out_ch
        elif name.startswith("relu"):
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def vgg19_state_for(features: nn.Sequential, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision VGG19 state dict (``features.I.weight`` ...) onto a truncated ``features``.

    Classifier weights and the layers past the truncation point are dropped; a missing key or a
    wrong shape means the file is not torchvision's VGG19 and is reported as such.
    """
    own = features.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, param in own.items():
        source = state.get(f"features.{key}", state.get(key))
        if source is None:
            raise ChecksumError(
                f"weights file has no tensor features.{key}: not a torchvision VGG19 state dict"
            )
        if tuple(source.shape) != tuple(param.shape):
            raise ChecksumError(
                f"features.{key} has shape {tuple(source.shape)}, expected {tuple(param.shape)}: not VGG19"
            )
        mapped[key] = source
    return mapped


def randomise_vgg(features: nn.Sequential, seed: int = 0) -> nn.Sequential:
    """Seeded random weights (UNTRAINED; He, Wang & Hopcroft 2016), in place.

    Kaiming-normal convolutions (fan-in, ReLU gain) keep the activation scale roughly constant with
    depth, so deep taps neither vanish nor explode; biases are zero. The same seed gives the same
    network on every machine (the generator is CPU-side and private, not the global one).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return features


def vgg_tap_modules(taps: Sequence[str]) -> dict[str, str]:
    """Public tap name -> child index of the features Sequential."""
    return {t: str(VGG19_LAYERS.index(t)) for t in taps}
