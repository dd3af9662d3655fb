"""Gatys et al. style transfer: optimise the pixels of an image so its deep features match a content
image's activations and the style images' Gram matrices.

:func:`stylize` is the library entry point (the CLI's ``stylize`` is a thin wrapper). It takes arrays
or paths and returns the image as a uint8 array plus the losses; it writes nothing unless
``snapshot`` is given.

With ``scales`` > 1 the schedule is coarse to fine (levels each twice the size of the previous, the
last at the requested size): coarse steps are cheap (a quarter of the pixels per halving) and settle
the large-scale layout, so the expensive full-resolution level starts closer to a solution.
:func:`split_steps` says how many steps each level gets. The default is one scale: at 256-512 px the
measured loss per second of CPU favoured it only slightly while costing sharpness (docs/style.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facestyle.device import native_bfloat16, resolve_device
from facestyle.errors import UsageError
from facestyle.heap import retained_heap
from facestyle.models.extractor import FeatureExtractor
from facestyle.models.registry import backbone as build_backbone
from facestyle.models.registry import get_model
from facestyle.style.color import preserve_colors as keep_content_colors
from facestyle.style.lbfgs import MAX_HISTORY, ProjectedLBFGS, history_length
from facestyle.style.losses import blend_grams, gram, total_loss
from facestyle.style.precondition import SmoothingPreconditioner

ImageLike = str | Path | np.ndarray

#: Defaults (see docs/style.md for the reasoning and measurements).
DEFAULTS = {
    "size": 512,
    "steps": 300,
    "optimizer": "lbfgs",
    "content_weight": 1.0,
    "style_weight": 1e3,
    "tv_weight": 1.0,
    "style_scale": 1.0,
    "init": "content",
    "scales": 1,
    "seed": 0,
    "backbone": "vgg19-imagenet",
    "adam_lr": 0.02,
}


@dataclass
class StepInfo:
    """Reported to the ``progress`` callback after every optimiser step."""

    step: int  # 1-based, over all scales
    total_steps: int
    scale: int  # 0-based level, coarsest first
    scales: int
    size: tuple[int, int]  # (height, width) of this level
    loss: float
    parts: dict[str, float]


@dataclass
class StylizeResult:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    losses: dict[str, float]  # final objective at full size, on the saved (clipped) image
    history: list[tuple[int, float]]  # (global step, total loss) as optimised
    seconds: float
    backbone: str
    backbone_trained: bool
    device: str
    schedule: list[dict] = field(default_factory=list)  # per level: size, steps, L-BFGS history
    precision: str = "float32"  # of the backbone during the optimisation; losses are always float32


# --------------------------------------------------------------------------------------- image utils


def to_tensor(image: np.ndarray, device: torch.device | str = "cpu") -> Tensor:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [0, 1]."""
    return (
        torch.from_numpy(np.array(image, dtype=np.uint8, copy=True)).to(device).permute(2, 0, 1)[None].float()
        / 255.0
    )


def to_uint8(image: Tensor) -> np.ndarray:
    """(1, 3, H, W) float in [0, 1] (values outside are clipped) -> (H, W, 3) uint8."""
    arr = image.detach()[0].float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()
    return np.ascontiguousarray(arr)


def resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize with antialiasing when shrinking (so a downscaled style keeps its texture statistics
    instead of aliasing)."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    return F.interpolate(image, size=size, mode="bilinear", align_corners=False, antialias=shrinking)


def fit_size(hw: tuple[int, int], max_side: int) -> tuple[int, int]:
    """(height, width) with the longer side ``max_side`` and the aspect ratio kept."""
    h, w = hw
    scale = max_side / max(h, w)
    return max(1, round(h * scale)), max(1, round(w * scale))


def _load(image: ImageLike) -> np.ndarray:
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, axis=2)
        if image.ndim != 3 or image.shape[2] not in (3, 4) or image.dtype != np.uint8:
            raise UsageError(f"image arrays must be (H, W, 3) uint8, got {image.shape} {image.dtype}")
        return image[..., :3]
    from facestyle.io.images import load_image

    return load_image(image)


# ------------------------------------------------------------------------------------------ schedule


def split_steps(total: int, scales: int) -> list[int]:
    """Steps per level, coarsest first, summing to ``total``.

    Each level gets twice the steps of the next finer one: a coarse step costs a quarter of a fine
    one, so the coarse levels (where most of the loss is removed) together cost less than half the
    finest level. With 3 levels, 300 steps become 171/86/43.
    """
    if scales < 1:
        raise UsageError("--scales must be at least 1")
    if total < scales:
        raise UsageError(f"--steps {total} is fewer than one step per scale ({scales} scales)")
    shares = [2.0 ** (scales - 1 - i) for i in range(scales)]
    steps = [max(1, round(total * s / sum(shares))) for s in shares]
    steps[0] = total - sum(steps[1:])  # the coarsest level takes the rounding remainder
    return steps


#: A coarse level's shortest side in pixels: below this VGG has too few pixels left after four poolings.
MIN_LEVEL_SIDE = 32


def level_sizes(full: tuple[int, int], scales: int, min_side: int = MIN_LEVEL_SIDE) -> list[tuple[int, int]]:
    """(H, W) per level, halving from ``full``; levels whose short side would drop below ``min_side``
    are dropped (VGG needs some pixels left after four poolings)."""
    sizes = []
    for i in range(scales - 1, -1, -1):
        f = 0.5**i
        hw = (max(1, round(full[0] * f)), max(1, round(full[1] * f)))
        if min(hw) >= min_side or i == 0:
            sizes.append(hw)
    return sizes


# ----------------------------------------------------------------------------------------- objective


class Objective:
    """The Gatys objective at one resolution: targets fixed, call with an image to get (loss, parts)."""

    def __init__(
        self,
        extractor: FeatureExtractor,
        content: Tensor,
        styles: Sequence[Tensor],
        blend: Sequence[float],
        *,
        style_taps: Sequence[str],
        content_taps: Sequence[str],
        content_weight: float,
        style_weight: float,
        tv_weight: float,
        layer_weights: dict[str, float] | None = None,
        half_dtype: torch.dtype | None = None,
    ) -> None:
        self.extractor = extractor
        self.style_taps, self.content_taps = list(style_taps), list(content_taps)
        self.weights = dict(content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight)
        self.layer_weights = layer_weights or {t: 1.0 for t in self.style_taps}
        self.half_dtype = half_dtype
        # The targets go through the same precision as the image being optimised. Reduced-precision
        # features are a slightly different function of the image; matched against float32 targets,
        # L-BFGS chases that difference (at 512 px: +4.8% final loss instead of +1%, docs/style.md).
        with torch.no_grad():
            feats = self._features(content)
            self.content_targets = {t: feats[t].detach() for t in self.content_taps}
            per_style = []
            for s in styles:
                f = self._features(s)
                per_style.append({t: gram(f[t]).detach() for t in self.style_taps})
            self.style_targets = {
                t: blend_grams([g[t] for g in per_style], list(blend)) for t in self.style_taps
            }

    def _features(self, image: Tensor) -> dict[str, Tensor]:
        """Backbone activations as float32 (computed under ``half_dtype`` autocast if set)."""
        half = self.half_dtype
        with torch.autocast(image.device.type, half) if half is not None else contextlib.nullcontext():
            feats = self.extractor(image)
        return {k: v.float() for k, v in feats.items()}

    def __call__(self, image: Tensor) -> tuple[Tensor, dict[str, float]]:
        return total_loss(
            self._features(image),
            image,
            style_targets=self.style_targets,
            content_targets=self.content_targets,
            style_layer_weights=self.layer_weights,
            **self.weights,
        )


def reduced_precision(device: torch.device) -> torch.dtype:
    """The autocast dtype ``--half`` runs the backbone in on ``device``.

    float16 on CUDA. bfloat16 on a CPU with native bfloat16 instructions, where oneDNN's early VGG19
    convolutions run twice as fast (the Winograd layers stay float32: there that is as fast);
    at 512 px that made a run ~1.2x faster for ~1% more final loss (docs/style.md). Elsewhere bfloat16 is
    emulated, slower than float32, so asking for it is an error rather than a silent slowdown.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and native_bfloat16():
        return torch.bfloat16
    raise UsageError(
        "--half needs a CUDA device or a CPU with native bfloat16 (AVX512-BF16 or AMX); "
        "on this one it would be slower, not faster"
    )


# ------------------------------------------------------------------------------------------ main loop


#: What ``optimizer`` may name.
OPTIMIZERS = ("lbfgs", "adam")


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {optimizer!r}; choose {' or '.join(OPTIMIZERS)}")


#: An L-BFGS evaluation this many times above the best loss so far means the run has diverged.
DIVERGENCE_FACTOR = 2.0


def optimise(
    objective: Callable[[Tensor], tuple[Tensor, dict[str, float]]],
    image: Tensor,
    steps: int,
    *,
    optimizer: str = "lbfgs",
    lr: float | None = None,
    preconditioner: Callable[[Tensor], Tensor] | None = None,
    history: int = MAX_HISTORY,
    on_step: Callable[[int, float, dict[str, float], Tensor], None] | None = None,
) -> Tensor:
    """Run ``steps`` objective evaluations/updates on ``image``; return the best image seen.

    ``preconditioner``: L-BFGS's initial inverse Hessian shape (:mod:`.precondition`); None is the
    textbook scalar one. ``history``: curvature pairs L-BFGS keeps.

    L-BFGS as jcjohnson/neural-style (history 100, no line search, unit step), with the pixels clamped
    to [0, 1] after every step (as the PyTorch tutorial) so the loss optimised is the loss of the image
    that is saved, and with curvature pairs taken from the moves actually made (:mod:`.lbfgs` says why).
    Exactly one evaluation per step, so the step count is the work done (reproducible timing).

    Without a line search L-BFGS can still overshoot late in a run (docs/style.md). Two safeguards cost
    nothing on a healthy run: an evaluation more than :data:`DIVERGENCE_FACTOR` times the best loss so
    far (or not finite) restarts L-BFGS from the best image with an empty history, and the image
    returned is the best one evaluated (the final update is scored with one forward pass to compete),
    so a run never ends worse than it has been.
    """
    _check_optimizer(optimizer)
    x = image.detach().clone().contiguous().clamp_(0, 1)
    lbfgs = ProjectedLBFGS(history, lr or 1.0, preconditioner) if optimizer == "lbfgs" else None
    adam_param = x.clone().requires_grad_(True) if lbfgs is None else None
    adam = torch.optim.Adam([adam_param], lr=lr or DEFAULTS["adam_lr"]) if adam_param is not None else None
    best_loss, best_image = float("inf"), x

    for i in range(steps):
        xg = x.detach().requires_grad_(True)
        loss, parts = objective(xg)
        loss.backward()
        total = parts["total"]
        if total < best_loss:
            best_loss, best_image = total, x
        if lbfgs is not None:
            if total <= DIVERGENCE_FACTOR * best_loss:
                x = lbfgs.step(x, xg.grad)
            else:  # diverged (or not finite): back to the best image, with a fresh history
                lbfgs.reset()
                x = best_image
        else:  # the Adam parameter always equals x here: it is clamped in place after each step
            adam_param.grad = xg.grad
            adam.step()
            with torch.no_grad():
                adam_param.clamp_(0, 1)
            x = adam_param.detach().clone()
        if on_step is not None:
            on_step(i + 1, total, dict(parts), x)
    with torch.no_grad():
        final_loss = objective(x)[1]["total"] if steps else float("inf")
    return x if final_loss <= best_loss else best_image


def stylize(
    content: ImageLike,
    styles: ImageLike | Sequence[ImageLike],
    *,
    size: int = DEFAULTS["size"],
    steps: int = DEFAULTS["steps"],
    optimizer: str = DEFAULTS["optimizer"],
    content_weight: float = DEFAULTS["content_weight"],
    style_weight: float = DEFAULTS["style_weight"],
    tv_weight: float = DEFAULTS["tv_weight"],
    style_blend: Sequence[float] | None = None,
    style_scale: float = DEFAULTS["style_scale"],
    init: str | ImageLike = DEFAULTS["init"],
    preserve_colors: bool = False,
    scales: int = DEFAULTS["scales"],
    seed: int = DEFAULTS["seed"],
    backbone: str = DEFAULTS["backbone"],
    device: str | torch.device | None = None,
    half: bool = False,
    lr: float | None = None,
    style_taps: Sequence[str] | None = None,
    content_taps: Sequence[str] | None = None,
    steps_per_scale: Sequence[int] | None = None,
    precondition: bool = True,
    lbfgs_history: int | None = None,
    save_every: int = 0,
    snapshot: Callable[[int, np.ndarray], None] | None = None,
    progress: Callable[[StepInfo], None] | None = None,
    extractor: FeatureExtractor | None = None,
) -> StylizeResult:
    """Stylise ``content`` with one or more ``styles``; see the module docstring and docs/style.md.

    ``init``: "content", "random" (seeded noise) or an image/path. ``snapshot(step, image)`` is called
    every ``save_every`` steps with the current image (colour-preserved if asked). ``extractor`` lets a
    caller reuse an already built backbone (benchmarks, batch jobs). ``precondition``: the first level's
    L-BFGS uses :class:`.SmoothingPreconditioner` (it makes the large changes from the initial image
    sooner); refinement levels never do, because there it measured worse (docs/style.md). ``half``:
    run the backbone in :func:`reduced_precision` while optimising; the reported losses are float32.
    ``lbfgs_history``: curvature pairs L-BFGS keeps; None sizes it per level with :func:`.history_length`
    (100, fewer above ~450k pixels, so the history stays within 1 GiB).
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if size < 16:
        raise UsageError(f"--size {size} is too small (at least 16 pixels)")
    if style_scale <= 0:
        raise UsageError("--style-scale must be positive")
    _check_optimizer(optimizer)  # before the backbone is built, not after
    if lbfgs_history is not None and lbfgs_history < 1:
        raise UsageError("--lbfgs-history must be at least 1")
    if lbfgs_history is not None and optimizer != "lbfgs":  # Adam keeps no history: say so, don't ignore
        raise UsageError(f"--lbfgs-history applies to --optimizer lbfgs, not {optimizer}")
    half_dtype = reduced_precision(dev) if half else None
    style_list = [styles] if isinstance(styles, str | Path | np.ndarray) else list(styles)
    if not style_list:
        raise UsageError("give at least one style image")
    blend = list(style_blend) if style_blend is not None else [1.0] * len(style_list)
    if len(blend) != len(style_list):
        raise UsageError(f"--style-blend has {len(blend)} weights for {len(style_list)} style images")
    if any(w < 0 for w in blend) or sum(blend) <= 0:
        raise UsageError("--style-blend weights must be non-negative and not all zero")

    spec = get_model(backbone)
    s_taps = list(style_taps or spec.style_taps)
    c_taps = list(content_taps or spec.content_taps)
    if extractor is None:
        extractor = build_backbone(backbone, list(dict.fromkeys(s_taps + c_taps)), dev)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)

    content_arr = _load(content)
    style_arrs = [_load(s) for s in style_list]
    full = fit_size(content_arr.shape[:2], size)
    content_t = to_tensor(content_arr, dev)
    style_ts = [to_tensor(s, dev) for s in style_arrs]
    sizes = level_sizes(full, scales)
    per_level = list(steps_per_scale) if steps_per_scale else split_steps(steps, len(sizes))
    if len(per_level) != len(sizes):
        raise UsageError(
            f"--steps-per-scale has {len(per_level)} entries for {len(sizes)} levels "
            f"(--scales {scales}, less any level with a side under {MIN_LEVEL_SIDE} px)"
        )
    total = sum(per_level)
    # Curvature pairs per level: an RGB image's history is bounded in bytes, so large levels keep fewer.
    histories = [lbfgs_history or history_length(3 * h * w) for h, w in sizes]

    image: Tensor | None = None
    history: list[tuple[int, float]] = []
    done = 0
    content_full_u8 = to_uint8(resize(content_t, full))

    def finish(x: Tensor) -> np.ndarray:
        out = to_uint8(resize(x, full))
        return keep_content_colors(out, content_full_u8) if preserve_colors else out

    def make_objective(c_level: Tensor, s_level: list[Tensor], half: torch.dtype | None) -> Objective:
        return Objective(
            extractor, c_level, s_level, blend, style_taps=s_taps, content_taps=c_taps,
            content_weight=content_weight, style_weight=style_weight, tv_weight=tv_weight, half_dtype=half,
        )  # fmt: skip

    objective: Objective | None = None
    full_size_inputs: tuple[Tensor, list[Tensor]] | None = None  # the last level's content and styles
    # CPU steps free and re-allocate the same large blocks every step; keep them (facestyle/heap.py).
    with retained_heap() if dev.type == "cpu" else contextlib.nullcontext():
        for level, (hw, n, pairs) in enumerate(zip(sizes, per_level, histories, strict=True)):
            c_level = resize(content_t, hw)
            style_px = max(1, round(max(hw) * style_scale))
            s_level = [resize(s, fit_size(s.shape[-2:], style_px)) for s in style_ts]
            objective = make_objective(c_level, s_level, half_dtype)
            full_size_inputs = (c_level, s_level)
            image = _initial(init, c_level, gen) if image is None else upsample_with_detail(image, c_level)

            def on_step(
                i: int, loss: float, parts: dict[str, float], x: Tensor, level=level, hw=hw, done=done
            ) -> None:
                step = done + i
                history.append((step, loss))
                if progress is not None:
                    progress(StepInfo(step, total, level, len(sizes), hw, loss, parts))
                if snapshot is not None and save_every and step % save_every == 0 and step != total:
                    snapshot(step, finish(x))

            smoothing = SmoothingPreconditioner() if precondition and level == 0 else None
            image = optimise(
                objective, image, n, optimizer=optimizer, lr=lr, preconditioner=smoothing,
                history=pairs, on_step=on_step,
            )  # fmt: skip
            done += n

    assert image is not None and objective is not None and full_size_inputs is not None
    final = finish(image)
    with torch.no_grad():
        # Loss of what is saved (clipped, quantised, before colour transfer) under the full-size objective.
        if half_dtype is not None:  # report (and let callers judge) the float32 loss
            objective = make_objective(*full_size_inputs, None)
        _, losses = objective(to_tensor(to_uint8(image), dev))
    return StylizeResult(
        image=final,
        losses=losses,
        history=history,
        seconds=time.perf_counter() - t0,
        backbone=extractor.name,
        backbone_trained=extractor.trained,
        device=str(dev),
        schedule=[
            {"height": h, "width": w, "steps": n, **({"lbfgs_history": k} if optimizer == "lbfgs" else {})}
            for (h, w), n, k in zip(sizes, per_level, histories, strict=True)
        ],
        precision=str(half_dtype or torch.float32).removeprefix("torch."),
    )


def upsample_with_detail(coarse: Tensor, content: Tensor) -> Tensor:
    """The coarse level's result brought to ``content``'s size, for the next level to start from.

    Upsampling loses the fine detail the coarse level could not hold; the content's own detail at this
    scale (one Laplacian-pyramid band) is added back so the fine level starts sharp instead of spending
    its steps re-sharpening.
    """
    hw = tuple(content.shape[-2:])
    up = F.interpolate(coarse, size=hw, mode="bicubic", align_corners=False)
    blurred = F.interpolate(
        resize(content, tuple(coarse.shape[-2:])), size=hw, mode="bicubic", align_corners=False
    )
    return (up + (content - blurred)).clamp(0, 1)


def _initial(init: str | ImageLike, content: Tensor, gen: torch.Generator) -> Tensor:
    if isinstance(init, str) and init == "content":
        return content.clone()
    if isinstance(init, str) and init == "random":
        noise = torch.randn(content.shape, generator=gen).to(content.device)
        return (0.5 + 0.15 * noise).clamp(0, 1)
    return resize(to_tensor(_load(init), content.device), tuple(content.shape[-2:]))
