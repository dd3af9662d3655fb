"""The style grid in docs/style.md and the README's example: real photos x real paintings, stylised by
``facestyle.style.transfer.stylize`` at 256 px with every other option at its default, on the untrained
``vgg19-random`` and on the default backbone (``backbone=None``: ``vgg16-hed`` unless the ImageNet
VGG19 was imported; the script says which ran). Each cell is what

    facestyle stylize CONTENT STYLE -o OUT --size 256 [--backbone vgg19-random]

writes (same options, same seed). Stylised cells are cached as PNG in ``--cells`` (a re-run only
composes); the composed pictures are JPEG.

    python benchmarks/style_grid.py                       # docs/images/style-grid.jpg and style-example.jpg
    python benchmarks/style_grid.py --threads 2
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from facestyle.io.images import load_image, save_image
from facestyle.style.options import StyleOptions
from facestyle.style.transfer import stylize

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
CONTENTS = {
    "portrait": DATA / "faces" / "lfw-view1" / "images" / "Cameron_Diaz" / "Cameron_Diaz_0001.jpg",
    "tubingen": DATA / "style" / "content" / "tubingen.jpg",
}
STYLES = {name: DATA / "style" / "styles" / f"{name}.jpg" for name in ("candy", "starry-night", "mosaic")}
#: (column heading, backbone option); None is the default backbone
BACKBONES = (("vgg19-random (UNTRAINED)", "vgg19-random"), ("default", None))
#: the README's one-row example: content, style
EXAMPLE = ("tubingen", "starry-night")


def cell(content: str, style: str, backbone: str | None, size: int, cells: Path) -> Path:
    """The stylised image of one (content, style, backbone), made once."""
    path = cells / f"{content}__{style}__{backbone or 'default'}__{size}.png"
    if not path.exists():
        result = stylize(CONTENTS[content], [STYLES[style]], StyleOptions(size=size, backbone=backbone))
        save_image(path, result.image)
        losses = {k: round(v, 4) for k, v in result.losses.items() if "/" not in k}
        print(f"# {path.name}: {result.backbone}, {result.seconds:.0f} s, {losses}", flush=True)
    return path


def fit_height(image: Image.Image, height: int) -> Image.Image:
    return image.resize((round(image.width * height / image.height), height), Image.LANCZOS)


def compose(rows: list[list[Image.Image]], headings: list[str], height: int) -> Image.Image:
    """Rows of pictures scaled to one height, columns centred under their headings, white gaps."""
    rows = [[fit_height(im, height) for im in row] for row in rows]
    widths = [max(row[i].width for row in rows) for i in range(len(headings))]
    pad, head = 4, 16
    canvas = Image.new(
        "RGB", (sum(widths) + pad * (len(widths) + 1), head + len(rows) * (height + pad)), "white"
    )
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    x = pad
    for width, text in zip(widths, headings, strict=True):
        draw.text((x + 2, 2), text, fill="black", font=font)
        x += width + pad
    y = head
    for row in rows:
        x = pad
        for width, im in zip(widths, row, strict=True):
            canvas.paste(im, (x + (width - im.width) // 2, y))
            x += width + pad
        y += height + pad
    return canvas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="stylize --size of every cell")
    ap.add_argument("--height", type=int, default=180, help="height of a picture in the grid")
    ap.add_argument("--quality", type=int, default=85, help="JPEG quality")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--cells", type=Path, default=Path("/tmp/facestyle-style-grid"))
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "images")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.cells.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    default_name = StyleOptions().backbone_name

    t0 = time.perf_counter()
    rows = []
    for content in CONTENTS:
        for style in STYLES:
            made = [cell(content, style, bb, args.size, args.cells) for _, bb in BACKBONES]
            pictures = [CONTENTS[content], STYLES[style], *made]
            rows.append([Image.fromarray(load_image(p)) for p in pictures])
    headings = ["photo", "painting", *(h if bb else f"{default_name} (default)" for h, bb in BACKBONES)]
    grid = compose(rows, headings, args.height)
    grid.save(args.out / "style-grid.jpg", quality=args.quality, optimize=True)

    content, style = EXAMPLE
    example = [CONTENTS[content], STYLES[style], cell(content, style, None, args.size, args.cells)]
    headings = ["photo", "painting", f"facestyle stylize --size 256 ({default_name})"]
    picture = compose([[Image.fromarray(load_image(p)) for p in example]], headings, 200)
    picture.save(args.out / "style-example.jpg", quality=args.quality, optimize=True)
    for name in ("style-grid.jpg", "style-example.jpg"):
        path = args.out / name
        print(f"{path} {Image.open(path).size} {path.stat().st_size / 1024:.0f} KiB")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
