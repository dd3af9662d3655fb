"""How a face is found in a photo: one policy for every path that reads photos (issue 20).

A detector looks for faces *in* a scene. Photos that already are a face (ID and badge photos, the
output of another detector, face data sets of tight crops) defeat it: MTCNN wants some forehead, chin
and background around a face, and its last stage stretches a box that hangs over the border. So the
policy has three modes (:data:`CROP_MODES`):

* ``detect``: the detector alone, as before.
* ``whole``: the image is one face. MTCNN's O-Net places the five landmarks inside it
  (:func:`whole_face`); fixed box proportions are never used.
* ``auto`` (the default): detect; if nothing is found, or the largest face found is cut by the frame
  (its box hangs over the border by :data:`CUT_OVERHANG` of its width or more: the detector then
  stretched the visible part and its landmarks are wrong), detect again on a padded copy (the face then
  has a border around it); if still nothing, ``whole``, but only where the image plausibly is a face
  crop: O-Net's face probability on the whole image reaches :data:`WHOLE_MIN_SCORE` and the landmarks
  it places look like a face that fills the frame. A landscape or a painting stays "no face".

Every :class:`~facestyle.detect.faces.Face` says how it was found in ``found_by`` (:data:`FOUND_BY`).
The numbers below were measured on tight crops of LFW View 1 DevTest and AT&T photos against the
landmarks found on the uncropped photos, and on the faceless images of the shared style data
(``benchmarks/tight_crops.py``; docs/face-finding.md has the table).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import numpy as np

from facestyle.detect.faces import Detector, Face, sort_faces
from facestyle.errors import ParameterError

if TYPE_CHECKING:  # importing this module costs no torch (the CLI's option checks use it)
    from torch import nn

#: The face-finding modes, default first where a default is shown.
CropMode = Literal["detect", "auto", "whole"]
CROP_MODES = ("detect", "auto", "whole")
DEFAULT_CROP: CropMode = "auto"

#: How a face was found: by the detector on the photo, by the detector on a padded copy, or by O-Net
#: on the whole image.
FOUND_BY = ("detector", "padded", "whole")

#: A detected face whose box hangs over the image border by at least this fraction of its width is
#: cut by the frame. MTCNN's last stage stretches the visible part of such a box, so its landmarks are
#: far off (on tight crops: overhang 0.35 or more, landmark errors ~50% of the inter-ocular distance);
#: ``auto`` looks again. On the uncropped photos the largest overhang is 0.25 (AT&T, whose photos
#: are tight already) and no LFW View 1 DevTest face nearest the centre is affected.
CUT_OVERHANG = 0.3

#: Padded re-detection: a constant black border of this fraction of the side on each side. Black was
#: measured against edge-replicated and mirrored borders: those grow a second, fake face out of the
#: border (landmark errors of 25-50% of the inter-ocular distance on tight crops), black does not.
PAD_FRACTION = 0.35
PAD_FILL = 0
#: A face found on the padded copy counts only if its box is at least this fraction of the image's
#: width: padding is for faces that fill the frame. It also stops the new pyramid scales from finding a
#: small false face in a painting (the shared ``mosaic.jpg``: a box 8% of the image wide).
PADDED_MIN_FILL = 0.5

#: ``whole``: O-Net sees the image's box grown by this factor on its centre (so a crop without forehead
#: and chin is framed about as a detector's box would be), on a copy padded with mid-grey. Measured
#: against box factors 1.0 and 1.6, black and edge borders, 2-4 refinement passes and flip averaging:
#: one pass at 1.3 on grey had the lowest landmark error.
WHOLE_BOX = 1.3
WHOLE_FILL = 128
#: ``auto`` uses ``whole`` only where O-Net's face probability on the whole image is at least this,
#: and the landmarks it places are those of a face filling the frame (:func:`plausible_crop`).
WHOLE_MIN_SCORE = 0.5
#: Inter-ocular distance as a fraction of the image width for a plausible face crop (tight crops
#: measure 0.5 to 1.1; a face the size of the whole image cannot have eyes 5% of its width apart).
WHOLE_IOD_RANGE = (0.15, 1.2)
#: The eyes O-Net places must lie inside the image grown by this fraction of its size on each side (on
#: the tightest crops, k = 1.2, O-Net puts an eye just past the edge in 4% of the photos).
WHOLE_EYE_MARGIN = 0.15

#: Everything above, for cache keys: a change of policy never serves vectors found the old way.
POLICY_VERSION = (
    f"find1:cut{CUT_OVERHANG}:pad{PAD_FRACTION}/{PAD_FILL}/fill{PADDED_MIN_FILL}:"
    f"whole{WHOLE_BOX}/{WHOLE_FILL}/{WHOLE_MIN_SCORE}/{WHOLE_IOD_RANGE[0]}-{WHOLE_IOD_RANGE[1]}/"
    f"{WHOLE_EYE_MARGIN}"
)


def check_crop(crop: object) -> CropMode:
    """``crop`` if it is one of :data:`CROP_MODES`, else a :class:`ParameterError` naming it."""
    if crop not in CROP_MODES:
        raise ParameterError("{crop} is not a mode; use detect, auto or whole", crop=crop)
    return crop  # type: ignore[return-value]


#: Borders a padded copy can have: a constant grey level (0 is black), or ``edge`` (the border pixels
#: repeated) or ``reflect`` (the image mirrored at its border).
PAD_MODES = ("edge", "reflect")


def pad_image(image: np.ndarray, fraction: float, fill: int | str) -> tuple[np.ndarray, np.ndarray]:
    """``image`` with a border of ``fraction`` of each side on each side, and the ``(x, y)`` offset of
    the original's top-left corner in the copy. ``fill`` is a grey level (0-255) or one of
    :data:`PAD_MODES`."""
    h, w = image.shape[:2]
    py, px = round(h * fraction), round(w * fraction)
    widths = ((py, py), (px, px), (0, 0))
    if isinstance(fill, str):
        if fill not in PAD_MODES:
            raise ParameterError("{fill} is not a border; use a grey level, edge or reflect", fill=fill)
        out = np.pad(image, widths, mode="edge" if fill == "edge" else "reflect")
    else:
        out = np.pad(image, widths, mode="constant", constant_values=int(fill))
    return np.ascontiguousarray(out, dtype=np.uint8), np.array([px, py], dtype=np.float32)


def whole_face(image: np.ndarray, onet: nn.Module) -> Face:
    """The image as one face: O-Net's box, face probability and five landmarks, found on the whole
    image (grown by :data:`WHOLE_BOX`, on a grey-padded copy so O-Net never sees a stretched border).
    The score is O-Net's face probability, which says how face-like the image is."""
    from facestyle.detect.mtcnn_stages import onet_refine

    h, w = image.shape[:2]
    margin = (WHOLE_BOX - 1.0) / 2 + 0.05  # the grown box stays inside the padded copy
    padded, off = pad_image(image, margin, WHOLE_FILL)
    cx, cy = off[0] + w / 2.0, off[1] + h / 2.0
    bw, bh = w * WHOLE_BOX / 2.0, h * WHOLE_BOX / 2.0
    box = np.array([[cx - bw, cy - bh, cx + bw, cy + bh]], dtype=np.float64)
    device = next(onet.parameters()).device
    boxes, points = onet_refine(padded, box, onet, device)
    shift = np.concatenate([off, off])
    return Face(
        box=(boxes[0, :4] - shift).astype(np.float32),
        score=float(boxes[0, 4]),
        landmarks=(points[0] - off).astype(np.float32),
        found_by="whole",
    )


def overhang(face: Face, image_shape: tuple[int, ...]) -> float:
    """How far the face's box hangs over the image border, as a fraction of its width (0: inside)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(face.box).ravel()[:4])
    h, w = image_shape[:2]
    return max(0.0, -x1, -y1, x2 - w, y2 - h) / max(x2 - x1, 1e-6)


def plausible_crop(face: Face, image_shape: tuple[int, ...]) -> bool:
    """Does a ``whole`` face look like a face crop: O-Net's probability at least
    :data:`WHOLE_MIN_SCORE`, both eyes inside the image (give or take :data:`WHOLE_EYE_MARGIN`) and
    above the mouth, and an inter-ocular distance in :data:`WHOLE_IOD_RANGE` of the image width?"""
    if face.score < WHOLE_MIN_SCORE or face.landmarks is None:
        return False
    h, w = image_shape[:2]
    marks = np.asarray(face.landmarks, dtype=np.float64)
    eyes, mouth = marks[:2], marks[3:]
    margin = WHOLE_EYE_MARGIN * np.array([w, h])
    inside = bool(((eyes >= -margin) & (eyes <= np.array([w, h]) + margin)).all())
    upright = bool(eyes[:, 1].max() < mouth[:, 1].min() and eyes[0, 0] < eyes[1, 0])
    iod = float(np.linalg.norm(eyes[1] - eyes[0])) / max(w, 1)
    return inside and upright and WHOLE_IOD_RANGE[0] <= iod <= WHOLE_IOD_RANGE[1]


class FaceFinder:
    """A :class:`~facestyle.detect.faces.Detector` that applies the face-finding policy around another.

    ``detector`` finds faces in scenes; ``onet`` is MTCNN's O-Net, which places landmarks on a whole
    image (``whole`` and ``auto`` need it; an MTCNN detector's own O-Net is used when none is given).
    ``crop`` is one of :data:`CROP_MODES`. Faces come largest first and say how they were found.
    ``pad_fill`` and ``pad_fraction`` set the padded re-detection's border (for measuring others: the
    defaults are the measured choice).
    """

    def __init__(
        self,
        detector: Detector,
        onet: nn.Module | None = None,
        crop: CropMode = DEFAULT_CROP,
        *,
        pad_fill: int | str = PAD_FILL,
        pad_fraction: float = PAD_FRACTION,
    ):
        self.crop = check_crop(crop)
        pad_image(np.zeros((1, 1, 3), np.uint8), 0.0, pad_fill)  # validates the border
        self.pad_fill = pad_fill
        self.pad_fraction = pad_fraction
        self.detector = detector
        self.onet = onet if onet is not None else getattr(detector, "onet", None)
        if self.onet is None and crop != "detect":
            raise ParameterError(
                "{crop} needs MTCNN's O-Net to place landmarks; pass onet, or use crop='detect'", crop=crop
            )
        self.name = detector.name if crop == "detect" else f"{detector.name}+{crop}"

    def detect(self, image: np.ndarray) -> list[Face]:
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 2:
            return []
        if self.crop == "whole":
            return [whole_face(image, self.onet)]
        faces = self.detector.detect(image)
        if self.crop == "detect" or (faces and overhang(faces[0], image.shape) < CUT_OVERHANG):
            return faces
        again = self.padded(image)
        if again:
            return again
        face = whole_face(image, self.onet)
        return [face] if plausible_crop(face, image.shape) else faces

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(image) for image in images]

    def padded(self, image: np.ndarray) -> list[Face]:
        """Faces the detector finds on a padded copy that fill the frame, in image coordinates."""
        padded, off = pad_image(image, self.pad_fraction, self.pad_fill)
        shift = np.concatenate([off, off])
        width = image.shape[1]
        out = []
        for f in self.detector.detect(padded):
            box = np.asarray(f.box, np.float32) - shift
            if box[2] - box[0] < PADDED_MIN_FILL * width:
                continue
            marks = None if f.landmarks is None else np.asarray(f.landmarks, np.float32) - off
            out.append(Face(box, f.score, marks, found_by="padded"))
        return sort_faces(out)
