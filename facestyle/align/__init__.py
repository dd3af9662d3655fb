"""Face alignment: five landmarks onto an embedder's chip template by a similarity transform.

* :mod:`.landmarks`: five landmarks of any face (estimated from the box when the detector has none);
* :mod:`.templates`: where each embedder wants the landmarks (measured, not guessed);
* :mod:`.similarity`: the least-squares similarity transform (numpy);
* :mod:`.warp`: cutting the chip (OpenCV).

Import the submodule you need: this package imports nothing itself, so reading a template never
loads OpenCV.
"""
