"""Group commit (chainlets.store.group_commit): writes queued together commit together, and a
failing write fails only its own caller."""

import asyncio
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa

from chainlets.store.group_commit import ThreadGroupCommit

metadata = sa.MetaData()
rows = sa.Table("rows", metadata, sa.Column("key", sa.String, primary_key=True))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[sa.Engine]:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'group.db'}")
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def _insert(key: str) -> Callable[[sa.Connection], str]:
    def work(connection: sa.Connection) -> str:
        connection.execute(sa.insert(rows).values(key=key))
        return key
    return work


class _Thread:
    """The writer thread, held: drains handed to it run when the test says."""

    def __init__(self) -> None:
        self.drains: list[Callable[[], None]] = []

    def __call__(self, drain: Callable[[], None]) -> None:
        self.drains.append(drain)

    async def run(self) -> None:
        drains, self.drains = self.drains, []
        for drain in drains:
            await asyncio.to_thread(drain)


def _keys(engine: sa.Engine) -> list[str]:
    with engine.connect() as connection:
        return sorted(connection.execute(sa.select(rows.c.key)).scalars())


async def test_writes_queued_together_commit_in_one_transaction(engine: sa.Engine) -> None:
    transactions: list[int] = []

    def transaction(work: Callable[[sa.Connection], None]) -> None:
        transactions.append(1)
        with engine.begin() as connection:
            work(connection)

    thread = _Thread()
    group = ThreadGroupCommit(transaction, thread)
    futures = [group.submit(_insert(key)) for key in ("a", "b", "c")]
    assert len(thread.drains) == 1  # one drain queued for the three, not one each
    await thread.run()
    assert [await f for f in futures] == ["a", "b", "c"]
    assert len(transactions) == 1 and _keys(engine) == ["a", "b", "c"]
    # Once drained, the next write queues a drain again.
    later = group.submit(_insert("d"))
    assert len(thread.drains) == 1
    await thread.run()
    assert await later == "d" and len(transactions) == 2


async def test_a_failing_write_fails_only_its_caller(engine: sa.Engine) -> None:
    def transaction(work: Callable[[sa.Connection], None]) -> None:
        with engine.begin() as connection:
            work(connection)

    thread = _Thread()
    group = ThreadGroupCommit(transaction, thread)
    first = group.submit(_insert("a"))
    duplicate = group.submit(_insert("a"))  # the primary key is taken by the first
    last = group.submit(_insert("b"))
    await thread.run()
    assert await first == "a" and await last == "b"
    with pytest.raises(sa.exc.IntegrityError):
        await duplicate
    assert _keys(engine) == ["a", "b"]


async def test_each_caller_is_answered_after_its_commit_on_a_real_thread(
        engine: sa.Engine) -> None:
    committed: list[list[str]] = []

    def transaction(work: Callable[[sa.Connection], None]) -> None:
        with engine.begin() as connection:
            work(connection)
        committed.append(_keys(engine))

    with ThreadPoolExecutor(1) as thread:
        group = ThreadGroupCommit(transaction, thread.submit)
        results = await asyncio.gather(*(group.submit(_insert(k)) for k in ("a", "a", "b")),
                                       return_exceptions=True)
    assert results[0] == "a" and results[2] == "b"
    assert isinstance(results[1], sa.exc.IntegrityError)
    assert _keys(engine) == ["a", "b"] and committed[-1] == ["a", "b"]


async def test_two_drains_take_the_writes_queued_while_the_other_commits(
        engine: sa.Engine) -> None:
    thread = _Thread()
    group = ThreadGroupCommit(lambda work: _in_transaction(engine, work), thread, drains=2)
    first = group.submit(_insert("a"))
    second = group.submit(_insert("b"))
    third = group.submit(_insert("c"))
    assert len(thread.drains) == 2  # at most two at once; the third write waits for one
    await thread.run()
    assert [await f for f in (first, second, third)] == ["a", "b", "c"]
    later = group.submit(_insert("d"))  # both drains ended: a new one starts
    assert len(thread.drains) == 1
    await thread.run()
    assert await later == "d" and _keys(engine) == ["a", "b", "c", "d"]


def _in_transaction(engine: sa.Engine, work: Callable[[sa.Connection], None]) -> None:
    with engine.begin() as connection:
        work(connection)
