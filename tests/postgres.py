"""A fresh database on the PostgreSQL test server, dropped after use; skipped with the reason
where no server answers (CI's machine has one on 127.0.0.1:5432 with trust auth)."""

import os
import secrets
from collections.abc import Iterator

import psycopg
import pytest
import sqlalchemy as sa

ADMIN_URL = os.environ.get("CHAINRUNNER_TEST_POSTGRES",
                           "postgresql://postgres@127.0.0.1:5432/postgres")


def fresh_database(prefix: str) -> Iterator[str]:
    """Yields the URL of a new database named `prefix_<random>`; drops it when resumed."""
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        admin = psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        pytest.skip(f"PostgreSQL backend skipped: no server at {ADMIN_URL} ({exc})".strip())
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield str(sa.make_url(ADMIN_URL).set(database=name).render_as_string(
                hide_password=False))
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
