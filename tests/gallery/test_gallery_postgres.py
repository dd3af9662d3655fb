"""What only the PostgreSQL backend has: URLs and their secrets, the server going away under a live
Gallery, one schema per gallery, the HNSW path, score parity with the directory backend, copying
between backends, and the CLI on a URL. The shared behaviour (enroll, verify, identify, remove,
rename, stats, threshold, crash and concurrency safety) is tested on both backends in the other
modules, parametrised by the ``where`` fixture."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pg_helpers import new_pg_url

from facestyle.errors import EXIT_GALLERY, GalleryError, GalleryParameterError
from facestyle.gallery import Gallery, PostgresGallery, bound_model, gallery_exists
from facestyle.gallery import postgres as pg
from facestyle.gallery.base import TemplateRecord
from facestyle.gallery.migrate import migrate

REPO = Path(__file__).resolve().parents[2]
MODEL = "test-model"


def units(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).with_name("facestyle")), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
    )


def test_the_server_listens_on_a_unix_socket_only(pg_server) -> None:
    import psycopg

    with psycopg.connect(pg_server.get_uri()) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == ""
        assert conn.info.host.startswith("/")  # a socket directory, not a host name


def test_url_parts_and_the_password_is_never_shown() -> None:
    loc = pg.parse_url("postgresql://ann:s3cr%40t@db.example:5433/faces?sslmode=require&gallery=staff")
    assert loc.schema == "facestyle_staff" and loc.password == "s3cr@t"
    assert loc.display == "postgresql://ann@db.example:5433/faces?sslmode=require&gallery=staff"
    assert "gallery" not in loc.conninfo and "sslmode=require" in loc.conninfo
    default = pg.parse_url("postgres:///faces?host=/run/pg&password=hunter2")
    assert default.schema == "facestyle_default" and "hunter2" not in default.display
    assert (
        default.password == "hunter2"
        and default.conninfo == "postgres:///faces?host=/run/pg&password=hunter2"
    )
    assert default.display == "postgres:///faces?host=/run/pg&gallery=default"  # the empty host keeps its //
    for bad in ("Staff", "a-b", "x" * 49, ""):
        with pytest.raises(GalleryError, match="must be 1-48 of a-z"):
            pg.parse_url(f"postgresql://ann:pw@h/db?gallery={bad}")


def test_ef_search_in_the_url_sets_the_beam_and_never_reaches_libpq() -> None:
    loc = pg.parse_url("postgresql://ann@h/db?ef_search=320&sslmode=require&gallery=staff")
    assert loc.ef_search == 320 and "ef_search" not in loc.conninfo and "sslmode=require" in loc.conninfo
    assert loc.display == "postgresql://ann@h/db?sslmode=require&gallery=staff&ef_search=320"
    assert pg.parse_url("postgresql://ann@h/db?gallery=staff").ef_search is None
    settings, _ = pg.candidate_statements(pg.EXACT_MAX_TEMPLATES + 1, 20, 320)
    assert "SET LOCAL hnsw.ef_search = 320" in settings
    settings, _ = pg.candidate_statements(pg.EXACT_MAX_TEMPLATES + 1, 500, 320)  # never below k
    assert "SET LOCAL hnsw.ef_search = 500" in settings
    for bad in ("0", "-5", "2.5", "many", "", str(pg.HNSW_EF_SEARCH_MAX + 1)):
        with pytest.raises(GalleryError, match="ef_search must be a whole number"):
            pg.parse_url(f"postgresql://ann@h/db?gallery=staff&ef_search={bad}")


def test_a_gallery_opened_with_ef_search_searches_with_it(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The URL's ef_search reaches the statements a search runs, and stats report it."""
    monkeypatch.setattr(pg, "EXACT_MAX_TEMPLATES", 10)
    x = units(40, 16, seed=9)
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        g.enroll_many([f"e{i}" for i in range(40)], x)
    ran: list[str] = []
    real = pg.candidate_statements

    def spy(templates: int, k: int, ef_search: int | None = None):  # noqa: ANN202
        out = real(templates, k, ef_search)
        ran.extend(out[0])
        return out

    monkeypatch.setattr(pg, "candidate_statements", spy)
    with Gallery.open(f"{pg_url}&ef_search=233", create=False) as g:
        assert g.search(x[3], top_k=2)[0][0].name == "e3"
        assert g.stats()["hnsw"]["ef_search"] == 233
    assert "SET LOCAL hnsw.ef_search = 233" in ran


def test_several_galleries_in_one_database_and_a_missing_one(pg_server) -> None:
    a, b = new_pg_url(pg_server), new_pg_url(pg_server)
    with pytest.raises(GalleryError, match="no gallery here"):
        Gallery.open(a, create=False)
    assert not gallery_exists(a) and bound_model(a) is None
    x = units(3)
    with Gallery.open(a, model=MODEL, dim=16) as ga, Gallery.open(b, model="other", dim=16) as gb:
        assert isinstance(ga, Gallery) and isinstance(ga, PostgresGallery)
        ga.enroll("ann", x[0])
        gb.enroll("bob", x[1])
        assert ga.names() == ["ann"] and gb.names() == ["bob"]
    assert gallery_exists(a) and bound_model(a) == MODEL and bound_model(b) == "other"
    with pytest.raises(GalleryError, match="read-only gallery"), Gallery.open(a, read_only=True) as g:
        g.enroll("cid", x[2])


def test_a_newer_schema_is_refused_and_the_upgrade_runs_once(pg_url: str, pg_server) -> None:
    import psycopg

    Gallery.open(pg_url, model=MODEL, dim=4).close()
    schema = pg.parse_url(pg_url).schema
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"UPDATE {schema}.meta SET value = '99' WHERE key = 'schema_version'")
        with pytest.raises(
            GalleryError, match=f"schema version 99, this facestyle reads up to {pg.SCHEMA_VERSION}"
        ):
            Gallery.open(pg_url)
        conn.execute(f"UPDATE {schema}.meta SET value = '0' WHERE key = 'schema_version'")
        assert pg.upgrade(conn, schema) == 0
        assert pg.upgrade(conn, schema) == pg.SCHEMA_VERSION  # the second finds the work done
    Gallery.open(pg_url).close()


def kept_and_real(pg_server, url: str) -> tuple[int, int]:
    """(meta.templates, count(*) of templates) of the gallery at ``url``."""
    import psycopg

    schema = pg.parse_url(url).schema
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        kept = conn.execute(f"SELECT value::bigint FROM {schema}.meta WHERE key = 'templates'").fetchone()
        real = conn.execute(f"SELECT count(*) FROM {schema}.templates").fetchone()[0]
    return (None if kept is None else int(kept[0])), int(real)


def test_the_template_count_is_kept_by_every_write(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """meta.templates equals count(*) after each kind of write, a refused one and concurrent ones, and
    it is what stats, search and the bulk rule read."""
    monkeypatch.setattr(pg, "BULK_REBUILD_MIN", 50)
    x = units(400, seed=6)
    with Gallery.open(pg_url, model=MODEL, dim=16) as g:

        def check(expected: int) -> None:
            assert kept_and_real(pg_server, pg_url) == (expected, expected)
            assert g.stats()["templates"] == expected

        check(0)
        g.enroll("ann", x[:2], image_sha256="a" * 64)
        check(2)
        assert g.enroll("ann", x[2], image_sha256="a" * 64).duplicate  # the same photo: nothing added
        check(2)
        with pytest.raises(GalleryParameterError):
            g.enroll("ann", x[3], new=True)
        check(2)
        g.enroll_many(["bob"] * 10, x[3:13])  # small: into the live index
        check(12)
        g.enroll_many([f"p{i}" for i in range(100)], x[13:113])  # drops and rebuilds the index
        check(112)
        assert g.remove("bob") == 10
        check(102)
        g.rename("ann", "anne")
        check(102)
        identities, templates = g.export_records()
        assert g.import_records(identities, templates) == 0
        check(102)
        extra = [TemplateRecord(v, name="zed", created_at=1.0) for v in x[113:118]]
        assert g.import_records([], extra) == 5
        check(107)

        handles = [Gallery.open(pg_url) for _ in range(6)]
        barrier = threading.Barrier(len(handles) + 1)
        errors: list[BaseException] = []

        def enroll(h: Gallery, k: int) -> None:
            try:
                barrier.wait()
                for j in range(3):
                    h.enroll(f"c{k}", x[120 + 3 * k + j])
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

        threads = [threading.Thread(target=enroll, args=(h, k)) for k, h in enumerate(handles)]
        for t in threads:
            t.start()
        barrier.wait()
        g.enroll_many([f"q{i}" for i in range(60)], x[200:260])  # 60 < half of 107: the live index
        assert g.remove("zed") == 5
        for t in threads:
            t.join()
        for h in handles:
            h.close()
        assert errors == []
        check(107 + 18 + 60 - 5)


def test_a_version_1_gallery_gets_its_template_count_and_rebuild_recounts(pg_url: str, pg_server) -> None:
    """Upgrading a schema of version 1 fills meta.templates from the table; `rebuild` counts again
    (a count gone wrong by hand-made changes) and makes a missing HNSW index."""
    import psycopg

    schema = pg.parse_url(pg_url).schema
    with Gallery.open(pg_url, model=MODEL, dim=4) as g:
        g.enroll_many(["ann"] * 3 + ["bob"] * 2, units(5, 4, seed=7))
    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DELETE FROM {schema}.meta WHERE key = 'templates'")
        conn.execute(f"UPDATE {schema}.meta SET value = '1' WHERE key = 'schema_version'")
    assert kept_and_real(pg_server, pg_url) == (None, 5)
    with pytest.raises(GalleryError, match="schema version 1 must be upgraded by a writer first"):
        Gallery.open(pg_url, read_only=True)
    with Gallery.open(pg_url) as g:
        assert g.stats()["schema_version"] == pg.SCHEMA_VERSION == 2
        assert kept_and_real(pg_server, pg_url) == (5, 5)
        g.enroll("cid", units(1, 4, seed=8)[0])
        assert kept_and_real(pg_server, pg_url) == (6, 6) and g.stats()["templates"] == 6
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute(
                f"DELETE FROM {schema}.templates WHERE id = (SELECT min(id) FROM {schema}.templates)"
            )
            conn.execute(f"DROP INDEX {schema}.{pg.HNSW_INDEX}")
        assert kept_and_real(pg_server, pg_url) == (6, 5)
        assert g.rebuild() == 5
        assert kept_and_real(pg_server, pg_url) == (5, 5)
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.{pg.HNSW_INDEX}",)).fetchone()[0]


def test_new_is_decided_atomically_across_connections(pg_url: str) -> None:
    """Eight handles (eight connections) race to enroll the same new name with new=True: exactly one
    wins, the others are refused, and one template is stored."""
    Gallery.open(pg_url, model=MODEL, dim=16).close()
    handles = [Gallery.open(pg_url) for _ in range(8)]
    barrier = threading.Barrier(8)
    outcomes: list[str] = []

    def run(g: Gallery, k: int) -> None:
        barrier.wait()
        try:
            g.enroll("zed", units(1, seed=k), new=True)
            outcomes.append("ok")
        except GalleryParameterError:
            outcomes.append("refused")

    threads = [threading.Thread(target=run, args=(g, k)) for k, g in enumerate(handles)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for g in handles:
        g.close()
    assert sorted(outcomes) == ["ok"] + ["refused"] * 7
    with Gallery.open(pg_url) as g:
        assert g.template_counts() == {"zed": 1}


@pytest.mark.parametrize("path", ["exact", "hnsw"])
def test_scores_match_the_directory_backend(
    tmp_path: Path, pg_url: str, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same vectors in both backends give the same identify and verify scores (within 1e-6), on the
    exact scan and on the HNSW path (forced here on a small gallery; its candidates are re-scored)."""
    if path == "hnsw":
        monkeypatch.setattr(pg, "EXACT_MAX_TEMPLATES", 0)
    x = units(600, 32, seed=1)
    names = [f"n{i % 200}" for i in range(600)]  # 200 names, 3 templates each
    near = x[::7] + 0.05 * units(len(x[::7]), 32, seed=3)  # genuine probes, and 20 strangers
    queries = np.concatenate([near / np.linalg.norm(near, axis=1, keepdims=True), units(20, 32, seed=2)])
    answers = {}
    for where in (tmp_path / "g", pg_url):
        with Gallery.open(where, model=MODEL, dim=32) as g:
            g.enroll_many(names, x)
            answers[g.backend] = (
                g.identify(queries, top_k=5, threshold=0.9),
                [g.verify(n, q) for n, q in zip(names[::7], queries, strict=False)],
            )
            if g.backend == "postgresql":
                assert g.stats()["search"] == ("hnsw" if path == "hnsw" else "exact scan")
    (d_matches, d_verify), (p_matches, p_verify) = answers["directory"], answers["postgresql"]
    np.testing.assert_allclose(p_verify, d_verify, atol=1e-6)
    brute = queries @ x.T
    for dm, pm, row in zip(d_matches, p_matches, brute, strict=True):
        assert pm.identity == dm.identity
        for cand in pm.candidates:  # every reported score is the exact cosine of the name's best template
            exact = max(row[i] for i, n in enumerate(names) if n == cand.name)
            assert cand.score == pytest.approx(exact, abs=1e-6)
        if path == "exact":
            assert [c.name for c in pm.candidates] == [c.name for c in dm.candidates]
            np.testing.assert_allclose(
                [c.score for c in pm.candidates], [c.score for c in dm.candidates], atol=1e-6
            )


def _plan_nodes(plan: dict) -> Iterator[dict]:
    yield plan
    for child in plan.get("Plans", ()):
        yield from _plan_nodes(child)


def test_the_candidate_query_is_a_scan_up_to_exact_max_and_the_hnsw_index_above(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a search really runs (its statements captured on the connection: the SET LOCALs and the
    candidate SELECT with its parameters), replayed in one transaction under EXPLAIN: a gallery of
    EXACT_MAX_TEMPLATES templates is a sequential scan of ``templates``, one more template the HNSW
    index scan (which the planner would not choose for a table this small by itself)."""
    import psycopg
    from pgvector.psycopg import register_vector

    monkeypatch.setattr(pg, "EXACT_MAX_TEMPLATES", 300)
    x = units(301, 16, seed=4)
    schema = pg.parse_url(pg_url).schema
    execute = psycopg.Connection.execute

    def explain_search(g: Gallery) -> tuple[list[str], list[dict]]:
        ran: list[tuple[str, tuple]] = []

        def spy(self, query, params=None, **kwargs):  # noqa: ANN001, ANN202
            ran.append((str(query), tuple(params or ())))
            return execute(self, query, params, **kwargs)

        monkeypatch.setattr(psycopg.Connection, "execute", spy)
        try:
            assert g.search(x[:1], top_k=5)[0][0].name == "p0"
        finally:
            monkeypatch.setattr(psycopg.Connection, "execute", execute)
        settings = [q for q, _ in ran if q.startswith("SET LOCAL")]
        selects = [(q, p) for q, p in ran if "<#>" in q]
        assert len(selects) == 1, ran
        with psycopg.connect(pg_server.get_uri()) as conn:  # one transaction: the SET LOCALs hold
            register_vector(conn)
            conn.execute(f"SET LOCAL search_path = {schema}, public")
            for statement in settings:
                conn.execute(statement)
            plan = conn.execute("EXPLAIN (FORMAT JSON) " + selects[0][0], selects[0][1]).fetchone()[0]
        return settings, list(_plan_nodes(plan[0]["Plan"]))

    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        g.enroll_many([f"p{i}" for i in range(300)], x[:300])
        settings, nodes = explain_search(g)
        assert settings == [] and g.stats()["search"] == "exact scan"
        assert any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "templates" for n in nodes)
        assert not any(n.get("Index Name") == pg.HNSW_INDEX for n in nodes)
        g.enroll("p300", x[300])
        settings, nodes = explain_search(g)
        assert any(n["Node Type"] == "Index Scan" and n.get("Index Name") == pg.HNSW_INDEX for n in nodes)
        assert f"SET LOCAL hnsw.ef_search = {pg.HNSW_EF_SEARCH}" in settings and g.stats()["search"] == "hnsw"
        assert not any(n["Node Type"] == "Seq Scan" and n.get("Relation Name") == "templates" for n in nodes)


def test_a_restarted_server_under_a_live_gallery(
    pg_url: str, pg_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A long-lived Gallery keeps working after the server restarts (the pool checks its connections,
    a cut-off query is retried once); while the server is down, a call fails with one GalleryError line
    within the timeout."""
    from pgserver._commands import pg_ctl

    monkeypatch.setenv(pg.TIMEOUT_ENV, "3")
    x = units(4)

    def ctl(*args: str) -> None:
        pg_ctl(["-w", *args], pgdata=pg_server.pgdata, user=pg_server.system_user, timeout=60)

    with Gallery.open(pg_url, model=MODEL, dim=16) as g:
        g.enroll("ann", x[0])
        ctl("-m", "fast", "restart")
        assert g.identify(x[:1], top_k=1, threshold=0.9)[0].identity == "ann"  # reconnected
        g.enroll("bob", x[1])
        ctl("-m", "fast", "stop")
        try:
            with pytest.raises(GalleryError) as info:
                g.identify(x[:1], top_k=1, threshold=0.9)
            message = str(info.value)
            assert "\n" not in message and message.startswith(g.path), message
        finally:  # started as pgserver starts it: no TCP, the same socket directory
            socket_dir = pg_server.get_uri().split("host=", 1)[1]
            ctl("-o", '-h ""', "-o", f"-k {socket_dir}", "-l", str(pg_server.log), "start")
        assert g.names() == ["ann", "bob"]  # and back once the server is
        assert g.verify("bob", x[1]) == pytest.approx(1.0, abs=1e-6)


def test_cli_wrong_url_host_or_password_is_one_line_and_exit_6(pg_server) -> None:
    """Through the real CLI: bad URLs, a missing server and a wrong password are one line on stderr,
    the gallery exit code, no traceback, and never the password."""
    import psycopg

    with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
        conn.execute("DROP ROLE IF EXISTS fs_pw")
        conn.execute("CREATE ROLE fs_pw LOGIN PASSWORD 'right-horse'")
    hba = Path(pg_server.pgdata) / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text("local all fs_pw scram-sha-256\n" + before)  # the first matching line wins
    try:
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")
        socket_dir = pg_server.get_uri().split("host=", 1)[1]
        cases = {
            "password authentication failed": f"postgresql://fs_pw:wrong-secret@/postgres?host={socket_dir}",
            "No such file or directory": f"postgresql://ann:wrong-secret@/db?host={socket_dir}/nowhere",
            "invalid URI query parameter": f"postgresql://ann:wrong-secret@/db?host={socket_dir}&bogus=1",
            "gallery name": "postgresql://ann:wrong-secret@/db?gallery=No-Good",
            "unknown kind of gallery location": "mysql://ann:wrong-secret@host/db",
        }
        for expected, url in cases.items():
            run = cli("gallery", "stats", "--gallery", url)
            assert run.returncode == EXIT_GALLERY, (url, run.stderr)
            lines = run.stderr.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith("error:"), run.stderr
            assert expected in lines[0], lines[0]
            assert "wrong-secret" not in run.stderr + run.stdout and "Traceback" not in run.stderr
    finally:
        hba.write_text(before)
        with psycopg.connect(pg_server.get_uri(), autocommit=True) as conn:
            conn.execute("SELECT pg_reload_conf()")


def test_cli_stats_json_and_migrate_both_ways(tmp_path: Path, pg_server) -> None:
    """`gallery migrate` copies a directory gallery to PostgreSQL and back with its templates, their
    metadata, names, threshold and model; `gallery stats --json` says which backend, never the password."""
    x = units(6, 4, seed=5)
    src = tmp_path / "src"
    with Gallery.open(src, model=MODEL, dim=4, model_version="w1") as g:
        g.enroll("ann", x[:2], image_sha256="a" * 64, source="ann.jpg", detector="mtcnn",
                 boxes=[[1, 2, 3, 4], [5, 6, 7, 8]], found_by="padded")  # fmt: skip
        g.enroll("Zoë", x[2])
        g.set_threshold(0.61, "calibrate on test pairs")
    url = new_pg_url(pg_server).replace("postgres:@", "postgres:pw-in-url@")  # trust auth: any password
    run = cli("gallery", "migrate", str(src), url, "--json")
    assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert (
        report["templates"] == report["templates_added"] == 3
        and report["destination_backend"] == "postgresql"
    )
    assert "pw-in-url" not in run.stdout + run.stderr
    run = cli("gallery", "stats", "--json", "--gallery", url)
    assert run.returncode == 0, run.stderr
    stats = json.loads(run.stdout)
    assert stats["backend"] == "postgresql" and "pw-in-url" not in run.stdout
    assert (stats["identities"], stats["templates"], stats["model"], stats["model_version"]) == (
        2,
        3,
        MODEL,
        "w1",
    )
    assert (stats["threshold"], stats["threshold_source"]) == (0.61, "calibrate on test pairs")
    assert migrate(src, url).templates_added == 0  # copying again adds nothing
    back = tmp_path / "back"
    assert migrate(url, back).templates_added == 3
    with Gallery.open(src) as a, Gallery.open(back) as b:
        assert b.backend == "directory" and b.template_counts() == a.template_counts()
        strip = lambda info: [{k: v for k, v in t.to_dict().items() if k != "id"} for t in info.templates]  # noqa: E731
        assert strip(b.show("ann")) == strip(a.show("ann"))
        assert b.show("ann").created_at == a.show("ann").created_at
        assert (b.model, b.model_version, b.threshold) == (MODEL, "w1", 0.61)
        np.testing.assert_allclose(
            [b.verify("ann", v) for v in x], [a.verify("ann", v) for v in x], atol=1e-6
        )
    other = new_pg_url(pg_server)
    with Gallery.open(other, model="another-model", dim=4) as g:
        g.enroll("someone", x[5])
    run = cli("gallery", "migrate", str(src), other)
    assert run.returncode == EXIT_GALLERY and "holds embeddings of model 'another-model'" in run.stderr
    with Gallery.open(other) as g:
        assert g.template_counts() == {"someone": 1}  # refused before anything was written


def test_the_directory_backend_never_imports_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys, numpy as np\n"
        "from facestyle.gallery import Gallery\n"
        f"with Gallery.open({str(tmp_path / 'g')!r}, model='m', dim=4) as g:\n"
        "    g.enroll('ann', np.eye(4)[0]); g.identify(np.eye(4)[:1], threshold=0.5)\n"
        "print('psycopg' in sys.modules, 'psycopg_pool' in sys.modules)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]


def test_without_psycopg_one_line_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = None\n"
        "from facestyle.cli import main\n"
        "sys.argv = ['facestyle', 'gallery', 'stats', '--gallery', 'postgresql:///db?gallery=x']\n"
        "main()\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert run.returncode == EXIT_GALLERY, run.stderr
    assert run.stderr.strip().splitlines() == [f"error: {pg.INSTALL_HINT}"]


def test_a_statement_the_server_refuses_is_reported_as_such_and_not_retried(pg_url: str) -> None:
    """A server error on a live connection (here a statement timeout, an OperationalError like a lost
    connection) is one line in the server's words, run once: not retried, not "lost the connection"."""
    calls = []

    def slow(conn):  # noqa: ANN001, ANN202
        calls.append(1)
        conn.execute("SET LOCAL statement_timeout = 50")
        conn.execute("SELECT pg_sleep(2)")

    with Gallery.open(pg_url, model=MODEL, dim=8) as g:
        with pytest.raises(GalleryError, match="statement timeout") as err:
            g._run(slow)
        assert "lost the connection" not in str(err.value) and calls == [1]
        assert g.stats()["templates"] == 0  # the pool's connection still works
