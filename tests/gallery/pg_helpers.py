"""Helpers for tests on PostgreSQL galleries (the server itself is the ``pg_server`` fixture)."""

from __future__ import annotations

import itertools
import os

_names = itertools.count()


def new_pg_url(server, prefix: str = "t") -> str:
    """A gallery URL on ``server`` no other test uses."""
    return f"{server.get_uri()}&gallery={prefix}{os.getpid()}_{next(_names)}"


def drop_gallery(server, url: str) -> None:
    import psycopg

    schema = "facestyle_" + url.rsplit("gallery=", 1)[1]
    with psycopg.connect(server.get_uri(), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
