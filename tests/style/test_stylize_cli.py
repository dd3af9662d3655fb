"""`facestyle stylize`: flags become StyleOptions, errors are one line worded with the flags, the output
is checked before any work and written with the shared image writer."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from typer.testing import CliRunner

import facestyle.style.transfer as transfer
from facestyle.errors import EXIT_BAD_INPUT, EXIT_USAGE, EXIT_WEIGHTS_MISSING


def _run(cli, images, out, *flags):
    return CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), *flags]
    )


def _error(res) -> str:
    """The one error line of the output (a note may come before it, a traceback never)."""
    errors = [line for line in res.output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0].removeprefix("error: ")


@pytest.fixture
def no_stylize(monkeypatch):
    """stylize must not be reached: the command has to refuse before any work."""
    monkeypatch.setattr(transfer, "stylize", lambda *a, **k: pytest.fail("stylize ran"))


@pytest.fixture
def no_backbone(monkeypatch):
    """No backbone may be built: options, inputs and device are all checked before that."""
    monkeypatch.setattr(transfer, "build_backbone", lambda *a, **k: pytest.fail("backbone built"))


def test_cli_writes_rgb_image_of_requested_size_and_snapshots(cli, images, tmp_path):
    out = tmp_path / "out.png"
    flags = [
        "--size",
        "48",
        "--steps",
        "4",
        "--scales",
        "1",
        "--backbone",
        "vgg19-random",
        "--save-every",
        "2",
    ]
    res = _run(cli, images, out, *flags, "--json")
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert list(summary) == [
        "output", "width", "height", "backbone", "backbone_trained", "backbone_description",
        "backbone_default", "style_layers", "content_layers", "device", "precision", "seconds", "steps",
        "schedule", "losses", "preserve_colors", "seed",
    ]  # fmt: skip
    assert summary["output"] == str(out) and summary["steps"] == 4
    assert summary["backbone_trained"] is False and "untrained" in summary["backbone_description"].lower()
    with Image.open(out) as img:
        assert img.mode == "RGB" and max(img.size) == 48
        assert (img.width, img.height) == (summary["width"], summary["height"])
    assert (tmp_path / "out.00002.png").is_file() and not (tmp_path / "out.00004.png").exists()


def test_cli_steps_per_scale_sets_each_level(cli, images, tmp_path):
    out = tmp_path / "out.png"
    res = _run(
        cli, images, out, "--size", "96", "--steps-per-scale", "2,4", "--backbone", "vgg19-random", "--json"
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6  # --scales 2 --steps 6 would split 4 + 2
    assert [(level["width"], level["steps"]) for level in summary["schedule"]] == [(48, 2), (96, 4)]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--steps-per-scale", "3,x"], "--steps-per-scale 3,x: expected whole numbers like 100,190"),
        (["--steps-per-scale", "3,0"], "--steps-per-scale 3,0: every level needs at least one step"),
        (
            ["--steps-per-scale", "3,2", "--scales", "3"],
            "--scales 3 disagrees with --steps-per-scale 3,2 (2 levels)",
        ),
        (
            ["--steps-per-scale", "3,2", "--steps", "6"],
            "--steps 6 disagrees with --steps-per-scale 3,2 (sum 5)",
        ),
        (
            ["--steps-per-scale", "3,2", "--size", "48"],
            "--steps-per-scale 3,2 has 2 levels, but at --size 48 only 1 is at least 32 px on each side",
        ),
        (["--size", "8"], "--size 8 is too small (at least 16 pixels)"),
        (["--steps", "0"], "--steps 0 is too small (at least 1)"),
        (["--save-every", "-1"], "--save-every -1 is too small (at least 0; 0 takes no snapshots)"),
        (["--lbfgs-history", "0"], "--lbfgs-history 0 is too small (at least 1)"),
        (
            ["--optimizer", "adam", "--lbfgs-history", "5"],
            "--lbfgs-history 5 applies only to the lbfgs optimizer, not --optimizer adam",
        ),
        (["--optimizer", "sgd"], "--optimizer sgd is not an optimizer; choose lbfgs or adam"),
        (["--style-blend", "a"], "--style-blend a: expected comma-separated numbers like 0.7,0.3"),
        (["--style-blend", "1,2"], "--style-blend 1.0,2.0 has 2 weights for 1 style images"),
        (["--style-weight", "nan"], "--style-weight nan must be a finite number, 0 or more"),
        (["--tv-weight", "-1"], "--tv-weight -1.0 must be a finite number, 0 or more"),
        (["--style-scale", "0"], "--style-scale 0.0 must be a positive finite number"),
        (["--init", "randon"], "--init randon is neither 'content' nor 'random' nor an image file"),
        (["--backbone", "mtcnn"], "--backbone mtcnn is not a style backbone; choose from "),
        (["--device", "cuda:7"], "--device cuda:7 is not available on this machine; available here: cpu"),
    ],
)
def test_cli_bad_options_are_one_line_in_flags(cli, images, tmp_path, no_backbone, flags, message):
    backbone = [] if "--backbone" in flags else ["--backbone", "vgg19-random"]
    res = _run(cli, images, tmp_path / "o.png", *backbone, *flags)
    assert res.exit_code == EXIT_USAGE
    assert _error(res).startswith(message)
    assert not (tmp_path / "o.png").exists()


def test_cli_checks_the_output_before_any_work(cli, images, tmp_path, no_stylize):
    res = _run(cli, images, tmp_path / "o.xyz", "--backbone", "vgg19-random")
    assert res.exit_code == EXIT_USAGE
    assert _error(res).startswith(f"--output {tmp_path / 'o.xyz'} must end in .png or .jpg or .jpeg")
    res = _run(cli, images, tmp_path / "no" / "o.png", "--backbone", "vgg19-random")
    assert res.exit_code == EXIT_BAD_INPUT
    assert _error(res) == f"{tmp_path / 'no'}: output directory does not exist"


def test_cli_missing_weights_is_one_line_and_exit_code(cli, images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = _run(cli, images, tmp_path / "o.png", "--backbone", "vgg19-imagenet")  # asked for, not imported
    assert res.exit_code == EXIT_WEIGHTS_MISSING
    assert "vgg19-dcbb9e9d.pth" in _error(res) and "facestyle models import vgg19-imagenet" in res.output
    assert not (tmp_path / "o.png").exists()


def test_cli_bad_inputs(cli, images, tmp_path):
    res = CliRunner().invoke(
        cli, ["stylize", str(tmp_path / "nope.jpg"), str(images["style"]), "-o", str(tmp_path / "o.png"),
              "--backbone", "vgg19-random", "-q"],
    )  # fmt: skip
    assert res.exit_code == EXIT_BAD_INPUT and _error(res) == f"{tmp_path / 'nope.jpg'}: no such file"
    assert not (tmp_path / "o.png").exists()


def test_cli_half_reports_its_precision_or_says_why_not(cli, images, tmp_path, monkeypatch):
    out = tmp_path / "half.png"
    flags = [
        "--size",
        "40",
        "--steps",
        "3",
        "--backbone",
        "vgg19-random",
        "--device",
        "cpu",
        "--half",
        "--json",
    ]
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: False)
    res = _run(cli, images, out, *flags)
    assert res.exit_code == EXIT_USAGE and not out.exists()
    assert _error(res).startswith("--half needs a CUDA device or a CPU with native bfloat16")
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: True)
    res = _run(cli, images, out, *flags)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["precision"] == "bfloat16"
    assert out.is_file()


def test_cli_defaults_are_the_library_defaults():
    """The flags' defaults are written out (the CLI imports no library code to show --help); they must
    stay StyleOptions' own, or the CLI and Python would make different images from the same inputs."""
    import dataclasses
    import inspect

    from facestyle.cli.style import stylize_cmd
    from facestyle.style.options import StyleOptions

    flags = inspect.signature(stylize_cmd).parameters
    shared = [f for f in dataclasses.fields(StyleOptions) if f.name in flags]
    assert len(shared) == 17  # all but lr, the taps and precondition, which have no flag
    for option in shared:
        assert flags[option.name].default.default == option.default, option.name
