"""Up-front parameter checks of the heads: each rule is one line, and a broken one is a ParameterError.

Training a head first builds networks and reads every image, so a bad value found at the end would
cost minutes; the public functions run these checks before anything else.
"""

from __future__ import annotations

import math

from facestyle.errors import ParameterError


def require(ok: bool, template: str, **param: object) -> None:
    """Raise ``ParameterError(template, **param)`` unless ``ok``."""
    if not ok:
        raise ParameterError(template, **param)


def positive_finite(value: float) -> bool:
    """True for a real number > 0 (not NaN, not infinite)."""
    return isinstance(value, int | float) and math.isfinite(value) and value > 0


def non_negative_finite(value: float) -> bool:
    """True for a real number >= 0 (not NaN, not infinite)."""
    return isinstance(value, int | float) and math.isfinite(value) and value >= 0


def check_optimiser(epochs: int, lr: float, weight_decay: float) -> None:
    """What every head's training options share: at least one epoch, a positive finite learning rate
    and a finite, non-negative weight decay."""
    require(epochs >= 1, "{epochs} must be at least 1", epochs=epochs)
    require(positive_finite(lr), "{lr} must be positive and finite", lr=lr)
    require(
        non_negative_finite(weight_decay),
        "{weight_decay} must be at least 0 and finite",
        weight_decay=weight_decay,
    )
