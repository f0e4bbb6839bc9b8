"""What invocations parked at a real human-approval step cost: each is started with `run_chain`
through the service in this process (the engine runs its first step, renders the approval's
prompt, the approval opens with its token, and the worker suspends the invocation), then this
process's memory (RSS, tracemalloc) and the database's rows are measured, and what the
process still holds for them: asyncio tasks, leases, parked approvals.

Run through `python -m benchmarks.durability` (its `--waiting N`).
"""

import asyncio
import gc
import os
import time
import tracemalloc
from dataclasses import dataclass, field

import psutil
import sqlalchemy as sa

from benchmarks.runner_process import LoggingGenerator, executor
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import ChainCreated, InvocationRef
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.webhooks import generate_secret
from chainlets.service.worker import WorkerSettings
from chainlets.store import State, StoreSettings
from chainlets.store.tables import invocations

__all__ = ["APPROVAL_CHAIN", "Parked", "park"]

APPROVAL_CHAIN = {"handle": "bench-approval", "inputs": [{"name": "n"}], "steps": [
    {"handle": "a", "plugin": "mock", "prompt": "Pitch {n}"},
    {"handle": "approve", "plugin": "human-approval", "prompt": "Greenlight {a}?",
     "plugin_config": {"timeout_s": 86_400, "choices": ["greenlight", "pass"]}},
    {"handle": "c", "plugin": "mock", "prompt": "Go on with {approve}"}]}
TABLES = ("invocations", "steps", "events")


@dataclass
class Parked:
    """Measured with `count` invocations parked (after `warmup` more, parked before tracing)."""

    count: int
    warmup: int
    seconds: float  # to start and park them all
    rss_before_mib: float
    rss_after_mib: float
    traced_bytes: int  # Python memory still allocated, of what was allocated while parking
    tasks_before: int  # asyncio tasks of the process
    tasks_after: int
    run_tasks: int  # of those after, tasks of an invocation's run or of a step (named so)
    running: int  # invocations the worker runs (a task each)
    parked_gates: int  # approval gates the worker keeps (one per running invocation)
    leases: int  # invocation rows with a lease owner
    waiting: int  # invocation rows `waiting`
    rows: dict[str, int] = field(default_factory=dict)
    bytes: dict[str, int] = field(default_factory=dict)  # PostgreSQL only: with indexes

    @property
    def traced_per_invocation(self) -> float:
        return self.traced_bytes / self.count


def _rss_mib() -> float:
    return float(psutil.Process(os.getpid()).memory_info().rss) / 2**20


def _runtime(store_url: str, fake: LoggingGenerator) -> Runtime:
    config = ServiceConfig(store=StoreSettings(url=store_url), limits=ServiceLimits(),
                           delivery=DeliveryPolicy(), webhook_secret=None,
                           task_token_secret=generate_secret(),
                           worker=WorkerSettings(poll_s=0.5, write_delay_s=0.01))
    return Runtime(config, executor(fake), DEFAULT_PLUGINS)


def _tally(url: str, postgres: bool) -> tuple[dict[str, int], dict[str, int], int, int]:
    """Rows (and PostgreSQL bytes) per table, leased rows, waiting rows."""
    engine = sa.create_engine(url)
    rows, sizes = {}, {}
    try:
        with engine.connect() as conn:
            for name in TABLES:
                rows[name] = int(conn.execute(sa.text(f"SELECT count(*) FROM {name}")).scalar_one())
                if postgres:
                    sizes[name] = int(conn.execute(sa.text(
                        f"SELECT pg_total_relation_size('{name}')")).scalar_one())
            leases = int(conn.execute(sa.select(sa.func.count()).select_from(invocations).where(
                invocations.c.lease_owner.is_not(None))).scalar_one())
            waiting = int(conn.execute(sa.select(sa.func.count()).select_from(invocations).where(
                invocations.c.state == State.WAITING.value)).scalar_one())
    finally:
        engine.dispose()
    return rows, sizes, leases, waiting


async def park(url: str, count: int, *, postgres: bool, warmup: int = 20,
               concurrency: int = 32) -> Parked:
    """Start `warmup` + `count` invocations of APPROVAL_CHAIN on a fresh migrated database at
    `url` and measure once every one is parked at its approval step."""
    runtime = _runtime(url, LoggingGenerator(-1, 0.0))  # keeps nothing of its calls
    try:
        await runtime.ensure_started()
        created = await runtime.handle({"op": "create_chain", "chain": APPROVAL_CHAIN})
        assert isinstance(created, ChainCreated)
        worker = runtime.worker
        assert worker is not None
        slots = asyncio.Semaphore(concurrency)
        options = {"deadline_s": 86_400}

        async def start(n: int) -> None:
            async with slots:
                ref = await runtime.handle({"op": "run_chain", "chain_id": created.chain_id,
                                            "inputs": {"n": str(n)}, "options": options})
                assert isinstance(ref, InvocationRef)
                task = worker.running.get(ref.invocation_id)
                if task is not None:  # runs until its approval opens and it is suspended
                    await task

        await asyncio.gather(*(start(-n) for n in range(1, warmup + 1)))
        await asyncio.sleep(0.2)  # as after them: the runs' last callbacks are done
        gc.collect()
        tasks_before, rss_before = len(asyncio.all_tasks()), _rss_mib()
        tracemalloc.start()
        began = time.perf_counter()
        await asyncio.gather(*(start(n) for n in range(count)))
        seconds = time.perf_counter() - began
        await asyncio.sleep(0.2)  # this benchmark's own tasks (of gather) are let go too
        gc.collect()
        traced = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        rss_after, tasks = _rss_mib(), asyncio.all_tasks()
        run_tasks = sum(1 for t in tasks if t.get_name().startswith(("invocation:", "step:")))
        rows, sizes, leases, waiting = await asyncio.to_thread(_tally, url, postgres)
        return Parked(count=count, warmup=warmup, seconds=seconds, rss_before_mib=rss_before,
                      rss_after_mib=rss_after, traced_bytes=traced, tasks_before=tasks_before,
                      tasks_after=len(tasks), run_tasks=run_tasks,
                      running=len(worker.running),
                      parked_gates=len(worker.approvals), leases=leases, waiting=waiting,
                      rows=rows, bytes=sizes)
    finally:
        await runtime.close()
