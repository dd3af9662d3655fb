"""Stylise the shared content photos with the shared paintings and write a contact sheet.

    python examples/stylize_shared.py                               # ImageNet VGG19 (needs its weights)
    python examples/stylize_shared.py out/rand --backbone vgg19-random --size 256 --steps 100

Writes one PNG per (content, style) pair, a colour-preserved and a two-style blend variant, and
``sheet.jpg`` (rows: content | style | result) into the output directory (default ./out/examples).
Nothing here is committed: run it to see the images. With ``vgg19-random`` the backbone is UNTRAINED
(He, Wang & Hopcroft 2016), so expect rougher textures than with ImageNet weights.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facestyle.errors import FacestyleError  # noqa: E402
from facestyle.io.images import load_image, save_image  # noqa: E402
from facestyle.models import registry  # noqa: E402
from facestyle.style.options import StyleOptions  # noqa: E402
from facestyle.style.transfer import stylize  # noqa: E402

#: (content, styles, StyleOptions fields beyond size, steps and backbone): one row of the sheet each.
PAIRS: list[tuple[str, list[str], dict]] = [
    ("tubingen", ["starry-night"], {}),
    ("chicago", ["mosaic"], {}),
    ("golden_gate", ["the_scream"], {}),
    ("hoovertowernight", ["udnie"], {}),
    ("amber", ["candy"], {}),
    ("tubingen", ["wave"], {"preserve_colors": True}),
    ("chicago", ["starry-night", "woman-with-hat-matisse"], {"style_blend": [0.5, 0.5]}),
]


def _thumb(arr: np.ndarray, height: int) -> Image.Image:
    img = Image.fromarray(arr)
    return img.resize((max(1, round(img.width * height / img.height)), height), Image.LANCZOS)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", default="out/examples", type=Path)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "style")
    ap.add_argument("--backbone", default="vgg19-imagenet")
    ap.add_argument("--size", type=int, default=384)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--limit", type=int, default=len(PAIRS), help="only the first N rows")
    args = ap.parse_args()
    try:
        info = registry.get_model(args.backbone)
        extractor = registry.backbone(args.backbone)  # built once, reused for every pair
    except FacestyleError as exc:
        print(f"error: {exc}\n(offline? try --backbone vgg19-random)", file=sys.stderr)
        return exc.exit_code
    if not info.trained:
        print(f"note: {info.name} is UNTRAINED ({info.description})", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for content, styles, opts in PAIRS[: args.limit]:
        c_path = args.data / "content" / f"{content}.jpg"
        s_paths = [args.data / "styles" / f"{s}.jpg" for s in styles]
        t0 = time.perf_counter()
        options = StyleOptions(size=args.size, steps=args.steps, backbone=args.backbone, **opts)
        res = stylize(c_path, s_paths, options, extractor=extractor)
        tag = "+".join(styles) + ("_colors" if opts.get("preserve_colors") else "")
        path = save_image(args.out / f"{content}_{tag}_{args.backbone}.png", res.image)
        print(f"{path}  {time.perf_counter() - t0:6.1f} s  loss {res.losses['total']:.4f}")
        h = 160
        tiles = [_thumb(load_image(c_path), h)] + [_thumb(load_image(p), h) for p in s_paths]
        rows.append(tiles + [_thumb(res.image, h)])
    width = max(sum(t.width for t in r) + 4 * len(r) for r in rows)
    sheet = Image.new("RGB", (width, len(rows) * 164), "white")
    for i, r in enumerate(rows):
        x = 0
        for t in r:
            sheet.paste(t, (x, i * 164))
            x += t.width + 4
    save_image(args.out / "sheet.jpg", np.asarray(sheet), quality=88)
    print(f"{args.out / 'sheet.jpg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
