"""A fresh database on the PostgreSQL test server, dropped after use (CI's machine has one on
127.0.0.1:5432 with trust auth). Tests skip with the reason where none answers; benchmarks get
None and leave PostgreSQL out."""

import contextlib
import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get("CHAINRUNNER_TEST_POSTGRES",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def temporary_database(prefix: str) -> Iterator[str | None]:
    """The URL of a new database named `prefix_<random>`, dropped on exit; None (and nothing
    created) when no server answers."""
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        yield None
        return
    name = f"{prefix}_{secrets.token_hex(6)}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield str(sa.make_url(ADMIN_URL).set(database=name).render_as_string(
                hide_password=False))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_database(prefix: str) -> Iterator[str]:
    """Yields the URL of a new database for a test; drops it when resumed. Skips the test,
    naming the server, where none answers."""
    with temporary_database(prefix) as url:
        if url is None:
            pytest.skip(f"PostgreSQL backend skipped: no server at {ADMIN_URL}")
        yield url
