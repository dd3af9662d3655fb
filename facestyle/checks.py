"""Checks of user-given numbers, shared by every layer: each rule once, each failure one
:class:`~facestyle.errors.ParameterError` naming the parameter.

They run before any network is built or any file is read, so a mistyped option costs a line, not
minutes. NaN and infinities are refused everywhere: a NaN threshold rejects every face and a NaN weight
turns a whole style transfer into "loss nan".
"""

from __future__ import annotations

import math

from facestyle.errors import ParameterError


def is_finite_number(value: object) -> bool:
    """A real number (not a bool, not NaN, not infinite)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def positive_finite(value: object) -> bool:
    """A finite real number > 0."""
    return is_finite_number(value) and float(value) > 0  # type: ignore[arg-type]


def non_negative_finite(value: object) -> bool:
    """A finite real number >= 0."""
    return is_finite_number(value) and float(value) >= 0  # type: ignore[arg-type]


def require(ok: bool, template: str, **param: object) -> None:
    """Raise ``ParameterError(template, **param)`` unless ``ok``."""
    if not ok:
        raise ParameterError(template, **param)


def check_threshold(value: float | None, param: str = "threshold") -> float | None:
    """A similarity threshold: None (use the default) or a finite number in [-1, 1] (cosine; a pair
    head's probability lies in [0, 1] within it)."""
    if value is not None:
        require(
            is_finite_number(value) and -1.0 <= float(value) <= 1.0,
            f"{{{param}}} must be a number between -1 and 1 (a cosine similarity)",
            **{param: value},
        )
    return value


def check_top_k(value: int, param: str = "top_k") -> int:
    """How many candidates to list: a whole number, at least 1."""
    require(
        isinstance(value, int) and not isinstance(value, bool) and value >= 1,
        f"{{{param}}} must be at least 1",
        **{param: value},
    )
    return value


def check_optimiser(epochs: int, lr: float, weight_decay: float) -> None:
    """What every trained head's options share: at least one epoch, a positive finite learning rate
    and a finite, non-negative weight decay."""
    require(isinstance(epochs, int) and epochs >= 1, "{epochs} must be at least 1", epochs=epochs)
    require(positive_finite(lr), "{lr} must be positive and finite", lr=lr)
    require(
        non_negative_finite(weight_decay),
        "{weight_decay} must be at least 0 and finite",
        weight_decay=weight_decay,
    )
