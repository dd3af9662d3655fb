"""Fixtures shared by the gallery tests: one face pipeline (MTCNN + dlib ResNet) per session, one private
PostgreSQL server (pgserver: PostgreSQL 16 + pgvector) per session, and a gallery location per test on
either backend.

The server lives in a temporary data directory, listens on a unix socket only (pgserver starts it with
``-h ""``: no TCP at all) and is stopped at the end of the session. Each test gets its own gallery, i.e.
its own schema, dropped afterwards.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_helpers import drop_gallery, new_pg_url

BACKENDS = ("directory", "postgresql")


@pytest.fixture(scope="session")
def face_pipeline():
    from facestyle.api import FacePipeline

    return FacePipeline()


@pytest.fixture(scope="session")
def pg_server() -> Iterator:
    """A private PostgreSQL server for the whole run (about 1 s to start).

    Its data lives in its own temporary directory, not under pytest's: run as root, pgserver runs the
    server as the user ``pgserver`` and opens the path to the data for it, and every pytest process
    (any other test run on the machine) sets ``/tmp/pytest-of-root`` back to 0700, which would take
    the data away from the running server."""
    base = Path(tempfile.mkdtemp(prefix="facestyle-pg-"))
    data = base / "pgdata"
    data.mkdir()
    with warnings.catch_warnings():  # platformdirs: no XDG_RUNTIME_DIR in a container (harmless)
        warnings.simplefilter("ignore")
        import pgserver

        # pgserver gives `pg_ctl -w start` 10 s; on a loaded 2-core machine the first start can take
        # longer. A second call finds the server that went on starting (or starts it again).
        for attempt in range(3):
            try:
                server = pgserver.get_server(data, cleanup_mode="stop")
                break
            except subprocess.SubprocessError:
                if attempt == 2:
                    raise
                time.sleep(2)
    try:
        yield server
    finally:
        server.cleanup()
        # pgserver stops only the postmaster it started: one restarted by a test (a live gallery under
        # a server restart) would outlive the run, its data directory deleted under it.
        if (data / "postmaster.pid").exists():
            from pgserver._commands import pg_ctl

            with contextlib.suppress(subprocess.SubprocessError):
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data, user=server.system_user, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def pg_url(pg_server) -> Iterator[str]:
    """A fresh PostgreSQL gallery location (its own schema), dropped after the test."""
    url = new_pg_url(pg_server)
    yield url
    drop_gallery(pg_server, url)


@pytest.fixture(params=BACKENDS)
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path | str]:
    """A new gallery location on each backend: a directory, or a PostgreSQL URL."""
    if request.param == "directory":
        yield tmp_path / "gallery"
        return
    server = request.getfixturevalue("pg_server")
    url = new_pg_url(server)
    yield url
    drop_gallery(server, url)
