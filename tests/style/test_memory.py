"""The memory model of stylize (facestyle/style/memory.py): its arithmetic, the budget, the refusals and
the sizes they propose, and one small real measurement against it. Nothing here allocates the memory a
refused run would have needed: the budget is monkeypatched."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pytest

import facestyle.style.transfer as transfer
from facestyle.errors import EXIT_USAGE, ParameterError, UsageError
from facestyle.style import memory
from facestyle.style.options import StyleOptions, SuggestionError

TUBINGEN, STARRY = (768, 1024), (640, 1024)  # (height, width) of the shared content and style
GIB = 1 << 30


def _hed(**options) -> StyleOptions:
    return StyleOptions(backbone="vgg16-hed", **options)


@pytest.fixture
def budget(monkeypatch):
    """Set the memory this machine 'has' (bytes), without allocating anything."""

    def set_to(n: int | None, source: str = "MemAvailable") -> None:
        monkeypatch.setattr(memory, "memory_budget", lambda: memory.Budget(n, source))

    return set_to


def test_the_backbone_profiles_are_counted_from_the_layout():
    # Layer outputs per input pixel up to relu5_1, in float32: HED's VGG16 has 64+64 channels at full
    # size, 64/4 after pool1, 2*128/4, 128/16, 3*256/16, 256/64, 3*512/64, 512/256, 512/256 = 296 floats.
    hed = memory.profile("vgg16-hed", "relu5_1")
    assert hed.bytes_per_pixel == 296 * 4
    assert memory.profile("vgg19-random", "relu5_1").bytes_per_pixel == (296 + 256 / 16 + 512 / 64) * 4
    # VGG19's four floor-rounding pools need 16 px; HED's round up (any side works, 16 is the floor).
    assert memory.profile("vgg19-random", "relu5_1").min_side == 16
    assert memory.min_side("vgg16-hed", "relu5_1") == 16
    assert memory.min_side("dlib-resnet-v1", "block12") > 32  # unpadded convolutions
    assert memory.profile("mobilenet-v2-imagenet", "block3") is None  # unknown skeleton: not checked


def test_the_model_adds_its_parts_and_peaks_at_the_largest_level():
    levels = [
        memory.LevelLoad((100, 200), ((50, 100),), 100),
        memory.LevelLoad((200, 400), ((300, 400),), 40),
    ]
    est = memory.predict_peak(1000.0, levels, [(1000, 2000), (500, 1000)])
    assert est.level == (200, 400)
    assert est.history == 40 * 2 * 3 * 200 * 400 * 4 == memory.history_bytes(80_000, 40)
    assert est.activations == int(memory.ACTIVATION_FACTOR * 1000.0 * 300 * 400)  # the style is wider
    assert est.buffers == memory.IMAGE_BUFFERS * 3 * 80_000 * 4
    assert est.originals == (2_000_000 + 500_000) * 15 + 80_000 * 6
    assert est.peak == memory.BASELINE_BYTES + est.originals + est.activations + est.history + est.buffers
    adam = memory.predict_peak(1000.0, levels, [], optimizer="adam")
    assert adam.history == 3 * 3 * 80_000 * 4


def test_the_plan_matches_what_stylize_runs():
    """The model's levels are plan_levels' (sizes, histories) with each style's size per level."""
    opts = _hed(size=1024, scales=2).resolved()
    loads = transfer._loads(opts, TUBINGEN, [STARRY], 1024)
    plan = transfer.plan_levels(opts, transfer.fit_size(TUBINGEN, 1024))
    assert [(ld.size, ld.pairs) for ld in loads] == [(lv.size, lv.lbfgs_history) for lv in plan]
    assert [ld.styles for ld in loads] == [((320, 512),), ((640, 1024),)]


def test_prediction_against_measured_peaks():
    """Measured with benchmarks/stylize_memory.py (VmHWM of a child process, retained heap, 1 thread,
    lbfgs_history=2, 4 steps; docs/style-memory.md). The model was fitted on vgg16-hed at 256 and
    1024 px; these are the sizes and the backbone it was not fitted on."""
    measured = {("vgg16-hed", 512): 1.67, ("vgg16-hed", 2048): 10.99, ("vgg19-random", 1024): 3.84}
    for (backbone, size), gib in measured.items():
        opts = StyleOptions(backbone=backbone, size=size, lbfgs_history=2)
        predicted = transfer.predict_memory(opts, TUBINGEN, [STARRY]).peak / GIB
        assert predicted == pytest.approx(gib, rel=0.08), (backbone, size)


def test_a_run_that_does_not_fit_is_refused_with_the_largest_size_that_does(budget):
    budget(22 * GIB)
    opts = _hed(size=6000)
    with pytest.raises(SuggestionError) as caught:
        transfer.check_memory(opts, TUBINGEN, [STARRY])
    fits = caught.value.suggestion["size"]
    usable = 22 * GIB * memory.HEADROOM
    assert transfer.predict_memory(opts, TUBINGEN, [STARRY], fits).peak <= usable
    assert transfer.predict_memory(opts, TUBINGEN, [STARRY], fits + 1).peak > usable
    assert str(caught.value) == (
        f"size=6000 needs ~{memory.gib(transfer.predict_memory(opts, TUBINGEN, [STARRY]).peak)}; "
        f"this machine has 22 GiB available; at most size={fits} fits"
    )
    assert caught.value.exit_code == EXIT_USAGE
    assert transfer.check_memory(_hed(size=fits), TUBINGEN, [STARRY]).peak <= usable  # and it passes


def test_the_largest_fitting_size_inverts_the_model():
    predict = lambda n: 1000 + n * n  # noqa: E731
    assert memory.largest_fitting(predict, 1000 + 3100 * 3100, 16, 6000) == 3100
    assert memory.largest_fitting(predict, 10, 16, 6000) is None


def test_size_100000_is_refused_instantly(budget):
    budget(64 * GIB)
    t0 = time.perf_counter()
    with pytest.raises(SuggestionError, match=r"^size=100000 needs ~\d{5} GiB; .* at most size=\d+ fits$"):
        transfer.check_memory(_hed(size=100000), TUBINGEN, [STARRY])
    assert time.perf_counter() - t0 < 1.0


def test_an_explicit_history_is_named_when_it_is_a_large_part(budget):
    budget(8 * GIB)
    with pytest.raises(SuggestionError, match=r"\(lbfgs_history=100 keeps \d+\.\d GiB of it\)"):
        transfer.check_memory(_hed(size=2048, lbfgs_history=100), TUBINGEN, [STARRY])


def test_nothing_fits_and_nothing_is_checked(budget):
    budget(GIB // 2)
    with pytest.raises(ParameterError, match=r"^size=512 needs ~.*; no size fits$"):
        transfer.check_memory(_hed(), TUBINGEN, [STARRY])
    budget(None, "no memory check on Darwin")
    assert transfer.check_memory(_hed(size=100000), TUBINGEN, [STARRY]) is None
    budget(GIB // 2)
    assert transfer.check_memory(_hed(size=100000), TUBINGEN, [STARRY], "cuda") is None  # GPU: not modelled


def test_stylize_refuses_before_the_backbone_is_built(budget, monkeypatch):
    monkeypatch.setattr(transfer, "build_backbone", lambda *a, **k: pytest.fail("backbone built"))
    budget(4 * GIB)
    content, style = np.zeros((96, 128, 3), np.uint8), np.zeros((40, 64, 3), np.uint8)
    with pytest.raises(SuggestionError, match=r"^size=6000 needs"):
        transfer.stylize(content, style, _hed(size=6000), device="cpu")
    thin = np.zeros((200, 10000, 3), np.uint8)
    with pytest.raises(SuggestionError, match=r"short side 10 px \(image 10000x200\).*use size=775 or more$"):
        transfer.stylize(thin, style, _hed(), device="cpu")


def test_budget_from_the_environment_and_the_system(monkeypatch):
    monkeypatch.setenv(memory.ENV, "1.5GiB")
    assert memory.memory_budget() == memory.Budget(3 * GIB // 2, f"${memory.ENV}")
    for text, n in [("8G", 8 * GIB), ("512M", 512 << 20), ("123", 123), ("2 gb", 2 * GIB)]:
        assert memory.parse_bytes(text) == n
    for bad in ("lots", "-1G", "nanG"):
        with pytest.raises(UsageError, match="is not an amount of memory"):
            memory.parse_bytes(bad)
    monkeypatch.delenv(memory.ENV)
    found = memory.memory_budget()
    if sys.platform.startswith("linux"):
        assert found.bytes > 0 and found.source in ("MemAvailable", "cgroup memory.max")
    else:
        assert found.bytes is None and "no memory check" in found.source


def test_odd_shapes_say_what_works():
    opts = _hed().resolved()
    with pytest.raises(SuggestionError) as caught:
        transfer.check_sides(opts, (200, 10000), [STARRY])
    assert caught.value.suggestion == {"size": 775}
    transfer.check_sides(transfer.replace(opts, size=775), (200, 10000), [STARRY])  # and it works
    with pytest.raises(SuggestionError, match=r"style_scale=0.02 makes the style image's short side 6 px"):
        transfer.check_sides(transfer.replace(opts, style_scale=0.02), TUBINGEN, [STARRY])
    try:
        transfer.check_sides(transfer.replace(opts, style_scale=0.02), TUBINGEN, [STARRY])
    except SuggestionError as exc:
        scale = exc.suggestion["style_scale"]
    transfer.check_sides(transfer.replace(opts, style_scale=scale), TUBINGEN, [STARRY])
    with pytest.raises(SuggestionError, match=r"1 px \(image 5000x1\).*: crop the content"):
        transfer.check_sides(opts, (1, 5000), [STARRY])


def _real_peak(size: int) -> int:
    """VmHWM of a fresh process that stylizes a 96x128 random photo at ``size`` on the default backbone."""
    code = (
        "import json, sys, torch\n"
        "torch.set_num_threads(1)\n"
        "import numpy as np\n"
        "from facestyle.style.options import StyleOptions\n"
        "from facestyle.style.transfer import stylize\n"
        "rng = np.random.default_rng(0)\n"
        "c, s = rng.integers(0, 255, (96, 128, 3), np.uint8), rng.integers(0, 255, (80, 128, 3), np.uint8)\n"
        f"stylize(c, s, StyleOptions(size={size}, steps=4, lbfgs_history=2), device='cpu')\n"
        "hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM:')][0].split()[1]\n"
        "print(json.dumps(int(hwm) * 1024))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_real_runs_grow_as_the_model_says():
    """What a larger image adds is the model's business (activations, history, buffers); the baseline
    (Python, torch, the weights) is not: it differs between installs of the same packages and between
    runs (at 128 px: 1.24 GB in the development venv, 1.37-1.51 GB in a fresh clone's, 2026-11-29). So
    the growth from 128 to 768 px is held to the model: measured +1.39 to +1.60 GB in a fresh clone
    (three runs) against +1.41 GB predicted. The absolute peak at 768 px was under-predicted by 0.33 to
    0.41 GB there; the refusal's 10% margin covers that on a machine with a few GiB."""
    if not sys.platform.startswith("linux"):
        pytest.skip("platform: VmHWM is Linux's")

    def predicted(size: int) -> int:
        return transfer.predict_memory(StyleOptions(size=size, lbfgs_history=2), (96, 128), [(80, 128)]).peak

    small, large = _real_peak(128), _real_peak(768)
    growth = predicted(768) - predicted(128)
    assert large - small == pytest.approx(growth, rel=0.2), (small, large, growth)
    assert large - predicted(768) < 0.6e9, (large, predicted(768))
