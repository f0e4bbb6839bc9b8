"""The store's cost: per-step write latency, step records/s, claims/s and whole 3-step
invocations/s, on SQLite (a WAL file) and PostgreSQL, with the in-memory store as the floor.

Run: `python -m benchmarks.store [--steps N] [--invocations N] [--workers N]`. PostgreSQL is the
server at $CHAINRUNNER_TEST_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres); a
database with a random name is made for the run and dropped after; without a server that
backend is reported as skipped. A step's life is two writes (`running`, then its result with a
`step.finished` event), each awaited, as the engine commits a result before dependents start.
"""

import argparse
import asyncio
import contextlib
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from chainlets.engine.models import RunState, StepRecord
from chainlets.store import MemoryStore, NewEvent, NewInvocation, State, Store, StoreSettings
from chainlets.store import open_store as open_sql_store
from chainlets.store.migrate import upgrade
from tests.postgres import ADMIN_URL, temporary_database

__all__ = ["Figures", "main", "measure", "render"]

CHAIN = {"handle": "bench", "steps": [{"handle": h, "plugin": "mock", "prompt": "x"}
                                      for h in ("a", "b", "c")]}
HANDLES = ["a", "b", "c"]
_NOW = datetime.now(UTC)
_DBOS_BEST = 106  # 3-step workflows/s, SQLite in WAL mode, measured on this machine


@dataclass
class Figures:
    backend: str
    write_p50_ms: float
    write_p99_ms: float
    steps_per_s: float  # step lives (2 writes each) with `workers` invocations at once
    claims_per_s: float  # one at a time
    batch_claims_per_s: float  # ten at a time
    invocations_per_s: float  # create + 3 steps + finish, `workers` at once
    double_claims: int


def _record(handle: str, state: RunState) -> StepRecord:
    done = state == RunState.SUCCEEDED
    return StepRecord(handle=handle, state=state, output=f"[mock] {handle}" if done else None,
                      started_at=_NOW, finished_at=_NOW if done else None)


def _finished(handle: str) -> list[NewEvent]:
    return [NewEvent(type="step.finished", step=handle, data={"state": "succeeded"})]


async def _write_latency(store: Store, chain_id: str, steps: int) -> list[float]:
    created = await store.create_invocation(NewInvocation(chain_id=chain_id,
                                                          callback_url="https://r.example"),
                                            owner="bench")
    assert created.lease is not None
    samples = []
    for n in range(steps):
        for state in (RunState.RUNNING, RunState.SUCCEEDED):
            started = time.perf_counter()
            await store.record_step(created.lease, _record(f"s{n}", state),
                                    events=_finished(f"s{n}") if state.finished else ())
            samples.append(time.perf_counter() - started)
    return samples


async def _invocation(store: Store, chain_id: str, owner: str) -> None:
    created = await store.create_invocation(
        NewInvocation(chain_id=chain_id, steps=HANDLES, callback_url="https://r.example"),
        owner=owner)
    lease = created.lease
    assert lease is not None
    for handle in HANDLES:
        await store.record_step(lease, _record(handle, RunState.RUNNING))
        await store.record_step(lease, _record(handle, RunState.SUCCEEDED),
                                events=_finished(handle))
    await store.update_invocation(lease, state=State.SUCCEEDED, output="[mock] c",
                                  events=[NewEvent(type="chain.finished")])


async def _rate(count: int, workers: int, work: Callable[[int], Awaitable[None]]) -> float:
    queue = iter(range(count))

    async def worker() -> None:
        for n in queue:
            await work(n)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    return count / (time.perf_counter() - started)


async def _claim_rate(store: Store, chain_id: str, count: int, workers: int,
                      batch: int) -> tuple[float, int]:
    for _ in range(count):
        await store.create_invocation(NewInvocation(chain_id=chain_id))
    claimed: Counter[str] = Counter()

    async def claimer(n: int) -> None:
        while leases := await store.claim(f"w{n}", limit=batch):
            claimed.update(lease.invocation_id for lease in leases)

    started = time.perf_counter()
    await asyncio.gather(*(claimer(n) for n in range(workers)))
    elapsed = time.perf_counter() - started
    return sum(claimed.values()) / elapsed, sum(c - 1 for c in claimed.values())


async def measure(store: Store, backend: str, *, steps: int, invocations: int,
                  workers: int) -> Figures:
    chain_id = (await store.create_chain(CHAIN)).chain_id
    await _invocation(store, chain_id, "warm-up")
    samples = await _write_latency(store, chain_id, steps)
    quantiles = statistics.quantiles(samples, n=100)

    async def step_life(n: int) -> None:
        await _write_latency(store, chain_id, 1)

    steps_per_s = await _rate(invocations, workers, step_life)
    invocations_per_s = await _rate(invocations, workers,
                                    lambda n: _invocation(store, chain_id, f"w{n}"))
    claims, doubled = await _claim_rate(store, chain_id, invocations, workers, 1)
    batch_claims, doubled_batch = await _claim_rate(store, chain_id, invocations, workers, 10)
    return Figures(backend, statistics.median(samples) * 1e3, quantiles[98] * 1e3, steps_per_s,
                   claims, batch_claims, invocations_per_s, doubled + doubled_batch)


# (label, backend, CHAINRUNNER_DB_SYNC): the default of each database, and the other mode.
BACKENDS = [("memory", "memory", None), ("sqlite", "sqlite", None),
            ("sqlite sync=full", "sqlite", "full"), ("postgresql", "postgresql", None),
            ("postgresql sync=normal", "postgresql", "normal")]


@contextlib.asynccontextmanager
async def _backend(name: str, folder: Path, sync: str | None) -> AsyncIterator[Store | None]:
    if name == "memory":
        yield MemoryStore()
        return
    if name == "sqlite":
        url = f"sqlite:///{folder / f'bench-{sync}.db'}"
        store = await open_sql_store(StoreSettings(url=url, sync=sync))
        try:
            yield store
        finally:
            await store.close()
        return
    with temporary_database("chainrunner_bench") as pg_url:
        if pg_url is None:
            yield None
            return
        upgrade(pg_url)
        store = await open_sql_store(StoreSettings(url=pg_url, sync=sync), migrate=False)
        try:
            yield store
        finally:
            await store.close()


def render(rows: Sequence[Figures], workers: int) -> str:
    floor = rows[0]
    lines = [f"| backend | write p50 | write p99 | step lives/s ({workers} at once) | "
             "claims/s (1) | claims/s (10) | 3-step invocations/s | double claims |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.backend} | {r.write_p50_ms:.2f} ms | {r.write_p99_ms:.2f} ms | "
                     f"{r.steps_per_s:,.0f} | {r.claims_per_s:,.0f} | "
                     f"{r.batch_claims_per_s:,.0f} | {r.invocations_per_s:,.0f} | "
                     f"{r.double_claims} |")
    for r in rows[1:]:
        lines.append(f"{r.backend}: a step's two writes add {2 * r.write_p50_ms:.2f} ms (p50) "
                     f"on the critical path; the store alone carries "
                     f"{r.invocations_per_s:,.0f} 3-step invocations/s "
                     f"({r.invocations_per_s / floor.invocations_per_s:.3f}x memory; "
                     f"{r.invocations_per_s / _DBOS_BEST:.1f}x DBOS Transact's whole run here, "
                     f"{_DBOS_BEST}/s, research/durability.md)")
    return "\n".join(lines)


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--steps", type=int, default=500, help="sequential step lives timed")
    parser.add_argument("--invocations", type=int, default=400)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for label, name, sync in BACKENDS:
            async with _backend(name, Path(folder), sync) as store:
                if store is None:
                    print(f"{label}: skipped, no server at {ADMIN_URL}", file=sys.stderr)
                    continue
                rows.append(await measure(store, label, steps=args.steps,
                                          invocations=args.invocations, workers=args.workers))
    print(render(rows, args.workers))
    return 1 if any(r.double_claims for r in rows) else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
