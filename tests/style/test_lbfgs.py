"""ProjectedLBFGS: convergence on quadratics, the box, and curvature pairs from the clamped moves."""

from __future__ import annotations

import torch

from facestyle.style.lbfgs import HISTORY_BUDGET, MAX_HISTORY, ProjectedLBFGS, history_length


def _quadratic(target: torch.Tensor, curvature: torch.Tensor):
    def grad(x: torch.Tensor) -> torch.Tensor:
        return 2 * curvature * (x - target)

    return grad


def _run(opt: ProjectedLBFGS, grad, x: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        x = opt.step(x, grad(x))
    return x


def test_converges_on_an_ill_conditioned_quadratic_inside_the_box():
    gen = torch.Generator().manual_seed(0)
    target = 0.3 + 0.4 * torch.rand(1, 3, 8, 8, generator=gen)
    curvature = torch.logspace(0, 2, target.numel()).view(target.shape)  # condition number 100
    x = _run(ProjectedLBFGS(), _quadratic(target, curvature), torch.zeros_like(target), 80)
    # Gradient descent at its stable step 1/200 shrinks the error on the flattest axis by only 1% per
    # step (to 45% after 80 steps); L-BFGS is at float32 rounding level.
    assert (x - target).abs().max() < 1e-4


def test_minimum_outside_the_box_ends_on_the_clamped_minimum():
    gen = torch.Generator().manual_seed(1)
    target = -0.5 + 2.0 * torch.rand(1, 3, 6, 6, generator=gen)  # about half the pixels out of [0, 1]
    curvature = torch.logspace(0, 1, target.numel()).view(target.shape)
    grad = _quadratic(target, curvature)
    x = _run(ProjectedLBFGS(), grad, torch.full_like(target, 0.5), 160)
    assert x.min() >= 0 and x.max() <= 1

    def loss(z: torch.Tensor) -> float:
        return float((curvature * (z - target).pow(2)).sum())

    # torch.optim.LBFGS with the clamp in its closure (pairs from the proposed, unclamped steps) stalls
    # on this problem 57 above the optimum; true displacement pairs get there.
    assert loss(x) - loss(target.clamp(0, 1)) < 1e-4
    assert (x - target.clamp(0, 1)).abs().max() < 5e-3


def test_stored_displacement_is_the_clamped_move_not_the_proposed_step():
    target = torch.tensor([[[[2.0, 0.5]]]])  # the first pixel's minimum is outside the box
    grad = _quadratic(target, torch.ones_like(target))
    opt = ProjectedLBFGS()
    x0 = torch.tensor([[[[0.9, 0.1]]]])
    x1 = opt.step(x0, grad(x0))
    x2 = opt.step(x1, grad(x1))
    assert x1[0, 0, 0, 0] == 1.0  # clamped
    s, y, _ = opt.pairs[-1]
    assert torch.equal(s, (x1 - x0).reshape(-1)) and torch.equal(y, (grad(x1) - grad(x0)).reshape(-1))
    assert x2.min() >= 0 and x2.max() <= 1
    opt.reset()
    assert not opt.pairs


def test_history_length_keeps_the_curvature_pairs_within_the_budget():
    assert MAX_HISTORY == 100 and HISTORY_BUDGET == 1 << 30
    assert history_length(3 * 512 * 512) == 100  # 0.6 GiB: the whole default history fits
    assert history_length(3 * 1024 * 768) == 56
    assert history_length(3 * 1024 * 1024) == 42  # instead of 2.5 GiB for 100 pairs
    assert history_length(3 * 4096 * 4096) == 10  # never fewer
    assert history_length(3 * 1024 * 1024, element_size=2) == 85
    for side in range(600, 2000, 37):
        n = history_length(3 * side * side)
        assert n * 2 * 4 * 3 * side * side <= HISTORY_BUDGET or n == 10
        assert (n + 1) * 2 * 4 * 3 * side * side > HISTORY_BUDGET or n == MAX_HISTORY


def test_history_never_holds_more_pairs_than_its_length():
    target = torch.full((1, 1, 4, 4), 0.5)
    opt = ProjectedLBFGS(history=3)
    _run(opt, _quadratic(target, torch.logspace(0, 1, 16).view(target.shape)), torch.zeros_like(target), 8)
    assert len(opt.pairs) == 3
