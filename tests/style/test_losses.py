"""The Gatys objective's pieces against hand computations on tensors small enough to do on paper."""

from __future__ import annotations

import pytest
import torch

from facestyle.style.losses import blend_grams, content_loss, gram, style_loss, total_loss, tv_loss


def test_gram_matches_hand_computation():
    # C=2 channels, H=1, W=2: channel a = [1, 2], channel b = [3, 4].
    f = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    # sum_ij a*a = 1+4 = 5, a*b = 3+8 = 11, b*b = 9+16 = 25; divided by C*H*W = 4.
    expected = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4.0
    assert torch.allclose(gram(f), expected)
    assert torch.allclose(gram(f.unsqueeze(0))[0], expected)


def test_gram_is_a_spatial_mean_so_tiling_does_not_change_it():
    f = torch.randn(3, 4, 5, generator=torch.Generator().manual_seed(0))
    tiled = torch.cat([f, f], dim=2)  # the same texture twice as wide
    assert torch.allclose(gram(tiled), gram(f), atol=1e-6)


@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_gram_gradient_matches_autograd_of_the_plain_product(layout):
    # gram() has a hand-written backward ((dG + dG^T) F / n); check it against autograd on bmm(F, F^T),
    # for both activation layouts (the VGG backbones run channels-last, with their own backward branch).
    torch.manual_seed(0)
    feats = torch.randn(2, 5, 3, 4, dtype=torch.float64).contiguous(memory_format=layout).requires_grad_(True)
    weight = torch.randn(2, 5, 5, dtype=torch.float64)  # not symmetric, so both halves of dG matter
    (gram(feats) * weight).sum().backward()
    ours = feats.grad.clone()
    feats.grad = None
    flat = feats.reshape(2, 5, 12)
    ((torch.bmm(flat, flat.transpose(1, 2)) / 60.0) * weight).sum().backward()
    assert torch.allclose(ours, feats.grad, atol=1e-12)
    assert ours.is_contiguous(memory_format=layout)
    assert torch.autograd.gradcheck(gram, (feats.detach().requires_grad_(True),))


def test_gram_rejects_wrong_rank():
    with pytest.raises(ValueError):
        gram(torch.zeros(2, 2))


def test_style_loss_is_relative_squared_gram_error():
    f = torch.tensor([[[1.0, 2.0]], [[3.0, 4.0]]])
    target = torch.tensor([[1.0, 3.0], [3.0, 6.0]])
    g = torch.tensor([[5.0, 11.0], [11.0, 25.0]]) / 4.0  # [[1.25, 2.75], [2.75, 6.25]]
    # differences 0.25, -0.25, -0.25, 0.25 -> squared sum 0.25; ||target||^2 = 1 + 9 + 9 + 36 = 55.
    assert float(style_loss(f, target)) == pytest.approx(0.25 / 55.0)
    assert torch.allclose(g, gram(f))
    assert float(style_loss(f, gram(f))) == 0.0


def test_content_loss_and_scale_invariance():
    p = torch.tensor([1.0, 2.0, 2.0])
    x = torch.tensor([1.0, 0.0, 2.0])
    assert float(content_loss(x, p)) == pytest.approx(4.0 / 9.0)
    # Relative: scaling activations and target together leaves it unchanged (backbone independence).
    assert float(content_loss(10 * x, 10 * p)) == pytest.approx(4.0 / 9.0)
    f = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(1))
    t = torch.randn(4, 3, 3, generator=torch.Generator().manual_seed(2))
    assert float(style_loss(7 * f, gram(7 * t))) == pytest.approx(float(style_loss(f, gram(t))), rel=1e-5)


def test_tv_loss_hand_computed():
    img = torch.tensor([[[0.0, 1.0], [1.0, 3.0]]])  # (C=1, 2, 2)
    # vertical diffs: 1, 2 -> mean of squares 2.5; horizontal: 1, 2 -> 2.5.
    assert float(tv_loss(img)) == pytest.approx(5.0)
    assert float(tv_loss(torch.ones(1, 3, 4, 4))) == 0.0


def test_blend_grams_weights_are_normalised():
    a, b = torch.eye(2), torch.full((2, 2), 4.0)
    out = blend_grams([a, b], [3.0, 1.0])
    assert torch.allclose(out, 0.75 * a + 0.25 * b)
    with pytest.raises(ValueError):
        blend_grams([a, b], [1.0])
    with pytest.raises(ValueError):
        blend_grams([a, b], [0.0, 0.0])


def test_total_loss_combines_parts_with_normalised_layer_weights():
    g = torch.Generator().manual_seed(3)
    feats = {"s1": torch.randn(1, 2, 3, 3, generator=g), "s2": torch.randn(1, 4, 2, 2, generator=g)}
    feats["c"] = torch.randn(1, 4, 2, 2, generator=g)
    image = torch.rand(1, 3, 5, 5, generator=g)
    style_targets = {"s1": torch.eye(2), "s2": torch.eye(4) * 2}
    content_targets = {"c": torch.ones(1, 4, 2, 2)}
    loss, parts = total_loss(
        feats,
        image,
        style_targets=style_targets,
        content_targets=content_targets,
        style_layer_weights={"s1": 1.0, "s2": 3.0},
        content_weight=2.0,
        style_weight=10.0,
        tv_weight=0.5,
    )
    s1 = float(style_loss(feats["s1"], style_targets["s1"]))
    s2 = float(style_loss(feats["s2"], style_targets["s2"]))
    c = float(content_loss(feats["c"], content_targets["c"]))
    tv = float(tv_loss(image))
    expected = 2.0 * c + 10.0 * (0.25 * s1 + 0.75 * s2) + 0.5 * tv
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    assert parts["total"] == pytest.approx(expected, rel=1e-6)
    assert parts["style/s2"] == pytest.approx(s2, rel=1e-6)
