"""Every difference between SQLite and PostgreSQL, in one place: URLs and their drivers, how
a transaction runs off the event loop, engine set-up (WAL, busy timeout, `BEGIN IMMEDIATE`,
commit durability), upserts and row locking."""

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError

from chainlets.errors import ConfigurationError
from chainlets.store.group_commit import ThreadGroupCommit
from chainlets.store.settings import DATABASE_URL_ENV

__all__ = [
    "DEFAULT_SQLITE",
    "WRITE",
    "Transactions",
    "create_sync_engine",
    "database_url",
    "insert",
    "skip_locked",
    "sync_url",
    "transactions",
]

T = TypeVar("T")

# Relative to the working directory, beside serve's other state.
DEFAULT_SQLITE = Path(".chainrunner") / "chainrunner.db"
# Execution option marking a transaction that writes: on SQLite it begins `IMMEDIATE`, taking
# the write lock up front, so two writers queue on the busy timeout instead of one failing
# when it upgrades a read lock.
WRITE = "chainrunner_write"
_BUSY_TIMEOUT_S = 30.0

# The driver each backend runs on, blocking, on worker threads (see `_Threads`): SQLite's
# standard one, psycopg 3. Either driver form is accepted in a URL.
_DRIVERS = {"sqlite": "pysqlite", "postgresql": "psycopg"}
_ACCEPTED = {"sqlite": {"pysqlite", "aiosqlite"},
             "postgresql": {"psycopg", "psycopg_async", "asyncpg"}}


def _bad_url(url: str, why: str) -> ConfigurationError:
    return ConfigurationError(f"{DATABASE_URL_ENV}: {url}: {why}")


def database_url(raw: str | None, *, cwd: Path | None = None) -> URL:
    """The SQLAlchemy URL the store uses for a configured one: `None` means a SQLite file
    under `.chainrunner/` of `cwd`; plain `sqlite:///…` and `postgresql://…` get our driver;
    a relative SQLite path is made absolute and its folder created."""
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
        raise _bad_url(shown, f"`{driver}` is not a driver we run; use `{backend}://…` "
                              f"(we pick `{_DRIVERS[backend]}`)")
    url = url.set(drivername=f"{backend}+{_DRIVERS[backend]}")
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
    return url.set(drivername=f"{url.get_backend_name()}+{_DRIVERS[url.get_backend_name()]}")


def _on_sqlite(engine: Engine, sync: str | None) -> None:
    """WAL (readers never block the writer), and transactions begun by us, not pysqlite:
    `BEGIN IMMEDIATE` for writes (the `WRITE` option), a plain `BEGIN` for reads."""
    # In WAL mode NORMAL survives any process crash; only a power cut can lose the last
    # transactions, and it spares an fsync per commit. FULL fsyncs every commit.
    synchronous = (sync or "normal").upper()

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        write = connection.get_execution_options().get(WRITE, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _connect_args(url: URL, sync: str | None) -> dict[str, Any]:
    if url.get_backend_name() == "sqlite":
        # The busy timeout (how long a writer waits for another process's write lock);
        # `?timeout=N` in the URL overrides it.
        return {} if "timeout" in url.query else {"timeout": _BUSY_TIMEOUT_S}
    if sync is not None:
        return {"options": f"-c synchronous_commit={'on' if sync == 'full' else 'off'}"}
    return {}


def create_sync_engine(url: URL, sync: str | None = None, **kwargs: Any) -> Engine:
    """A synchronous engine (migrations; SQLite's worker threads)."""
    engine = sa.create_engine(url, connect_args=_connect_args(url, sync), **kwargs)
    if url.get_backend_name() == "sqlite":
        _on_sqlite(engine, sync)
    return engine


class Transactions(Protocol):
    """Runs a function over a connection in one transaction, off the event loop."""

    async def run(self, work: Callable[[sa.Connection], T], *, write: bool) -> T: ...
    async def close(self) -> None: ...


class _Threads:
    """The database through its standard (blocking) driver on worker threads, one hop per
    transaction: SQLite's sqlite3, PostgreSQL's psycopg 3.

    One thread writes, so in-process writers queue in order (on SQLite instead of spinning on
    its lock) and those queued together commit together (group_commit); readers run beside
    it (SQLite in WAL mode). Measured against the asyncio drivers: aiosqlite costs about four
    thread hand-offs per statement (~3 ms per step write here against 0.36 ms on one worker
    thread, benchmarks/store.py); psycopg's asyncio connections through SQLAlchemy's greenlet
    bridge cost 2.4-2.7 ms of CPU per in-process 3-step invocation against 1.7-1.9 ms
    blocking on a thread (a wait on the event loop's selector and two greenlet switches per
    statement; benchmarks/service.py).
    """

    def __init__(self, url: URL, sync: str | None, readers: int = 4) -> None:
        # SQLite has one writer at a time anyway; PostgreSQL's two overlap one transaction's
        # commit (a disk flush, with synchronous_commit on) with the next one's statements.
        writers = 1 if url.get_backend_name() == "sqlite" else 2
        self.engine = create_sync_engine(url, sync, pool_size=readers + writers,
                                         max_overflow=0)
        self._writes = self.engine.execution_options(**{WRITE: True})
        self._writer = ThreadPoolExecutor(writers, thread_name_prefix="chainrunner-store-write")
        self._readers = ThreadPoolExecutor(readers, thread_name_prefix="chainrunner-store-read")
        self._group = ThreadGroupCommit(lambda work: self._transaction(work, True),
                                        self._writer.submit, drains=writers)

    def _transaction(self, work: Callable[[sa.Connection], T], write: bool) -> T:
        with (self._writes if write else self.engine).begin() as connection:
            return work(connection)

    async def run(self, work: Callable[[sa.Connection], T], *, write: bool) -> T:
        loop = asyncio.get_running_loop()
        if not write:
            return await loop.run_in_executor(self._readers, self._transaction, work, False)
        return await self._group.submit(work)

    async def close(self) -> None:
        for pool in (self._writer, self._readers):
            await asyncio.to_thread(pool.shutdown)
        self.engine.dispose()


def transactions(url: URL, sync: str | None = None) -> Transactions:
    """How the store runs its transactions on the database at `url` (from `database_url`)."""
    return _Threads(url, sync)


def insert(table: sa.Table, dialect: str) -> Any:
    """An INSERT with `on_conflict_do_nothing/do_update` (the same API on both)."""
    return postgresql.insert(table) if dialect == "postgresql" else sqlite.insert(table)


def skip_locked(select: sa.Select[Any], dialect: str, *of: sa.Table) -> sa.Select[Any]:
    """Lock the selected rows, skipping those another transaction holds. SQLite has no row
    locks: there `BEGIN IMMEDIATE` makes the whole claim one writer at a time."""
    if dialect == "postgresql":
        return select.with_for_update(skip_locked=True, of=list(of) or None)
    return select
