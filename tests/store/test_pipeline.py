"""Staged writes (chainlets.store.pipeline) in a group commit: on PostgreSQL their statements go
out in one pipeline, and the outcomes are those of the writes run one by one — results in
order, a lost write failing only its caller (raised as SQLAlchemy's error), nothing of a failed
batch committed twice; on SQLite they simply run one by one."""

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chainlets.store.dialect import create_sync_engine, database_url
from chainlets.store.group_commit import ThreadGroupCommit
from chainlets.store.pipeline import Staged, stages
from chainlets.store.prepared import Prepared, first_of

metadata = sa.MetaData()
items = sa.Table("pipeline_items", metadata,
                 sa.Column("id", sa.String(16), primary_key=True),
                 sa.Column("n", sa.Integer, nullable=False))
INSERT = Prepared(sa.insert(items).returning(items.c.id, items.c.n))
BUMP = Prepared(sa.update(items).where(items.c.id == sa.bindparam("b_id")).values(
    n=items.c.n + 1).returning(items.c.n))


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path / 'pipeline.db'}" if request.param == "sqlite" \
        else request.getfixturevalue("postgres_url")
    engine = create_sync_engine(database_url(url))
    metadata.create_all(engine)
    yield engine
    metadata.drop_all(engine)
    engine.dispose()


def _insert(key: str, n: int) -> Staged[dict[str, Any] | None]:
    return Staged(lambda conn: [INSERT.run(conn, {"id": key, "n": n})],
                  lambda _conn, sent: first_of(sent[0]))


def _bump(key: str) -> Staged[int]:
    def then(_conn: sa.Connection, sent: list[Any]) -> int:
        row = first_of(sent[0])
        if row is None:
            raise LookupError(f"no row {key}")
        return int(row["n"])
    return Staged(lambda conn: [BUMP.run(conn, {"b_id": key})], then)


def _keys(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as connection:
        return {k: n for k, n in connection.execute(sa.select(items.c.id, items.c.n))}


class _Held:
    """The writer thread, held until the test has queued its writes (one batch)."""

    def __init__(self) -> None:
        self.drains: list[Callable[[], None]] = []

    def __call__(self, drain: Callable[[], None]) -> None:
        self.drains.append(drain)

    async def run(self) -> None:
        with ThreadPoolExecutor(1) as pool:
            for drain in self.drains:
                await asyncio.get_running_loop().run_in_executor(pool, drain)


def _group(engine: sa.Engine, batches: list[bool], thread: _Held) -> ThreadGroupCommit:
    def transaction(work: Callable[[sa.Connection], None]) -> None:
        with engine.begin() as connection:
            batches.append(stages(connection))
            work(connection)
    return ThreadGroupCommit(transaction, thread)


async def test_staged_writes_of_one_batch_answer_in_order(engine: sa.Engine) -> None:
    batches: list[bool] = []
    thread = _Held()
    group = _group(engine, batches, thread)
    futures: list[asyncio.Future[Any]] = [
        group.submit(_insert("a", 1)), group.submit(_insert("b", 10)),
        group.submit(_bump("a")),  # sees the insert sent before it in the same pipeline
        group.submit(lambda conn: conn.execute(sa.select(sa.func.count()).select_from(
            items)).scalar_one()),  # a plain write between staged ones
        group.submit(_bump("b")), group.submit(_bump("a"))]
    await thread.run()
    assert [await f for f in futures] == [{"id": "a", "n": 1}, {"id": "b", "n": 10}, 2, 2, 11, 3]
    assert len(batches) == 1 and _keys(engine) == {"a": 3, "b": 11}


async def test_a_failing_staged_write_fails_only_its_caller(engine: sa.Engine) -> None:
    batches: list[bool] = []
    thread = _Held()
    group = _group(engine, batches, thread)
    first = group.submit(_insert("a", 1))
    duplicate = group.submit(_insert("a", 2))  # the key is taken: the pipeline aborts
    missing = group.submit(_bump("zz"))  # no row: its `then` raises
    last = group.submit(_bump("a"))
    await thread.run()
    assert await first == {"id": "a", "n": 1} and await last == 2
    with pytest.raises(sa.exc.IntegrityError):
        await duplicate
    with pytest.raises(LookupError, match="no row zz"):
        await missing
    assert _keys(engine) == {"a": 2}  # each committed once, alone, after the batch failed
    assert len(batches) == 5  # the batch, then each of the four again alone
