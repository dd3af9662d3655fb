"""dlib's face-recognition ResNet as a style-transfer backbone ("dlib-resnet").

It shows the taps are generic: any ``nn.Module`` whose submodules produce activations will do. The
face network was trained on 150x150 face chips, so its features describe faces rather than paintings;
expect a weaker style transfer than VGG19 (it is here for experiments, not as a default).

:class:`DlibTrunk` runs the network's convolutional part on an image of any size (the full module
insists on 150x150 chips and ends in a 128-d descriptor we do not need). Taps are the outputs of the
residual blocks, named ``block0`` .. ``block{n-1}`` (post-ReLU, like VGG's relu taps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from facestyle.errors import UsageError
from facestyle.style.backbones import BackboneInfo, FeatureExtractor

NAME = "dlib-resnet"


class DlibTrunk(nn.Module):
    """Stem + residual blocks of a ``DlibResNet``, on pixel values in [0, 1], any image size."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mean_rgb", net.mean_rgb.detach().clone().float())
        self.stem = net.stem
        self.blocks = net.blocks

    def forward(self, x: Tensor) -> Tensor:
        x = (x * 255.0 - self.mean_rgb) / 256.0  # dlib's own input normalisation
        x = F.relu(self.stem(x), inplace=True)
        x = F.max_pool2d(x, 3, 2)
        return self.blocks(x)


def _level_taps() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Style taps: the last block of each resolution level; content: the last block of the third level."""
    from facestyle.models.dlib_resnet import _LEVELS

    ends, i = [], -1
    for _channels, plain, down in _LEVELS:
        i += plain + int(down)
        ends.append(f"block{i}")
    style = tuple(ends[:4])
    return style, (ends[2],)


def dlib_resnet(taps: Sequence[str]) -> FeatureExtractor:
    from facestyle.models.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet(channels_last=False).float()
    trunk = DlibTrunk(net)
    mapping = {}
    for t in taps:
        if not t.startswith("block") or not t[5:].isdigit() or int(t[5:]) >= len(trunk.blocks):
            raise UsageError(f"unknown dlib-resnet tap {t!r}; taps are block0..block{len(trunk.blocks) - 1}")
        mapping[t] = f"blocks.{int(t[5:])}"
    return FeatureExtractor(
        trunk,
        mapping,
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        name=NAME,
        trained=True,
        description=DESCRIPTION,
    )


DESCRIPTION = "dlib face-recognition ResNet (trained on faces; experimental style backbone)"


def backbone_info() -> BackboneInfo | None:
    """The registry entry, or None when the dlib ResNet port is not in this checkout."""
    try:
        style, content = _level_taps()
    except ImportError:
        return None
    return BackboneInfo(NAME, DESCRIPTION, True, style, content, dlib_resnet)
