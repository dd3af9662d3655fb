"""MTCNN (Zhang et al., 2016) with the weights that ship inside facenet-pytorch's wheel.

The three networks are facenet-pytorch's ``PNet``/``RNet``/``ONet`` modules built *without* their own
loader and filled from the registry (checksum-verified, ``weights_only=True``). The three-stage glue is
our own (:mod:`facestyle.detect.mtcnn_stages`), so every stage uses the package's NMS; it reproduces
facenet-pytorch's ``detect_face`` (tests/detect/test_mtcnn_stages.py). The cascade runs one
image at a time: images of different sizes cannot share a pyramid, and a faceless image then simply
yields an empty list instead of breaking the batch (facenet-pytorch#224).
"""

from __future__ import annotations

import numpy as np
import torch

from facestyle.detect.base import DetectedFace, sort_faces
from facestyle.device import default_device
from facestyle.models.weights import load_torch_state


def _build_nets(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    nets = []
    for cls, filename in ((PNet, "pnet.pt"), (RNet, "rnet.pt"), (ONet, "onet.pt")):
        net = cls(pretrained=False)
        net.load_state_dict(load_torch_state("mtcnn", filename))
        nets.append(net.to(device).eval())
    return tuple(nets)  # type: ignore[return-value]


class MTCNNDetector:
    """Boxes, scores and five landmarks per face.

    ``min_face`` is the smallest face side in pixels searched for; ``thresholds`` are the three stage
    confidences (the published 0.6/0.7/0.7); ``factor`` is the pyramid scale step. Images larger than
    ``max_side`` are searched on a downscaled copy (a 24 MP photo would otherwise cost seconds and GBs
    in the first pyramid level) and the boxes scaled back; alignment still uses the full image.
    """

    name = "mtcnn"

    def __init__(
        self,
        device: str | None = None,
        min_face: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_score: float = 0.9,
        max_side: int = 1280,
    ) -> None:
        self.device = default_device(device)
        self.min_face = min_face
        self.thresholds = list(thresholds)
        self.factor = factor
        self.min_score = min_score
        self.max_side = max_side
        self.pnet, self.rnet, self.onet = _build_nets(self.device)

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[DetectedFace]:
        from facestyle.detect.mtcnn_stages import run_cascade

        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 12:
            return []
        scale = min(1.0, self.max_side / max(image.shape[:2]))
        if scale < 1.0:
            import cv2

            size = (max(12, round(image.shape[1] * scale)), max(12, round(image.shape[0] * scale)))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
        boxes, points = run_cascade(
            image,
            self.pnet,
            self.rnet,
            self.onet,
            self.min_face,
            tuple(self.thresholds),
            self.factor,
            self.device,
        )
        faces = []
        for row, pts in zip(boxes, points, strict=True):
            score = float(row[4])
            if score < self.min_score:
                continue
            faces.append(
                DetectedFace(
                    box=np.asarray(row[:4], dtype=np.float32) / scale,
                    score=score,
                    landmarks=np.asarray(pts, dtype=np.float32).reshape(5, 2) / scale,
                )
            )
        return sort_faces(faces)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[DetectedFace]]:
        return [self.detect(image) for image in images]
