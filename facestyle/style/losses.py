"""The Gatys objective as pure tensor math: Gram matrices, style, content and total-variation losses.

Nothing here knows about networks, files or devices, so every function can be checked by hand on a
tensor of a few elements (tests/style/test_losses.py does exactly that).

Normalisation, and why:

* ``gram(F)`` for activations ``F`` of shape (C, H, W) is ``G[k, k'] = sum_ij F[k,i,j] F[k',i,j] / (C*H*W)``
  (jcjohnson/neural-style's choice). Dividing by the number of positions makes the Gram matrix a
  *mean* over the image, so a style image and a generated image of different sizes, or the same
  image at two scales of the coarse-to-fine schedule, give comparable targets.
* Style and content losses are *relative*: ``||G(x) - A||^2 / ||A||^2`` and ``||F(x) - P||^2 / ||P||^2``.
  Raw squared errors scale with the fourth (style) or second (content) power of the activation
  magnitude, which differs by orders of magnitude between layers and between backbones (ImageNet
  VGG19, a random-weight VGG19, the dlib face ResNet). Relative errors make every tap count on the
  same footing and let one set of default weights serve every backbone; the per-layer weights
  ``lambda_l`` then mean what they say.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

_EPS = 1e-12


class _GramProduct(torch.autograd.Function):
    """``F @ F^T * scale`` for ``F`` of shape (N, C, P), with a one-product backward.

    Autograd on ``bmm(F, F^T)`` sees two uses of ``F`` and computes two products plus an accumulation of
    two (N, C, P) gradients, one of them through a transposed view; at relu1_1 of a 512 px image that
    accumulation alone is a 50 MB strided add. The gradient is ``(dG + dG^T) @ F * scale``: one product
    of a C x C matrix with F. The profiler puts the saving at 0.1-0.2 s of a ~2 s step at 512 px; whole
    runs against the tutorial-style reference stay within this machine's noise (docs/style.md).
    """

    @staticmethod
    def forward(ctx, flat: Tensor, scale: float) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(flat)
        ctx.scale = scale
        return torch.bmm(flat, flat.transpose(1, 2)).mul_(scale)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (flat,) = ctx.saved_tensors
        sym = grad + grad.transpose(1, 2)
        if flat.stride(1) == 1:
            # Channels-last activations: return the gradient in the same layout ((F^T S)^T = S F, S
            # symmetric), so the layers below do not get a layout conversion with it.
            return torch.bmm(flat.transpose(1, 2), sym).transpose(1, 2).mul_(ctx.scale), None
        return torch.bmm(sym, flat).mul_(ctx.scale), None


def gram(features: Tensor) -> Tensor:
    """Gram matrix of activations ``(C, H, W)`` or ``(N, C, H, W)``, divided by ``C*H*W``.

    Returns ``(C, C)`` or ``(N, C, C)``.
    """
    if features.dim() == 3:
        return gram(features.unsqueeze(0)).squeeze(0)
    if features.dim() != 4:
        raise ValueError(f"expected (C,H,W) or (N,C,H,W) activations, got shape {tuple(features.shape)}")
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return _GramProduct.apply(flat, 1.0 / float(c * h * w))


def blend_grams(grams: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Weighted mean of the Gram matrices of several style images (the weights are normalised to sum 1)."""
    if len(grams) != len(weights) or not grams:
        raise ValueError("need one weight per style Gram matrix")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError("style blend weights must be non-negative and not all zero")
    out = torch.zeros_like(grams[0])
    for g, w in zip(grams, weights, strict=True):
        out = out + g * (float(w) / total)
    return out


def relative_sq_error(value: Tensor, target: Tensor) -> Tensor:
    """``||value - target||^2 / ||target||^2`` (scalar); ``target`` is treated as a constant."""
    target = target.detach()
    return (value - target).pow(2).sum() / target.pow(2).sum().clamp_min(_EPS)


def style_loss(features: Tensor, target_gram: Tensor) -> Tensor:
    """J_style^l: relative squared Frobenius distance between ``gram(features)`` and the target Gram."""
    return relative_sq_error(gram(features), target_gram)


def content_loss(features: Tensor, target_features: Tensor) -> Tensor:
    """J_content: relative squared distance between activations at the content tap."""
    return relative_sq_error(features, target_features)


def tv_loss(image: Tensor) -> Tensor:
    """Total variation (squared, mean over neighbour pairs) of an ``(N, C, H, W)`` or ``(C, H, W)`` image.

    Squared differences (as jcjohnson/neural-style) smooth the high-frequency noise that the style
    loss alone leaves, without the staircase look of the absolute-value version.
    """
    if image.dim() == 3:
        image = image.unsqueeze(0)
    dy = image[:, :, 1:, :] - image[:, :, :-1, :]
    dx = image[:, :, :, 1:] - image[:, :, :, :-1]
    return dy.pow(2).mean() + dx.pow(2).mean()


def total_loss(
    features: Mapping[str, Tensor],
    image: Tensor,
    *,
    style_targets: Mapping[str, Tensor],
    content_targets: Mapping[str, Tensor],
    style_layer_weights: Mapping[str, float],
    content_weight: float,
    style_weight: float,
    tv_weight: float,
) -> tuple[Tensor, dict[str, float]]:
    """J = alpha * J_content + beta * sum_l lambda_l J_style^l + tv * TV, and its parts as floats.

    ``lambda_l`` are normalised to sum to 1 so that ``style_weight`` keeps its meaning whatever the
    number of style taps. Content taps share ``content_weight`` equally.
    """
    parts: dict[str, float] = {}
    lam_total = float(sum(style_layer_weights[k] for k in style_targets))
    s = features[next(iter(features))].new_zeros(())
    for name, target in style_targets.items():
        term = style_loss(features[name], target)
        parts[f"style/{name}"] = float(term.detach())
        s = s + term * (style_layer_weights[name] / lam_total)
    c = features[next(iter(features))].new_zeros(())
    for name, target in content_targets.items():
        term = content_loss(features[name], target)
        parts[f"content/{name}"] = float(term.detach())
        c = c + term / len(content_targets)
    tv = tv_loss(image) if tv_weight else image.new_zeros(())
    loss = content_weight * c + style_weight * s + tv_weight * tv
    parts.update(
        content=float(c.detach()), style=float(s.detach()), tv=float(tv.detach()), total=float(loss.detach())
    )
    return loss, parts
