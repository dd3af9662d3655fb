"""ImageNet labels for any image: torchvision's MobileNetV2 (IMAGENET1K_V1) with its own classifier.

No head to train: the registry's ``mobilenet-v2-imagenet`` entry is torchvision's file, and
:func:`facestyle.models.registry.create` builds the whole network (features, pooling, the 1000-way
classifier). Its 1000 category names come from torchvision's weights metadata
(:func:`facestyle.models.mobilenet.imagenet_categories`)::

    from facestyle.heads.imagenet import predict_imagenet

    for p in predict_imagenet(["golden_gate.jpg"], top_k=5):
        print(p.path, p.status, p.top)          # [('suspension bridge', 0.51), ('pier', 0.46), ...]

Preprocessing is torchvision's ``ImageClassification`` transform of IMAGENET1K_V1, done with the same
functions on the uint8 RGB array of :func:`facestyle.io.images.as_rgb`: the short side resized to 256
(bilinear, antialiased), a centre crop of 224, ``[0, 1]`` and the ImageNet mean and standard
deviation. :func:`imagenet_input` is checked against ``MobileNet_V2_Weights.IMAGENET1K_V1.transforms()``
to the last bit (tests/heads/test_imagenet.py). The results are the :class:`Prediction` type of the
trained heads, so the CLI prints both the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from facestyle.checks import check_top_k, require
from facestyle.errors import FacestyleError
from facestyle.heads.classify import Prediction, image_list
from facestyle.io.images import ImageLike, as_rgb
from facestyle.io.progress import Progress, no_progress

#: The registered network whose own ImageNet classifier labels images.
IMAGENET_MODEL = "mobilenet-v2-imagenet"


def imagenet_input(image: np.ndarray) -> torch.Tensor:
    """``(3, 224, 224)`` float input of one ``(H, W, 3)`` uint8 RGB image, exactly as torchvision's
    IMAGENET1K_V1 transform makes it from a uint8 tensor (resize the short side to 256 with bilinear
    antialiasing, centre crop 224, scale to [0, 1], ImageNet mean/std)."""
    import torchvision.transforms.functional as tf

    from facestyle.models.mobilenet import CROP, RESIZE
    from facestyle.models.registry import get_model

    mean, std = get_model(IMAGENET_MODEL).normalize  # type: ignore[misc]
    x = torch.from_numpy(np.array(image, dtype=np.uint8, order="C")).permute(2, 0, 1)  # a writable copy
    x = tf.resize(x, [RESIZE], interpolation=tf.InterpolationMode.BILINEAR, antialias=True)
    x = tf.center_crop(x, [CROP])
    return tf.normalize(x.float() / 255.0, mean=list(mean), std=list(std))


class ImageNetClassifier:
    """The 1000 ImageNet categories of any image, from ``mobilenet-v2-imagenet``'s own classifier.

    The network is built (from the registry, on ``device``) at the first :meth:`predict`.
    """

    def __init__(self, device: str | None = None, batch: int = 16) -> None:
        from facestyle.device import resolve_device

        resolve_device(device)
        require(batch >= 1, "{batch} must be at least 1", batch=batch)
        self._device = device
        self._batch = batch
        self._net: torch.nn.Module | None = None
        self._classes: list[str] | None = None

    @property
    def classes(self) -> list[str]:
        """The 1000 category names, in the network's output order (torchvision's metadata)."""
        if self._classes is None:
            from facestyle.models.mobilenet import imagenet_categories

            self._classes = imagenet_categories()
        return list(self._classes)

    def _network(self) -> torch.nn.Module:
        if self._net is None:
            from facestyle.models.registry import create

            self._net = create(IMAGENET_MODEL, self._device).eval()
        return self._net

    @torch.inference_mode()
    def probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        """Softmax over the 1000 categories of ``(N, 3, 224, 224)`` inputs from :func:`imagenet_input`."""
        net = self._network()
        device = next(net.parameters()).device
        return torch.softmax(net(inputs.to(device)).float(), dim=1).cpu()

    def predict(
        self, images: ImageLike | Sequence[ImageLike], top_k: int = 5, progress: Progress = no_progress
    ) -> list[Prediction]:
        """The ``top_k`` ImageNet categories of each image (paths and/or ``(H, W, 3)`` uint8 arrays; one
        image may be passed alone), most probable first. An image that cannot be read gets an
        ``error`` status (and says why) instead of an exception."""
        check_top_k(top_k)
        items = image_list(images)
        classes = self.classes
        k = min(top_k, len(classes))
        out: list[Prediction | None] = [None] * len(items)
        pending: list[tuple[int, str, torch.Tensor]] = []

        def flush() -> None:
            if not pending:
                return
            probs = self.probabilities(torch.stack([x for *_, x in pending]))
            top_p, top_i = probs.topk(k, dim=1)  # sorted, most probable first
            for (i, label, _), ps, js in zip(pending, top_p.tolist(), top_i.tolist(), strict=True):
                top = [(classes[j], float(p)) for p, j in zip(ps, js, strict=True)]
                out[i] = Prediction(label, "ok", top)
            pending.clear()

        for i, item in enumerate(progress(items, len(items), "ImageNet labels")):
            fallback = f"<array {i}>" if isinstance(item, np.ndarray) else str(item)
            try:
                rgb, label = as_rgb(item, fallback)
            except FacestyleError as exc:
                out[i] = Prediction(fallback, "error", [], str(exc))
                continue
            pending.append((i, label, imagenet_input(rgb)))
            if len(pending) >= self._batch:
                flush()
        flush()
        return [p for p in out if p is not None]


def predict_imagenet(
    images: ImageLike | Sequence[ImageLike],
    top_k: int = 5,
    *,
    device: str | None = None,
    progress: Progress = no_progress,
) -> list[Prediction]:
    """``ImageNetClassifier(device).predict(images, top_k)``: ImageNet labels with probabilities."""
    return ImageNetClassifier(device).predict(images, top_k, progress)
