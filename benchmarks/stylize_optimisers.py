"""Loss against work for ways of optimising the same Gatys objective: can any of them reach the
single-scale L-BFGS result in a third of the work?

Every variant minimises the *same* full-size objective (facestyle's ``Objective``: taps relu1_1..relu5_1
/ relu4_2, relative losses, default weights, seeded random VGG19: weights do not change the speed) from
the same start (the content image), and every loss printed is that objective evaluated on the clipped
image, the one that would be saved. Work is counted in full-size forward+backward evaluations (an
evaluation at half size counts 1/4), so the table does not depend on how busy the machine is.

Variants:
- ``lbfgs-clamp``: the PyTorch tutorial's way (and facestyle's until 2026-11-22): ``torch.optim.LBFGS``
  (history 100, unit step, no line search), pixels clamped to [0, 1] inside the closure.
- ``facestyle``: facestyle's ``optimise``: the same L-BFGS and clamp, but curvature pairs from the moves
  actually made (``facestyle.style.lbfgs.ProjectedLBFGS``).
- ``facestyle-preconditioned``: the same with the smoothing preconditioner ``stylize`` uses on its first
  level (``facestyle.style.precondition.SmoothingPreconditioner``: initial inverse Hessian
  ``gamma * (I + 16 G_sigma)``, sigma 2 px per 256 px).
- ``lbfgs-no-clamp``: the same without the clamp; the result is clipped at the end.
- ``lbfgs-straight-through``: the loss is taken on clamp(x), its gradient passed to x unchanged.
- ``lbfgs-pyramid``: the image is a sum of 4 Laplacian-pyramid levels (full, 1/2, 1/4, 1/8 size)
  optimised together (a preconditioner that speeds up large-scale changes), straight-through clamp.
- ``lbfgs-b``: SciPy's L-BFGS-B (history 20) with the [0, 1] box as true bounds (Gatys et al.'s
  optimiser); skipped when SciPy is not installed.
- ``two-scale``: ``--coarse-steps`` evaluations at half size first (facestyle's ``--scales 2``
  transition: upsampled result plus the content's detail band), then full size.
- ``facestyle-two-scale``: the same schedule with facestyle's ``optimise`` at both levels (no
  preconditioner at either).

    python benchmarks/stylize_optimisers.py                     # 256 px, 300 evaluations, ~25 min on 2 cores
    python benchmarks/stylize_optimisers.py --variants lbfgs-clamp,two-scale --size 512
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from facestyle.io.images import load_image
from facestyle.models import registry
from facestyle.style.options import DEFAULTS
from facestyle.style.precondition import SmoothingPreconditioner
from facestyle.style.transfer import (
    Objective,
    fit_size,
    optimise,
    resize,
    to_tensor,
    upsample_with_detail,
)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "style"
#: The default taps of the backbone (relu1_1..relu5_1 / relu4_2), as ``stylize`` uses them.
STYLE_TAPS = list(registry.get_model("vgg19-random").style_taps)
CONTENT_TAPS = list(registry.get_model("vgg19-random").content_taps)
VARIANTS = [
    "lbfgs-clamp",
    "facestyle",
    "facestyle-preconditioned",
    "lbfgs-no-clamp",
    "lbfgs-straight-through",
    "lbfgs-pyramid",
    "lbfgs-b",
    "two-scale",
    "facestyle-two-scale",
]


class ClampStraightThrough(torch.autograd.Function):
    """clamp(x, 0, 1) forward, identity backward: the loss is that of the saved image, yet pixels past
    the range still feel the gradient (the clamp's own gradient would freeze them)."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # noqa: ANN001
        return x.clamp(0, 1)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # noqa: ANN001
        return grad


class Recorder:
    """Counts work and records the clipped-image loss every ``every`` full-size evaluations."""

    def __init__(self, score: Callable[[Tensor], float], every: int = 10) -> None:
        self.score, self.every = score, every
        self.work = 0.0
        self.curve: list[tuple[float, float]] = []

    def tick(self, fraction: float, image: Callable[[], Tensor] | None) -> None:
        before = self.work
        self.work += fraction
        if image is not None and int(self.work // self.every) > int(before // self.every):
            self.curve.append((self.work, self.score(image())))


def lbfgs(params: list[Tensor], closure: Callable[[], Tensor], evals: int) -> None:
    opt = torch.optim.LBFGS(
        params, lr=1, max_iter=evals, max_eval=evals, history_size=100, tolerance_grad=-1, tolerance_change=-1
    )

    def step() -> Tensor:
        opt.zero_grad()
        return closure()

    opt.step(step)


def run_pixels(obj: Objective, x0: Tensor, evals: int, rec: Recorder, mode: str, fraction: float = 1.0):
    """L-BFGS on the pixels with one of the clamp handlings: 'clamp', 'none', 'straight-through'."""
    x = x0.detach().clone().requires_grad_(True)
    track = (lambda: x.detach().clamp(0, 1)) if fraction == 1.0 else None

    def closure() -> Tensor:
        if mode == "clamp":
            with torch.no_grad():
                x.clamp_(0, 1)
        loss, _ = obj(ClampStraightThrough.apply(x) if mode == "straight-through" else x)
        loss.backward()
        rec.tick(fraction, track)
        return loss

    lbfgs([x], closure, evals)
    return x.detach().clamp(0, 1)


def run_pyramid(obj: Objective, x0: Tensor, evals: int, rec: Recorder, levels: int = 4) -> Tensor:
    hw = tuple(x0.shape[-2:])
    parts = [x0.detach().clone()] + [
        torch.zeros(1, 3, max(1, hw[0] >> k), max(1, hw[1] >> k)) for k in range(1, levels)
    ]
    for p in parts:
        p.requires_grad_(True)

    def image() -> Tensor:
        x = parts[0]
        for p in parts[1:]:
            x = x + F.interpolate(p, size=hw, mode="bilinear", align_corners=False)
        return x

    def closure() -> Tensor:
        loss, _ = obj(ClampStraightThrough.apply(image()))
        loss.backward()
        rec.tick(1.0, lambda: image().detach().clamp(0, 1))
        return loss

    lbfgs(parts, closure, evals)
    return image().detach().clamp(0, 1)


def run_lbfgsb(obj: Objective, x0: Tensor, evals: int, rec: Recorder) -> Tensor:
    from scipy.optimize import minimize

    shape = x0.shape

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        x = torch.from_numpy(z.astype(np.float32)).view(shape).requires_grad_(True)
        loss, _ = obj(x)
        loss.backward()
        rec.tick(1.0, lambda: x.detach().clamp(0, 1))
        return float(loss.detach()), x.grad.numpy().ravel().astype(np.float64)

    z0 = x0.numpy().ravel().astype(np.float64)
    opts = {"maxfun": evals, "maxiter": evals, "maxcor": 20, "ftol": 0.0, "gtol": 0.0}
    res = minimize(fun, z0, jac=True, method="L-BFGS-B", bounds=[(0.0, 1.0)] * z0.size, options=opts)
    return torch.from_numpy(res.x.astype(np.float32)).view(shape)


def run_facestyle(
    obj: Objective, x0: Tensor, evals: int, rec: Recorder, fraction: float = 1.0, preconditioned: bool = False
) -> Tensor:
    """facestyle's own ``optimise`` (ProjectedLBFGS and its safeguards)."""

    def on_step(_i: int, _loss: float, _parts: dict, x: Tensor) -> None:
        rec.tick(fraction, (lambda: x) if fraction == 1.0 else None)

    pre = SmoothingPreconditioner() if preconditioned else None
    return optimise(obj, x0, evals, preconditioner=pre, on_step=on_step)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--evals", type=int, default=300, help="full-size evaluations per variant")
    ap.add_argument("--coarse-steps", type=int, default=200, help="two-scale: evaluations at half size")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--content", default=str(DATA / "content" / "tubingen.jpg"))
    ap.add_argument("--style", default=str(DATA / "styles" / "starry-night.jpg"))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    extractor = registry.backbone("vgg19-random", STYLE_TAPS + CONTENT_TAPS)
    content_arr, style_arr = load_image(args.content), load_image(args.style)
    weights = {k: DEFAULTS[k] for k in ("content_weight", "style_weight", "tv_weight")}

    def objective(side: int) -> tuple[Objective, Tensor]:
        c = resize(to_tensor(content_arr), fit_size(content_arr.shape[:2], side))
        s = resize(to_tensor(style_arr), fit_size(style_arr.shape[:2], side))
        obj = Objective(extractor, c, [s], [1.0], style_taps=STYLE_TAPS, content_taps=CONTENT_TAPS, **weights)
        return obj, c

    full, content = objective(args.size)

    def score(img: Tensor) -> float:
        with torch.no_grad():
            return full(img.clamp(0, 1))[1]["total"]

    results = []
    for name in args.variants.split(","):
        rec = Recorder(score)
        t0 = time.perf_counter()
        if name == "lbfgs-clamp":
            out = run_pixels(full, content, args.evals, rec, "clamp")
        elif name == "lbfgs-no-clamp":
            out = run_pixels(full, content, args.evals, rec, "none")
        elif name == "lbfgs-straight-through":
            out = run_pixels(full, content, args.evals, rec, "straight-through")
        elif name == "lbfgs-pyramid":
            out = run_pyramid(full, content, args.evals, rec)
        elif name == "lbfgs-b":
            try:
                out = run_lbfgsb(full, content, args.evals, rec)
            except ImportError:
                print("# lbfgs-b skipped: SciPy is not installed (pip install scipy)")
                continue
        elif name == "facestyle":
            out = run_facestyle(full, content, args.evals, rec)
        elif name == "facestyle-preconditioned":
            out = run_facestyle(full, content, args.evals, rec, preconditioned=True)
        elif name in ("two-scale", "facestyle-two-scale"):
            coarse, c_small = objective(max(16, args.size // 2))
            frac = c_small.numel() / content.numel()
            if name == "two-scale":
                small = run_pixels(coarse, c_small, args.coarse_steps, rec, "clamp", fraction=frac)
                start = upsample_with_detail(small, content)
                out = run_pixels(full, start, round(args.evals - rec.work), rec, "clamp")
            else:
                small = run_facestyle(coarse, c_small, args.coarse_steps, rec, fraction=frac)
                out = run_facestyle(
                    full, upsample_with_detail(small, content), round(args.evals - rec.work), rec
                )
        else:
            raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")
        final = score(out)
        if not rec.curve or rec.curve[-1][0] != rec.work:
            rec.curve.append((rec.work, final))
        results.append(
            {"variant": name, "work": rec.work, "final_loss": final, "curve": rec.curve,
             "seconds": time.perf_counter() - t0}
        )  # fmt: skip
        print(f"# {name}: final {results[-1]['final_loss']:.4f} after {rec.work:.0f} evaluations", flush=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    marks = [m for m in (50, 100, 150, 200, 250, 300, 400, 500) if m <= args.evals]
    base = next((r for r in results if r["variant"] == "lbfgs-clamp"), None)
    print(f"\n{args.size} px, loss of the clipped image after N full-size evaluations (lower is better)")
    print(f"{'variant':<24}" + "".join(f"{m:>9}" for m in marks) + f"{'final':>9}{'to base':>9}")
    for r in results:
        curve = dict((round(w), loss) for w, loss in r["curve"])
        cells = "".join(f"{curve[m]:>9.4f}" if m in curve else f"{'-':>9}" for m in marks)
        reach = "-"
        if base is not None:
            hit = [w for w, loss in r["curve"] if loss <= base["final_loss"]]
            reach = f"{hit[0]:.0f}" if hit else f">{r['work']:.0f}"
        print(f"{r['variant']:<24}{cells}{r['final_loss']:>9.4f}{reach:>9}")
    if base is not None:
        print(f"'to base': evaluations needed to reach lbfgs-clamp's final loss {base['final_loss']:.4f}")


if __name__ == "__main__":
    main()
