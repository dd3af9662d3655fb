"""The photo-level gallery API: Gallery.open(pipeline=), enroll/verify/identify from photos (paths or
arrays), the typed results and their JSON, and open_for_photos's rule for which model to load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from facestyle.errors import GalleryError, ParameterError, UsageError
from facestyle.gallery import Gallery, bound_model, gallery_exists
from facestyle.gallery.results import Enrollment, Identification, Verification
from facestyle.io.images import load_image

REPO = Path(__file__).resolve().parents[2]
THRESHOLD = 0.92  # AT&T's measured threshold (see test_gallery_att.py)

FACE_KEYS = {"box", "found_by", "identity", "score", "candidates"}


def _photo(att_dir: Path, subject: int, k: int) -> Path:
    return att_dir / f"s{subject}" / f"{k}.pgm"


# ---- binding to the pipeline's embedder -------------------------------------------------------------
def test_open_with_pipeline_binds_model_dim_version(tmp_path: Path, face_pipeline) -> None:
    emb = face_pipeline.embedder
    assert emb.version  # e.g. dlib-resnet-v1@<weights digest>
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        assert (g.model, g.dim, g.model_version) == (emb.name, emb.embedding_size, emb.version)
        assert g.threshold == emb.default_threshold and g.pipeline is face_pipeline
    with Gallery.open(tmp_path / "g") as g:  # stored: a plain reopen sees the binding
        assert (g.model, g.dim, g.model_version) == (emb.name, emb.embedding_size, emb.version)
        assert g.pipeline is None
    # the same values given explicitly agree with the pipeline
    Gallery.open(tmp_path / "g", pipeline=face_pipeline, model=emb.name, dim=emb.embedding_size).close()


def test_pipeline_refuses_a_gallery_of_other_weights(tmp_path: Path, face_pipeline) -> None:
    emb = face_pipeline.embedder
    other = tmp_path / "other-weights"
    with Gallery.open(
        other, model=emb.name, dim=emb.embedding_size, model_version=f"{emb.name}@000000000000"
    ):
        pass
    with pytest.raises(GalleryError, match="weights"):
        Gallery.open(other, pipeline=face_pipeline)
    # A gallery bound without a version (vectors only) adopts the pipeline's, then refuses others.
    legacy = tmp_path / "legacy"
    Gallery.open(legacy, model=emb.name, dim=emb.embedding_size).close()
    Gallery.open(legacy, pipeline=face_pipeline).close()
    with Gallery.open(legacy, read_only=True) as g:
        assert g.model_version == emb.version
    with pytest.raises(GalleryError, match="weights"):
        Gallery.open(legacy, model=emb.name, model_version="dlib-resnet-v1@ffffffffffff")


def test_pipeline_with_a_conflicting_model_or_dim_is_a_usage_error(tmp_path: Path, face_pipeline) -> None:
    with pytest.raises(UsageError, match="model='facenet-vggface2' conflicts with the pipeline"):
        Gallery.open(tmp_path / "g", pipeline=face_pipeline, model="facenet-vggface2")
    with pytest.raises(ParameterError, match="dim=512 conflicts") as info:
        Gallery.open(tmp_path / "g", pipeline=face_pipeline, dim=512)
    assert info.value.params == {"dim": 512}
    assert not (tmp_path / "g").exists()  # refused before anything was created


# ---- photo methods ---------------------------------------------------------------------------------
def test_photo_methods_with_paths_and_arrays_give_identical_scores(
    tmp_path: Path, face_pipeline, att_dir: Path
) -> None:
    alice, bob = _photo(att_dir, 1, 1), _photo(att_dir, 2, 1)
    probe = _photo(att_dir, 1, 7)
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        e1 = g.enroll_image("alice", alice)
        e2 = g.enroll_image("bob", load_image(bob))
        assert isinstance(e1, Enrollment) and (e1.image, e2.image) == (str(alice), "image")
        assert e1.template_id == 1 and e2.template_id == 2 and e1.created and not e1.duplicate
        # the result holds the Face, embedding included; the gallery stored that embedding
        assert e1.face.embedding.shape == (128,) and g.verify("alice", e1.face.embedding) == pytest.approx(
            1.0
        )

        by_path = g.verify_image("alice", probe, threshold=THRESHOLD)
        by_array = g.verify_image("alice", load_image(probe), threshold=THRESHOLD)
        assert isinstance(by_path, Verification) and by_path.match and by_path.score > THRESHOLD
        assert by_path.score == by_array.score
        assert by_path.score == pytest.approx(float(by_path.face.embedding @ e1.face.embedding), abs=1e-5)
        np.testing.assert_array_equal(by_path.face.box, by_array.face.box)
        assert not g.verify_image("bob", probe, threshold=THRESHOLD).match

        one = g.identify_image(probe, threshold=THRESHOLD)
        one_array = g.identify_image(load_image(probe), threshold=THRESHOLD)
        mixed = list(g.identify_images([probe, load_image(probe)], threshold=THRESHOLD))
        assert [a.image for a in mixed] == [str(probe), "image2"]
        for answer in (one_array, *mixed):
            assert isinstance(answer, Identification) and answer.known
            assert answer.faces[0].identity == "alice"
            assert [(c.name, c.score) for c in answer.faces[0].candidates] == [
                (c.name, c.score) for c in one.faces[0].candidates
            ]
        assert one.faces[0].score == pytest.approx(by_path.score, abs=1e-5)  # FAISS vs exact: same cosine

        # the same file again adds nothing; an array has no file hash, so it adds a template
        again = g.enroll_image("alice", alice)
        assert again.duplicate and again.template_id is None
        assert g.enroll_image("alice", load_image(alice)).template_id == 3
        assert g.template_counts() == {"alice": 2, "bob": 1}
        shown = {t.id: t for t in g.show("alice").templates}
        assert (
            shown[1].source == "1.pgm" and len(shown[1].image_sha256) == 64 and shown[1].detector == "mtcnn"
        )
        assert shown[3].source is None and shown[3].image_sha256 is None
        assert json.loads(shown[1].box) == e1.to_dict()["faces"][0]["box"]  # stored as in the JSON


def test_to_dict_shapes(tmp_path: Path, face_pipeline, att_dir: Path) -> None:
    blank = np.full((120, 120, 3), 128, np.uint8)
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        enrolled = g.enroll_image("alice", _photo(att_dir, 1, 1)).to_dict()
        verified = g.verify_image("alice", _photo(att_dir, 1, 2), threshold=THRESHOLD).to_dict()
        stranger = _photo(att_dir, 9, 3)
        ok, no_face, bad = g.identify_images(
            [stranger, blank, tmp_path / "missing.jpg"], top_k=3, threshold=THRESHOLD
        )
        same_photo = g.enroll_image("mallory", _photo(att_dir, 1, 1)).to_dict()
    assert list(enrolled) == [
        "image", "status", "faces", "template_id", "duplicate", "created", "templates", "look_alikes"
    ]  # fmt: skip
    assert (enrolled["created"], enrolled["templates"], enrolled["look_alikes"]) == (True, 1, [])
    assert same_photo["look_alikes"] == [{"name": "alice", "score": 1.0}]  # the same photo, two names
    assert list(verified) == ["image", "status", "faces", "claimed", "match", "threshold", "threshold_source"]
    assert verified["threshold_source"] == "given"
    given = {"threshold": THRESHOLD, "threshold_source": "given"}  # every answer says what it was held to
    assert list(ok.to_dict()) == ["image", "status", "faces", "threshold", "threshold_source"]
    assert no_face.to_dict() == {"image": "image2", "status": "no_face", "faces": [], **given}
    assert bad.to_dict() == {
        "image": str(tmp_path / "missing.jpg"),
        "status": "error",
        "faces": [],
        "error": f"{tmp_path / 'missing.jpg'}: no such file",
        **given,
    }
    assert not ok.known and not no_face.known and not bad.known  # s9 is not enrolled: unknown
    faces = [*enrolled["faces"], *verified["faces"], *ok.to_dict()["faces"]]
    assert all(set(f) == FACE_KEYS for f in faces)
    assert enrolled["faces"][0]["identity"] == "alice" and enrolled["faces"][0]["score"] is None
    assert enrolled["faces"][0]["candidates"] == []
    assert verified["claimed"] == "alice" and verified["match"] is True and verified["threshold"] == THRESHOLD
    [cand] = verified["faces"][0]["candidates"]
    assert set(cand) == {"name", "score"} and cand["score"] == verified["faces"][0]["score"]
    unknown = ok.to_dict()["faces"][0]
    assert unknown["identity"] is None and unknown["candidates"][0]["name"] == "alice"
    for f in faces:  # Face's one JSON rule: 2 decimals for boxes; scores 6 decimals
        assert len(f["box"]) == 4 and all(round(v, 2) == v for v in f["box"])
        for score in [f["score"], *(c["score"] for c in f["candidates"])]:
            assert score is None or round(score, 6) == score
    json.dumps([enrolled, verified, ok.to_dict(), no_face.to_dict(), bad.to_dict()])


def test_photo_errors(tmp_path: Path, face_pipeline, att_dir: Path) -> None:
    from facestyle.errors import ImageError, NoFaceError

    blank = np.full((120, 120, 3), 128, np.uint8)
    with Gallery.open(tmp_path / "g", pipeline=face_pipeline) as g:
        with pytest.raises(NoFaceError, match="image: no face found"):
            g.enroll_image("x", blank)
        with pytest.raises(ImageError):
            g.enroll_image("x", tmp_path / "missing.png")
        with pytest.raises(UsageError):
            g.enroll_image("bad\nname", _photo(att_dir, 1, 1))
        with pytest.raises(GalleryError, match="not enrolled"):
            g.verify_image("nobody", _photo(att_dir, 1, 1))
        with pytest.raises(ParameterError, match="top_k=0 must be at least 1"):
            g.identify_images([_photo(att_dir, 1, 1)], top_k=0)  # raised at the call, not on iteration
        [bad_array] = g.identify_images([np.zeros((5, 5), np.float32)])
        assert bad_array.status == "error" and bad_array.error.startswith(
            "image1: image arrays must be uint8"
        )
        assert len(g) == 0


def test_photo_methods_need_a_pipeline(tmp_path: Path, att_dir: Path) -> None:
    photo = _photo(att_dir, 1, 1)
    with Gallery.open(tmp_path / "g", model="dlib-resnet-v1", dim=128, default_threshold=0.9) as g:
        calls = [
            lambda: g.enroll_image("alice", photo),
            lambda: g.verify_image("alice", photo),
            lambda: g.identify_image(photo),
            lambda: g.identify_images([photo]),
        ]
        for call in calls:
            with pytest.raises(UsageError, match=r"pipeline=") as info:
                call()
            assert "\n" not in str(info.value)


# ---- which model: open_for_photos -------------------------------------------------------------------
@pytest.fixture()
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record (and refuse) every network an embedder would be built from; the cache starts empty."""
    import facestyle.embed.embedder as embedder_mod

    built: list[str] = []

    def refuse(name, *args, **kwargs):
        built.append(name)
        raise RuntimeError(f"test: the network {name} was about to be built")

    monkeypatch.setattr(embedder_mod, "_CACHE", {})
    monkeypatch.setattr(embedder_mod, "create", refuse)
    return built


def test_open_for_photos_refuses_another_model_before_any_network(
    tmp_path: Path, no_network: list[str]
) -> None:
    from facestyle.gallery.faces import open_for_photos

    path = tmp_path / "g"
    Gallery.open(path, model="dlib-resnet-v1", dim=128).close()
    with pytest.raises(
        GalleryError, match="holds embeddings of model 'dlib-resnet-v1', not 'facenet-vggface2'"
    ):
        open_for_photos(path, model="facenet-vggface2")
    with pytest.raises(GalleryError, match="no gallery here"):
        open_for_photos(tmp_path / "none", create=False)
    assert no_network == []
    # the patch does catch a network being built (so the empty list above means something)
    with pytest.raises(RuntimeError, match="about to be built"):
        open_for_photos(path)
    assert no_network == ["dlib-resnet-v1"]


def test_open_for_photos_uses_the_gallerys_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import facestyle.gallery.faces as faces_mod

    asked: list[str] = []

    def fake_pipeline(model, detector="mtcnn", device=None, crop="auto"):
        asked.append(model)
        size = 512 if model == "facenet-vggface2" else 128
        embedder = SimpleNamespace(
            name=model,
            version=f"{model}@test",
            embedding_size=size,
            default_threshold=0.5,
            score_kind="cosine",
        )
        return SimpleNamespace(embedder=embedder, detector=SimpleNamespace(name=detector))

    monkeypatch.setattr(faces_mod, "FacePipeline", fake_pipeline)
    other = tmp_path / "facenet"
    Gallery.open(other, model="facenet-vggface2", dim=512).close()
    assert bound_model(other) == "facenet-vggface2" and faces_mod.model_for(other) == "facenet-vggface2"
    with faces_mod.open_for_photos(other) as g:  # no model asked: the gallery's, not the default
        assert g.model == "facenet-vggface2" and g.pipeline.embedder.name == "facenet-vggface2"
    with faces_mod.open_for_photos(tmp_path / "new") as g:  # a new gallery: the default model
        assert g.model == faces_mod.DEFAULT_MODEL == "dlib-resnet-v1"
    assert asked == ["facenet-vggface2", "dlib-resnet-v1"]
    assert faces_mod.model_for(tmp_path / "new", "dlib-resnet-v1") == "dlib-resnet-v1"
    assert faces_mod.model_for(tmp_path / "nothing-here", "facenet-vggface2") == "facenet-vggface2"
    empty = tmp_path / "empty"
    Gallery.open(empty).close()  # a gallery not bound to a model yet takes the one asked for
    assert (
        gallery_exists(empty) and bound_model(empty) is None and not gallery_exists(tmp_path / "nothing-here")
    )
    assert faces_mod.model_for(empty, "facenet-vggface2") == "facenet-vggface2"


def test_checkpoint_model_names_are_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from facestyle.gallery.faces import model_name

    monkeypatch.chdir(tmp_path)
    assert model_name("dlib-resnet-v1") == "dlib-resnet-v1"
    assert model_name("model.pt") == model_name(tmp_path / "model.pt") == str(tmp_path.resolve() / "model.pt")


# ---- the core stays torch-free --------------------------------------------------------------------
def test_gallery_core_and_results_do_not_import_torch() -> None:
    code = (
        "import facestyle.gallery, facestyle.gallery.gallery, facestyle.gallery.results, "
        "facestyle.gallery.photos, facestyle.cli.gallery, sys; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
