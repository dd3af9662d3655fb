"""Shared fixtures: where the real data is, and per-test isolation of caches and galleries."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """The read-only real data (../shared/data next to the repo, or $FACESTYLE_SHARED_DATA)."""
    return Path(os.environ.get("FACESTYLE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not (root / "faces" / "att").is_dir():
        pytest.fail(f"real test data not found at {root}; set FACESTYLE_SHARED_DATA")
    return root


@pytest.fixture(scope="session")
def att_dir(shared_data: Path) -> Path:
    return shared_data / "faces" / "att"


@pytest.fixture(scope="session")
def lfw_dir(shared_data: Path) -> Path:
    return shared_data / "faces" / "lfw-view1"


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test gets its own FACESTYLE_HOME so imported weights or caches never leak between tests."""
    monkeypatch.setenv("FACESTYLE_HOME", str(tmp_path_factory.mktemp("facestyle-home")))
    monkeypatch.delenv("FACESTYLE_GALLERY", raising=False)
