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
  has a border around it); if still nothing (and the detector found no face inside the frame), ``whole``,
  but only where the image plausibly is a face
  crop: its face score (O-Net on the whole image, its equalised copy and its mirror image) reaches
  :data:`WHOLE_MIN_SCORE` and the landmarks it places look like a face that fills the frame. A
  landscape or a painting stays "no face". Landmarks of faces found on the padded copy or the whole
  image are refined by O-Net on the box the detector would have drawn around them
  (:func:`refine_landmarks`).

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
#: ``auto`` uses ``whole`` only where the image's face score (:func:`face_score`: O-Net's probability
#: on the framed image and on its equalised copy, each averaged with the mirrored image's) is at least
#: this, and the landmarks are those of a face filling the frame (:func:`plausible_crop`). On the shared
#: faceless images the score is at most 0.21 (``udnie.jpg``). Measured on all tight crops (k = 1.2 /
#: half the face dark) and on 672 face-shaped tiles cut from the faceless images: 0.4 finds 99.0% /
#: 98.7% and passes 9 tiles (the former gate, O-Net's probability >= 0.5 alone: 96.1% / 94.3%, 8
#: tiles); 0.5 finds 98.5% / 98.1% (3 tiles); 0.3 99.6% / 99.3% (17 tiles); 0.25 99.8% / 99.5% (23).
WHOLE_MIN_SCORE = 0.4
#: Inter-ocular distance as a fraction of the image width for a plausible face crop (tight crops
#: measure 0.5 to 1.1; a face the size of the whole image cannot have eyes 5% of its width apart).
WHOLE_IOD_RANGE = (0.15, 1.2)
#: The eyes O-Net places must lie inside the image grown by this fraction of its size on each side (on
#: the tightest crops, k = 1.2, O-Net puts an eye just past the edge in 4% of the photos).
WHOLE_EYE_MARGIN = 0.15

#: Landmarks on a face found on a padded copy or on the whole image are refined: O-Net runs again on
#: the box MTCNN's detector would have drawn around the landmarks placed so far (:func:`detector_box`),
#: :data:`REFINE_PASSES` times, once on the image and once on its luminance-equalised copy (which
#: lifts the dark half of a side-lit face), and the landmarks of all those runs are averaged. On tight
#: crops this cuts the distance to the landmarks found on the uncropped photo by a seventh to a third
#: (``whole``, mean over all crops, % of the inter-ocular distance, k = 1.2 / 1.4 / 1.6 / half the face
#: dark: 8.6 / 7.0 / 6.7 / 11.9 -> 7.4 / 5.6 / 4.8 / 9.2; padded faces at k = 1.4: 8.6 -> 5.0).
REFINE_PASSES = 2
#: The box side MTCNN draws around a face, from its five landmarks: ``a * iod + b * eye_mouth`` (the
#: eye distance and the distance from the eyes' midpoint to the mouth's), and how far its centre lies
#: above the landmarks' mean, as a fraction of the side. Fitted on the detector's boxes of 350
#: uncropped LFW View 1 DevTrain photos (median side error 3.5%; ``benchmarks/tight_crops.py
#: --fit-box``). The refinement uses the side times :data:`REFINE_SCALE`: a slightly tighter box keeps
#: more of a tight crop's pixels in view (0.8-1.1 measured; 0.9 best).
BOX_FROM_MARKS = (1.42, 1.39)
BOX_ABOVE_MARKS = 0.073
REFINE_SCALE = 0.9

#: Everything above, for cache keys: a change of policy never serves vectors found the old way.
POLICY_VERSION = (
    f"find3:cut{CUT_OVERHANG}:pad{PAD_FRACTION}/{PAD_FILL}/fill{PADDED_MIN_FILL}:"
    f"whole{WHOLE_BOX}/{WHOLE_FILL}/{WHOLE_MIN_SCORE}/{WHOLE_IOD_RANGE[0]}-{WHOLE_IOD_RANGE[1]}/"
    f"{WHOLE_EYE_MARGIN}:refine{REFINE_PASSES}/{BOX_FROM_MARKS[0]}-{BOX_FROM_MARKS[1]}/{BOX_ABOVE_MARKS}/"
    f"{REFINE_SCALE}"
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


def equalised(image: np.ndarray) -> np.ndarray:
    """``image`` with its luminance histogram equalised (colours kept): the dark half of a side-lit
    face gets contrast O-Net can use."""
    import cv2

    lab = cv2.cvtColor(np.ascontiguousarray(image, dtype=np.uint8), cv2.COLOR_RGB2LAB)
    lab[..., 0] = cv2.equalizeHist(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def detector_box(marks: np.ndarray) -> np.ndarray:
    """The square box ``(x1, y1, x2, y2)`` MTCNN's detector would draw around a face with these five
    landmarks (:data:`BOX_FROM_MARKS`, :data:`BOX_ABOVE_MARKS`), shrunk by :data:`REFINE_SCALE`."""
    marks = np.asarray(marks, dtype=np.float64).reshape(5, 2)
    iod = float(np.linalg.norm(marks[1] - marks[0]))
    eye_mouth = float(np.linalg.norm((marks[3] + marks[4]) / 2 - (marks[0] + marks[1]) / 2))
    side = BOX_FROM_MARKS[0] * iod + BOX_FROM_MARKS[1] * eye_mouth
    cx, cy = marks.mean(axis=0) - np.array([0.0, BOX_ABOVE_MARKS * side])
    half = side * REFINE_SCALE / 2
    return np.array([cx - half, cy - half, cx + half, cy + half])


def onet_on_box(image: np.ndarray, box: np.ndarray, onet: nn.Module) -> tuple[float, np.ndarray, np.ndarray]:
    """O-Net's face probability, five landmarks and regressed box for ``box`` (image coordinates, may
    hang over the border: the image is padded with mid-grey so O-Net never sees a stretched border)."""
    from facestyle.detect.mtcnn_stages import onet_refine

    h, w = image.shape[:2]
    box = np.asarray(box, dtype=np.float64).ravel()[:4]
    side = max(box[2] - box[0], box[3] - box[1])
    m = int(np.ceil(max(0.0, -box[0], -box[1], box[2] - w, box[3] - h) + 0.05 * side + 2))
    padded = np.pad(image, ((m, m), (m, m), (0, 0)), mode="constant", constant_values=WHOLE_FILL)
    device = next(onet.parameters()).device
    boxes, points = onet_refine(padded, (box + m)[None], onet, device)
    return float(boxes[0, 4]), points[0].astype(np.float64) - m, boxes[0, :4].astype(np.float64) - m


def framed_box(image_shape: tuple[int, ...]) -> np.ndarray:
    """The whole image's box grown by :data:`WHOLE_BOX` on its centre: how ``whole`` frames a crop."""
    h, w = image_shape[:2]
    bw, bh = w * WHOLE_BOX / 2.0, h * WHOLE_BOX / 2.0
    return np.array([w / 2.0 - bw, h / 2.0 - bh, w / 2.0 + bw, h / 2.0 + bh])


def refine_landmarks(
    image: np.ndarray, marks: np.ndarray, onet: nn.Module, views: tuple[np.ndarray, ...] | None = None
) -> np.ndarray:
    """Landmarks ``marks`` refined by O-Net on the box the detector would draw around them, re-drawn
    after each pass (:data:`REFINE_PASSES`), on each of ``views`` (default: the image and its
    equalised copy): the mean of the landmarks of those runs."""
    views = views if views is not None else (image, equalised(image))
    found = []
    for view in views:
        current = np.asarray(marks, dtype=np.float64)
        for _ in range(REFINE_PASSES):
            _, current, _ = onet_on_box(view, detector_box(current), onet)
            found.append(current)
    return np.mean(found, axis=0)


def whole_face(image: np.ndarray, onet: nn.Module) -> Face:
    """The image as one face. O-Net frames the whole image (grown by :data:`WHOLE_BOX`, on a grey-padded
    copy so it never sees a stretched border) on the image and on its equalised copy, then refines
    each view's landmarks on the detector's box around them (:func:`refine_landmarks`); the landmarks
    are the mean of all those runs. The score is :func:`face_score`, which says how face-like the image
    is; the box is O-Net's from the first framing."""
    views = (image, equalised(image))
    found, scores, boxes = [], [], []
    for view in views:
        score, marks, box = onet_on_box(view, framed_box(image.shape), onet)
        refined = refine_landmarks(view, marks, onet, views=(view,))
        found += [marks, refined]
        scores.append(score)
        boxes.append(box)
    flipped_score = onet_on_box(image[:, ::-1], framed_box(image.shape), onet)[0]
    landmarks = (found[0] + found[2] + REFINE_PASSES * (found[1] + found[3])) / (2 + 2 * REFINE_PASSES)
    return Face(
        box=boxes[0].astype(np.float32),
        score=face_score(scores[0], scores[1], flipped_score),
        landmarks=landmarks.astype(np.float32),
        found_by="whole",
    )


def face_score(plain: float, equalised: float, flipped: float) -> float:
    """How face-like a whole image is, from O-Net's face probabilities on its framing, on the equalised
    copy's and on the mirrored image's: the better of the two views, each averaged with the mirror.
    A face crop stays a face when mirrored or equalised; the faceless images whose one view O-Net
    likes (a painting's swirl) lose it in another. Measured against the plain probability alone and
    other combinations in docs/face-finding.md."""
    return max((plain + flipped) / 2, (equalised + flipped) / 2)


def overhang(face: Face, image_shape: tuple[int, ...]) -> float:
    """How far the face's box hangs over the image border, as a fraction of its width (0: inside)."""
    x1, y1, x2, y2 = (float(v) for v in np.asarray(face.box).ravel()[:4])
    h, w = image_shape[:2]
    return max(0.0, -x1, -y1, x2 - w, y2 - h) / max(x2 - x1, 1e-6)


def plausible_crop(face: Face, image_shape: tuple[int, ...]) -> bool:
    """Does a ``whole`` face look like a face crop: its score (:func:`face_score`) at least
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
            return [self.refined(image, face) for face in again]
        if any(overhang(f, image.shape) < CUT_OVERHANG for f in faces):
            return faces  # a face inside the frame beside a bigger cut one: a scene, not a face crop
        face = whole_face(image, self.onet)
        return [face] if plausible_crop(face, image.shape) else faces

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(image) for image in images]

    def refined(self, image: np.ndarray, face: Face) -> Face:
        """``face`` (found on a padded copy) with its landmarks refined by :func:`refine_landmarks`: the
        detector's landmarks on a padded tight crop are off by 7-10% of the eye distance, refined 4-7%."""
        if face.landmarks is None:  # a detector without landmarks: nothing to start from
            return face
        marks = refine_landmarks(image, np.asarray(face.landmarks), self.onet)
        return Face(face.box, face.score, marks.astype(np.float32), found_by=face.found_by)

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
