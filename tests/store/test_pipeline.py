"""Staged writes (chainlets.store.pipeline) in a group commit: on PostgreSQL their statements go
out in one pipeline, and the outcomes are those of the writes run one by one — results in
order, a lost write failing only its caller (raised as SQLAlchemy's error), nothing of a failed
batch committed twice; on SQLite they simply run one by one."""

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from chainlets.engine.models import RunState, StepRecord
from chainlets.errors import LeaseLostError
from chainlets.store import Lease, NewInvocation, StoreSettings, open_store
from chainlets.store.dialect import create_sync_engine, database_url
from chainlets.store.group_commit import ThreadGroupCommit
from chainlets.store.pipeline import Merged, Staged, _groups, run_staged, stages
from chainlets.store.prepared import Prepared, first_of
from chainlets.store.rules import step_columns
from chainlets.store.sql import SqlStore
from chainlets.store.tables import steps

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


async def test_a_batch_of_step_writes_is_one_statement_answering_each_as_alone(
        postgres_url: str) -> None:
    """PostgreSQL: step writes with no events share one statement (sql_merged); each still
    gets its own answer: its row written, a step added at run time placed after the others,
    None stored as SQL NULL; a write whose lease was lost fails and the batch commits
    nothing."""
    store = await open_store(StoreSettings(url=postgres_url), migrate=False)
    assert isinstance(store, SqlStore)
    try:
        chain = await store.create_chain({"handle": "merged", "steps": [
            {"handle": h, "plugin": "mock", "prompt": "x"} for h in ("a", "b")]})
        leases = []
        for _ in range(3):
            created = await store.create_invocation(
                NewInvocation(chain_id=chain.chain_id, steps=["a", "b"]), owner="me")
            assert created.lease is not None
            leases.append(created.lease)
        now = time.time()
        done = datetime.now(UTC)

        def write(lease: Lease, handle: str, output: str) -> Any:
            record = StepRecord(handle=handle, state=RunState.SUCCEEDED, output=output,
                                started_at=done, finished_at=done)
            return store._fenced_steps(lease, (), now, [(handle, step_columns(record, None,
                                                                               now))])

        writes = [write(leases[0], "a", "A0"), write(leases[1], "b", "B1"),
                  write(leases[2], "added", "X2")]  # no row yet: added at run time
        assert all(isinstance(w, Merged) for w in writes) and len(_groups(writes)) == 1
        engine = sa.create_engine(database_url(postgres_url))
        try:
            with engine.begin() as conn:
                answers = run_staged(conn, writes)
            assert [a["id"] for a in answers] == [lease.invocation_id for lease in leases]
            lost = leases[1].model_copy(update={"attempt": leases[1].attempt + 1})
            with pytest.raises(LeaseLostError), engine.begin() as conn:
                run_staged(conn, [write(leases[0], "b", "late"), write(lost, "a", "lost")])
            with engine.connect() as conn:
                got = conn.execute(sa.select(
                    steps.c.invocation_id, steps.c.handle, steps.c.position, steps.c.state,
                    steps.c.output, steps.c.usage.is_(None)).where(steps.c.invocation_id.in_(
                        [lease.invocation_id for lease in leases])).order_by(
                    steps.c.invocation_id, steps.c.position)).all()
        finally:
            engine.dispose()
        ids = [lease.invocation_id for lease in leases]
        assert [tuple(r) for r in got] == sorted([
            (ids[0], "a", 0, "succeeded", "A0", True), (ids[0], "b", 1, "waiting", None, True),
            (ids[1], "a", 0, "waiting", None, True), (ids[1], "b", 1, "succeeded", "B1", True),
            (ids[2], "a", 0, "waiting", None, True), (ids[2], "b", 1, "waiting", None, True),
            (ids[2], "added", 2, "succeeded", "X2", True)], key=lambda r: (r[0], r[2]))
    finally:
        await store.close()
