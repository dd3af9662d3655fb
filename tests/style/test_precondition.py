"""SmoothingPreconditioner: symmetric, positive definite, boosts low frequencies by 1 + gain; and
ProjectedLBFGS with it solves a problem that is soft at low frequencies in fewer steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facestyle.style.lbfgs import ProjectedLBFGS
from facestyle.style.precondition import SmoothingPreconditioner


def test_sigma_scales_with_the_longer_side():
    p = SmoothingPreconditioner(sigma_per_256=2.0)
    assert p.sigma_for((1, 3, 256, 100)) == 2.0
    assert p.sigma_for((1, 3, 384, 512)) == 4.0


def test_symmetric_and_positive_definite():
    p = SmoothingPreconditioner(sigma_per_256=2.0, gain=16.0)
    gen = torch.Generator().manual_seed(0)
    u = torch.randn(1, 3, 40, 56, generator=gen, dtype=torch.float64)
    v = torch.randn(1, 3, 40, 56, generator=gen, dtype=torch.float64)
    assert abs(float((p(u) * v).sum() - (u * p(v)).sum())) < 1e-9 * float(u.norm() * v.norm())
    # P = I + g * G with G positive semi-definite: <Pv, v> >= |v|^2 (up to the truncation ripple).
    for w in (u, v, torch.ones_like(u), (-1.0) ** torch.arange(56, dtype=torch.float64).expand_as(u)):
        assert float((p(w) * w).sum()) >= 0.999 * float((w * w).sum())


def test_low_frequencies_get_one_plus_gain_high_frequencies_one():
    p = SmoothingPreconditioner(sigma_per_256=2.0, gain=16.0)  # sigma 2 px on a 64 x 256 image
    flat = torch.ones(1, 1, 64, 256)
    centre = p(flat)[0, 0, 16:48, 16:240]  # away from the zero padding
    assert torch.allclose(centre, torch.full_like(centre, 17.0), atol=1e-4)
    yy, xx = torch.meshgrid(torch.arange(64), torch.arange(256), indexing="ij")
    checker = ((-1.0) ** (yy + xx)).float()[None, None]
    ratio = p(checker)[0, 0, 16:48, 16:240] / checker[0, 0, 16:48, 16:240]
    assert torch.allclose(ratio, torch.ones_like(ratio), atol=1e-3)
    assert torch.equal(SmoothingPreconditioner(gain=0.0)(checker), checker)


def _smooth_valley(target: torch.Tensor):
    """f(x) = 0.5 |L (x - t)|^2 + 0.5 eps |x - t|^2 with L a 3x3 Laplacian: stiff at high frequencies,
    almost flat at low ones (condition number ~64 / eps), like the style objective in pixel space."""
    lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]]).view(1, 1, 3, 3)
    eps = 1e-3

    def apply(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(v, lap, padding=1)

    def loss(x: torch.Tensor) -> float:
        d = x - target
        return 0.5 * float(apply(d).pow(2).sum() + eps * d.pow(2).sum())

    def grad(x: torch.Tensor) -> torch.Tensor:
        d = x - target
        return F.conv_transpose2d(apply(d), lap, padding=1) + eps * d

    return loss, grad


def test_preconditioned_lbfgs_converges_faster_where_low_frequencies_are_soft():
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 32), indexing="ij")
    target = (0.5 + 0.3 * torch.sin(3.0 * xx) * torch.cos(2.0 * yy))[None, None]  # smooth, inside the box
    loss, grad = _smooth_valley(target)
    start = torch.full_like(target, 0.5)
    finals = {}
    for name, pre in (("plain", None), ("smooth", SmoothingPreconditioner(sigma_per_256=16.0, gain=64.0))):
        opt, x = ProjectedLBFGS(history=10, preconditioner=pre), start
        for _ in range(30):
            x = opt.step(x, grad(x))
        finals[name] = loss(x)
    assert finals["smooth"] < 0.2 * finals["plain"], finals


def test_identity_preconditioner_gives_the_plain_iterates():
    gen = torch.Generator().manual_seed(2)
    target = 0.2 + 0.6 * torch.rand(1, 3, 8, 8, generator=gen, dtype=torch.float64)
    curvature = torch.logspace(0, 2, target.numel(), dtype=torch.float64).view(target.shape)

    def grad(x: torch.Tensor) -> torch.Tensor:
        return 2 * curvature * (x - target)

    xs = []
    for pre in (None, lambda v: v.clone()):
        opt, x = ProjectedLBFGS(preconditioner=pre), torch.zeros_like(target)
        for _ in range(20):
            x = opt.step(x, grad(x))
        xs.append(x)
    assert torch.allclose(xs[0], xs[1], rtol=0, atol=1e-12)


def test_direction_matches_the_dense_bfgs_formula_with_gamma_p():
    """One curvature pair: H = V' (gamma P) V + rho s s', V = I - rho y s', gamma = s'y / y'Py."""
    gen = torch.Generator().manual_seed(3)
    shape = (1, 1, 3, 4)
    n = 12
    a = torch.randn(n, n, generator=gen, dtype=torch.float64)
    p_dense = a @ a.T + n * torch.eye(n, dtype=torch.float64)  # symmetric positive definite

    def pre(v: torch.Tensor) -> torch.Tensor:
        return (p_dense @ v.reshape(-1)).view(v.shape)

    opt = ProjectedLBFGS(preconditioner=pre)
    s_vec = torch.randn(n, generator=gen, dtype=torch.float64)
    y_vec = s_vec + 0.1 * torch.randn(n, generator=gen, dtype=torch.float64)  # y's > 0
    rho = 1.0 / float(y_vec @ s_vec)
    opt.pairs.append((s_vec, y_vec, rho))
    g = torch.randn(n, generator=gen, dtype=torch.float64)

    gamma = float(s_vec @ y_vec) / float(y_vec @ p_dense @ y_vec)
    v = torch.eye(n, dtype=torch.float64) - rho * torch.outer(y_vec, s_vec)
    h = v.T @ (gamma * p_dense) @ v + rho * torch.outer(s_vec, s_vec)
    assert torch.allclose(opt._direction(g, torch.Size(shape)), -(h @ g), rtol=1e-10, atol=1e-12)
