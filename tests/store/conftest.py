"""The store's test backends: in memory, a SQLite file, and a PostgreSQL database made for
this test session (skipped, with the reason shown, where no server answers)."""

import itertools
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest

from chainlets.store import MemoryStore, Store, StoreSettings, open_store
from chainlets.store.migrate import upgrade
from chainlets.store.settings import Limits
from chainlets.store.tables import metadata
from tests.postgres import fresh_database

LIMITS = Limits(max_input_bytes=2_000, max_step_output_bytes=1_000, max_chain_bytes=4_000)
LEASE_S = 10.0


class FakeClock:
    """The store's clock seam: time moves only when a test says so."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class CountingIds:
    """The id seam: `inv_000001`, `evt_000002`, … in creation order."""

    def __init__(self) -> None:
        self._next = itertools.count(1)

    def __call__(self, prefix: str) -> str:
        return f"{prefix}_{next(self._next):06d}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database with a random name on the test server, migrated, dropped at the end."""
    for url in fresh_database("chainrunner_test"):
        upgrade(url)
        yield url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file that each test copies (migrating once per session)."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


def _truncate(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        tables = ", ".join(t.name for t in metadata.sorted_tables)
        conn.execute(f"TRUNCATE {tables}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL for the backend (`memory` for none), empty and migrated."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        path = tmp_path / "store.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    url: str = request.getfixturevalue("postgres_url")
    _truncate(url)
    return url


async def make_store(backend: str, clock: FakeClock, *, lease_s: float = LEASE_S) -> Store:
    if backend == "memory":
        return MemoryStore(limits=LIMITS, lease_s=lease_s, clock=clock, ids=CountingIds())
    return await open_store(StoreSettings(url=backend, limits=LIMITS, lease_s=lease_s),
                            migrate=False, clock=clock, ids=CountingIds())


@pytest.fixture
async def store(backend: str, clock: FakeClock) -> AsyncIterator[Store]:
    opened = await make_store(backend, clock)
    try:
        yield opened
    finally:
        await opened.close()
