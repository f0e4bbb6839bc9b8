"""Migrations: a database made by the first revision upgrades to head with its rows intact;
the migrated schema is what the code queries; SQLite runs in WAL mode."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from chainlets.store import StoreSettings, open_store
from chainlets.store.dialect import create_sync_engine, database_url, sync_url
from chainlets.store.migrate import MIGRATIONS, current_revision, head_revision, upgrade
from chainlets.store.tables import metadata
from tests.postgres import fresh_database

FIRST = "0001"
HEAD = "0003"


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database: a new SQLite file, or a new PostgreSQL database dropped after."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'old.db'}"
        return
    yield from fresh_database("chainrunner_migrate")


def _write_at_first_revision(url: str) -> None:
    """Rows as a service on the first revision wrote them (plain SQL: that code is gone)."""
    engine = create_sync_engine(sync_url(database_url(url)))
    spec = json.dumps({"handle": "old", "steps": []})
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO chains (id, handle, spec, created_at) "
                             "VALUES ('chn_old', 'old', :spec, 1.0)"), {"spec": spec})
        conn.execute(sa.text(
            "INSERT INTO invocations (id, chain_id, state, input, created_at, updated_at) "
            "VALUES ('inv_old', 'chn_old', 'running', '{\"topic\": \"x\"}', 1.0, 1.0)"))
        conn.execute(sa.text(
            "INSERT INTO steps (invocation_id, handle, position, state, updated_at) "
            "VALUES ('inv_old', 'a', 0, 'waiting', 1.0)"))
        conn.execute(sa.text(
            "INSERT INTO events (id, invocation_id, chain_id, seq, type, url, created_at, "
            "state, next_attempt_at) VALUES ('evt_old', 'inv_old', 'chn_old', 1, "
            "'step.finished', 'https://r.example/hook', 1.0, 'gave_up', NULL)"))
    engine.dispose()


async def test_a_database_from_the_first_migration_upgrades_to_head(empty_url: str) -> None:
    upgrade(empty_url, FIRST)
    assert current_revision(empty_url) == FIRST
    _write_at_first_revision(empty_url)
    store = await open_store(StoreSettings(url=empty_url))  # applies the rest on start
    try:
        assert current_revision(empty_url) == head_revision()
        invocation = await store.get_invocation("inv_old")
        assert (invocation.chain_id, invocation.input) == ("chn_old", {"topic": "x"})
        assert [s.handle for s in invocation.steps] == ["a"]
        assert (await store.get_chain("chn_old")).handle == "old"
        [event] = await store.list_events("inv_old")  # its retry period starts at creation
        assert event.window_start == event.created_at
        assert [lease.invocation_id for lease in await store.claim("A")] == ["inv_old"]
    finally:
        await store.close()
    upgrade(empty_url)  # again: nothing to do
    assert current_revision(empty_url) == head_revision()


def test_the_migrated_schema_is_the_one_the_code_queries(empty_url: str) -> None:
    upgrade(empty_url)
    engine = create_sync_engine(sync_url(database_url(empty_url)))
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        engine.dispose()
    assert [d for d in diff if not (d[0] == "remove_table" and d[1].name ==
                                    "alembic_version")] == []


def test_migrations_ship_with_the_package() -> None:
    assert (MIGRATIONS / "env.py").is_file()
    assert (MIGRATIONS / "script.py.mako").is_file()
    assert head_revision() == HEAD


def test_sqlite_runs_in_wal_mode_with_a_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'wal.db'}"
    upgrade(url)
    engine = create_sync_engine(sync_url(database_url(url)))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
    finally:
        engine.dispose()
