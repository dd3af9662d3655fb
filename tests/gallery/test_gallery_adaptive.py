"""A gallery that calibrates its own threshold from the scores between its identities (issue 24).

Measured on AT&T (one photo enrolled for each of s1..s20, their other 179 photos as known probes, the
200 photos of s21..s40 as strangers; benchmarks/open_set.py draws other populations): the model
default 0.908 accepts 1.000 of the known and 0.415 of the strangers; the gallery's own threshold
0.935 accepts 0.978 of the known and 0.015 of the strangers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from facestyle.api import FacePipeline
from facestyle.errors import ParameterError
from facestyle.gallery import Gallery
from facestyle.gallery.adaptive import (
    MIN_IDENTITIES,
    ImpostorEstimate,
    adaptive_threshold,
    estimate,
    nearest_other_identity,
)

DEFAULT = 0.908  # dlib-resnet-v1's measured threshold


def test_nearest_other_identity_by_hand() -> None:
    # Identity 0 has two templates; its nearest other identity is 2 (cos 0.8 via its second template).
    v = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [0.8, 0.6]], np.float32)
    labels = [0, 0, 1, 2]
    nearest = nearest_other_identity(v, labels)
    np.testing.assert_allclose(nearest, [0.96, 0.8, 0.96], atol=1e-6)  # 0-2: 0.6*0.8+0.8*0.6 = 0.96


def test_threshold_from_the_estimate() -> None:
    est = ImpostorEstimate(np.array([0.90, 0.92, 0.91, 0.93, 0.94, 0.92]))
    got = adaptive_threshold(est, DEFAULT, target=0.05)
    mean, std = est.nearest.mean(), est.nearest.std(ddof=1)
    assert got.threshold == pytest.approx(mean + 1.6448536 * std, abs=1e-6) and got.adapted
    assert got.source == "gallery (N=6, target stranger rate 0.05)"
    # A stricter target asks for a higher threshold; never below the model's default.
    assert adaptive_threshold(est, DEFAULT, target=0.01).threshold > got.threshold
    low = adaptive_threshold(ImpostorEstimate(np.array([0.5, 0.6, 0.55, 0.52, 0.58])), DEFAULT)
    assert low.threshold == DEFAULT and not low.adapted and low.source.startswith("model default (above")
    few = adaptive_threshold(ImpostorEstimate(np.array([0.99] * (MIN_IDENTITIES - 1))), DEFAULT)
    assert few.threshold == DEFAULT and not few.adapted
    assert (
        few.source
        == f"model default (gallery of {MIN_IDENTITIES - 1} identities; adapts from {MIN_IDENTITIES})"
    )
    with pytest.raises(ParameterError, match="target=0 must be between 0 and 1"):
        adaptive_threshold(est, DEFAULT, target=0)


@pytest.fixture(scope="module")
def att_vectors(att_dir: Path) -> dict[str, np.ndarray]:
    """Person -> (k, 128) embeddings of their photos with a face, in file order."""
    files = {f"s{i}": sorted((att_dir / f"s{i}").glob("*.pgm")) for i in range(1, 41)}
    paths = [p for ps in files.values() for p in ps]
    table = FacePipeline().features(face="largest").embed(paths)
    rows = dict(zip(map(str, paths), zip(table.values, table.ok, strict=True), strict=True))
    return {k: np.stack([rows[str(p)][0] for p in ps if rows[str(p)][1]]) for k, ps in files.items()}


def _gallery(where: Path | str, people: dict[str, np.ndarray], names: list[str], **kw) -> Gallery:
    """A gallery at ``where`` (a directory for a ``tmp_path``: ``where/g``, or a URL) with the first
    photo of each of ``names``."""
    g = Gallery.open(where / "g" if isinstance(where, Path) else where, model="dlib-resnet-v1", dim=128, **kw)
    for name in names:
        g.enroll(name, people[name][:1])
    return g


def test_att_twenty_enrolled_refuses_strangers(att_vectors, where: Path | str) -> None:
    enrolled = [f"s{i}" for i in range(1, 21)]
    with _gallery(where, att_vectors, enrolled) as g:
        info = g.threshold_info()
        assert info.adapted and info.source == "gallery (N=20, target stranger rate 0.05)"
        assert info.threshold == pytest.approx(0.935, abs=0.003)  # measured 0.9353
        # The estimate is exact here: each identity's nearest other identity, from all pairs.
        vectors = np.concatenate([att_vectors[k][:1] for k in enrolled])
        np.testing.assert_allclose(np.sort(g.impostor_estimate().nearest),
                                   np.sort(estimate(vectors, np.arange(20)).nearest), atol=1e-6)  # fmt: skip

        known = [(k, v) for k in enrolled for v in att_vectors[k][1:]]
        matches = g.identify(np.stack([v for _, v in known]), top_k=1)
        rank1 = np.mean([m.identity == k for (k, _), m in zip(known, matches, strict=True)])
        strangers = np.concatenate([att_vectors[f"s{i}"] for i in range(21, 41)])
        accepted = np.mean([m.identity is not None for m in g.identify(strangers, top_k=1)])
        default_accepted = np.mean([m.identity is not None for m in g.identify(strangers, 1, DEFAULT)])
        assert {m.threshold_source for m in matches} == {info.source}
        assert rank1 >= 0.96, rank1  # measured 0.978 (issue target >= 0.95)
        assert accepted <= 0.03, accepted  # measured 0.015 (issue target <= 0.05)
        assert default_accepted >= 0.35, default_accepted  # measured 0.415: what the default lets in
        stats = g.stats()
        assert (stats["threshold"], stats["threshold_source"]) == (info.threshold, info.source)


def test_precedence_explicit_then_stored_then_gallery_then_default(att_vectors, where: Path | str) -> None:
    enrolled = [f"s{i}" for i in range(1, 11)]
    location = where / "g" if isinstance(where, Path) else where
    with _gallery(where, att_vectors, enrolled) as g:
        adapted = g.threshold_info()
        assert adapted.adapted and adapted.threshold > DEFAULT
        assert g.threshold_info(0.5).threshold == 0.5 and g.threshold_info(0.5).source == "given"
        g.set_threshold(0.93, source="calibrate on my-pairs.txt")
        assert g.threshold_info().threshold == 0.93
        assert g.threshold_info().source == "calibrate on my-pairs.txt"
        g.set_threshold(None)
        assert g.threshold_info() == adapted
        # Every write changes the estimate: one more identity, a new N.
        g.enroll("s11", att_vectors["s11"][:1])
        assert g.threshold_info().source == "gallery (N=11, target stranger rate 0.05)"
        g.remove("s11")
        assert g.threshold_info() == adapted
    with Gallery.open(location, stranger_rate=None) as g:
        off = g.threshold_info()
        assert (off.threshold, off.source) == (DEFAULT, "model default (adaptation off)")
    with Gallery.open(location, stranger_rate=0.01) as g:
        assert g.threshold_info().threshold > adapted.threshold
    with pytest.raises(ParameterError, match="stranger_rate=2 must be between 0 and 1"):
        Gallery.open(location, stranger_rate=2)


def test_a_small_gallery_keeps_the_default_and_says_why(att_vectors, tmp_path: Path) -> None:
    with _gallery(tmp_path, att_vectors, ["s1", "s2", "s3"]) as g:
        info = g.threshold_info()
        assert info.threshold == DEFAULT and not info.adapted
        assert info.source == "model default (gallery of 3 identities; adapts from 5)"
        assert g.identify(att_vectors["s1"][1:2], top_k=1)[0].threshold == DEFAULT


def test_the_demo_refuses_the_stranger_at_default_settings(att_dir: Path, tmp_path: Path) -> None:
    """`make demo`'s gallery step: at the model's threshold the stranger s30 is taken for someone
    (measured best score 0.9131 > 0.908); at default settings the gallery's own threshold (0.9257 with
    these ten people) refuses both strangers and keeps all 20 known probes."""
    from facestyle.demo import _gallery_step

    said: list[str] = []
    report = _gallery_step(FacePipeline(), att_dir, tmp_path / "gallery", said.append)
    at_model, at_gallery = report["model_threshold"], report["gallery_threshold"]
    assert at_model["threshold"] == DEFAULT
    wrong = [p for p in at_model["probes"] if not p["right"]]
    assert [p["truth"] for p in wrong] == [None], wrong  # a stranger let in
    assert at_gallery["right"] == 22 and at_gallery["threshold"] == pytest.approx(0.9257, abs=0.002)
    assert at_gallery["source"] == "gallery (N=10, target stranger rate 0.05)"
    assert any("sets its own threshold" in line for line in said)


def test_cli_reports_the_threshold_and_its_source(att_vectors, att_dir: Path, tmp_path: Path) -> None:
    import json

    from typer.testing import CliRunner

    from facestyle.cli import app

    with _gallery(tmp_path, att_vectors, [f"s{i}" for i in range(1, 11)]) as g:
        expected = g.threshold_info()
    runner = CliRunner()
    g = ["--gallery", str(tmp_path / "g")]
    probe = str(att_dir / "s2" / "5.pgm")
    res = runner.invoke(app, ["identify", probe, *g, "--json"])
    assert res.exit_code == 0, res.output
    answer = json.loads(res.stdout)
    assert answer["threshold"] == pytest.approx(expected.threshold)
    assert answer["threshold_source"] == "gallery (N=10, target stranger rate 0.05)"
    res = runner.invoke(app, ["verify", "s2", probe, *g, "--json", "--stranger-rate", "0"])
    assert json.loads(res.stdout)["threshold_source"] == "model default (adaptation off)", res.output
    res = runner.invoke(app, ["gallery", "stats", *g, "--json", "--stranger-rate", "0.01"])
    stats = json.loads(res.stdout)
    assert stats["threshold_source"] == "gallery (N=10, target stranger rate 0.01)"
    assert stats["threshold"] > expected.threshold
    res = runner.invoke(app, ["identify", probe, *g, "--stranger-rate", "2"])
    assert (
        res.exit_code == 2
        and res.stderr.strip() == "error: --stranger-rate 2.0 must be between 0 and 1 (a share of strangers)"
    )
