"""Which layers of HED's VGG16 (``vgg16-hed``) to use for style transfer: run layer configurations on
real content x style pairs, then score every output with judges that do not depend on the configuration.

Each configuration is (backbone, style taps with their weights lambda_l, content taps). A run is one
``stylize``-equivalent optimisation at one scale: the objective ``Objective`` with the default content,
style and TV weights (unless ``--style-weight``), started from the content image, ``optimise`` with
the first level's smoothing preconditioner, inside the retained heap: what ``stylize(..., StyleOptions(
scales=1, steps=N))`` does, but with any per-layer weights (``StyleOptions`` takes weights only from the
registry entry). Outputs are cached as PNG in ``--out`` (a re-run only scores them).

Scores of an output X for content C and style S (lower is better for the first two, higher for the rest):

* ``gram_hed``: under every ReLU of vgg16-hed (relu1_1 .. relu5_3, 13 layers), the Gram distance
  ``||G(X) - G(S)||^2`` as a fraction of the content photo's ``||G(C) - G(S)||^2``, geometric mean over
  the layers. A judge with all 13 layers, not only the ones a configuration optimises.
* ``gram_mnv2``: the same under torchvision's ImageNet MobileNetV2 (stem, block3, 6, 10, 13, 16): a
  network none of the configurations optimise, so the "is it the style" judge is independent.
* ``edge_r``: correlation of the gradient-magnitude maps (luminance, Gaussian sigma 1 px) of X and C: is
  the photo's structure still there.
* ``ssim``: mean SSIM of the luminance of X against C (sigma 1.5 px).

    python benchmarks/style_layers.py                               # the table in docs/style.md
    python benchmarks/style_layers.py --configs hed-G,hed-G-c33 --per-image
    python benchmarks/style_layers.py --configs hed-G --pairs tubingen:candy --style-weight 100
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from facestyle.heap import retained_heap
from facestyle.io.images import load_image, save_image
from facestyle.models import registry
from facestyle.style.losses import gram
from facestyle.style.options import DEFAULTS
from facestyle.style.precondition import SmoothingPreconditioner
from facestyle.style.transfer import Objective, fit_size, optimise, resize, to_tensor, to_uint8

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CONTENTS = {
    "portrait": DATA / "faces" / "lfw-view1" / "images" / "Cameron_Diaz" / "Cameron_Diaz_0001.jpg",
    "tubingen": DATA / "style" / "content" / "tubingen.jpg",
}
STYLES = {name: DATA / "style" / "styles" / f"{name}.jpg" for name in ("candy", "starry-night", "mosaic")}

GATYS = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
JOHNSON = ("relu1_2", "relu2_2", "relu3_3", "relu4_3")
#: name -> (backbone, {style tap: lambda_l}, content taps)
CONFIGS: dict[str, tuple[str, dict[str, float], tuple[str, ...]]] = {
    "random-G": ("vgg19-random", dict.fromkeys(GATYS, 1.0), ("relu4_2",)),
    "hed-G": ("vgg16-hed", dict.fromkeys(GATYS, 1.0), ("relu4_2",)),
    "hed-G-c33": ("vgg16-hed", dict.fromkeys(GATYS, 1.0), ("relu3_3",)),
    "hed-J": ("vgg16-hed", dict.fromkeys(JOHNSON, 1.0), ("relu4_2",)),
    "hed-Gw5lo": ("vgg16-hed", dict(zip(GATYS, (1, 1, 1, 1, 0.25), strict=True)), ("relu4_2",)),
    "hed-Gwshallow": ("vgg16-hed", dict(zip(GATYS, (2, 2, 1, 0.5, 0.5), strict=True)), ("relu4_2",)),
    "hed-Gwdeep": ("vgg16-hed", dict(zip(GATYS, (0.5, 0.5, 1, 2, 2), strict=True)), ("relu4_2",)),
}
DEFAULT_CONFIGS = ("random-G", "hed-G", "hed-G-c33", "hed-J", "hed-Gw5lo", "hed-Gwshallow", "hed-Gwdeep")

HED_JUDGE = tuple(t for t in registry.get_model("vgg16-hed").taps if t.startswith("relu"))
MNV2_JUDGE = ("stem", "block3", "block6", "block10", "block13", "block16")


# ------------------------------------------------------------------------------------------- running


def inputs(content: str, style: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Content and style as (1, 3, H, W) tensors in [0, 1], longer side ``size`` (as stylize resizes)."""
    c, s = load_image(CONTENTS[content]), load_image(STYLES[style])
    return (
        resize(to_tensor(c), fit_size(c.shape[:2], size)),
        resize(to_tensor(s), fit_size(s.shape[:2], size)),
    )


def run(config: str, content: str, style: str, size: int, steps: int, style_weight: float, out: Path) -> Path:
    """Make (or find) the output of one configuration on one pair; returns the PNG's path."""
    tag = "" if style_weight == DEFAULTS["style_weight"] else f"-sw{style_weight:g}"
    path = out / f"{content}__{style}__{config}{tag}__{size}.png"
    if path.exists():
        return path
    name, weights, content_taps = CONFIGS[config]
    c, s = inputs(content, style, size)
    extractor = registry.backbone(name, list(dict.fromkeys([*weights, *content_taps])), "cpu")
    objective = Objective(
        extractor, c, [s], [1.0], style_taps=list(weights), content_taps=list(content_taps),
        content_weight=DEFAULTS["content_weight"], style_weight=style_weight,
        tv_weight=DEFAULTS["tv_weight"], layer_weights=weights,
    )  # fmt: skip
    torch.manual_seed(0)
    t0 = time.perf_counter()
    with retained_heap():
        image = optimise(objective, c.clone(), steps, preconditioner=SmoothingPreconditioner())
    print(f"# {path.name}: {time.perf_counter() - t0:.0f} s", flush=True)
    save_image(path, to_uint8(image))
    return path


# ------------------------------------------------------------------------------------------- judging

_judges: dict[str, object] = {}


def judge_grams(judge: str, image: torch.Tensor) -> dict[str, torch.Tensor]:
    """Gram matrices of ``image`` at every layer of ``judge`` ("hed" or "mnv2")."""
    if judge not in _judges:
        if judge == "hed":  # torch's own convolutions: the judge is not the Winograd layers being judged
            _judges[judge] = registry.backbone("vgg16-hed", list(HED_JUDGE), "cpu", winograd=False)
        else:
            _judges[judge] = registry.backbone("mobilenet-v2-imagenet", list(MNV2_JUDGE), "cpu")
    with torch.no_grad():
        return {k: gram(v.float()) for k, v in _judges[judge](image).items()}


def gram_fraction(judge: str, out: torch.Tensor, content: torch.Tensor, style: torch.Tensor) -> float:
    """Geometric mean over the judge's layers of ||G(out) - G(style)||^2 / ||G(content) - G(style)||^2."""
    go, gc, gs = (judge_grams(judge, x) for x in (out, content, style))
    ratios = [float((go[k] - gs[k]).pow(2).sum() / (gc[k] - gs[k]).pow(2).sum()) for k in gs]
    return math.exp(sum(map(math.log, ratios)) / len(ratios))


def luminance(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]).float()


def blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (N, 1, H, W) map, edges reflected."""
    radius = int(3 * sigma + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), k.view(1, 1, -1, 1))


def edge_map(x: torch.Tensor, sigma: float = 1.0) -> torch.Tensor:
    """Gradient magnitude (central differences) of the blurred luminance."""
    y = blur(luminance(x), sigma)
    gx = y[..., 1:-1, 2:] - y[..., 1:-1, :-2]
    gy = y[..., 2:, 1:-1] - y[..., :-2, 1:-1]
    return (gx.pow(2) + gy.pow(2)).sqrt()


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten() - a.mean(), b.flatten() - b.mean()
    return float((a @ b) / (a.norm() * b.norm()))


def ssim(x: torch.Tensor, y: torch.Tensor, sigma: float = 1.5) -> float:
    x, y = luminance(x), luminance(y)
    c1, c2 = 0.01**2, 0.03**2
    mx, my = blur(x, sigma), blur(y, sigma)
    vx, vy = blur(x * x, sigma) - mx**2, blur(y * y, sigma) - my**2
    cov = blur(x * y, sigma) - mx * my
    return float((((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))).mean())


def scores(path: Path, content: str, style: str, size: int) -> dict[str, float]:
    c, s = inputs(content, style, size)
    x = to_tensor(load_image(path))
    return {
        "gram_hed": gram_fraction("hed", x, c, s),
        "gram_mnv2": gram_fraction("mnv2", x, c, s),
        "edge_r": correlation(edge_map(x), edge_map(c)),
        "ssim": ssim(x, c),
    }


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--configs", default=",".join(DEFAULT_CONFIGS), help=f"comma list of {', '.join(CONFIGS)}"
    )
    ap.add_argument(
        "--pairs",
        default=",".join(f"{c}:{s}" for c in CONTENTS for s in STYLES),
        help="content:style, comma list (portrait, tubingen x candy, starry-night, mosaic)",
    )
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--style-weight", type=float, default=DEFAULTS["style_weight"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/facestyle-style-layers"))
    ap.add_argument("--per-image", action="store_true", help="also print every image's scores")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    pairs = [tuple(p.strip().split(":")) for p in args.pairs.split(",") if p.strip()]
    for c in configs:
        if c not in CONFIGS:
            ap.error(f"unknown configuration {c!r}; known: {', '.join(CONFIGS)}")
    for p in pairs:
        if len(p) != 2 or p[0] not in CONTENTS or p[1] not in STYLES:
            ap.error(
                f"--pairs entry {':'.join(p)!r} is not content:style from {list(CONTENTS)} x {list(STYLES)}"
            )
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)

    rows = []
    for config in configs:
        for content, style in pairs:
            path = run(config, content, style, args.size, args.steps, args.style_weight, args.out)
            rows.append({"config": config, "content": content, "style": style,
                         **scores(path, content, style, args.size)})  # fmt: skip
    keys = ("gram_hed", "gram_mnv2", "edge_r", "ssim")
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    sw = "" if args.style_weight == DEFAULTS["style_weight"] else f", style weight {args.style_weight:g}"
    print(f"{args.size} px, {args.steps} L-BFGS steps{sw}; mean over {len(pairs)} content x style pairs")
    head = f"{'config':<14} {'backbone':<13} {'style layers (xweight if not 1)':<47} {'content':<8}"
    print(head + "".join(f"{k:>10}" for k in keys))
    for config in configs:
        name, weights, content_taps = CONFIGS[config]
        mine = [r for r in rows if r["config"] == config]
        layers = " ".join(f"{t}" + (f"x{w:g}" if w != 1 else "") for t, w in weights.items())
        means = "".join(f"{np.mean([r[k] for r in mine]):>10.4f}" for k in keys)
        print(f"{config:<14} {name:<13} {layers:<47} {','.join(content_taps):<8}{means}")
    if args.per_image:
        for r in rows:
            cells = "".join(f"{r[k]:>10.4f}" for k in keys)
            print(f"{r['config']:<14} {r['content']:<9} {r['style']:<13}{cells}")


if __name__ == "__main__":
    main()
