"""VGG's convolutional part (Simonyan & Zisserman, 2015), indexed like torchvision's ``features``.

Two layouts: VGG19 (configuration E, torchvision's ``vgg19().features``) and the VGG16 of HED
(configuration D without its last pooling, max pools rounding up as Keras' ``padding="same"`` does;
:mod:`facestyle.models.hed` reads its weights). Keeping torchvision's child indices means a
torchvision state dict maps key for key (``features.21.weight`` -> child ``21``). The network is
built only up to the deepest layer a caller taps, which saves the memory of the unused weights
(conv5_2..conv5_4 hold 28 MB). ReLUs are in place (halves activation memory); a ReLU right after a
tapped conv output would overwrite that tap, so taps are relu and pool layers only
(:attr:`VGGLayout.taps`). With ``winograd`` the wide layers (conv3_1 onwards)
are :class:`~facestyle.models.winograd.WinogradConv2d`: the same parameters and state-dict keys, but
fewer multiplications on the CPU (facestyle/models/winograd.py says when it pays).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from facestyle.errors import ChecksumError, UsageError
from facestyle.models.winograd import WinogradConv2d, worth_winograd

#: VGG19 ("configuration E"): channels per conv, "M" for 2x2 max pooling.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip
#: VGG16 as HED uses it ("configuration D", 13 convolutions): no pooling after the last block.
VGG16_HED_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
)  # fmt: skip


def vgg_layer_names(cfg: Sequence[int | str] = VGG19_CFG) -> list[str]:
    """Names of the ``features`` children in torchvision's order: conv1_1, relu1_1, ..., pool1, ..."""
    names, block, conv = [], 1, 1
    for item in cfg:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` children in order: conv1_1, relu1_1, ..., pool5."""
    return vgg_layer_names(VGG19_CFG)


@dataclass(frozen=True)
class VGGLayout:
    """One VGG variant: its configuration and how its pools round (``ceil``: Keras' "same")."""

    name: str
    cfg: tuple[int | str, ...]
    ceil_pools: bool = False

    @property
    def layers(self) -> list[str]:
        return vgg_layer_names(self.cfg)

    @property
    def taps(self) -> tuple[str, ...]:
        """The layers a caller may tap: relus and pools (a relu in place would overwrite a conv tap)."""
        return tuple(n for n in self.layers if not n.startswith("conv"))


VGG19 = VGGLayout("VGG19", VGG19_CFG)
VGG16_HED = VGGLayout("VGG16 (HED)", VGG16_HED_CFG, ceil_pools=True)

VGG19_LAYERS = VGG19.layers
VGG19_TAPS = VGG19.taps


def deepest_tap(taps: Sequence[str], layout: VGGLayout = VGG19) -> str:
    """The deepest of ``taps`` (all must be taps of ``layout``)."""
    for t in taps:
        if t not in layout.taps:
            raise UsageError(f"unknown {layout.name} tap {t!r}; choose from {', '.join(layout.taps)}")
    return max(taps, key=layout.layers.index)


def build_vgg_features(layout: VGGLayout, deepest: str, *, winograd: bool = True) -> nn.Sequential:
    """``layout``'s ``features`` up to and including layer ``deepest`` (randomly initialised by torch)."""
    names = layout.layers
    if deepest not in names:
        raise UsageError(f"unknown {layout.name} layer {deepest!r}; taps are {', '.join(layout.taps)}")
    channels = [int(v) for v in layout.cfg if v != "M"]
    layers: list[nn.Module] = []
    in_ch, conv = 3, 0
    for name in names[: names.index(deepest) + 1]:
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
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=layout.ceil_pools))
    return nn.Sequential(*layers)


def build_vgg19_features(deepest: str, *, winograd: bool = True) -> nn.Sequential:
    """VGG19 ``features`` up to and including layer ``deepest`` (randomly initialised by torch)."""
    return build_vgg_features(VGG19, deepest, winograd=winograd)


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


def vgg_tap_modules(taps: Sequence[str], layout: VGGLayout = VGG19) -> dict[str, str]:
    """Public tap name -> child index of the features Sequential."""
    return {t: str(layout.layers.index(t)) for t in taps}
