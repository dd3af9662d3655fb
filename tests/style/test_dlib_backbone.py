"""dlib's face ResNet as a style backbone: the trunk must compute exactly what the face network computes."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("facestyle.models.dlib_resnet")

from facestyle.models.dlib_resnet import load_dlib_resnet  # noqa: E402
from facestyle.style.backbones import get_backbone  # noqa: E402
from facestyle.style.dlib_backbone import DlibTrunk, dlib_resnet  # noqa: E402


def test_trunk_reproduces_the_face_network_on_a_chip():
    net = load_dlib_resnet(channels_last=False)
    trunk = DlibTrunk(net)
    x = torch.rand(1, 3, 150, 150, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        via_trunk = net.fc(trunk(x).mean(dim=(2, 3)))
        direct = net(x * 255.0)
    assert torch.allclose(via_trunk, direct, atol=1e-4)


def test_dlib_backbone_taps_any_image_size():
    info = get_backbone("dlib-resnet")
    assert info.trained and len(info.style_taps) == 4
    ex = dlib_resnet(list(info.style_taps) + list(info.content_taps))
    feats = ex(torch.rand(1, 3, 96, 128))
    assert set(feats) == set(info.style_taps) | set(info.content_taps)
    channels = [feats[t].shape[1] for t in info.style_taps]
    assert channels == sorted(channels) and channels[0] == 32  # deeper taps, more channels
