"""`facestyle stylize`: Gatys neural style transfer from the command line.

A thin wrapper over :func:`facestyle.style.transfer.stylize`: flags become a
:class:`~facestyle.style.options.StyleOptions` (checked by the library, which names parameters; the
errors are shown here with the flags), the output path is checked before any work (never an input
unless ``--overwrite``; sizes and memory are the library's checks), and the image and
its ``--save-every`` snapshots are written with :func:`facestyle.io.images.save_image`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from facestyle.cli._common import STATE, JsonOpt, QuietOpt, note, print_json, user_errors
from facestyle.errors import ParameterError


def _parse_blend(text: str | None) -> list[float] | None:
    """``"0.7,0.3"`` -> ``[0.7, 0.3]``: one weight per style (the library checks the values)."""
    if text is None:
        return None
    try:
        return [float(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ParameterError(
            "{style_blend}: expected comma-separated numbers like 0.7,0.3", style_blend=text
        ) from None


def _parse_steps_per_scale(text: str | None) -> list[int] | None:
    """``"100,190"`` -> ``[100, 190]``: steps per level, coarsest first (the library checks them)."""
    if text is None:
        return None
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise ParameterError(
            "{steps_per_scale}: expected whole numbers like 100,190", steps_per_scale=text
        ) from None


def _check_outputs(output: Path, inputs: list[Path], overwrite: bool, save_every: int, steps: int) -> None:
    """Refuse, before minutes of optimisation, an output the image writer would refuse or that is one
    of the inputs (also through a link or another spelling), and ``--save-every`` snapshots
    (:func:`_snapshot_path`) that would land on an input."""
    import glob

    from facestyle.io.files import check_output_path
    from facestyle.io.images import IMAGE_FORMATS

    check_output_path(
        output, param="output", inputs=inputs, overwrite=overwrite, suffixes=list(IMAGE_FORMATS)
    )
    if not save_every:
        return
    for existing in output.parent.glob(f"{glob.escape(output.stem)}.*.png"):  # only a file can be an input
        step = existing.name[len(output.stem) + 1 : -len(".png")]
        taken = step.isdigit() and 0 < int(step) < steps and int(step) % save_every == 0
        if taken and existing == _snapshot_path(output, int(step)):
            check_output_path(existing, param="output", inputs=inputs, overwrite=overwrite)


def _snapshot_path(output: Path, step: int) -> Path:
    """Where ``--save-every`` writes step ``step``: ``OUT.<step>.png`` beside the output."""
    return output.with_name(f"{output.stem}.{step:05d}.png")


def stylize_cmd(
    content: Path = typer.Argument(
        ..., help="Content photo (any format/mode; EXIF rotation applied).", readable=False
    ),
    styles: list[Path] = typer.Argument(..., help="One or more style images.", readable=False),
    output: Path = typer.Option(
        ..., "--output", "-o", help="Output image (.png, .jpg, ...).", readable=False
    ),
    size: int = typer.Option(
        512,
        "--size",
        help="Longer side of the output, pixels. Checked before any work: every image must keep 16 px on "
        "its short side, and on the CPU the run's predicted peak memory must fit in what this machine has "
        "available (else the largest --size that fits is named; docs/style-memory.md).",
    ),
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
    backbone: str | None = typer.Option(
        None,
        "--backbone",
        help="vgg19-imagenet, vgg16-hed, vgg19-random (untrained), dlib-resnet-v1 [the best present: "
        "vgg19-imagenet once imported, else vgg16-hed].",
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
    overwrite: bool = typer.Option(
        False, "--overwrite", help="Allow the output (or a snapshot) to replace one of the input files."
    ),
    json: bool = JsonOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Repaint CONTENT in the style of STYLE (Gatys et al.; several styles are blended)."""
    # Every StyleOptions field has the flag ``--`` + its name with dashes (and so has ``output``), so the
    # library's parameter errors need no flag map to read as this command's flags.
    with user_errors():
        STATE["quiet"] = quiet  # set, not only raised: an embedding app may invoke commands in turn
        from facestyle.models.registry import get_model
        from facestyle.style.options import INIT_KEYWORDS, StyleOptions, backbone_note

        options = StyleOptions(
            size=size,
            steps=steps,
            steps_per_scale=_parse_steps_per_scale(steps_per_scale),
            scales=scales,
            optimizer=optimizer,
            content_weight=content_weight,
            style_weight=style_weight,
            tv_weight=tv_weight,
            style_blend=_parse_blend(style_blend),
            style_scale=style_scale,
            init=init,
            preserve_colors=preserve_colors,
            seed=seed,
            backbone=backbone,
            half=half,
            lbfgs_history=lbfgs_history,
            save_every=save_every,
        ).validate(styles=len(styles))
        inputs = [content, *styles] + ([Path(init)] if init not in INIT_KEYWORDS else [])
        _check_outputs(output, inputs, overwrite, save_every, options.total_steps)

        from facestyle.io.images import save_image
        from facestyle.style.transfer import stylize

        info = get_model(options.backbone_name)
        notes = []  # said once the library's checks have passed (a refused run prints only its error)
        if backbone is None and not json:  # chosen here: say which (--json has it as backbone_default)
            notes.append(f"[dim]note:[/] {backbone_note(info.name)}")
        if not info.trained:
            notes.append(f"[yellow]note:[/] backbone {info.name} is UNTRAINED ({info.description})")

        def snapshot(step: int, image) -> None:
            save_image(_snapshot_path(output, step), image)

        with _LossBar(options.total_steps, quiet or json, notes) as bar:
            result = stylize(
                content,
                list(styles),
                options,
                device=device,
                snapshot=snapshot if save_every else None,
                progress=bar.update,
            )
        save_image(output, result.image)
        if json:
            print_json({"output": str(output), **result.to_dict()})
        else:
            h, w = result.image.shape[:2]
            untrained = "" if result.backbone_trained else " (UNTRAINED random weights)"
            note(
                f"wrote {output} ({w}x{h}) in {result.seconds:.1f} s on {result.device} "
                f"({result.precision}), "
                f"backbone {result.backbone}{untrained}, final loss {result.losses['total']:.4g}"
            )


class _LossBar:
    """A rich progress bar showing the current loss, on an interactive stderr only. It starts at the
    first step, after saying ``notes``: by then every check of the run has passed."""

    def __init__(self, total: int, silent: bool, notes: list[str]) -> None:
        self.total = total
        self.enabled = not silent and not STATE["quiet"] and sys.stderr.isatty()
        self.notes = notes
        self._started = False
        self._bar = None

    def __enter__(self) -> _LossBar:
        return self

    def _start(self) -> None:
        self._started = True
        for line in self.notes:
            note(line)
        if not self.enabled:
            return
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

    def update(self, info) -> None:
        if not self._started:
            self._start()
        if self._bar is not None:
            level = f"{info.size[1]}x{info.size[0]} ({info.scale + 1}/{info.scales})"
            self._bar.update(self._task, completed=info.step, loss=f"{info.loss:.4g}", level=level)

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)


def register(app: typer.Typer) -> None:
    app.command("stylize")(stylize_cmd)
