"""An invocation parked at a human-approval step holds nothing in the process while it waits:
no asyncio task, no approval gate, no lease (released in the store, so nothing renews it and
no replica claims it before an answer or a deadline); an answer takes it up again. On the
in-memory store, a SQLite file and PostgreSQL."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from benchmarks.runner_process import executor
from chainlets.engine.models import RunState
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.runtime import Runtime
from chainlets.store import MemoryStore, Store, StoreSettings, open_store
from chainlets.store.migrate import upgrade
from chainlets.store.tables import invocations
from mocks.fake_generator import FakeGenerator
from tests.postgres import fresh_database
from tests.service.test_approval import CHAIN, waiting
from tests.service.test_operations import FAST, SECRET, Harness, Receiver
from tests.service.test_tokens import _config


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'parked.db'}"
    else:
        databases = fresh_database("chainrunner_parked")
        yield next(databases)
        for _ in databases:  # drops it
            pass


@pytest.fixture
async def harness(database: str) -> AsyncIterator[Harness]:
    store: Store
    if database == "memory":
        store = MemoryStore(lease_s=0.3)
    else:
        await asyncio.to_thread(upgrade, database)
        store = await open_store(StoreSettings(url=database, lease_s=0.3), migrate=False)
    receiver, fake = Receiver(), FakeGenerator(default=lambda r: f"<{r.step}>")
    runtime = Runtime(_config(None, token_secret=SECRET), executor(fake), DEFAULT_PLUGINS,
                      store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
    yield Harness(runtime, store, fake, receiver, None)  # type: ignore[arg-type]  # no gate
    await runtime.close()


def _lease_columns(harness: Harness, database: str, invocation_id: str) -> tuple[Any, Any]:
    if database == "memory":
        assert isinstance(harness.store, MemoryStore)
        row = harness.store._invocations[invocation_id]
        return row["lease_owner"], row["lease_expires_at"]
    engine = sa.create_engine(database)
    try:
        with engine.connect() as conn:
            owner, expires = conn.execute(sa.select(
                invocations.c.lease_owner, invocations.c.lease_expires_at).where(
                invocations.c.id == invocation_id)).one()
    finally:
        engine.dispose()
    return owner, expires


async def test_a_parked_invocation_holds_no_task_gate_or_lease(harness: Harness,
                                                               database: str) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    [pending] = (await waiting(harness, ref.invocation_id)).approvals
    worker = harness.runtime.worker
    assert worker is not None
    for _ in range(100):  # the run's task ends just after the state is written
        if ref.invocation_id not in worker.running:
            break
        await asyncio.sleep(0.01)
    names = {task.get_name() for task in asyncio.all_tasks()}
    assert f"invocation:{ref.invocation_id}" not in names
    assert ref.invocation_id not in worker.running and ref.invocation_id not in worker.approvals
    assert await asyncio.to_thread(_lease_columns, harness, database, ref.invocation_id) == (
        None, None)  # released: nothing renews it
    await asyncio.sleep(0.5)  # past a lease's length (0.3 s): still nobody claims it
    assert await harness.store.claim("another-replica") == []
    await harness.op("resume", task_token=pending.task_token, output="greenlight")
    final = await harness.final(ref.invocation_id)
    assert final.state == RunState.SUCCEEDED and final.step("approve").output == "greenlight"
