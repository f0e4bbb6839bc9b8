"""The service's sustained rate: 3-step invocations/s from `run_chain` to their final state,
in process, on a generator answering at once (the mock at 0 ms), on SQLite and PostgreSQL,
with the in-memory store as the floor.

Run: `python -m benchmarks.service [--invocations N] [--concurrency N]`. PostgreSQL is the server
at $CHAINRUNNER_TEST_POSTGRES (a database made for the run and dropped after; skipped without
one). Not measured yet (see the service README section): the DBOS anchor in the same run, the
soundtrack durability ratio, and serve's run_chain latency / 1,000-invocation submission.
"""

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.store import _backend
from chainlets.engine.approval import ApprovalGate
from chainlets.engine.models import InvocationResult, RunOptions
from chainlets.engine.scheduler import StepCommit, StepObserver, run_chain
from chainlets.language.compiler import CompiledChain
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.responses import ChainCreated, InvocationRef
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.worker import WorkerSettings
from chainlets.store import Store, StoreSettings
from mocks.fake_generator import FakeGenerator

__all__ = ["main", "measure"]

CHAIN = {"handle": "bench", "steps": [
    {"handle": "a", "plugin": "mock", "prompt": "x"},
    {"handle": "b", "plugin": "mock", "prompt": "{a}"},
    {"handle": "c", "plugin": "mock", "prompt": "{b}"}]}
_DBOS_RANGE = "64-106"  # 3-step workflows/s measured on this machine (issue 9)


async def measure(store: Store, invocations: int, concurrency: int) -> float:
    """Invocations/s: `invocations` submitted `concurrency` at a time, each timed to its end."""
    fake = FakeGenerator()

    async def execute(chain: CompiledChain, inputs: dict[str, str], options: RunOptions, *,
                      observer: StepObserver, commit: StepCommit,
                      previous: InvocationResult | None,
                      approvals: ApprovalGate | None = None) -> InvocationResult:
        return await run_chain(chain, inputs, {"mock": fake}, options, observer=observer,
                               commit=commit, previous=previous, approvals=approvals)

    config = ServiceConfig(store=StoreSettings(), limits=ServiceLimits(),
                           delivery=DeliveryPolicy(), webhook_secret=None,
                           worker=WorkerSettings(poll_s=60))
    runtime = Runtime(config, execute, DEFAULT_PLUGINS, store=store)
    operations = await runtime.ensure_started()
    created = await runtime.handle({"op": "create_chain", "chain": CHAIN})
    assert isinstance(created, ChainCreated)
    chain_id = created.chain_id
    assert runtime.worker is not None
    worker = runtime.worker
    slots = asyncio.Semaphore(concurrency)
    done = 0

    async def one() -> None:
        nonlocal done
        async with slots:
            ref = await runtime.handle({"op": "run_chain", "chain_id": chain_id})
            assert isinstance(ref, InvocationRef)
            task = worker.running.get(ref.invocation_id)
            if task is not None:
                await task
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(invocations)))
    elapsed = time.perf_counter() - started
    assert operations is not None and done == invocations
    await runtime.worker.close()
    return invocations / elapsed


async def run(invocations: int, concurrency: int) -> list[tuple[str, float | None]]:
    rows: list[tuple[str, float | None]] = []
    with tempfile.TemporaryDirectory() as folder:
        for name in ("memory", "sqlite", "postgresql"):
            async with _backend(name, Path(folder), None) as store:
                rows.append((name, None if store is None
                             else await measure(store, invocations, concurrency)))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.invocations, args.concurrency))
    print(f"| backend | 3-step invocations/s ({args.concurrency} at once) |")
    print("|---|---|")
    for name, rate in rows:
        print(f"| {name} | {'skipped (no server)' if rate is None else f'{rate:,.0f}'} |")
    print(f"DBOS anchor: not run in this version; issue 9 measured DBOS at {_DBOS_RANGE}/s here")
    return 0


if __name__ == "__main__":
    sys.exit(main())
