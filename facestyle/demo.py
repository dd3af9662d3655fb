"""`make demo`: the face pipeline end to end on real shared photos, offline, with a readable result.

It detects and aligns faces in LFW photos (unaligned, 150x150) and AT&T photos (grey PGM), writes the
aligned chips so a person can look at them, and compares genuine and impostor pairs at the model's
measured threshold. Only the weights that ship in pip packages are used.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from facestyle.api import FacePipeline, cosine_similarity
from facestyle.errors import UsageError
from facestyle.io.images import load_image

#: Pairs of shared photos (relative to the data folder): two of the same person, then two impostors.
LFW_PAIRS = [
    ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "Aaron_Peirsol/Aaron_Peirsol_0002.jpg"),
    ("Amelie_Mauresmo/Amelie_Mauresmo_0001.jpg", "Amelie_Mauresmo/Amelie_Mauresmo_0016.jpg"),
    ("Aaron_Peirsol/Aaron_Peirsol_0001.jpg", "AJ_Cook/AJ_Cook_0001.jpg"),
    ("Amelie_Mauresmo/Amelie_Mauresmo_0001.jpg", "AJ_Cook/AJ_Cook_0001.jpg"),
]
ATT_PAIRS = [
    ("s1/1.pgm", "s1/7.pgm"),
    ("s2/1.pgm", "s2/5.pgm"),
    ("s1/1.pgm", "s2/1.pgm"),
    ("s3/2.pgm", "s4/2.pgm"),
]


def run_demo(
    data: Path, out_dir: Path, printer: Callable[[str], None] | None = print, quiet: bool = False
) -> dict:
    """Run the demo; return its results as a dict (what ``--json`` prints)."""
    say = printer or (lambda _msg: None)
    lfw, att = data / "faces" / "lfw-view1" / "images", data / "faces" / "att"
    if not lfw.is_dir() or not att.is_dir():
        raise UsageError(
            f"{data}: not the shared data folder (expected faces/lfw-view1 and faces/att); pass --data"
        )
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    pipe = FacePipeline()
    threshold = pipe.embedder.default_threshold
    say(
        f"facestyle demo: MTCNN -> 5-point alignment -> {pipe.model_name} "
        f"({pipe.embedder.embedding_size}-d), "
        f"device {pipe.embedder.device}, threshold {threshold}"
    )
    pairs = [(lfw / a, lfw / b) for a, b in LFW_PAIRS] + [(att / a, att / b) for a, b in ATT_PAIRS]
    embeddings: dict[Path, np.ndarray] = {}
    for path in sorted({p for pair in pairs for p in pair}):
        image = load_image(path)
        face = pipe.face(image, largest=True, label=str(path))
        chip = pipe.embedder.align(image, face.landmarks)
        Image.fromarray(chip).save(out_dir / f"chip_{path.parent.name}_{path.stem}.png")
        embeddings[path] = face.embedding
    rows = []
    say(f"\n{'image 1':40} {'image 2':40} {'cosine':>7}  verdict")
    for a, b in pairs:
        sim = cosine_similarity(embeddings[a], embeddings[b])
        truth = a.parent.name == b.parent.name
        same = None if threshold is None else sim >= threshold
        verdict = "n/a" if same is None else ("same" if same else "different")
        mark = "" if same is None else ("  (right)" if same == truth else "  (WRONG)")
        say(f"{_short(a, data):40} {_short(b, data):40} {sim:7.4f}  {verdict}{mark}")
        rows.append(
            {"image1": str(a), "image2": str(b), "similarity": round(sim, 6), "same": same, "truth": truth}
        )
    correct = sum(r["same"] == r["truth"] for r in rows if r["same"] is not None)
    elapsed = time.perf_counter() - started
    say(f"\n{correct}/{len(rows)} pairs right; aligned chips written to {out_dir}/ ({elapsed:.1f} s)")
    return {
        "model": pipe.model_name,
        "threshold": threshold,
        "pairs": rows,
        "correct": correct,
        "seconds": round(elapsed, 2),
        "out_dir": str(out_dir),
    }


def _short(path: Path, data: Path) -> str:
    return f"{path.parent.name}/{path.name}"
