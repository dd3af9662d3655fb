"""Face detection algorithms behind one interface, and the box arithmetic they share.

* :mod:`.faces`: :class:`~.faces.Face`, the :class:`~.faces.Detector` interface, which face to pick;
* :mod:`.boxes`: IoU and NMS for every detector;
* :mod:`.mtcnn` / :mod:`.mtcnn_stages`, :mod:`.haar`, :mod:`.grid`: the detectors;
* :mod:`.draw`: boxes and landmarks drawn on an image.

Detectors are built by name, with their verified weights, by :func:`facestyle.models.registry.detector`.
This package holds no weights and imports nothing itself.
"""
