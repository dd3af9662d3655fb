"""The optimisation loop and the `stylize` command, on tiny images with the seeded random backbone."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from typer.testing import CliRunner

from facestyle.errors import EXIT_WEIGHTS_MISSING, UsageError
from facestyle.style.backbones import build_extractor
from facestyle.style.colour import rgb_to_yuv
from facestyle.style.transfer import DIVERGENCE_FACTOR, fit_size, level_sizes, optimise, split_steps, stylize

TAPS = ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1", "relu4_2"]


@pytest.fixture(scope="module")
def extractor():
    return build_extractor("vgg19-random", TAPS)


@pytest.fixture(scope="module")
def images(tmp_path_factory, shared_data):
    """A real content photo and style painting from the shared set, plus a grey and a RGBA variant."""
    root = shared_data / "style"
    content = root / "content" / "tubingen.jpg"
    style = root / "styles" / "starry-night.jpg"
    assert content.is_file() and style.is_file(), "shared style data missing"
    tmp = tmp_path_factory.mktemp("imgs")
    grey = tmp / "grey.png"
    Image.open(content).convert("L").resize((90, 60)).save(grey)
    rgba = tmp / "rgba.png"
    Image.open(style).convert("RGBA").resize((50, 70)).save(rgba)
    return {"content": content, "style": style, "grey": grey, "rgba": rgba}


def test_split_steps_and_level_sizes():
    assert split_steps(300, 3) == [171, 86, 43]  # 4:2:1
    assert split_steps(100, 2) == [67, 33]
    assert split_steps(7, 1) == [7]
    with pytest.raises(UsageError):
        split_steps(2, 3)
    assert level_sizes((512, 384), 3) == [(128, 96), (256, 192), (512, 384)]
    assert level_sizes((64, 40), 3) == [(64, 40)]  # coarser levels would be under 32 px
    assert level_sizes((96, 64), 3) == [(48, 32), (96, 64)]
    assert fit_size((1000, 1500), 300) == (200, 300)


class _RecordingQuadratic:
    """``sum(w * (x - target)^2)`` (curvatures 1..10, so L-BFGS needs a few dozen steps) that records every
    image it is evaluated at; ``spike(n)`` scales the loss of evaluation ``n`` (1-based), like the
    blow-up of an L-BFGS run without a line search."""

    def __init__(self, spike, shape=(1, 3, 6, 5)):
        self.target = 0.3 + 0.4 * torch.rand(shape, generator=torch.Generator().manual_seed(1))
        self.curvature = torch.logspace(0, 1, self.target.numel()).view(shape)
        self.spike, self.seen, self.losses = spike, [], []

    def __call__(self, x):
        self.seen.append(x.detach().clone())
        loss = (self.curvature * (x - self.target).pow(2)).sum() * self.spike(len(self.seen))
        self.losses.append(float(loss.detach()))
        return loss, {"total": float(loss.detach())}


def test_lbfgs_restarts_from_the_best_image_after_a_divergent_evaluation():
    objective = _RecordingQuadratic(lambda n: 1000.0 if n == 5 else 1.0)
    out = optimise(objective, torch.zeros(1, 3, 6, 5), 30)
    assert objective.losses[4] > DIVERGENCE_FACTOR * min(objective.losses[:4])
    best_before = objective.seen[int(np.argmin(objective.losses[:4]))]
    # The step taken from the spike is discarded: the next evaluation is at the best image so far.
    assert torch.equal(objective.seen[5], best_before)
    assert (out - objective.target).abs().max() < 1e-3


def test_returns_the_best_evaluated_image_when_the_run_ends_worse():
    # Adam never restarts; every evaluation from the 4th on (and the final check) is 1000x worse.
    objective = _RecordingQuadratic(lambda n: 1.0 if n <= 3 else 1000.0)
    out = optimise(objective, torch.zeros(1, 3, 6, 5), 8, optimizer="adam", lr=0.05)
    assert len(objective.seen) == 9  # 8 steps + the forward pass that scores the final update
    best = objective.seen[int(np.argmin(objective.losses[:3]))]
    assert torch.equal(out, best)
    assert not torch.equal(out, objective.seen[-1])


def test_short_run_lowers_the_loss_and_honours_size(images, extractor):
    res = stylize(
        images["content"], images["style"], size=80, steps=12, scales=1, backbone="vgg19-random",
        extractor=extractor,
    )  # fmt: skip
    first, last = res.history[0][1], res.history[-1][1]
    assert last < 0.5 * first
    assert res.losses["total"] < first
    w, h = Image.open(images["content"]).size
    assert res.image.shape == (*fit_size((h, w), 80), 3) and max(res.image.shape[:2]) == 80
    assert res.image.dtype == np.uint8
    assert res.backbone == "vgg19-random" and res.backbone_trained is False


def test_only_the_first_level_is_preconditioned(images, extractor, monkeypatch):
    """The smoothing preconditioner helps the level that starts from the initial image and hurts the
    refinement levels (docs/style.md), so stylize gives it to level 0 only, and to none when asked."""
    import facestyle.style.transfer as transfer

    seen = []
    real = transfer.optimise

    def recording(*args, preconditioner=None, **kw):
        seen.append(preconditioner)
        return real(*args, preconditioner=preconditioner, **kw)

    monkeypatch.setattr(transfer, "optimise", recording)
    kw = dict(size=96, steps=4, scales=2, backbone="vgg19-random", extractor=extractor)
    stylize(images["content"], images["style"], **kw)
    assert isinstance(seen[0], transfer.SmoothingPreconditioner) and seen[1] is None
    seen.clear()
    stylize(images["content"], images["style"], precondition=False, **kw)
    assert seen == [None, None]


def test_lbfgs_history_is_sized_per_level_from_its_memory_budget(images, extractor, monkeypatch):
    """Each curvature pair is two image-sized tensors (100 pairs of a 1024x1024 image: 2.5 GiB), so each
    level's history comes from HISTORY_BUDGET unless the caller gives a length."""
    import facestyle.style.lbfgs as lbfgs
    import facestyle.style.transfer as transfer

    lengths = []

    class Recording(lbfgs.ProjectedLBFGS):
        def __init__(self, history, *args, **kw):
            super().__init__(history, *args, **kw)
            lengths.append(self.pairs.maxlen)

    monkeypatch.setattr(transfer, "ProjectedLBFGS", Recording)
    w, h = Image.open(images["content"]).size
    (hc, wc), (hf, wf) = level_sizes(fit_size((h, w), 96), 2)
    # A budget of 15 full-size pairs, which holds 60 of the half-size level's (a quarter of the pixels).
    monkeypatch.setattr(lbfgs, "HISTORY_BUDGET", 15 * 2 * 4 * 3 * hf * wf)
    kw = dict(size=96, steps=4, scales=2, backbone="vgg19-random", extractor=extractor)
    res = stylize(images["content"], images["style"], **kw)
    assert (hc * 2, wc * 2) == (hf, wf) and lengths == [60, 15]
    assert [level["lbfgs_history"] for level in res.schedule] == [60, 15]  # reported, e.g. in --json
    lengths.clear()
    res = stylize(images["content"], images["style"], lbfgs_history=7, **kw)
    assert lengths == [7, 7] and [level["lbfgs_history"] for level in res.schedule] == [7, 7]


def test_every_cpu_step_runs_inside_the_retained_heap(images, extractor, monkeypatch):
    """Each step frees and re-allocates the same large blocks; facestyle/heap.py keeps them, but only
    while stylize runs (the process gets its memory back afterwards)."""
    import contextlib

    import facestyle.style.transfer as transfer

    state = {"inside": False, "entered": 0}
    steps_inside = []

    @contextlib.contextmanager
    def recording_heap():
        state["inside"], state["entered"] = True, state["entered"] + 1
        try:
            yield True
        finally:
            state["inside"] = False

    monkeypatch.setattr(transfer, "retained_heap", recording_heap)
    stylize(
        images["content"], images["style"], size=48, steps=4, scales=2, backbone="vgg19-random",
        extractor=extractor, progress=lambda info: steps_inside.append(state["inside"]),
    )  # fmt: skip
    assert state == {"inside": False, "entered": 1}
    assert steps_inside == [True] * 4


def test_seeded_runs_are_reproducible(images, extractor):
    kw = dict(size=48, steps=4, scales=1, init="random", seed=5, backbone="vgg19-random", extractor=extractor)
    a = stylize(images["content"], images["style"], **kw)
    b = stylize(images["content"], images["style"], **kw)
    c = stylize(images["content"], images["style"], **{**kw, "seed": 6})
    assert np.array_equal(a.image, b.image)
    assert not np.array_equal(a.image, c.image)


def test_any_input_mode_and_multi_scale_blend(images, extractor):
    res = stylize(
        images["grey"], [images["style"], images["rgba"]], style_blend=[3, 1], size=96, steps=6, scales=2,
        backbone="vgg19-random", extractor=extractor,
    )  # fmt: skip
    assert res.image.shape == (64, 96, 3)  # 90x60 grey -> 96 px long side, RGB out
    assert [(d["width"], d["steps"]) for d in res.schedule] == [(48, 4), (96, 2)]
    with pytest.raises(UsageError):
        stylize(images["grey"], [images["style"], images["rgba"]], style_blend=[1], size=32, steps=1,
                backbone="vgg19-random", extractor=extractor)  # fmt: skip


def test_preserve_colors_keeps_the_content_chroma(images, extractor):
    kw = dict(size=64, steps=8, scales=1, backbone="vgg19-random", extractor=extractor)
    plain = stylize(images["content"], images["style"], **kw)
    kept = stylize(images["content"], images["style"], preserve_colors=True, **kw)
    content = np.asarray(Image.open(images["content"]).convert("RGB").resize(kept.image.shape[1::-1]))
    uv_content = rgb_to_yuv(content)[..., 1:]
    err_kept = np.abs(rgb_to_yuv(kept.image)[..., 1:] - uv_content).mean()
    err_plain = np.abs(rgb_to_yuv(plain.image)[..., 1:] - uv_content).mean()
    assert err_kept < 3.0  # resampling differences and clipping only
    assert err_plain > 2 * err_kept  # the style really repaints chroma without the option


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli():
    from facestyle.cli.style import register

    app = typer.Typer()

    @app.callback()
    def _root() -> None:  # a group, so the command is invoked by name as in the real app
        pass

    register(app)
    return app


def test_cli_writes_rgb_image_of_requested_size_and_snapshots(cli, images, tmp_path):
    out = tmp_path / "out.png"
    res = CliRunner().invoke(
        cli,
        ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), "--size", "48",
         "--steps", "4", "--scales", "1", "--backbone", "vgg19-random", "--save-every", "2", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    import json

    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["backbone_trained"] is False and "untrained" in summary["backbone_description"].lower()
    with Image.open(out) as img:
        assert img.mode == "RGB" and max(img.size) == 48
        assert (img.width, img.height) == (summary["width"], summary["height"])
    assert (tmp_path / "out.00002.png").is_file()


def test_cli_steps_per_scale_sets_each_level(cli, images, tmp_path):
    import json

    out = tmp_path / "out.png"
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), "--size", "96",
              "--steps-per-scale", "2,4", "--backbone", "vgg19-random", "--json"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 6  # --scales 2 --steps 6 would split 4 + 2
    assert [(level["width"], level["steps"]) for level in summary["schedule"]] == [(48, 2), (96, 4)]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--steps-per-scale", "3,x"], "expected whole numbers like 100,190"),
        (["--steps-per-scale", "3,0"], "every level needs at least one step"),
        (["--steps-per-scale", "3,2", "--scales", "3"], "--scales 3 disagrees with --steps-per-scale"),
        (["--steps-per-scale", "3,2", "--steps", "6"], "--steps 6 disagrees with --steps-per-scale (sum 5)"),
    ],
)
def test_cli_bad_steps_per_scale_is_one_line(cli, images, tmp_path, extra, message):
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(tmp_path / "o.png"),
              "--backbone", "vgg19-random", *extra],
    )  # fmt: skip
    assert res.exit_code == 2 and message in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.png").exists()


def test_steps_per_scale_must_match_the_levels(images, extractor):
    with pytest.raises(UsageError, match=r"has 2 entries for 1 levels \(--scales 1, less any level"):
        stylize(images["content"], images["style"], size=64, steps_per_scale=[3, 2], extractor=extractor,
                backbone="vgg19-random")  # fmt: skip
    with pytest.raises(UsageError, match=r"has 2 entries for 1 levels \(--scales 2, less any level"):
        # 64x48 halves to 32x24: too small for VGG's four poolings, so only one level is left
        stylize(images["content"], images["style"], size=64, scales=2, steps_per_scale=[3, 2],
                extractor=extractor, backbone="vgg19-random")  # fmt: skip


def test_an_unknown_optimizer_is_refused_before_the_backbone_is_built(images, tmp_path, monkeypatch):
    # With the default backbone's weights missing, a late check would report the weights instead.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(UsageError, match="unknown optimizer 'sgd'; choose lbfgs or adam"):
        stylize(images["content"], images["style"], optimizer="sgd", size=32, steps=1)


def test_cli_missing_weights_is_one_line_and_exit_code(cli, images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(tmp_path / "o.png")]
    )
    assert res.exit_code == EXIT_WEIGHTS_MISSING
    assert "vgg19-dcbb9e9d.pth" in res.output and "facestyle models import vgg19-imagenet" in res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "o.png").exists()


def test_cli_bad_inputs(cli, images, tmp_path):
    res = CliRunner().invoke(
        cli, ["stylize", str(tmp_path / "nope.jpg"), str(images["style"]), "-o", str(tmp_path / "o.png"),
              "--backbone", "vgg19-random"],
    )  # fmt: skip
    assert res.exit_code != 0 and "no such file" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(tmp_path / "o.xyz")]
    )
    assert res.exit_code == 2 and "extension" in res.output
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(tmp_path / "o.png"),
              "--backbone", "vgg19-random", "--lbfgs-history", "0"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--lbfgs-history must be at least 1" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.png").exists()
    res = CliRunner().invoke(
        cli, ["stylize", str(images["content"]), str(images["style"]), "-o", str(tmp_path / "o.png"),
              "--backbone", "vgg19-random", "--optimizer", "adam", "--lbfgs-history", "5"],
    )  # fmt: skip
    assert res.exit_code == 2 and "--lbfgs-history applies to --optimizer lbfgs, not adam" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "o.png").exists()


def test_reduced_precision_per_device(monkeypatch):
    import facestyle.style.transfer as transfer

    assert transfer.reduced_precision(torch.device("cuda")) is torch.float16
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: True)
    assert transfer.reduced_precision(torch.device("cpu")) is torch.bfloat16
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: False)
    with pytest.raises(UsageError, match="native bfloat16"):
        transfer.reduced_precision(torch.device("cpu"))


def test_half_without_native_bfloat16_stops_before_any_work(images, extractor, monkeypatch):
    import facestyle.style.transfer as transfer

    monkeypatch.setattr(transfer, "native_bfloat16", lambda: False)
    progress = []
    with pytest.raises(UsageError, match="--half needs"):
        stylize(
            images["content"], images["style"], size=48, steps=2, backbone="vgg19-random",
            extractor=extractor, device="cpu", half=True, progress=progress.append,
        )  # fmt: skip
    assert progress == []


def test_half_on_the_cpu_runs_early_layers_in_bfloat16_and_reports_float32_losses(
    images, extractor, monkeypatch
):
    """bfloat16 for oneDNN's layers (conv1_1..conv2_2), float32 from the first Winograd layer on; the
    reported losses are a float32 objective's (targets included) on the saved image."""
    import facestyle.style.transfer as transfer

    monkeypatch.setattr(transfer, "native_bfloat16", lambda: True)  # oneDNN runs bfloat16 on any x86
    dtypes: dict[str, set] = {"conv1_1": set(), "conv3_1": set()}
    hooks = [
        extractor.body[index].register_forward_hook(
            lambda _m, _i, out, name=name: dtypes[name].add(out.dtype)
        )
        for name, index in (("conv1_1", 0), ("conv3_1", 10))
    ]
    kw = dict(size=64, steps=20, scales=1, backbone="vgg19-random", extractor=extractor, device="cpu")
    try:
        half = stylize(images["content"], images["style"], half=True, **kw)
    finally:
        for h in hooks:
            h.remove()
    full = stylize(images["content"], images["style"], **kw)
    assert dtypes == {"conv1_1": {torch.bfloat16, torch.float32}, "conv3_1": {torch.float32}}
    assert half.precision == "bfloat16" and full.precision == "float32"
    assert half.history[-1][1] < 0.5 * half.history[0][1]

    content = transfer.resize(transfer.to_tensor(np.asarray(Image.open(images["content"]).convert("RGB"))),
                              half.image.shape[:2])  # fmt: skip
    style_arr = np.asarray(Image.open(images["style"]).convert("RGB"))
    style = transfer.resize(transfer.to_tensor(style_arr), fit_size(style_arr.shape[:2], 64))
    exact = transfer.Objective(
        extractor, content, [style], [1.0], style_taps=TAPS[:5], content_taps=TAPS[5:],
        content_weight=1.0, style_weight=1e3, tv_weight=1.0,
    )  # fmt: skip
    with torch.no_grad():
        scored = exact(transfer.to_tensor(half.image))[1]
    assert scored["total"] == pytest.approx(half.losses["total"], rel=1e-5)
    # Rounding noise, not a different optimum: close to the float32 run (0.4% apart when measured).
    assert half.losses["total"] == pytest.approx(full.losses["total"], rel=0.05)


def test_cli_half_reports_its_precision_or_says_why_not(cli, images, tmp_path, monkeypatch):
    import json

    import facestyle.style.transfer as transfer

    out = tmp_path / "half.png"
    args = ["stylize", str(images["content"]), str(images["style"]), "-o", str(out), "--size", "40",
            "--steps", "3", "--backbone", "vgg19-random", "--device", "cpu", "--half", "--json"]  # fmt: skip
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: False)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code != 0 and "Traceback" not in res.output and not out.exists()
    assert "--half needs a CUDA device or a CPU with native bfloat16" in res.output
    monkeypatch.setattr(transfer, "native_bfloat16", lambda: True)
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["precision"] == "bfloat16"
    assert out.is_file()
