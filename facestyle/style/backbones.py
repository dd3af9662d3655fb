"""Feature extractors for style transfer: a backbone network with named activation taps.

A :class:`FeatureExtractor` wraps any ``nn.Module`` and returns the activations of chosen submodules,
captured with forward hooks. Once the deepest requested tap has fired, the rest of the network is
skipped, so only the layers that matter are ever run. For VGG19 the network is also *built* only up
to the deepest tap, which saves the memory of the unused weights (conv5_2..conv5_4 hold 28 MB).

Backbones, by name (see :data:`BACKBONES`):

* ``vgg19-imagenet``: torchvision's VGG19 with ImageNet weights (registry entry of the same name,
  file ``vgg19-dcbb9e9d.pth``), the quality default. Missing weights are an error, never a silent
  fallback.
* ``vgg19-random``: the same architecture with seeded random (Kaiming-normal) weights. UNTRAINED:
  He, Wang & Hopcroft (NeurIPS 2016) showed that random-weight VGG features still carry texture
  statistics good enough for style transfer; useful offline and for timing. Labelled as untrained in
  every result.
* ``dlib-resnet``: dlib's face-recognition ResNet (when ``facestyle.models.dlib_resnet`` is
  installed), to show the taps are generic.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from facestyle.errors import ChecksumError, UsageError
from facestyle.style.winograd import WinogradConv2d, worth_winograd

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: VGG19 ("configuration E"): channels per conv, "M" for 2x2 max pooling.
VGG19_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M",
)  # fmt: skip


def vgg19_layer_names() -> list[str]:
    """Names of ``torchvision.models.vgg19().features`` children in order: conv1_1, relu1_1, ..., pool5."""
    names, block, conv = [], 1, 1
    for item in VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


VGG19_LAYERS = vgg19_layer_names()


class _StopForward(Exception):
    """Raised from a hook once every tap is captured: the layers after the deepest tap are not run."""


class FeatureExtractor(nn.Module):
    """Normalise an RGB image in [0, 1] the way the backbone expects, run it, return named activations.

    ``taps`` maps public tap names (``relu4_2``) to qualified submodule names of ``body`` (``"22"``).
    """

    def __init__(
        self,
        body: nn.Module,
        taps: dict[str, str],
        *,
        mean: Sequence[float],
        std: Sequence[float],
        name: str,
        trained: bool,
        description: str,
        input_transform: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.body = body.eval().requires_grad_(False)
        self.name, self.trained, self.description = name, trained, description
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        self.input_transform = input_transform
        modules = dict(body.named_modules())
        missing = [q for q in taps.values() if q not in modules]
        if missing:
            raise UsageError(f"backbone {name!r} has no submodule(s) {missing}")
        self.taps = dict(taps)
        self._captured: dict[str, Tensor] = {}
        self._pending: set[str] = set()
        for public, qualified in taps.items():
            modules[qualified].register_forward_hook(self._make_hook(public))

    def _make_hook(self, public: str) -> Callable:
        def hook(_module: nn.Module, _inputs: tuple, output: Tensor) -> None:
            if public in self._pending:
                self._captured[public] = output
                self._pending.discard(public)
                if not self._pending:
                    raise _StopForward

        return hook

    def forward(self, image: Tensor) -> dict[str, Tensor]:
        """``image``: (N, 3, H, W) RGB in [0, 1]. Returns {tap name: activation}."""
        x = (image - self.mean) / self.std
        if self.input_transform is not None:
            x = self.input_transform(x)
        self._captured, self._pending = {}, set(self.taps)
        with contextlib.suppress(_StopForward):
            self.body(x)
        captured, self._captured = self._captured, {}
        if self._pending:
            raise RuntimeError(f"taps never reached: {sorted(self._pending)}")
        return {name: captured[name] for name in self.taps}


# ---------------------------------------------------------------------------------------------- VGG19


def build_vgg19_features(deepest: str, *, winograd: bool = True) -> nn.Sequential:
    """VGG19 ``features`` up to and including layer ``deepest``, indexed like torchvision's.

    Keeping torchvision's child indices means a torchvision state dict maps key-for-key
    (``features.21.weight`` -> child ``21``). ReLUs are in place (halves activation memory);
    a ReLU right after a tapped conv output would overwrite that tap, so taps on convs are not offered
    (:data:`VGG19_TAPS` lists relu and pool layers only). With ``winograd`` the wide layers (conv3_1
    onwards) are :class:`~facestyle.style.winograd.WinogradConv2d`: the same parameters and state-dict
    keys, but fewer multiplications on the CPU (facestyle/style/winograd.py says when it pays).
    """
    if deepest not in VGG19_LAYERS:
        raise UsageError(f"unknown VGG19 layer {deepest!r}; taps are relu1_1..relu5_4 and pool1..pool5")
    layers: list[nn.Module] = []
    in_ch = 3
    for name in VGG19_LAYERS[: VGG19_LAYERS.index(deepest) + 1]:
        if name.startswith("conv"):
            out_ch = int(VGG19_CFG[[i for i, v in enumerate(VGG19_CFG) if v != "M"][_conv_index(name)]])
            if winograd and worth_winograd(in_ch, out_ch):
                layers.append(WinogradConv2d(in_ch, out_ch))
            else:
                layers.append(nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1))
            in_ch = out_ch
        elif name.startswith("relu"):
            layers.append(nn.ReLU(inplace=True))
        else:
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
    return nn.Sequential(*layers)


def _conv_index(name: str) -> int:
    return [n for n in VGG19_LAYERS if n.startswith("conv")].index(name)


VGG19_TAPS = tuple(n for n in VGG19_LAYERS if not n.startswith("conv"))


def _deepest(taps: Sequence[str]) -> str:
    for t in taps:
        if t not in VGG19_TAPS:
            raise UsageError(f"unknown VGG19 tap {t!r}; choose from relu1_1..relu5_4, pool1..pool5")
    return max(taps, key=VGG19_LAYERS.index)


def vgg19_state_for(features: nn.Sequential, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map a torchvision VGG19 state dict (``features.I.weight`` ...) onto a truncated ``features``.

    Classifier weights and the layers past the truncation point are dropped; a missing key or a
    wrong shape means the file is not torchvision's VGG19 and is reported as such.
    """
    own = features.state_dict()
    mapped: dict[str, Tensor] = {}
    for key, param in own.items():
        source = state.get(f"features.{key}", state.get(key))
        if source is None:
            raise ChecksumError(
                f"weights file has no tensor features.{key}: not a torchvision VGG19 state dict"
            )
        if tuple(source.shape) != tuple(param.shape):
            raise ChecksumError(
                f"features.{key} has shape {tuple(source.shape)}, expected {tuple(param.shape)}: not VGG19"
            )
        mapped[key] = source
    return mapped


def load_vgg19_imagenet_state(path: Path | None = None, sha256: str | None = None) -> dict[str, Tensor]:
    """The verified torchvision VGG19 state dict.

    Normally both arguments are ``None`` and the file is found and checked through the weights registry
    (``vgg19-imagenet``; torch's hub cache or ``facestyle models import``). Tests inject ``path`` and its
    ``sha256`` (full digest or prefix) to exercise the same loading code on a file they wrote.
    Raises :class:`~facestyle.errors.WeightsMissingError` naming the file and the import command.
    """
    from facestyle.models.weights import load_torch_state, sha256_of

    if path is None:
        return load_torch_state("vgg19-imagenet")
    path = Path(path)
    if sha256 is None:
        raise ValueError("an explicit weights path needs its expected sha256")
    digest = sha256_of(path)
    if not digest.startswith(sha256):
        raise ChecksumError(f"{path}: sha256 {digest} does not match the expected {sha256}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ChecksumError(f"{path}: cannot be read as torch weights ({exc})") from None


def vgg19_imagenet(
    taps: Sequence[str],
    *,
    weights_path: Path | None = None,
    sha256: str | None = None,
    winograd: bool = True,
) -> FeatureExtractor:
    """VGG19 with ImageNet weights, built only up to the deepest of ``taps`` (``winograd``: see
    :func:`build_vgg19_features`)."""
    state = load_vgg19_imagenet_state(weights_path, sha256)
    features = build_vgg19_features(_deepest(taps), winograd=winograd)
    features.load_state_dict(vgg19_state_for(features, state), strict=True)
    del state
    return _vgg_extractor(features, taps, "vgg19-imagenet", trained=True)


def vgg19_random(taps: Sequence[str], *, seed: int = 0, winograd: bool = True) -> FeatureExtractor:
    """VGG19 with seeded random weights (UNTRAINED; He, Wang & Hopcroft 2016).

    Kaiming-normal convolutions (fan-in, ReLU gain) keep the activation scale roughly constant with
    depth, so deep taps neither vanish nor explode; biases are zero. The same seed gives the same
    network on every machine (the generator is CPU-side and private, not the global one).
    """
    features = build_vgg19_features(_deepest(taps), winograd=winograd)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in features:
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
                m.bias.zero_()
    return _vgg_extractor(features, taps, "vgg19-random", trained=False)


def _channels_last(x: Tensor) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last)


def _vgg_extractor(
    features: nn.Sequential, taps: Sequence[str], name: str, trained: bool
) -> FeatureExtractor:
    """Wrap VGG features, run channels-last: oneDNN's convolutions and the Winograd layers both work on
    NHWC, so activations then flow between layers without layout conversions (measured ~1.2x per
    style-transfer step on its own, benchmarks/stylize_speed.py)."""
    return FeatureExtractor(
        features.to(memory_format=torch.channels_last),
        {t: str(VGG19_LAYERS.index(t)) for t in taps},
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name=name,
        trained=trained,
        description=BACKBONES[name].description,
        input_transform=_channels_last,
    )


# ------------------------------------------------------------------------------------------ registry


@dataclass(frozen=True)
class BackboneInfo:
    """What ``stylize`` needs to know about a backbone before building it."""

    name: str
    description: str
    trained: bool
    style_taps: tuple[str, ...]
    content_taps: tuple[str, ...]
    build: Callable[..., FeatureExtractor] = field(repr=False, compare=False)


_JCJ_STYLE = ("relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1")
_JCJ_CONTENT = ("relu4_2",)

BACKBONES: dict[str, BackboneInfo] = {
    "vgg19-imagenet": BackboneInfo(
        "vgg19-imagenet",
        "VGG19, ImageNet weights (torchvision vgg19-dcbb9e9d.pth): the quality default",
        True,
        _JCJ_STYLE,
        _JCJ_CONTENT,
        vgg19_imagenet,
    ),
    "vgg19-random": BackboneInfo(
        "vgg19-random",
        "VGG19 with seeded RANDOM weights (untrained; He, Wang & Hopcroft 2016): offline demo and timing",
        False,
        _JCJ_STYLE,
        _JCJ_CONTENT,
        vgg19_random,
    ),
}


def _register_dlib() -> None:
    """Add the dlib face ResNet as a backbone when its PyTorch port is present in this checkout."""
    try:
        from facestyle.style import dlib_backbone
    except ImportError:
        return
    info = dlib_backbone.backbone_info()
    if info is not None:
        BACKBONES[info.name] = info


def get_backbone(name: str) -> BackboneInfo:
    if not BACKBONES.get("dlib-resnet"):
        _register_dlib()
    try:
        return BACKBONES[name]
    except KeyError:
        raise UsageError(f"unknown backbone {name!r}; choose from {', '.join(sorted(BACKBONES))}") from None


def build_extractor(name: str, taps: Sequence[str], device: torch.device | str = "cpu") -> FeatureExtractor:
    """Build backbone ``name`` with ``taps`` on ``device`` (weights verified; nothing is downloaded)."""
    info = get_backbone(name)
    return info.build(list(dict.fromkeys(taps))).to(device)
