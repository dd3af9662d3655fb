"""How much memory a style-transfer run needs at its peak, and how much this machine can give it.

A run that does not fit is refused before the backbone is built (``stylize --size 6000`` used to grow
to 24 GB and be killed by the kernel with no word). The model of the peak, per level of the schedule
(:func:`predict_peak`)::

    peak = BASELINE_BYTES + originals + max over levels of (activations + history + buffers)

- ``activations``: :data:`ACTIVATION_FACTOR` x the bytes per input pixel of the backbone's layer outputs
  up to its deepest tap (counted by a forward pass of the network's skeleton on the ``meta`` device:
  no weights, no memory, :func:`profile`) x the level's pixels (the larger of the content and the
  style images at that level). The factor covers what forward-and-backward keeps beyond the outputs
  (gradients, pooling indices, Winograd buffers) and what :func:`facestyle.heap.retained_heap` keeps
  in the process; it was fitted on measured peaks (benchmarks/stylize_memory.py, docs/style-memory.md).
- ``history``: L-BFGS's curvature pairs, ``pairs x 2 x 3 x pixels x 4`` bytes (Adam: its two moments
  and its parameter instead).
- ``buffers``: :data:`IMAGE_BUFFERS` image-sized float32 tensors (the image, its gradient, the previous
  gradient, the direction, the best image, the level's content ...).
- ``originals``: the decoded inputs, kept as uint8 and as float32 at their own resolution.

The budget (:func:`memory_budget`) is what this process may use in all: its own resident memory plus
``MemAvailable`` from ``/proc/meminfo``, or less when a cgroup v2 ``memory.max`` says so. The
environment variable ``FACESTYLE_MEMORY_AVAILABLE`` (bytes, or ``8G``, ``512M``, ``1.5GiB``) replaces the
measurement: for tests, and for whoever wants a run to stay within a share of the machine. Elsewhere
than Linux there is nothing to read and no check is made. A run fits when its predicted peak is at most
:data:`HEADROOM` of the budget.

Only CPU runs are checked: a CUDA run keeps its activations in GPU memory, which this model was not
measured on. This module imports torch only to count a skeleton.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Bytes of a run before any image-sized memory: Python, torch, oneDNN, the backbone's weights. Fitted.
BASELINE_BYTES = 1_117_000_000
#: Measured peak activation memory / the counted bytes of the layer outputs (see the module docstring).
ACTIVATION_FACTOR = 2.64
#: Image-sized float32 tensors alive besides the activations and the history.
IMAGE_BUFFERS = 8
#: A run fits when its predicted peak is at most this share of the budget (the model's error, and
#: memory other processes take while it runs).
HEADROOM = 0.9
#: The environment variable that replaces the measured budget.
ENV = "FACESTYLE_MEMORY_AVAILABLE"
#: The smallest short side any level may have, whatever the backbone: ``StyleOptions.size``'s minimum.
MIN_SIDE = 16

GIB = 1 << 30
_F32 = 4

#: Backbones whose skeleton :func:`profile` knows how to build.
_VGG_LAYOUTS = {"vgg19-imagenet": "VGG19", "vgg19-random": "VGG19", "vgg16-hed": "VGG16_HED"}
_DLIB = ("dlib-resnet-v1",)


@dataclass(frozen=True)
class Profile:
    """What a backbone's activations cost: bytes of layer outputs per input pixel up to the deepest tap,
    and the smallest square input (side in px) that every layer up to there accepts."""

    backbone: str
    bytes_per_pixel: float
    min_side: int


@dataclass(frozen=True)
class Estimate:
    """A predicted peak (bytes) and its parts; ``level`` is the (height, width) level where it peaks."""

    peak: int
    baseline: int
    originals: int
    activations: int
    history: int
    buffers: int
    level: tuple[int, int]

    def to_dict(self) -> dict:
        return {
            "peak": self.peak,
            "baseline": self.baseline,
            "originals": self.originals,
            "activations": self.activations,
            "history": self.history,
            "buffers": self.buffers,
            "level": list(self.level),
        }


@dataclass(frozen=True)
class LevelLoad:
    """One level as the model sees it: content pixels (height, width), each style's (height, width) at
    that level, and the curvature pairs L-BFGS keeps there (0 for Adam)."""

    size: tuple[int, int]
    styles: tuple[tuple[int, int], ...]
    pairs: int


# ---------------------------------------------------------------------------------------- skeletons


@functools.cache
def profile(backbone: str, deepest: str) -> Profile | None:
    """The :class:`Profile` of ``backbone`` run up to its tap ``deepest``, or None for a backbone whose
    skeleton this module cannot build (its runs are then not checked)."""
    forward = _skeleton(backbone, deepest)
    if forward is None:
        return None

    def works(side: int) -> bool:
        try:
            forward(side)
        except RuntimeError:
            return False
        return True

    smallest = first_passing(works, 0, cap=1 << 14)  # the smallest side every layer accepts
    if smallest is None:
        return None
    probe = 64  # count on a side well above the smallest, so rounding in the poolings hardly matters
    while probe < smallest:
        probe *= 2
    return Profile(backbone, forward(probe) / (probe * probe), smallest)


def _skeleton(backbone: str, deepest: str) -> Callable[[int], int] | None:
    """``side -> bytes of the layer outputs`` of a meta-device forward on a ``side x side`` input
    (in-place layers write into their input and are not counted); raises RuntimeError where a layer
    cannot take the input."""
    import torch
    from torch import nn

    if backbone in _VGG_LAYOUTS:
        from facestyle.models import vgg

        layout = getattr(vgg, _VGG_LAYOUTS[backbone])
        with torch.device("meta"):
            net = vgg.build_vgg_features(layout, deepest, winograd=False)

        def run(x: torch.Tensor) -> None:
            net(x)

    elif backbone in _DLIB:
        from facestyle.models.dlib_resnet import DlibResNet

        with torch.device("meta"):
            full = DlibResNet()
        upto = int(deepest.removeprefix("block"))

        def run(x: torch.Tensor) -> None:
            full.features(x, upto=upto)

        net = full
    else:
        return None

    def forward(side: int) -> int:
        total = 0

        def count(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            nonlocal total
            if not getattr(module, "inplace", False):
                total += output.numel() * output.element_size()

        hooks = [m.register_forward_hook(count) for m in net.modules() if not list(m.children())]
        try:
            with torch.no_grad():
                run(torch.empty(1, 3, side, side, device="meta"))
        finally:
            for h in hooks:
                h.remove()
        return total

    return forward


def min_side(backbone: str, deepest: str) -> int:
    """The smallest short side (px) a level may have on ``backbone``: :data:`MIN_SIDE`, or more where
    the network's own layers need it (dlib's ResNet has unpadded convolutions)."""
    found = profile(backbone, deepest)
    return max(MIN_SIDE, found.min_side if found is not None else 0)


# ----------------------------------------------------------------------------------------- the model


def predict_peak(
    bytes_per_pixel: float,
    levels: Sequence[LevelLoad],
    originals: Sequence[tuple[int, int]] = (),
    *,
    optimizer: str = "lbfgs",
) -> Estimate:
    """The predicted peak of a run (see the module docstring). ``bytes_per_pixel``: the backbone's
    :attr:`Profile.bytes_per_pixel`; ``originals``: (height, width) of each decoded input image, the
    content first (its uint8 copy at the output size counts too)."""
    stored = sum(h * w * (3 + 3 * _F32) for h, w in originals)
    if levels:
        out = levels[-1].size
        stored += out[0] * out[1] * 3 * 2  # the content and the result at the output size, as uint8
    best: tuple[int, int, int, int, tuple[int, int]] | None = None
    for level in levels:
        pixels = level.size[0] * level.size[1]
        widest = max([pixels, *(h * w for h, w in level.styles)])
        activations = int(ACTIVATION_FACTOR * bytes_per_pixel * widest)
        # Adam keeps its parameter and two moment estimates instead of curvature pairs.
        history = history_bytes(pixels, level.pairs) if optimizer == "lbfgs" else 3 * 3 * pixels * _F32
        buffers = IMAGE_BUFFERS * 3 * pixels * _F32
        total = activations + history + buffers
        if best is None or total > sum(best[:3]):
            best = (activations, history, buffers, total, level.size)
    activations, history, buffers, _, where = best or (0, 0, 0, 0, (0, 0))
    peak = BASELINE_BYTES + stored + activations + history + buffers
    return Estimate(peak, BASELINE_BYTES, stored, activations, history, buffers, where)


def history_bytes(pixels: int, pairs: int) -> int:
    """L-BFGS's curvature history: ``pairs`` pairs (s, y) of RGB float32 images of ``pixels`` pixels."""
    return pairs * 2 * 3 * pixels * _F32


def first_passing(works: Callable[[int], bool], failing: int, cap: int = 1 << 40) -> int | None:
    """The smallest n > ``failing`` with ``works(n)``, for a ``works`` that stays true once it is true as
    n grows: doubling until it works, then bisection. None when nothing up to ``cap`` works. The one
    search behind the smallest side a backbone accepts, the size or style scale that makes an image
    wide enough, and the largest size that fits in memory."""
    high = max(1, 2 * failing)
    while not works(high):
        if high > cap:
            return None
        failing, high = high, 2 * high
    while high - failing > 1:
        mid = (failing + high) // 2
        failing, high = (failing, mid) if works(mid) else (mid, high)
    return high


def largest_fitting(predict: Callable[[int], int], limit: int, low: int, high: int) -> int | None:
    """The largest ``size`` in [``low``, ``high``] with ``predict(size) <= limit`` (the peak grows with
    the size), or None when not even ``low`` fits."""
    if predict(low) > limit:
        return None
    too_big = first_passing(lambda n: predict(n) > limit, low, cap=high)
    return high if too_big is None else min(high, too_big - 1)


# ---------------------------------------------------------------------------------------- the budget


@dataclass(frozen=True)
class Budget:
    """Bytes a run may use in all (None: not known here) and where the number comes from."""

    bytes: int | None
    source: str

    @property
    def usable(self) -> int | None:
        """The most a predicted peak may be: :data:`HEADROOM` of the budget."""
        return None if self.bytes is None else int(self.bytes * HEADROOM)


def memory_budget() -> Budget:
    """What this process may use at its peak: ``$FACESTYLE_MEMORY_AVAILABLE`` if set, else its own
    resident memory plus what the kernel says is available (``MemAvailable``), or less where a cgroup
    v2 ``memory.max`` limits it. Outside Linux: ``Budget(None, reason)``."""
    override = os.environ.get(ENV, "").strip()
    if override:
        return Budget(parse_bytes(override), f"${ENV}")
    if platform.system() != "Linux":
        return Budget(None, f"no memory check on {platform.system() or 'this system'}: nothing to read")
    meminfo = _kib_fields(Path("/proc/meminfo"))
    if "MemAvailable" not in meminfo:
        return Budget(None, "no memory check: /proc/meminfo has no MemAvailable")
    own = _kib_fields(Path("/proc/self/status")).get("VmRSS", 0)
    available, source = meminfo["MemAvailable"], "MemAvailable"
    limit = _cgroup_room()
    if limit is not None and limit < available:
        available, source = limit, "cgroup memory.max"
    return Budget(available + own, source)


def _kib_fields(path: Path) -> dict[str, int]:
    """``Name:  123 kB`` lines of a /proc file as bytes."""
    found = {}
    try:
        for line in path.read_text().splitlines():
            name, _, rest = line.partition(":")
            parts = rest.split()
            if parts and parts[0].isdigit():
                found[name] = int(parts[0]) * (1024 if parts[-1] == "kB" else 1)
    except OSError:
        pass
    return found


def _cgroup_room() -> int | None:
    """Room left under this process's cgroup v2 ``memory.max`` (None: no v2 cgroup or no limit)."""
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    v2 = next((line[3:] for line in lines if line.startswith("0::")), None)
    if v2 is None:
        return None
    folder = Path("/sys/fs/cgroup") / v2.lstrip("/")
    try:
        limit = (folder / "memory.max").read_text().strip()
        if limit == "max":
            return None
        current = int((folder / "memory.current").read_text().strip() or 0)
        return max(0, int(limit) - current)
    except (OSError, ValueError):
        return None


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_bytes(text: str) -> int:
    """``"8G"``, ``"8 GiB"``, ``"512M"``, ``"1.5g"`` or plain bytes -> bytes (powers of 1024)."""
    from facestyle.errors import UsageError

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(?:i?b)?\s*", text, re.IGNORECASE)
    if not match or not math.isfinite(float(match[1])):
        raise UsageError(f"${ENV}={text!r} is not an amount of memory (like 8G or 512M)")
    return int(float(match[1]) * _UNITS[match[2].lower()])


def gib(n: int) -> str:
    """Bytes as a short GiB figure: ``40 GiB``, ``1.6 GiB``, ``0.3 GiB``."""
    value = n / GIB
    return f"{value:.0f} GiB" if value >= 10 else f"{value:.1f} GiB"
