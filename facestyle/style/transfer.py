"""Gatys et al. style transfer: optimise the pixels of an image so its deep features match a content
image's activations and the style images' Gram matrices.

:func:`stylize` is the library entry point (the CLI's ``stylize`` is a thin wrapper). It takes arrays
or paths and a :class:`~facestyle.style.options.StyleOptions`, and returns the image as a uint8 array
plus the losses (:class:`StylizeResult`); it writes nothing unless ``snapshot`` is given.

With more than one scale the schedule is coarse to fine (levels each twice the size of the previous,
the last at the requested size): coarse steps are cheap (a quarter of the pixels per halving) and
settle the large-scale layout, so the expensive full-resolution level starts closer to a solution.
:func:`plan_levels` says how big each level is and how many steps it gets. The default is one scale:
at 256-512 px the measured loss per second of CPU favoured it only slightly while costing sharpness
(docs/style.md).
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facestyle.device import native_bfloat16, resolve_device
from facestyle.errors import ParameterError, literal
from facestyle.heap import retained_heap
from facestyle.io.images import ImageLike, as_rgb
from facestyle.models.extractor import FeatureExtractor
from facestyle.models.registry import backbone as build_backbone
from facestyle.models.registry import get_model
from facestyle.style import memory
from facestyle.style.color import preserve_colors as keep_content_colors
from facestyle.style.lbfgs import MAX_HISTORY, ProjectedLBFGS, history_length
from facestyle.style.losses import blend_grams, gram, total_loss
from facestyle.style.options import DEFAULTS, INIT_KEYWORDS, StyleOptions, SuggestionError, check_optimizer
from facestyle.style.precondition import SmoothingPreconditioner

#: A snapshot callback: ``(step, image)`` with the image as it would be saved.
Snapshot = Callable[[int, np.ndarray], None]


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
    """The stylised image, its losses and how it was made (:meth:`to_dict` is the CLI's ``--json``)."""

    image: np.ndarray  # (H, W, 3) uint8 RGB
    losses: dict[str, float]  # final objective at full size, on the saved (clipped) image
    history: list[tuple[int, float]]  # (global step, total loss) as optimised
    seconds: float
    backbone: str
    backbone_trained: bool
    device: str
    schedule: list[dict] = field(default_factory=list)  # per level: size, steps, L-BFGS history
    precision: str = "float32"  # of the backbone during the optimisation; losses are always float32
    backbone_description: str = ""
    options: StyleOptions = field(default_factory=StyleOptions)  # what the image was made with (resolved)
    backbone_default: bool = False  # True when the backbone was chosen as the best present (backbone=None)
    style_layers: dict[str, float] = field(default_factory=dict)  # style tap -> its weight lambda_l
    content_layers: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The run as plain JSON values: size, backbone, device, time, schedule, final losses."""
        h, w = self.image.shape[:2]
        return {
            "width": w,
            "height": h,
            "backbone": self.backbone,
            "backbone_trained": self.backbone_trained,
            "backbone_description": self.backbone_description,
            "backbone_default": self.backbone_default,
            "style_layers": dict(self.style_layers),
            "content_layers": list(self.content_layers),
            "device": self.device,
            "precision": self.precision,
            "seconds": round(self.seconds, 3),
            "steps": sum(level["steps"] for level in self.schedule),
            "schedule": [dict(level) for level in self.schedule],
            "losses": {k: self.losses[k] for k in ("total", "content", "style", "tv")},
            "preserve_colors": self.options.preserve_colors,
            "seed": self.options.seed,
        }


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


# ------------------------------------------------------------------------------------------ schedule


def split_steps(total: int, scales: int) -> list[int]:
    """Steps per level, coarsest first, summing to ``total``.

    Each level gets twice the steps of the next finer one: a coarse step costs a quarter of a fine
    one, so the coarse levels (where most of the loss is removed) together cost less than half the
    finest level. With 3 levels, 300 steps become 171/86/43.
    """
    if scales < 1:
        raise ParameterError("{scales} is too small (at least 1)", scales=scales)
    if total < scales:
        raise ParameterError(
            "{steps} is fewer than one step per scale ({scales})", steps=total, scales=scales
        )
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


@dataclass(frozen=True)
class Level:
    """One level of the coarse-to-fine schedule."""

    size: tuple[int, int]  # (height, width)
    steps: int
    lbfgs_history: int  # curvature pairs L-BFGS keeps at this level

    def describe(self, optimizer: str) -> dict:
        """The level as :attr:`StylizeResult.schedule` reports it (the history only for L-BFGS)."""
        h, w = self.size
        history = {"lbfgs_history": self.lbfgs_history} if optimizer == "lbfgs" else {}
        return {"height": h, "width": w, "steps": self.steps, **history}


def plan_levels(options: StyleOptions, full: tuple[int, int]) -> list[Level]:
    """The levels ``options`` ask for on an output of ``full`` (height, width) pixels.

    Levels whose short side is under :data:`MIN_LEVEL_SIDE` (or under what the backbone needs,
    :func:`level_min_side`) are dropped, except the finest; given ``steps_per_scale`` must then still fit.
    Each level's L-BFGS history comes from a memory budget (:func:`.history_length`: 100 pairs, fewer
    above ~450k pixels so the history stays within 1 GiB) unless ``lbfgs_history`` fixes it.
    """
    smallest = max(MIN_LEVEL_SIDE, level_min_side(options))
    sizes = level_sizes(full, options.scale_count, smallest)
    if options.steps_per_scale is None:
        per_level = split_steps(options.total_steps, len(sizes))
    else:
        per_level = list(options.steps_per_scale)
    if len(per_level) != len(sizes):
        raise ParameterError(
            f"{{steps_per_scale}} has {len(per_level)} levels, but at {{size}} only {len(sizes)} "
            f"{'is' if len(sizes) == 1 else 'are'} at least {smallest} px on each side",
            steps_per_scale=options.steps_per_scale,
            size=options.size,
        )
    return [Level(hw, n, _pairs(options, hw)) for hw, n in zip(sizes, per_level, strict=True)]


def _pairs(options: StyleOptions, level: tuple[int, int]) -> int:
    """Curvature pairs L-BFGS keeps at a level of (height, width): ``lbfgs_history``, else what the
    history's byte budget allows an RGB image of that size (:func:`.history_length`)."""
    return options.lbfgs_history or history_length(3 * level[0] * level[1])


def _style_side(level: tuple[int, int], style_scale: float) -> int:
    """Longer side of every style image at a level: ``style_scale`` times the level's longer side."""
    return max(1, round(max(level) * style_scale))


# ------------------------------------------------------------------------------ checked before the work


def _deepest_tap(options: StyleOptions) -> str:
    """The deepest of the taps ``options`` use (the backbone runs up to it)."""
    order = get_model(options.backbone_name).taps
    style, content = options.taps()
    return max(style + content, key=order.index)


def level_min_side(options: StyleOptions) -> int:
    """The smallest short side (px) the content or a style image may have at any level on ``options``'
    backbone: 16, or more where its layers need it (:func:`facestyle.style.memory.min_side`)."""
    return memory.min_side(options.backbone_name, _deepest_tap(options))


def _loads(
    options: StyleOptions, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]], size: int
) -> list[memory.LevelLoad]:
    """The levels of a run at ``size`` as the memory model sees them: :func:`plan_levels`' sizes and
    histories and each style's size there (:func:`_level_inputs`), without its refusals."""
    smallest = max(MIN_LEVEL_SIDE, level_min_side(options))
    loads = []
    for hw in level_sizes(fit_size(content_hw, size), options.scale_count, smallest):
        styles = tuple(fit_size(s, _style_side(hw, options.style_scale)) for s in style_hws)
        pairs = _pairs(options, hw) if options.optimizer == "lbfgs" else 0
        loads.append(memory.LevelLoad(hw, styles, pairs))
    return loads


def predict_memory(
    options: StyleOptions,
    content_hw: tuple[int, int],
    style_hws: Sequence[tuple[int, int]],
    size: int | None = None,
) -> memory.Estimate | None:
    """The predicted peak memory of a CPU run of ``options`` (at ``size`` instead of ``options.size``
    if given) on a content and styles of these (height, width); None for a backbone the model does not
    know (:func:`facestyle.style.memory.profile`)."""
    found = memory.profile(options.backbone_name, _deepest_tap(options))
    if found is None:
        return None
    loads = _loads(options, content_hw, style_hws, options.size if size is None else size)
    return memory.predict_peak(
        found.bytes_per_pixel, loads, [content_hw, *style_hws], optimizer=options.optimizer
    )


def _thin(
    options: StyleOptions, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]], size: int
) -> tuple[str, int, tuple[int, int]] | None:
    """The first image a run at ``size`` would shrink below :func:`level_min_side` on its short side:
    (which, its short side there, its own (height, width)), or None when every level is wide enough."""
    smallest = level_min_side(options)
    for load in _loads(options, content_hw, style_hws, size):
        if min(load.size) < smallest:
            return "the content", min(load.size), content_hw
        for i, hw in enumerate(load.styles):
            if min(hw) < smallest:
                which = f"style image {i + 1}" if len(style_hws) > 1 else "the style image"
                return which, min(hw), style_hws[i]
    return None


def check_sides(
    options: StyleOptions, content_hw: tuple[int, int], style_hws: Sequence[tuple[int, int]]
) -> None:
    """Refuse a run whose content or style image would be too thin for the backbone at some level.

    A 10000x200 photo at ``size=512`` is 512x10: four poolings later nothing is left (torch stopped with
    "Output size is too small"). Such a run is refused in one line that says which ``size`` (for the
    content) or ``style_scale`` (for a style image) would work, and, when that would not fit in memory
    on a CPU, that the image has to be cropped. Odd shapes are not padded or tiled: that would stylise
    another picture than the one given.
    """
    thin = _thin(options, content_hw, style_hws, options.size)
    if thin is None:
        return
    which, side, (h, w) = thin
    smallest = level_min_side(options)
    head = f"{{size}} makes {which}'s short side {side} px (image {w}x{h}); at least {smallest} px are needed"
    if which == "the content":
        size = memory.first_passing(lambda n: _thin(options, content_hw, style_hws, n) is None, options.size)
        fixed = replace(options, size=size) if size is not None else None
        fix = ("size", size)
    else:
        start = math.floor(options.style_scale * 100)
        hundredths = memory.first_passing(
            lambda k: (
                _thin(replace(options, style_scale=k / 100), content_hw, style_hws, options.size) is None
            ),
            start,
        )
        fixed = replace(options, style_scale=hundredths / 100) if hundredths is not None else None
        fix = ("style_scale", None if hundredths is None else hundredths / 100)
        head = head.replace("{size} makes", "{size} with {style_scale} makes")
    params = {"size": options.size, "style_scale": options.style_scale}
    if fixed is None:
        raise ParameterError(f"{head}; no size works: crop or pad {which}", **params)
    needs = predict_memory(fixed, content_hw, style_hws)
    budget = memory.memory_budget()
    if needs is not None and budget.usable is not None and needs.peak > budget.usable:
        raise SuggestionError(
            f"{head}, which takes {{fix}}; that needs ~{memory.gib(needs.peak)} and {_budget_words(budget)}: "
            f"crop {which} to a less elongated shape",
            {"fix": fix},
            **params,
        )
    raise SuggestionError(f"{head}: use {{fix}} or more", {"fix": fix}, **params)


def _budget_words(budget: memory.Budget) -> str:
    amount = memory.gib(budget.bytes or 0)
    if budget.source.startswith("$"):
        return f"{budget.source} allows {amount}"
    if budget.source == "cgroup memory.max":
        return f"this process may use {amount} (cgroup memory.max)"
    return f"this machine has {amount} available"


def check_memory(
    options: StyleOptions,
    content_hw: tuple[int, int],
    style_hws: Sequence[tuple[int, int]],
    device: torch.device | str = "cpu",
) -> memory.Estimate | None:
    """Refuse a CPU run whose predicted peak (:func:`predict_memory`) exceeds what this machine can give
    it (:func:`facestyle.style.memory.memory_budget`, less its headroom), saying the largest ``size``
    that fits. Returns the estimate, or None when nothing was checked (a GPU run, a backbone the model
    does not know, a system where the available memory cannot be read)."""
    if torch.device(device).type != "cpu":
        return None
    estimate = predict_memory(options, content_hw, style_hws)
    if estimate is None:
        return None
    budget = memory.memory_budget()
    if budget.usable is None:
        return None
    if estimate.peak <= budget.usable:
        return estimate
    low = (
        memory.first_passing(lambda n: _thin(options, content_hw, style_hws, n) is None, memory.MIN_SIDE - 1)
        or options.size
    )
    fits = memory.largest_fitting(
        lambda n: predict_memory(options, content_hw, style_hws, n).peak,  # type: ignore[union-attr]
        budget.usable,
        low,
        max(low, options.size),
    )
    head = f"{{size}} needs ~{memory.gib(estimate.peak)}; {_budget_words(budget)}"
    history = ""
    if options.lbfgs_history is not None and estimate.history > estimate.peak // 4:
        history = f" ({{lbfgs_history}} keeps {memory.gib(estimate.history)} of it)"
    params = {"size": options.size, "lbfgs_history": options.lbfgs_history}
    if fits is None:
        raise ParameterError(f"{head}{history}; no size fits", **params)
    raise SuggestionError(f"{head}{history}; at most {{fits}} fits", {"fits": ("size", fits)}, **params)


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
    """The autocast dtype ``half`` runs the backbone in on ``device``.

    float16 on CUDA. bfloat16 on a CPU with native bfloat16 instructions, where oneDNN's early VGG19
    convolutions run twice as fast (the Winograd layers stay float32: there that is as fast);
    at 512 px that made a run ~1.2x faster for ~1% more final loss (docs/style.md). Elsewhere bfloat16 is
    emulated, slower than float32, so asking for it is an error rather than a silent slowdown.
    """
    if device.type == "cuda":
        return torch.float16
    if device.type == "cpu" and native_bfloat16():
        return torch.bfloat16
    raise ParameterError(
        "{half} needs a CUDA device or a CPU with native bfloat16 (AVX512-BF16 or AMX); "
        "on this one it would be slower, not faster",
        half=True,
    )


# ------------------------------------------------------------------------------------------ main loop


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
    check_optimizer(optimizer)
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
    options: StyleOptions | None = None,
    *,
    device: str | torch.device | None = None,
    progress: Callable[[StepInfo], None] | None = None,
    snapshot: Snapshot | None = None,
    extractor: FeatureExtractor | None = None,
) -> StylizeResult:
    """Stylise ``content`` with one or more ``styles`` (paths or uint8 arrays) as ``options`` say
    (default :class:`StyleOptions`); see the module docstring and docs/style.md.

    Everything that could be wrong with the options, the inputs or the device is reported before the
    backbone is built. The keyword arguments say where and how to run, not what to make: ``device``
    (default CUDA when present), ``progress(StepInfo)`` after every step, ``snapshot(step, image)`` every
    ``options.save_every`` steps with the current image (colour-preserved if asked), and ``extractor``,
    an already built backbone of ``options.backbone`` to reuse (benchmarks, batch jobs).

    ``options.backbone=None`` runs on the best backbone present
    (:func:`~facestyle.style.options.default_style_backbone`: ImageNet VGG19 when its weights were
    imported, else HED's VGG16); the result says which (``backbone``, ``backbone_default``). With the
    backbone's own taps, the style layers are weighted as its registry entry says (``style_weights``).

    The first level's L-BFGS uses :class:`.SmoothingPreconditioner` when ``options.precondition`` (it
    makes the large changes from the initial image sooner); refinement levels never do, because there
    it measured worse (docs/style.md). With ``options.half`` the backbone runs in
    :func:`reduced_precision` while optimising; the reported losses are float32.
    """
    t0 = time.perf_counter()
    opts = options if options is not None else StyleOptions()
    style_list = _style_list(styles)
    opts.validate(styles=len(style_list))
    chosen_by_default = opts.backbone is None
    opts = opts.resolved()  # backbone=None is the best backbone present (default_style_backbone)
    dev = resolve_device(device)
    half_dtype = reduced_precision(dev) if opts.half else None
    content_arr = as_rgb(content, "content")[0]
    style_arrs = [as_rgb(s, "style")[0] for s in style_list]
    start = _start(opts.init)
    content_hw, style_hws = content_arr.shape[:2], [s.shape[:2] for s in style_arrs]
    check_sides(opts, content_hw, style_hws)
    full = fit_size(content_hw, opts.size)
    levels = plan_levels(opts, full)
    check_memory(opts, content_hw, style_hws, dev)
    extractor = _backbone(opts, extractor, dev, chosen_by_default)
    torch.manual_seed(opts.seed)
    gen = torch.Generator().manual_seed(opts.seed)

    content_t = to_tensor(content_arr, dev)
    style_ts = [to_tensor(s, dev) for s in style_arrs]
    content_full_u8 = to_uint8(resize(content_t, full))
    blend = list(opts.style_blend) if opts.style_blend is not None else [1.0] * len(style_list)
    s_taps, c_taps = opts.taps()
    layer_weights = opts.style_layer_weights()

    def finish(x: Tensor) -> np.ndarray:
        out = to_uint8(resize(x, full))
        return keep_content_colors(out, content_full_u8) if opts.preserve_colors else out

    def make_objective(c_level: Tensor, s_level: list[Tensor], half: torch.dtype | None) -> Objective:
        return Objective(
            extractor, c_level, s_level, blend, style_taps=s_taps, content_taps=c_taps,
            content_weight=opts.content_weight, style_weight=opts.style_weight, tv_weight=opts.tv_weight,
            layer_weights=layer_weights, half_dtype=half,
        )  # fmt: skip

    reporter = _Reporter(sum(level.steps for level in levels), len(levels), progress, snapshot, opts, finish)
    image: Tensor | None = None
    # CPU steps free and re-allocate the same large blocks every step; keep them (facestyle/heap.py).
    with retained_heap() if dev.type == "cpu" else contextlib.nullcontext():
        for index, level in enumerate(levels):
            c_level, s_level = _level_inputs(content_t, style_ts, level.size, opts.style_scale)
            objective = make_objective(c_level, s_level, half_dtype)
            image = _initial(start, c_level, gen) if image is None else upsample_with_detail(image, c_level)
            smoothing = SmoothingPreconditioner() if opts.precondition and index == 0 else None
            image = optimise(
                objective, image, level.steps, optimizer=opts.optimizer, lr=opts.lr, preconditioner=smoothing,
                history=level.lbfgs_history, on_step=reporter.level(index, level),
            )  # fmt: skip

    assert image is not None
    with torch.no_grad():
        # Loss of what is saved (clipped, quantised, before colour transfer) under the full-size objective.
        if half_dtype is not None:  # report (and let callers judge) the float32 loss
            objective = make_objective(c_level, s_level, None)  # the last level's inputs: full size
        _, losses = objective(to_tensor(to_uint8(image), dev))
    return StylizeResult(
        image=finish(image),
        losses=losses,
        history=reporter.history,
        seconds=time.perf_counter() - t0,
        backbone=extractor.name,
        backbone_trained=extractor.trained,
        device=str(dev),
        schedule=[level.describe(opts.optimizer) for level in levels],
        precision=str(half_dtype or torch.float32).removeprefix("torch."),
        backbone_description=extractor.description,
        options=opts,
        backbone_default=chosen_by_default,
        style_layers=layer_weights,
        content_layers=c_taps,
    )


def _style_list(styles: ImageLike | Sequence[ImageLike]) -> list[ImageLike]:
    """One style image or several, as a non-empty list."""
    if isinstance(styles, np.ndarray) or not isinstance(styles, Sequence) or isinstance(styles, str):
        return [styles]
    if not styles:
        raise ParameterError("{styles} is empty: give at least one style image", styles=list(styles))
    return list(styles)


def _backbone(
    opts: StyleOptions, extractor: FeatureExtractor | None, device: torch.device, by_default: bool = False
) -> FeatureExtractor:
    """``extractor`` if given (it must be ``opts.backbone``'s: the default taps come from that entry),
    else the backbone built with the taps ``opts`` use. ``by_default``: ``opts.backbone`` was resolved
    from None (the error then says so)."""
    if extractor is not None:
        if extractor.name != opts.backbone:
            chosen = f" (the best backbone present, {literal(opts.backbone)})" if by_default else ""
            raise ParameterError(
                f"{{backbone}}{chosen} does not match the extractor passed in ({literal(extractor.name)})",
                backbone=None if by_default else opts.backbone,
            )
        return extractor
    style_taps, content_taps = opts.taps()
    return build_backbone(opts.backbone, list(dict.fromkeys(style_taps + content_taps)), device)


def _level_inputs(
    content: Tensor, styles: list[Tensor], size: tuple[int, int], style_scale: float
) -> tuple[Tensor, list[Tensor]]:
    """The content at a level's size, and each style with its longer side ``style_scale`` times the
    level's (its own aspect ratio kept, so its textures are not stretched)."""
    style_px = _style_side(size, style_scale)
    return resize(content, size), [resize(s, fit_size(s.shape[-2:], style_px)) for s in styles]


class _Reporter:
    """Per step: the loss history, the ``progress`` callback and the ``snapshot`` every ``save_every``
    steps (not at the last step: the caller has the final image)."""

    def __init__(
        self,
        total: int,
        levels: int,
        progress: Callable[[StepInfo], None] | None,
        snapshot: Snapshot | None,
        options: StyleOptions,
        finish: Callable[[Tensor], np.ndarray],
    ) -> None:
        self.total, self.levels, self.progress, self.snapshot = total, levels, progress, snapshot
        self.save_every, self.finish = options.save_every, finish
        self.history: list[tuple[int, float]] = []
        self._done = 0

    def level(self, index: int, level: Level) -> Callable[[int, float, dict[str, float], Tensor], None]:
        """:func:`optimise`'s ``on_step`` for level ``index`` (call once per level, in order)."""
        done, self._done = self._done, self._done + level.steps

        def on_step(i: int, loss: float, parts: dict[str, float], x: Tensor) -> None:
            step = done + i
            self.history.append((step, loss))
            if self.progress is not None:
                self.progress(StepInfo(step, self.total, index, self.levels, level.size, loss, parts))
            if (
                self.snapshot is not None
                and self.save_every
                and step % self.save_every == 0
                and step != self.total
            ):
                self.snapshot(step, self.finish(x))

        return on_step


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


def _start(init: str | ImageLike) -> str | np.ndarray:
    """``init`` as :func:`_initial` takes it: a keyword, or the image read now (before any work)."""
    if isinstance(init, str) and init in INIT_KEYWORDS:
        return init
    return as_rgb(init, "init")[0]


def _initial(start: str | np.ndarray, content: Tensor, gen: torch.Generator) -> Tensor:
    """The first level's starting image: the content, seeded noise, or an image resized to the level."""
    if isinstance(start, str) and start == "content":
        return content.clone()
    if isinstance(start, str) and start == "random":
        noise = torch.randn(content.shape, generator=gen).to(content.device)
        return (0.5 + 0.15 * noise).clamp(0, 1)
    return resize(to_tensor(start, content.device), tuple(content.shape[-2:]))
