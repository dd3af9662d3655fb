"""L-BFGS for an image whose pixels live in [0, 1], with curvature pairs from the moves actually made.

Style transfer keeps its pixels in range by clamping after every step (as the PyTorch tutorial does
inside its closure). ``torch.optim.LBFGS`` does not know about the clamp: it stores the step it
*proposed*, ``t * d``, as the displacement ``s`` of its curvature pair, while the image really moved by
the clamped amount. Every clamped pixel makes the pair inexact, and an inexact history is how a 512 px
run went from a loss of 0.276 to 7.1 in its last 25 steps (docs/style.md). Here ``s`` is the real
displacement ``x_{k+1} - x_k`` after the clamp, so every stored pair is a true secant of the objective.

Otherwise this is the L-BFGS of jcjohnson/neural-style and of ``torch.optim.LBFGS`` with its defaults:
two-loop recursion over up to 100 pairs, initial Hessian scaled by ``s'y / y'y``, unit step without a
line search (the first step scaled by ``min(1, 1/|g|_1)``), pairs with ``s'y <= 0`` skipped. On the
256 px optimiser benchmark it reaches the torch version's final loss after ~10% fewer evaluations
(benchmarks/stylize_optimisers.py).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import torch
from torch import Tensor

#: Curvature pairs kept at most (jcjohnson/neural-style's and ``torch.optim.LBFGS``'s default).
MAX_HISTORY = 100
#: Bytes the curvature history may take before it is shortened: each pair is two image-sized float32
#: tensors, so 100 pairs of a 1024x1024 image would be 2.5 GiB, the largest item of such a run.
HISTORY_BUDGET = 1 << 30


def history_length(numel: int, element_size: int = 4, budget: int | None = None) -> int:
    """How many curvature pairs of an image with ``numel`` elements fit in ``budget`` bytes
    (:data:`HISTORY_BUDGET` when None).

    :data:`MAX_HISTORY` up to ~450k pixels (512x512 gets all 100), fewer above: 56 at 1024x768, 42 at
    1024x1024, never under 10. Shortening the history costs little final loss (docs/style.md measures
    it), while its memory grows with the pixels.
    """
    fits = (HISTORY_BUDGET if budget is None else budget) // max(1, 2 * numel * element_size)
    return int(max(10, min(MAX_HISTORY, fits)))


class ProjectedLBFGS:
    """Search directions for minimising over the box [0, 1]^n; the caller evaluates and moves.

    Usage, one objective evaluation per step::

        opt = ProjectedLBFGS()
        x = x0.clamp(0, 1)
        for _ in range(steps):
            grad = gradient_at(x)
            x = opt.step(x, grad)
    """

    def __init__(
        self,
        history: int = MAX_HISTORY,
        lr: float = 1.0,
        preconditioner: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        """``preconditioner``: a symmetric positive definite operator ``P`` on image-shaped tensors; the
        initial inverse Hessian becomes ``gamma * P`` with ``gamma = s'y / y'Py`` (``P = I``, the textbook
        choice, when None). See :mod:`.precondition`."""
        self.pairs: deque[tuple[Tensor, Tensor, float]] = deque(maxlen=history)  # flat (s, y, 1 / y's)
        self.lr = lr
        self.preconditioner = preconditioner
        self._previous: tuple[Tensor, Tensor] | None = None

    def reset(self) -> None:
        """Forget the curvature history and the last point (after the caller moved the image itself)."""
        self.pairs.clear()
        self._previous = None

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        """The next image, clamped to [0, 1], from the current image ``x`` and the gradient there."""
        x, grad = x.detach(), grad.detach()
        flat_x, flat_grad = x.reshape(-1), grad.reshape(-1)
        if self._previous is not None:
            s, y = flat_x - self._previous[0], flat_grad - self._previous[1]
            ys = float(torch.dot(y, s))
            if ys > 1e-10:
                self.pairs.append((s, y, 1.0 / ys))
        self._previous = (flat_x, flat_grad)
        direction = self._direction(flat_grad, x.shape).view(x.shape)
        step = self.lr if self.pairs else self.lr * min(1.0, 1.0 / max(float(grad.abs().sum()), 1e-30))
        return (x + step * direction).clamp_(0, 1)

    def _precondition(self, q: Tensor, shape: torch.Size) -> Tensor:
        """``P q`` for a flat vector, ``P`` applied to it as an image of ``shape``."""
        assert self.preconditioner is not None
        return self.preconditioner(q.view(shape)).reshape(-1)

    def _direction(self, grad: Tensor, shape: torch.Size) -> Tensor:
        """``-H grad`` by the two-loop recursion, on flat vectors (``torch.dot`` makes no image-sized
        temporaries: with 100 pairs, ``(s * q).sum()`` cost ~90 ms a step at 512 px)."""
        q = grad.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float(torch.dot(s, q))
            alphas.append(a)
            q.add_(y, alpha=-a)
        if self.preconditioner is not None:
            q = self._precondition(q, shape)
        if self.pairs:
            s, y, rho = self.pairs[-1]
            py = y if self.preconditioner is None else self._precondition(y, shape)
            q.mul_(1.0 / (rho * float(torch.dot(y, py))))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float(torch.dot(y, q))
            q.add_(s, alpha=a - b)
        return q.neg_()
