"""MTCNN (Zhang et al., 2016): the three-stage cascade as a :class:`~facestyle.detect.faces.Detector`.

The networks come from the model registry (``mtcnn``: :mod:`facestyle.models.mtcnn`, weights from
facenet-pytorch's wheel, checksum-verified, ``weights_only=True``); this class only runs them. The
three-stage glue is :mod:`facestyle.detect.mtcnn_stages`, so every stage uses the package's NMS; it
reproduces facenet-pytorch's ``detect_face`` (tests/detect/test_mtcnn_stages.py). The cascade runs one
image at a time: images of different sizes cannot share a pyramid, and a faceless image then simply
yields an empty list instead of breaking the batch (facenet-pytorch#224).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from facestyle.detect.faces import Face, sort_faces
from facestyle.detect.mtcnn_stages import run_cascade


class MTCNNDetector:
    """Boxes, scores and five landmarks per face, from loaded P-, R- and O-Nets.

    ``min_face`` is the smallest face side in pixels searched for; ``thresholds`` are the three stage
    confidences (the published 0.6/0.7/0.7); ``factor`` is the pyramid scale step; faces scoring below
    ``min_score`` are dropped. Images larger than ``max_side`` are searched on a downscaled copy (a 24 MP
    photo would otherwise cost seconds and GBs in the first pyramid level) and the boxes scaled back;
    alignment still uses the full image.
    """

    name = "mtcnn"

    def __init__(
        self,
        pnet: nn.Module,
        rnet: nn.Module,
        onet: nn.Module,
        *,
        min_face: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        min_score: float = 0.9,
        max_side: int = 1280,
    ) -> None:
        self.pnet, self.rnet, self.onet = (net.eval() for net in (pnet, rnet, onet))
        self.device = next(pnet.parameters()).device
        self.min_face = min_face
        self.thresholds = list(thresholds)
        self.factor = factor
        self.min_score = min_score
        self.max_side = max_side

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> list[Face]:
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
                Face(
                    box=np.asarray(row[:4], dtype=np.float32) / scale,
                    score=score,
                    landmarks=np.asarray(pts, dtype=np.float32).reshape(5, 2) / scale,
                )
            )
        return sort_faces(faces)

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(image) for image in images]
