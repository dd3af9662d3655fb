"""Winograd F(4x4, 3x3) convolution against torch's own convolution, forward and input gradient."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from facestyle.models.vgg import VGG19_LAYERS, build_vgg19_features
from facestyle.models.winograd import WinogradConv2d, conv3x3_nhwc, transform_weights, worth_winograd


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


def _frozen(c_in: int, c_out: int, seed: int = 0) -> WinogradConv2d:
    torch.manual_seed(seed)
    conv = WinogradConv2d(c_in, c_out)
    with torch.no_grad():
        conv.bias.normal_()
    return conv.requires_grad_(False)


def test_single_image_kernel_matches_conv2d_by_hand():
    # One channel, a 4x4 image: small enough that the 9-tap sums can be checked independently.
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    w = torch.tensor([[[[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]]])  # discrete Laplacian
    out = conv3x3_nhwc(x[0].permute(1, 2, 0).contiguous(), transform_weights(w))
    # Interior pixel (1, 1) = 1 + 4 + 6 + 9 - 4*5 = 0; corner (0, 0) = 1 + 4 - 0 = 5 (zero padding).
    assert out[0, 0, 1, 1].item() == pytest.approx(0.0, abs=1e-5)
    assert out[0, 0, 0, 0].item() == pytest.approx(5.0, abs=1e-5)
    assert out.is_contiguous(memory_format=torch.channels_last)
    assert _rel(out, F.conv2d(x, w, padding=1)) < 1e-5


@pytest.mark.parametrize("hw", [(12, 8), (13, 10), (5, 7), (1, 1)])
def test_forward_matches_conv2d_for_any_size_and_batch(hw):
    conv = _frozen(16, 24)
    x = torch.randn(2, 16, *hw)
    expected = F.conv2d(x, conv.weight, conv.bias, padding=1)
    out = conv(x)
    assert out.shape == expected.shape
    assert _rel(out, expected) < 1e-5


@pytest.mark.parametrize("hw", [(12, 8), (11, 9)])
def test_input_gradient_matches_conv2d(hw):
    conv = _frozen(8, 12, seed=1)
    x = torch.randn(1, 8, *hw)
    upstream = torch.randn(1, 12, *hw)
    x1 = x.clone().requires_grad_(True)
    (conv(x1) * upstream).sum().backward()
    x2 = x.clone().requires_grad_(True)
    (F.conv2d(x2, conv.weight, conv.bias, padding=1) * upstream).sum().backward()
    assert _rel(x1.grad, x2.grad) < 1e-5


def test_trainable_weights_fall_back_to_torch_and_get_gradients():
    conv = WinogradConv2d(4, 6)
    x = torch.randn(1, 4, 9, 9)
    out = conv(x)
    assert torch.equal(out, F.conv2d(x, conv.weight, conv.bias, padding=1))
    out.sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_kernels_follow_loaded_weights():
    conv = _frozen(8, 8)
    x = torch.randn(1, 8, 10, 10)
    conv(x)  # fills the kernel cache with the first weights
    other = nn.Conv2d(8, 8, 3, padding=1)
    conv.load_state_dict(other.state_dict())
    assert set(conv.state_dict()) == {"weight", "bias"}
    assert _rel(conv(x), other(x).detach()) < 1e-5


def test_winograd_only_where_it_pays():
    assert not worth_winograd(64, 64) and not worth_winograd(64, 128) and not worth_winograd(128, 128)
    assert worth_winograd(128, 256) and worth_winograd(256, 256) and worth_winograd(512, 512)
    features = build_vgg19_features("relu5_1")
    kinds = {VGG19_LAYERS[i]: type(m) for i, m in enumerate(features)}
    assert kinds["conv2_2"] is nn.Conv2d
    assert all(kinds[n] is WinogradConv2d for n in ("conv3_1", "conv3_4", "conv4_2", "conv5_1"))


def test_vgg19_with_and_without_winograd_agree():
    """The whole truncated VGG19, both features and the image gradient, with the same weights."""
    plain = build_vgg19_features("relu5_1", winograd=False)
    wino = build_vgg19_features("relu5_1")
    wino.load_state_dict(plain.state_dict())
    plain.requires_grad_(False)
    wino.requires_grad_(False)
    image = torch.rand(1, 3, 64, 48)
    grads = []
    outs = []
    for net in (plain, wino):
        x = image.clone().requires_grad_(True)
        out = net(x)
        (out * out).sum().backward()
        outs.append(out.detach())
        grads.append(x.grad)
    assert _rel(outs[1], outs[0]) < 1e-4
    # A ReLU whose input is within rounding of zero may switch, so gradients agree a little less closely.
    assert float((grads[1] - grads[0]).norm() / grads[0].norm()) < 1e-3


def test_bfloat16_input_is_computed_in_float32_and_its_gradient_returned_as_bfloat16():
    """``stylize --half`` on the CPU feeds the first Winograd layer from bfloat16 layers: the wide layer
    then works on the float32 value of that input, to float32 accuracy, not at bfloat16 precision."""
    conv = _frozen(16, 24, seed=2)
    x = torch.randn(1, 16, 12, 8).bfloat16().requires_grad_(True)
    upstream = torch.randn(1, 24, 12, 8)
    out = conv(x)
    assert out.dtype == torch.float32
    x32 = x.detach().float().requires_grad_(True)
    expected = F.conv2d(x32, conv.weight, conv.bias, padding=1)
    assert _rel(out.detach(), expected.detach()) < 1e-5  # bfloat16 arithmetic would be ~1e-2 off
    (out * upstream).sum().backward()
    (expected * upstream).sum().backward()
    assert x.grad.dtype == torch.bfloat16
    assert _rel(x.grad.float(), x32.grad) < 2**-8  # the float32 gradient, rounded once to bfloat16


def test_cpu_autocast_does_not_demote_the_winograd_products():
    """Under ``torch.autocast("cpu", bfloat16)`` torch would run the transforms and the batched GEMM in
    bfloat16; the layer switches autocast off so the result is the same as without it."""
    conv = _frozen(32, 32, seed=3)
    x = torch.randn(1, 32, 16, 16)
    plain = conv(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        cast = conv(x)
    assert cast.dtype == torch.float32
    assert torch.equal(cast, plain)
