"""Every difference between SQLite and PostgreSQL, in one place: URLs and their async
drivers, engine set-up (WAL, busy timeout, `BEGIN IMMEDIATE`), upserts and row locking."""

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from chainlets.errors import ChainrunnerError
from chainlets.store.settings import DATABASE_URL_ENV

__all__ = [
    "DEFAULT_SQLITE",
    "WRITE",
    "async_url",
    "create_engine",
    "create_sync_engine",
    "insert",
    "skip_locked",
    "sync_url",
]

# Relative to the working directory, beside serve's other state.
DEFAULT_SQLITE = Path(".chainrunner") / "chainrunner.db"
# Execution option marking a transaction that writes: on SQLite it begins `IMMEDIATE`, taking
# the write lock up front, so two writers queue on the busy timeout instead of one failing
# when it upgrades a read lock.
WRITE = "chainrunner_write"
_BUSY_TIMEOUT_S = 30.0

_ASYNC_DRIVERS = {"sqlite": "aiosqlite", "postgresql": "psycopg"}
_ACCEPTED = {"sqlite": {"aiosqlite"}, "postgresql": {"psycopg", "psycopg_async", "asyncpg"}}
_SYNC_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}


def _bad_url(url: str, why: str) -> ChainrunnerError:
    return ChainrunnerError(f"{DATABASE_URL_ENV}: {url}: {why}")


def async_url(raw: str | None, *, cwd: Path | None = None) -> URL:
    """The async SQLAlchemy URL for a configured one: `None` means a SQLite file under
    `.chainrunner/` of `cwd`; plain `sqlite:///…` and `postgresql://…` get their async
    driver; a relative SQLite path is made absolute and its folder created."""
    base = Path.cwd() if cwd is None else cwd
    if not raw:
        raw = f"sqlite:///{base / DEFAULT_SQLITE}"
    try:
        url = make_url(raw)
    except ArgumentError as exc:
        raise _bad_url(repr(raw), "not a database URL; use sqlite:///path.db or "
                                  "postgresql://user@host/db") from exc
    shown = url.render_as_string(hide_password=True)
    backend, _, driver = url.drivername.partition("+")
    backend = "postgresql" if backend == "postgres" else backend
    if backend not in _ACCEPTED:
        raise _bad_url(shown, f"`{backend}` databases are not supported; use sqlite:///path.db "
                              "or postgresql://user@host/db")
    if driver and driver not in _ACCEPTED[backend]:
        raise _bad_url(shown, f"`{driver}` is not an asyncio driver; use `{backend}://…` "
                              f"(we pick `{_ASYNC_DRIVERS[backend]}`) or "
                              f"`{backend}+{_ASYNC_DRIVERS[backend]}://…`")
    url = url.set(drivername=f"{backend}+{driver or _ASYNC_DRIVERS[backend]}")
    if backend == "sqlite":
        database = url.database or ""
        if database in ("", ":memory:") or database.startswith("file::memory:"):
            raise _bad_url(shown, "an in-memory SQLite database is lost with its last "
                                  "connection; name a file (sqlite:///path.db)")
        path = Path(database)
        path = path if path.is_absolute() else base / path
        path.parent.mkdir(parents=True, exist_ok=True)
        url = url.set(database=str(path))
    return url


def sync_url(url: URL) -> URL:
    """The same database through a synchronous driver (alembic runs migrations with it)."""
    return url.set(drivername=f"{url.get_backend_name()}+"
                              f"{_SYNC_DRIVERS[url.get_backend_name()]}")


def _on_sqlite(engine: Engine) -> None:
    """WAL (readers never block the writer), and transactions begun by us, not pysqlite:
    `BEGIN IMMEDIATE` for writes (the `WRITE` option), a plain `BEGIN` for reads."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives any process crash; only a power cut can lose the last
        # transactions (the trade is one fsync per checkpoint instead of per commit).
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _connect_args(url: URL) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite" and "timeout" not in url.query:
        return {"timeout": _BUSY_TIMEOUT_S}  # the busy timeout; `?timeout=N` overrides it
    return {}


def create_engine(url: URL) -> AsyncEngine:
    engine = create_async_engine(url, connect_args=_connect_args(url))
    if url.get_backend_name() == "sqlite":
        _on_sqlite(engine.sync_engine)
    return engine


def create_sync_engine(url: URL) -> Engine:
    engine = sa.create_engine(url, connect_args=_connect_args(url), poolclass=sa.NullPool)
    if url.get_backend_name() == "sqlite":
        _on_sqlite(engine)
    return engine


def insert(table: sa.Table, dialect: str) -> Any:
    """An INSERT with `on_conflict_do_nothing/do_update` (the same API on both)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def skip_locked(select: sa.Select[Any], dialect: str, *of: sa.Table) -> sa.Select[Any]:
    """Lock the selected rows, skipping those another transaction holds. SQLite has no row
    locks: there `BEGIN IMMEDIATE` makes the whole claim one writer at a time."""
    if dialect == "postgresql":
        return select.with_for_update(skip_locked=True, of=list(of) or None)
    return select
