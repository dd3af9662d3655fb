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

from torch import Tensor


class ProjectedLBFGS:
    """Search directions for minimising over the box [0, 1]^n; the caller evaluates and moves.

    Usage, one objective evaluation per step::

        opt = ProjectedLBFGS()
        x = x0.clamp(0, 1)
        for _ in range(steps):
            grad = gradient_at(x)
            x = opt.step(x, grad)
    """

    def __init__(self, history: int = 100, lr: float = 1.0) -> None:
        self.pairs: deque[tuple[Tensor, Tensor, float]] = deque(maxlen=history)  # (s, y, 1 / y's)
        self.lr = lr
        self._previous: tuple[Tensor, Tensor] | None = None

    def reset(self) -> None:
        """Forget the curvature history and the last point (after the caller moved the image itself)."""
        self.pairs.clear()
        self._previous = None

    def step(self, x: Tensor, grad: Tensor) -> Tensor:
        """The next image, clamped to [0, 1], from the current image ``x`` and the gradient there."""
        x, grad = x.detach(), grad.detach()
        if self._previous is not None:
            s, y = x - self._previous[0], grad - self._previous[1]
            ys = float((y * s).sum())
            if ys > 1e-10:
                self.pairs.append((s, y, 1.0 / ys))
        self._previous = (x, grad)
        direction = self._direction(grad)
        step = self.lr if self.pairs else self.lr * min(1.0, 1.0 / max(float(grad.abs().sum()), 1e-30))
        return (x + step * direction).clamp_(0, 1)

    def _direction(self, grad: Tensor) -> Tensor:
        """``-H grad`` by the two-loop recursion."""
        q = grad.clone()
        alphas = []
        for s, y, rho in reversed(self.pairs):
            a = rho * float((s * q).sum())
            alphas.append(a)
            q.add_(y, alpha=-a)
        if self.pairs:
            s, y, _ = self.pairs[-1]
            q.mul_(float((s * y).sum()) / float((y * y).sum()))
        for (s, y, rho), a in zip(self.pairs, reversed(alphas), strict=True):
            b = rho * float((y * q).sum())
            q.add_(s, alpha=a - b)
        return q.neg_()
