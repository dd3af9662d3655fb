"""`facestyle stylize`: Gatys neural style transfer from the command line (a thin wrapper over
:func:`facestyle.style.transfer.stylize`)."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from facestyle.cli._common import STATE, JsonOpt, QuietOpt, note, print_json, user_errors
from facestyle.errors import UsageError

#: Output formats PIL writes losslessly or well enough for a painting.
_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF",
            ".tiff": "TIFF"}  # fmt: skip


def _parse_blend(text: str | None, n: int) -> list[float] | None:
    if text is None:
        return None
    try:
        weights = [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise UsageError(f"--style-blend {text!r}: expected comma-separated numbers like 0.7,0.3") from None
    if len(weights) != n:
        raise UsageError(f"--style-blend has {len(weights)} weights for {n} style images")
    return weights


def _parse_steps_per_scale(text: str | None) -> list[int] | None:
    """``"100,190"`` -> ``[100, 190]``: steps per level, coarsest first."""
    if text is None:
        return None
    try:
        steps = [int(n) for n in text.split(",")]
    except ValueError:
        raise UsageError(f"--steps-per-scale {text!r}: expected whole numbers like 100,190") from None
    if any(n < 1 for n in steps):
        raise UsageError(f"--steps-per-scale {text!r}: every level needs at least one step")
    return steps


def _steps_and_scales(steps: int | None, scales: int | None, per_level: list[int] | None) -> tuple[int, int]:
    """Total steps and levels: from ``--steps-per-scale`` when given (an explicit ``--steps`` or
    ``--scales`` that disagrees is an error), else the options or their defaults (300 steps, 1 level)."""
    if per_level is None:
        return 300 if steps is None else steps, 1 if scales is None else scales
    if steps is not None and steps != sum(per_level):
        raise UsageError(f"--steps {steps} disagrees with --steps-per-scale (sum {sum(per_level)})")
    if scales is not None and scales != len(per_level):
        raise UsageError(f"--scales {scales} disagrees with --steps-per-scale ({len(per_level)} levels)")
    return sum(per_level), len(per_level)


def _save(image, path: Path) -> None:
    from facestyle.io.images import save_image

    save_image(path, image)


def stylize_cmd(
    content: Path = typer.Argument(..., help="Content photo (any format/mode; EXIF rotation applied)."),
    styles: list[Path] = typer.Argument(..., help="One or more style images."),
    output: Path = typer.Option(..., "--output", "-o", help="Output image (.png, .jpg, ...)."),
    size: int = typer.Option(512, "--size", help="Longer side of the output, pixels."),
    steps: int | None = typer.Option(None, "--steps", help="Optimiser steps, summed over all scales [300]."),
    optimizer: str = typer.Option("lbfgs", "--optimizer", help="lbfgs (best) or adam."),
    content_weight: float = typer.Option(1.0, "--content-weight", help="alpha (relative content loss)."),
    style_weight: float = typer.Option(1e3, "--style-weight", help="beta (relative Gram-matrix loss)."),
    tv_weight: float = typer.Option(1.0, "--tv-weight", help="Total-variation weight (smoothness)."),
    style_blend: str | None = typer.Option(None, "--style-blend", help="Weights per style, e.g. 0.7,0.3."),
    style_scale: float = typer.Option(1.0, "--style-scale", help="Style image size relative to --size."),
    init: str = typer.Option("content", "--init", help="content, random, or an image file."),
    preserve_colors: bool = typer.Option(
        False, "--preserve-colors", help="Keep the content's colours (luminance-only transfer)."
    ),
    scales: int | None = typer.Option(
        None, "--scales", help="Coarse-to-fine levels, each half the next [1]; steps split 2:1 per level."
    ),
    steps_per_scale: str | None = typer.Option(
        None,
        "--steps-per-scale",
        help="Steps per level instead of --steps/--scales, coarsest first: 100,190 is 100 steps at half "
        "size, then 190 at full size (at 512 px: the tutorial's loss in about half its time, docs/style.md).",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed (random init; reproducible runs)."),
    backbone: str = typer.Option(
        "vgg19-imagenet", "--backbone", help="vgg19-imagenet, vgg19-random (untrained), dlib-resnet-v1."
    ),
    device: str | None = typer.Option(None, "--device", help="cpu, cuda, cuda:1 (default: CUDA if present)."),
    half: bool = typer.Option(
        False,
        "--half",
        help="Reduced-precision backbone: float16 on CUDA, bfloat16 on CPUs with native support "
        "(there ~1.2x faster for up to ~1% higher final loss).",
    ),
    lbfgs_history: int | None = typer.Option(
        None,
        "--lbfgs-history",
        help="Curvature pairs L-BFGS keeps (default 100, fewer above ~450k pixels to stay within 1 GiB).",
    ),
    save_every: int = typer.Option(0, "--save-every", help="Also write OUT.<step>.png every N steps."),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Repaint CONTENT in the style of STYLE (Gatys et al.; several styles are blended)."""
    with user_errors():
        if quiet:
            STATE["quiet"] = True
        per_level = _parse_steps_per_scale(steps_per_scale)
        steps, scales = _steps_and_scales(steps, scales, per_level)
        if save_every < 0 or steps < 1:
            raise UsageError("--steps must be >= 1 and --save-every >= 0")
        if output.suffix.lower() not in _FORMATS:
            raise UsageError(
                f"{output}: unsupported output extension; use one of {', '.join(sorted(_FORMATS))}"
            )
        init_arg: str | Path = init if init in ("content", "random") else Path(init)
        blend = _parse_blend(style_blend, len(styles))

        from facestyle.models.registry import get_model
        from facestyle.style.transfer import stylize

        info = get_model(backbone)
        if not info.trained:
            note(f"[yellow]note:[/] backbone {info.name} is UNTRAINED ({info.description})")

        def snapshot(step: int, image) -> None:
            _save(image, output.with_name(f"{output.stem}.{step:05d}.png"))

        with _LossBar(steps, quiet or json) as bar:
            result = stylize(
                content,
                list(styles),
                size=size,
                steps=steps,
                optimizer=optimizer,
                content_weight=content_weight,
                style_weight=style_weight,
                tv_weight=tv_weight,
                style_blend=blend,
                style_scale=style_scale,
                init=init_arg,
                preserve_colors=preserve_colors,
                scales=scales,
                steps_per_scale=per_level,
                seed=seed,
                backbone=backbone,
                device=device,
                half=half,
                lbfgs_history=lbfgs_history,
                save_every=save_every,
                snapshot=snapshot if save_every else None,
                progress=bar.update,
            )
        _save(result.image, output)
        h, w = result.image.shape[:2]
        summary = {
            "output": str(output),
            "width": w,
            "height": h,
            "backbone": result.backbone,
            "backbone_trained": result.backbone_trained,
            "backbone_description": info.description,
            "device": result.device,
            "precision": result.precision,
            "seconds": round(result.seconds, 3),
            "steps": steps,
            "schedule": result.schedule,
            "losses": {k: result.losses[k] for k in ("total", "content", "style", "tv")},
            "preserve_colors": preserve_colors,
            "seed": seed,
        }
        if json:
            print_json(summary)
        else:
            untrained = "" if result.backbone_trained else " (UNTRAINED random weights)"
            note(
                f"wrote {output} ({w}x{h}) in {result.seconds:.1f} s on {result.device} "
                f"({result.precision}), "
                f"backbone {result.backbone}{untrained}, final loss {result.losses['total']:.4g}"
            )


class _LossBar:
    """A rich progress bar showing the current loss, on an interactive stderr only."""

    def __init__(self, total: int, silent: bool) -> None:
        self.total = total
        self.enabled = not silent and not STATE["quiet"] and sys.stderr.isatty()
        self._bar = None

    def __enter__(self) -> _LossBar:
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            from facestyle.cli._common import err

            self._bar = Progress(
                TextColumn("stylize {task.fields[level]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=err,
                transient=True,
            )
            self._bar.__enter__()
            self._task = self._bar.add_task("", total=self.total, loss="-", level="")
        return self

    def update(self, info) -> None:
        if self._bar is not None:
            level = f"{info.size[1]}x{info.size[0]} ({info.scale + 1}/{info.scales})"
            self._bar.update(self._task, completed=info.step, loss=f"{info.loss:.4g}", level=level)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def register(app: typer.Typer) -> None:
    app.command("stylize")(stylize_cmd)
