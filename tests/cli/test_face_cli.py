"""The face commands as a user runs them: exit codes, one-line errors, --json shapes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from facestyle.cli import app
from facestyle.errors import EXIT_BAD_INPUT, EXIT_NO_FACE, EXIT_NO_MATCH, EXIT_USAGE, EXIT_WEIGHTS_MISSING

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def lfw_images(lfw_dir):
    root = lfw_dir / "images"
    return {
        "a1": root / "Aaron_Peirsol" / "Aaron_Peirsol_0001.jpg",
        "a2": root / "Aaron_Peirsol" / "Aaron_Peirsol_0002.jpg",
        "b": root / "AJ_Cook" / "AJ_Cook_0001.jpg",
    }


def test_compare_same_and_different(lfw_images):
    same = run("compare", lfw_images["a1"], lfw_images["a2"], "--json")
    other = run("compare", lfw_images["a1"], lfw_images["b"], "--json")
    s, o = json.loads(same.stdout), json.loads(other.stdout)
    assert s["similarity"] > o["similarity"]
    assert s["threshold"] == o["threshold"] == 0.908  # dlib-resnet-v1's measured default
    assert (same.exit_code, s["same"]) == (0, True)
    assert (other.exit_code, o["same"]) == (EXIT_NO_MATCH, False)


def test_compare_with_explicit_threshold(lfw_images):
    result = run("compare", lfw_images["a1"], lfw_images["a2"], "--threshold", "0.999")
    assert result.exit_code == EXIT_NO_MATCH
    assert "different" in result.stdout


def test_no_face_has_its_own_exit_code(tmp_path, lfw_images):
    blank = tmp_path / "wall.png"
    Image.new("RGB", (200, 200), (180, 170, 160)).save(blank)
    result = run("compare", blank, lfw_images["a1"])
    assert result.exit_code == EXIT_NO_FACE
    assert "no face" in result.stderr and "Traceback" not in result.output


def test_bad_file_is_one_line(tmp_path, lfw_images):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\x00\x01garbage")
    result = run("compare", junk, lfw_images["a1"])
    assert result.exit_code == EXIT_BAD_INPUT
    assert result.stderr.strip().count("\n") == 0 and "not an image" in result.stderr


def test_missing_weights_exit_code(lfw_images):
    result = run("compare", lfw_images["a1"], lfw_images["a2"], "--model", "facenet-vggface2")
    assert result.exit_code == EXIT_WEIGHTS_MISSING
    assert "facestyle models import facenet-vggface2" in result.stderr


def test_unknown_model_is_usage_error(lfw_images):
    result = run("embed", lfw_images["a1"], "--model", "nope")
    assert result.exit_code == EXIT_USAGE


def test_embed_json_keeps_going_past_bad_items(tmp_path, lfw_images):
    junk = tmp_path / "junk.png"
    junk.write_text("hello")
    blank = tmp_path / "blank.png"
    Image.new("L", (120, 120), 90).save(blank)
    result = run("embed", lfw_images["a1"], junk, blank, lfw_images["b"], "--json")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["status"] for r in lines] == ["ok", "error", "no_face", "ok"]
    emb = np.array(lines[0]["faces"][0]["embedding"])
    assert emb.shape == (128,) and abs(np.linalg.norm(emb) - 1) < 1e-4
    assert len(lines[0]["faces"][0]["box"]) == 4 and "score" in lines[0]["faces"][0]
    assert result.exit_code == EXIT_BAD_INPUT


def test_embed_out_npy_rows_follow_inputs(tmp_path, lfw_images):
    blank = tmp_path / "blank.png"
    Image.new("RGB", (120, 120), (90, 90, 90)).save(blank)
    out = tmp_path / "e.npy"
    result = run("embed", lfw_images["a1"], blank, lfw_images["a2"], "--out", out)
    assert result.exit_code == EXIT_NO_FACE
    rows = np.load(out)
    assert rows.shape == (3, 128) and np.isnan(rows[1]).all()
    assert float(rows[0] @ rows[2]) > 0.9


def test_embed_aligned_chips(tmp_path, lfw_images):
    from facestyle.api import FacePipeline
    from facestyle.io.images import load_image

    pipe = FacePipeline()
    image = load_image(lfw_images["a1"])
    face = pipe.faces(image)[0]
    chip_path = tmp_path / "chip.png"
    Image.fromarray(pipe.embedder.align(image, face.landmarks)).save(chip_path)
    result = run("embed", chip_path, "--aligned", "--json")
    emb = np.array(json.loads(result.stdout)["faces"][0]["embedding"])
    assert float(emb @ face.embedding) > 0.999
    wrong = run(
        "embed", lfw_images["a1"].parent.parent / "AJ_Cook" / "AJ_Cook_0001.jpg", "--aligned", "--json"
    )
    assert json.loads(wrong.stdout)["status"] == "ok"  # LFW images are 150x150: a (poor) chip, accepted
    att = run("embed", lfw_images["a1"].parents[3] / "att" / "s1" / "1.pgm", "--aligned", "--json")
    assert json.loads(att.stdout)["status"] == "error" and att.exit_code == EXIT_BAD_INPUT


def test_detect_json_and_exit_codes(tmp_path, lfw_images):
    result = run("detect", lfw_images["b"], "--json")
    data = json.loads(result.stdout)
    assert result.exit_code == 0 and data["status"] == "ok" and len(data["faces"]) == 1
    assert len(data["faces"][0]["landmarks"]) == 5


def test_models_verify_and_doctor():
    result = run("models", "verify", "--json")
    rows = json.loads(result.stdout)
    assert {r["status"] for r in rows if r["name"] == "mtcnn"} == {"ok"}
    assert result.exit_code == 0  # missing optional downloads are not failures without a name
    assert run("models", "verify", "vgg19-imagenet").exit_code == EXIT_WEIGHTS_MISSING
    doctor = json.loads(run("doctor", "--json").stdout)
    assert doctor["device"] in ("cpu", "cuda") and any(
        m["name"] == "dlib-resnet-v1" for m in doctor["models"]
    )


@pytest.mark.parametrize("device", ["bogus", "cuda:7", "meta"])
def test_a_device_this_machine_lacks_is_a_usage_error_naming_the_flag(lfw_images, device):
    result = run("compare", lfw_images["a1"], lfw_images["a2"], "--device", device)
    assert result.exit_code == EXIT_USAGE and "Traceback" not in result.output
    first = result.stderr.strip().splitlines()[0]
    assert first.startswith(f"error: --device {device} is not") and "available here: cpu" in first


def test_library_errors_speak_in_parameters_and_the_cli_in_flags():
    from facestyle.cli._common import describe
    from facestyle.errors import ParameterError, SeveralFacesError

    err = ParameterError(
        "{top_k} must be at least 1, and {steps_per_scale} is not a list", top_k=0, steps_per_scale=[1, 2]
    )
    assert str(err) == "top_k=0 must be at least 1, and steps_per_scale=[1, 2] is not a list"
    assert describe(err) == "--top-k 0 must be at least 1, and --steps-per-scale 1,2 is not a list"
    assert describe(err, flags={"top_k": "-k"}).startswith("-k 0 must")
    several = SeveralFacesError("photo {1}.jpg", 3)  # braces in a file name are text, not fields
    assert str(several) == "photo {1}.jpg: 3 faces found; pass largest=True to use the largest one"
    assert describe(several) == "photo {1}.jpg: 3 faces found; pass --largest to use the largest one"
