"""MTCNN's three networks (Zhang et al., 2016) as plain ``nn.Module``s, for the weights in facenet-pytorch.

facenet-pytorch's wheel ships the weights (``data/{pnet,rnet,onet}.pt``, state dicts converted from the
authors' Caffe models); its own modules come with an import of the whole package and all of
torchvision (about a second of start-up). These are our own definitions of the published
architectures, with parameter names chosen so those state dicts load key for key:

* P-Net (fully convolutional, 12 x 12 receptive field): conv3x3 10 -> max-pool 2x2 -> conv3x3 16 ->
  conv3x3 32, each conv followed by a PReLU, then two 1x1 heads: face/non-face and box regression.
* R-Net (24 x 24 crops): conv3x3 28 -> pool 3x3/2 -> conv3x3 48 -> pool 3x3/2 -> conv2x2 64 -> dense 128,
  then face/non-face and box regression.
* O-Net (48 x 48 crops): conv3x3 32 -> pool -> conv3x3 64 -> pool -> conv3x3 64 -> pool 2x2 -> conv2x2 128
  -> dense 256, then face/non-face, box regression and the ten landmark coordinates.

Pools round up (Caffe's convention). The dense layers were trained on Caffe's blobs, which flatten a
feature map in (width, height, channel) order; the maps are transposed to that order before flattening.
Every network returns its face probabilities as a softmax over (non-face, face), and its regressions raw.

The networks keep their conv weights, and take their inputs, in channels-last (NHWC) memory layout.
These convolutions have few channels (3 to 128), where oneDNN's NHWC kernels avoid a reorder per layer:
detection on a 150 px LFW photo takes 15.6 instead of 28.4 ms on one CPU thread, with landmarks equal
within 3e-5 px (``benchmarks/detect.py`` runs it beside facenet-pytorch's channels-first class).
``load_state_dict`` copies into the existing tensors, so the layout survives loading the weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _conv_prelu(cin: int, cout: int, k: int) -> tuple[nn.Conv2d, nn.PReLU]:
    return nn.Conv2d(cin, cout, k), nn.PReLU(cout)


def _nhwc(x: torch.Tensor) -> torch.Tensor:
    """The input in channels-last layout (a no-op when it already is)."""
    return x.contiguous(memory_format=torch.channels_last)


def _caffe_flatten(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) -> (N, W * H * C) in Caffe's blob order, as the dense weights expect."""
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal network: (N, 3, H, W) normalised pixels -> (box regression (N, 4, h, w),
    face prob (N, 2, h, w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 10, 3)
        self.conv2, self.prelu2 = _conv_prelu(10, 16, 3)
        self.conv3, self.prelu3 = _conv_prelu(16, 32, 3)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(_nhwc(x))), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), F.softmax(self.conv4_1(x), dim=1)


class RNet(nn.Module):
    """Refinement network: (N, 3, 24, 24) -> (box regression (N, 4), face prob (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 28, 3)
        self.conv2, self.prelu2 = _conv_prelu(28, 48, 3)
        self.conv3, self.prelu3 = _conv_prelu(48, 64, 2)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(_nhwc(x))), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_caffe_flatten(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), F.softmax(self.dense5_1(x), dim=1)


class ONet(nn.Module):
    """Output network: (N, 3, 48, 48) -> (box regression (N, 4), landmarks (N, 10), face prob (N, 2)).

    Landmarks are five x coordinates then five y coordinates, as fractions of the crop.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = _conv_prelu(3, 32, 3)
        self.conv2, self.prelu2 = _conv_prelu(32, 64, 3)
        self.conv3, self.prelu3 = _conv_prelu(64, 64, 3)
        self.conv4, self.prelu4 = _conv_prelu(64, 128, 2)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(_nhwc(x))), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_caffe_flatten(self.prelu4(self.conv4(x)))))
        return self.dense6_2(x), self.dense6_3(x), F.softmax(self.dense6_1(x), dim=1)


NETWORKS: dict[str, type[nn.Module]] = {"pnet.pt": PNet, "rnet.pt": RNet, "onet.pt": ONet}
