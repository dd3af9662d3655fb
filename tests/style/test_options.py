"""StyleOptions: the defaults, the steps/scales reconciliation, and one-line errors that name parameters.

No image is stylised here; what reaches the optimiser is tested in test_transfer.py.
"""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from facestyle.errors import ParameterError
from facestyle.style.options import DEFAULTS, StyleOptions


def test_defaults_are_the_documented_ones():
    opts = StyleOptions().validate()
    assert (opts.total_steps, opts.scale_count) == (DEFAULTS["steps"], DEFAULTS["scales"]) == (300, 1)
    assert opts.backbone is None and opts.size == 512 and opts.optimizer == "lbfgs"
    assert (opts.content_weight, opts.style_weight, opts.tv_weight) == (1.0, 1e3, 1.0)
    assert opts.init == "content" and opts.precondition and not opts.half and opts.save_every == 0
    vgg19 = StyleOptions(backbone="vgg19-imagenet")
    assert vgg19.taps() == (["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"], ["relu4_2"])
    assert vgg19.style_layer_weights() == dict.fromkeys(vgg19.taps()[0], 1.0)


@pytest.mark.parametrize(
    ("options", "steps", "scales"),
    [
        ({}, 300, 1),
        ({"steps": 40}, 40, 1),
        ({"scales": 3}, 300, 3),
        ({"steps_per_scale": [100, 190]}, 290, 2),  # no need to say scales=2 as well
        ({"steps_per_scale": (100, 190), "steps": 290, "scales": 2}, 290, 2),  # agreeing is fine
    ],
)
def test_steps_and_scales_follow_steps_per_scale(options, steps, scales):
    opts = StyleOptions(**options).validate()
    assert (opts.total_steps, opts.scale_count) == (steps, scales)


def test_the_options_are_a_frozen_value():
    opts = StyleOptions(size=64)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.size = 32  # type: ignore[misc]
    assert dataclasses.replace(opts, steps=5).steps == 5 and opts.steps is None


def test_taps_given_replace_the_backbone_defaults():
    opts = StyleOptions(backbone="vgg19-random", style_taps=["relu1_1"], content_taps=["relu3_1"])
    assert opts.validate().taps() == (["relu1_1"], ["relu3_1"])
    assert StyleOptions(backbone="dlib-resnet-v1").taps() == (
        ["block2", "block6", "block9", "block12"],
        ["block9"],
    )


NAN, INF = math.nan, math.inf


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"size": 8}, "size=8 is too small (at least 16 pixels)"),
        ({"size": 64.0}, "size=64.0 must be a whole number"),
        ({"steps": 0}, "steps=0 is too small (at least 1)"),
        ({"scales": 0}, "scales=0 is too small (at least 1)"),
        ({"steps_per_scale": [3, 0]}, "steps_per_scale=[3, 0]: every level needs at least one step"),
        ({"steps_per_scale": []}, "steps_per_scale=[] must list the steps of each level"),
        ({"steps_per_scale": [3, 2], "steps": 6}, "steps=6 disagrees with steps_per_scale=[3, 2] (sum 5)"),
        (
            {"steps_per_scale": [3, 2], "scales": 3},
            "scales=3 disagrees with steps_per_scale=[3, 2] (2 levels)",
        ),
        ({"optimizer": "sgd"}, "optimizer='sgd' is not an optimizer; choose lbfgs or adam"),
        ({"lbfgs_history": 0}, "lbfgs_history=0 is too small (at least 1)"),
        (
            {"optimizer": "adam", "lbfgs_history": 5},
            "lbfgs_history=5 applies only to the lbfgs optimizer, not optimizer='adam'",
        ),
        ({"lr": 0.0}, "lr=0.0 must be a positive finite number"),
        ({"lr": NAN}, "lr=nan must be a positive finite number"),
        ({"content_weight": -1.0}, "content_weight=-1.0 must be a finite number, 0 or more"),
        ({"style_weight": NAN}, "style_weight=nan must be a finite number, 0 or more"),
        ({"tv_weight": INF}, "tv_weight=inf must be a finite number, 0 or more"),
        ({"style_scale": 0}, "style_scale=0 must be a positive finite number"),
        ({"style_scale": INF}, "style_scale=inf must be a positive finite number"),
        ({"style_blend": [1.0, NAN]}, "style_blend=[1.0, nan] must be finite numbers"),
        (
            {"style_blend": [1.0, -1.0]},
            "style_blend=[1.0, -1.0]: the weights must be non-negative and not all",
        ),
        ({"style_blend": [0, 0]}, "style_blend=[0, 0]: the weights must be non-negative and not all zero"),
        ({"style_blend": [1.0]}, "style_blend=[1.0] has 1 weights for 2 style images"),
        ({"init": "randon"}, "init='randon' is neither 'content' nor 'random' nor an image file"),
        ({"init": 3}, "init=3 is neither 'content' nor 'random' nor an image file"),
        ({"backbone": "mtcnn"}, "backbone='mtcnn' is not a style backbone; choose from "),
        (
            {"backbone": "vgg19-random", "style_taps": ["relu9_9"]},
            "style_taps=['relu9_9']: vgg19-random has no",
        ),
        ({"seed": 1.5}, "seed=1.5 must be a whole number"),
        ({"save_every": -1}, "save_every=-1 is too small (at least 0; 0 takes no snapshots)"),
    ],
)
def test_bad_options_are_one_line_parameter_errors(options, message):
    with pytest.raises(ParameterError) as info:
        StyleOptions(**options).validate(styles=2)
    first = str(info.value).splitlines()[0]
    assert first.startswith(message), first
    assert "--" not in first  # the library names parameters; flags are the CLI's business
    assert info.value.exit_code == 2


def test_an_image_array_or_file_is_a_valid_init(images):
    StyleOptions(init=images["style"]).validate()
    StyleOptions(init=str(images["style"])).validate()
    StyleOptions(init=np.zeros((4, 4, 3), np.uint8)).validate()


def test_building_and_checking_options_imports_no_torch():
    """The CLI builds options before it decides to run anything: that must stay cheap."""
    code = (
        "import sys\n"
        "from facestyle.style.options import StyleOptions\n"
        "StyleOptions(steps_per_scale=[2, 3], backbone='vgg19-random').validate(styles=1)\n"
        "print('torch' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "False"
