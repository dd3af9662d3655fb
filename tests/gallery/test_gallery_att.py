"""One-shot enrollment on the real AT&T faces: enroll 1 photo per subject, identify the other 9.

The 400 photos are embedded once per test session (MTCNN + dlib ResNet on CPU). The accuracy floors
below are set from a measurement on this data (see docs/gallery.md) minus a margin for platform
differences in float arithmetic; they would fail if detection, alignment, embedding or the gallery's
ranking broke.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import (
    EXIT_BAD_INPUT,
    EXIT_GALLERY,
    EXIT_NO_FACE,
    EXIT_NO_MATCH,
    EXIT_USAGE,
    EXIT_WEIGHTS_MISSING,
)
from facestyle.gallery import Gallery

SUBJECTS = 40
PER_SUBJECT = 10
#: Measured on this data (2026-11-21, dlib-resnet-v1 + MTCNN, CPU): rank-1 0.9972 (359/360, the one
#: miss is the single photo without a detected face, s2/6), no-face rate 0.0025 (1/400). Floors leave
#: a margin of a few photos for platform float differences.
RANK1_FLOOR = 0.98
NO_FACE_CEILING = 0.01
#: AT&T's small grey crops score high for everyone with dlib's model (impostor mean 0.856, genuine
#: 0.974), so the threshold here is 0.92, measured on this data: genuine accepted 0.9972, impostor
#: claims accepted 0.0069 (every probe against every other enrolled person; the README's figures).
#: The registry default is for colour photos.
VERIFY_THRESHOLD = 0.92
GENUINE_ACCEPT_FLOOR = 0.995
IMPOSTOR_ACCEPT_CEILING = 0.012

runner = CliRunner()


@pytest.fixture(scope="session")
def att_embedded(att_dir: Path, face_pipeline):
    """``(paths, embeddings (40, 10, 128) with NaN rows where no face was found, pipeline)``."""
    pipe = face_pipeline
    paths = [
        att_dir / f"s{s}" / f"{i}.pgm" for s in range(1, SUBJECTS + 1) for i in range(1, PER_SUBJECT + 1)
    ]
    emb = np.full((len(paths), pipe.embedder.embedding_size), np.nan, np.float32)
    for i, result in enumerate(pipe.embed_files(paths)):
        if result.status == "ok":
            emb[i] = max(result.faces, key=lambda f: f.area).embedding
    return paths, emb.reshape(SUBJECTS, PER_SUBJECT, -1), pipe


def _enrolled(tmp_path: Path, emb: np.ndarray, pipe) -> tuple[Path, list[int]]:
    """Enroll the first photo with a face of every subject; returns the gallery and which photo."""
    path = tmp_path / "gallery"
    picks = []
    with Gallery.open(path, pipeline=pipe) as g:  # bound to the pipeline's model, size and weights
        for s in range(SUBJECTS):
            k = next(i for i in range(PER_SUBJECT) if not np.isnan(emb[s, i, 0]))
            picks.append(k)
            g.enroll(f"s{s + 1}", emb[s, k])
    return path, picks


@pytest.mark.slow
def test_one_shot_identify_rank1(att_embedded, tmp_path: Path) -> None:
    _, emb, pipe = att_embedded
    no_face = float(np.isnan(emb[..., 0]).mean())
    path, picks = _enrolled(tmp_path, emb, pipe)
    correct = total = 0
    with Gallery.open(path) as g:
        for s in range(SUBJECTS):
            probes = [i for i in range(PER_SUBJECT) if i != picks[s]]
            total += len(probes)
            found = [i for i in probes if not np.isnan(emb[s, i, 0])]
            if not found:
                continue
            cands = g.search(emb[s, found], top_k=3)
            correct += sum(c[0].name == f"s{s + 1}" for c in cands)
    rank1 = correct / total  # photos without a detected face count as misses
    print(f"\nAT&T one-shot: rank-1 {rank1:.4f} ({correct}/{total}), no-face rate {no_face:.4f}")
    assert no_face <= NO_FACE_CEILING
    assert rank1 >= RANK1_FLOOR


@pytest.mark.slow
def test_one_shot_from_photos(att_dir: Path, face_pipeline, tmp_path: Path) -> None:
    """The same one-shot protocol through the photo-level API: enroll photo 1 of each subject from its
    file, identify the other 360 photos in one batched call. Same figures as from the vectors."""
    probes = [
        att_dir / f"s{s}" / f"{i}.pgm" for s in range(1, SUBJECTS + 1) for i in range(2, PER_SUBJECT + 1)
    ]
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        for s in range(1, SUBJECTS + 1):
            assert g.enroll_image(f"s{s}", att_dir / f"s{s}" / "1.pgm").template_id is not None
        answers = list(g.identify_images(probes, top_k=3, threshold=VERIFY_THRESHOLD))
    assert [a.image for a in answers] == [str(p) for p in probes]
    statuses = [a.status for a in answers]
    top1 = [a.faces[0].candidates[0].name if a.status == "ok" else None for a in answers]
    correct = sum(name == p.parent.name for name, p in zip(top1, probes, strict=True))
    rank1 = correct / len(probes)  # photos without a detected face count as misses
    no_face = statuses.count("no_face")
    print(f"\nAT&T one-shot from photos: rank-1 {rank1:.4f} ({correct}/{len(probes)}), no face in {no_face}")
    assert statuses.count("error") == 0 and statuses.count("no_face") <= NO_FACE_CEILING * 400
    assert rank1 >= RANK1_FLOOR


@pytest.mark.slow
def test_verify_genuine_and_impostor_pairs(att_embedded, tmp_path: Path) -> None:
    _, emb, pipe = att_embedded
    path, picks = _enrolled(tmp_path, emb, pipe)
    genuine, impostor = [], []
    with Gallery.open(path) as g:
        for s in range(SUBJECTS):
            for i in range(PER_SUBJECT):
                if i == picks[s] or np.isnan(emb[s, i, 0]):
                    continue
                genuine.append(g.verify(f"s{s + 1}", emb[s, i]))
                # Every other enrolled person claimed by this probe (39 claims per probe).
                impostor.extend(g.verify(f"s{o + 1}", emb[s, i]) for o in range(SUBJECTS) if o != s)
    genuine, impostor = np.array(genuine), np.array(impostor)
    assert len(genuine) == 359 and len(impostor) == 359 * (SUBJECTS - 1)
    accept_g = float((genuine >= VERIFY_THRESHOLD).mean())
    accept_i = float((impostor >= VERIFY_THRESHOLD).mean())
    print(
        f"\nAT&T verify at {VERIFY_THRESHOLD}: genuine accepted {accept_g:.4f} (mean {genuine.mean():.3f}), "
        f"impostors accepted {accept_i:.4f} (mean {impostor.mean():.3f})"
    )
    assert genuine.mean() - impostor.mean() > 0.1  # measured 0.118
    assert accept_g >= GENUINE_ACCEPT_FLOOR
    assert accept_i <= IMPOSTOR_ACCEPT_CEILING


@pytest.mark.slow
def test_remove_rename_reopen_with_real_faces(att_embedded, tmp_path: Path) -> None:
    _, emb, pipe = att_embedded
    path, picks = _enrolled(tmp_path, emb, pipe)
    with Gallery.open(path) as g:
        g.rename("s1", "Alice")
        assert g.remove("s2") == 1
    with Gallery.open(path) as g:  # reopened from disk
        assert "Alice" in g and "s1" not in g and "s2" not in g and len(g) == SUBJECTS - 1
        probe1 = [i for i in range(PER_SUBJECT) if i != picks[0] and not np.isnan(emb[0, i, 0])]
        hits = [m.identity for m in g.identify(emb[0, probe1], top_k=1, threshold=VERIFY_THRESHOLD)]
        assert hits.count("Alice") >= len(probe1) - 1
        probe2 = [i for i in range(PER_SUBJECT) if i != picks[1] and not np.isnan(emb[1, i, 0])]
        for m in g.identify(emb[1, probe2], top_k=3, threshold=VERIFY_THRESHOLD):
            assert all(c.name != "s2" for c in m.candidates)


def run(*args: object):
    return runner.invoke(app, [str(a) for a in args])


@pytest.mark.slow
def test_cli_one_shot_enroll_verify_identify(att_dir: Path, att_embedded, tmp_path: Path) -> None:
    """The README example, through the CLI, with its exit codes and --json shape."""
    gallery = tmp_path / "g"
    g = ["--gallery", gallery]
    for s in (1, 2, 3):
        result = run("enroll", f"s{s}", att_dir / f"s{s}" / "1.pgm", *g, "--json")
        assert result.exit_code == 0, result.output
        answer = json.loads(result.stdout)
        assert answer["status"] == "ok" and answer["faces"][0]["identity"] == f"s{s}"
    again = json.loads(run("enroll", "s1", att_dir / "s1" / "1.pgm", *g, "--json").stdout)
    assert again["duplicate"] is True

    t = ["--threshold", VERIFY_THRESHOLD]
    match = run("verify", "s1", att_dir / "s1" / "2.pgm", *g, *t, "--json")
    assert match.exit_code == 0, match.output
    assert json.loads(match.stdout)["match"] is True
    # No --threshold: the model's measured default (0.908, LFW View 1 DevTrain) applies.
    by_default = json.loads(run("verify", "s1", att_dir / "s1" / "2.pgm", *g, "--json").stdout)
    assert by_default["threshold"] == 0.908 and by_default["match"] is True
    nomatch = run("verify", "s1", att_dir / "s2" / "2.pgm", *g, *t)
    assert nomatch.exit_code == EXIT_NO_MATCH and "no match" in nomatch.stdout
    unknown_name = run("verify", "nobody", att_dir / "s2" / "2.pgm", *g, *t)
    assert unknown_name.exit_code == EXIT_GALLERY and "not enrolled" in unknown_name.stderr

    blank = tmp_path / "wall.png"
    from PIL import Image

    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    images = [att_dir / "s2" / "5.pgm", att_dir / "s3" / "7.pgm", blank, tmp_path / "missing.jpg"]
    result = run("identify", *images, *g, *t, "--top-k", 2, "--json")
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert [a["status"] for a in answers] == ["ok", "ok", "no_face", "error"]
    assert [a["faces"][0]["identity"] for a in answers[:2]] == ["s2", "s3"]
    assert len(answers[0]["faces"][0]["candidates"]) == 2
    assert set(answers[0]["faces"][0]) == {"box", "found_by", "identity", "score", "candidates"}
    assert result.exit_code == EXIT_BAD_INPUT  # the batch went on; the worst problem sets the code

    stranger = run("identify", att_dir / "s9" / "3.pgm", *g, *t)
    assert stranger.exit_code == EXIT_NO_MATCH and "unknown" in stranger.stdout
    assert run("identify", blank, *g, *t).exit_code == EXIT_NO_FACE

    assert run("gallery", "rename", "s3", "Carol", *g).exit_code == 0
    assert run("gallery", "remove", "s2", *g).exit_code == 0
    listed = json.loads(run("gallery", "list", *g, "--json").stdout)
    assert listed == [{"name": "Carol", "templates": 1}, {"name": "s1", "templates": 1}]
    shown = json.loads(run("gallery", "show", "Carol", *g, "--json").stdout)
    assert shown["templates"][0]["source"] == "1.pgm" and len(shown["templates"][0]["image_sha256"]) == 64
    stats = json.loads(run("gallery", "stats", *g, "--json").stdout)
    assert stats["identities"] == 2 and stats["model"] == "dlib-resnet-v1" and stats["index_kind"] == "flat"
    assert run("gallery", "rebuild", *g).exit_code == 0
    assert run("gallery", "remove", "s2", *g).exit_code == EXIT_GALLERY
    assert run("gallery", "list", "--gallery", tmp_path / "none").exit_code == EXIT_GALLERY
    other_model = run("enroll", "s1", att_dir / "s1" / "1.pgm", *g, "--model", "facenet-vggface2")
    assert other_model.exit_code == EXIT_GALLERY
    assert "holds embeddings of model 'dlib-resnet-v1'" in other_model.stderr
    if not _weights_present("facenet-vggface2"):
        g2 = ["--gallery", tmp_path / "g2", "--model", "facenet-vggface2"]
        fresh = run("enroll", "s1", att_dir / "s1" / "1.pgm", *g2)
        assert fresh.exit_code == EXIT_WEIGHTS_MISSING and "Traceback" not in fresh.output


def _weights_present(model: str) -> bool:
    from facestyle.errors import FacestyleError
    from facestyle.models.registry import path_of

    try:
        path_of(model)
    except FacestyleError:
        return False
    return True


@pytest.mark.slow
def test_cli_refuses_several_faces_unless_largest(att_dir: Path, att_embedded, tmp_path: Path) -> None:
    from PIL import Image

    a = Image.open(att_dir / "s4" / "1.pgm").convert("RGB")
    b = Image.open(att_dir / "s5" / "1.pgm").convert("RGB").resize((70, 85))
    group = Image.new("RGB", (92 + 70 + 30, 112), (128, 128, 128))
    group.paste(a, (0, 0))
    group.paste(b, (92 + 30, 14))
    photo = tmp_path / "two.png"
    group.save(photo)
    g = ["--gallery", tmp_path / "g"]
    found = run("detect", photo, "--json")
    n_faces = len(json.loads(found.stdout)["faces"])
    assert n_faces == 2, f"MTCNN found {n_faces} face(s) in the two-face photo (it finds both: measured)"
    refused = run("enroll", "pair", photo, *g)
    assert refused.exit_code == EXIT_USAGE and "--largest" in refused.stderr
    refused_json = json.loads(run("enroll", "pair", photo, *g, "--json").stdout)
    assert refused_json["status"] == "error" and "pass --largest" in refused_json["error"]
    ok = run("enroll", "s4", photo, *g, "--largest")
    assert ok.exit_code == 0, ok.output
    both = json.loads(run("identify", photo, *g, "--threshold", VERIFY_THRESHOLD, "--json").stdout)
    assert len(both["faces"]) == n_faces
    assert "s4" in [f["identity"] for f in both["faces"]]
    assert run("enroll", "x", tmp_path / "missing.png", *g).exit_code == EXIT_BAD_INPUT
    assert run("enroll", "x", Path(__file__), *g).exit_code == EXIT_BAD_INPUT
    blank = tmp_path / "wall.png"
    Image.new("RGB", (120, 120), (128, 128, 128)).save(blank)
    assert run("enroll", "x", blank, *g).exit_code == EXIT_NO_FACE
