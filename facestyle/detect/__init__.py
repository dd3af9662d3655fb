"""Face detectors behind one interface (:class:`Detector`), and box utilities."""

from facestyle.detect.base import LANDMARK_NAMES, DetectedFace, Detector, get_detector, sort_faces

__all__ = ["LANDMARK_NAMES", "DetectedFace", "Detector", "get_detector", "sort_faces"]
