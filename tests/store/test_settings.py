"""Database URLs, settings from the environment, the models' JSON, and the deployed pins."""

from datetime import UTC, datetime
from pathlib import Path

import pytest

from chainlets import deploy
from chainlets.errors import ConfigurationError
from chainlets.store import (
    Event,
    EventClaim,
    EventState,
    Invocation,
    Lease,
    Page,
    RerunOf,
    State,
    StoredChain,
    StoredStep,
)
from chainlets.store.dialect import database_url, sync_url
from chainlets.store.settings import Limits, StoreSettings

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.mark.parametrize(("raw", "expected"), [
    ("sqlite:///rel/x.db", "sqlite+pysqlite:///{cwd}/rel/x.db"),
    ("sqlite:////abs/x.db", "sqlite+pysqlite:////abs/x.db"),
    ("sqlite+aiosqlite:///x.db?timeout=5", "sqlite+pysqlite:///{cwd}/x.db?timeout=5"),
    ("postgresql://user@db.example/app", "postgresql+psycopg://user@db.example/app"),
    ("postgres://user:pw@db.example:5433/app", "postgresql+psycopg://user:pw@db.example:5433/app"),
    ("postgresql+psycopg://u@h/d", "postgresql+psycopg://u@h/d"),
    ("postgresql+asyncpg://u@h/d", "postgresql+psycopg://u@h/d"),
    (None, "sqlite+pysqlite:///{cwd}/.chainrunner/chainrunner.db"),
], ids=["sqlite-relative", "sqlite-absolute", "sqlite-driver-form", "postgresql", "postgres",
        "psycopg-driver-form", "asyncpg-driver-form", "default"])
def test_urls_get_an_async_driver(tmp_path: Path, raw: str | None, expected: str) -> None:
    url = database_url(raw, cwd=tmp_path)
    assert url.render_as_string(hide_password=False) == expected.format(cwd=tmp_path)
    if url.get_backend_name() == "sqlite":
        assert Path(url.database or "").parent.is_dir()


@pytest.mark.parametrize(("raw", "message"), [
    ("mysql://u@h/d", "`mysql` databases are not supported"),
    ("postgresql+psycopg2://u:secret@h/d", "`psycopg2` is not a driver we run; use "
                                           "`postgresql://…` \\(we pick `psycopg`\\)"),
    ("sqlite://", "an in-memory SQLite database is lost"),
    ("sqlite:///:memory:", "an in-memory SQLite database is lost"),
    ("::not a url::", "not a database URL"),
], ids=["mysql", "sync-driver", "memory", "memory-named", "garbage"])
def test_bad_urls_are_explained(tmp_path: Path, raw: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=f"CHAINRUNNER_DATABASE_URL: .*{message}") as info:
        database_url(raw, cwd=tmp_path)
    assert "secret" not in str(info.value)


def test_migrations_use_the_sync_driver_of_the_same_database(tmp_path: Path) -> None:
    assert sync_url(database_url("sqlite:///x.db", cwd=tmp_path)).drivername == \
        "sqlite+pysqlite"
    assert sync_url(database_url("postgresql+asyncpg://u@h/d")).drivername == "postgresql+psycopg"


def test_settings_come_from_the_environment() -> None:
    settings = StoreSettings.from_env({
        "CHAINRUNNER_DATABASE_URL": "postgresql://u@h/d", "CHAINRUNNER_MAX_INPUT_BYTES": "10",
        "CHAINRUNNER_MAX_STEP_OUTPUT_BYTES": "20", "CHAINRUNNER_MAX_CHAIN_BYTES": "30",
        "CHAINRUNNER_RETENTION_DAYS": "0.5", "CHAINRUNNER_LEASE_S": "7.5",
        "CHAINRUNNER_DB_SYNC": "Full"})
    assert settings == StoreSettings(url="postgresql://u@h/d", limits=Limits(10, 20, 30),
                                     retention_s=43_200, lease_s=7.5, sync="full")
    assert StoreSettings.from_env({}) == StoreSettings()


@pytest.mark.parametrize(("name", "value", "message"), [
    ("CHAINRUNNER_LEASE_S", "soon", "CHAINRUNNER_LEASE_S='soon' is not valid; set it to a "
                                    "positive number \\(default 10\\)"),
    ("CHAINRUNNER_MAX_INPUT_BYTES", "1.5", "a positive whole number"),
    ("CHAINRUNNER_RETENTION_DAYS", "-1", "CHAINRUNNER_RETENTION_DAYS='-1' is not valid"),
    ("CHAINRUNNER_DB_SYNC", "always", "CHAINRUNNER_DB_SYNC='always' is not valid; set it to "
                                      "`full`"),
], ids=["lease", "bytes", "retention", "sync"])
def test_bad_settings_name_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        StoreSettings.from_env({name: value})


_STEP = StoredStep(handle="a", position=0, state=State.SUCCEEDED, output="x",
                   attempts=[{"number": 1, "started_at": NOW, "finished_at": NOW,
                              "error": None}], started_at=NOW, finished_at=NOW)
_EVENT = Event(event_id="evt_1", invocation_id="inv_1", chain_id="chn_1", seq=1,
               type="step.finished", step="a", data={"output": "x"}, url="https://r.example",
               created_at=NOW, state=EventState.PENDING, next_attempt_at=NOW,
               window_start=NOW)


@pytest.mark.parametrize("model", [
    StoredChain(chain_id="chn_1", handle="c", chain={"handle": "c", "steps": []},
                created_at=NOW),
    Invocation(invocation_id="inv_1", chain_id="chn_1", state=State.RUNNING, input={"a": "b"},
               rerun_of=RerunOf(invocation_id="inv_0", from_step="a"), created_at=NOW,
               updated_at=NOW, steps=[_STEP]),
    Lease(invocation_id="inv_1", owner="A", attempt=2, expires_at=NOW, signals=1),
    EventClaim(event=_EVENT, owner="A", attempt=1),
    Page[StoredStep](items=[_STEP], next_cursor="abc"),
], ids=["chain", "invocation", "lease", "event-claim", "page"])
def test_models_survive_a_json_round_trip(model: object) -> None:
    cls = type(model)
    assert cls.model_validate_json(model.model_dump_json()) == model  # type: ignore[attr-defined]


def test_the_runner_image_pins_the_store_drivers() -> None:
    pins = dict(pin.split("==") for pin in deploy.image().pip_requirements)
    assert {"sqlalchemy", "psycopg", "psycopg-binary", "alembic", "greenlet"} <= set(pins)
