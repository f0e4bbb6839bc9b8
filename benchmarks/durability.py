"""Durability figures: takeover time after a replica is SIGKILLed, sustained invocations/s with
two worker replicas against one on PostgreSQL, and what 10,000 invocations waiting for approval
cost (database rows and bytes, a runner's memory).

Run: `python -m benchmarks.durability [--takeovers 5] [--invocations 2000] [--waiting 10000]`.
Replicas are `benchmarks/runner_process.py` processes (the service's worker, claiming what no
live lease holds) on one database: PostgreSQL at $CHAINRUNNER_TEST_POSTGRES (a database per
measurement, dropped after), or, without a server, a SQLite file (takeover and waiting only).
Waiting invocations are real: each started by run_chain in this process and parked at a
human-approval step (benchmarks/waiting.py).
"""

import argparse
import asyncio
import contextlib
import functools
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import psutil
import psycopg
import sqlalchemy as sa

from benchmarks.waiting import TABLES, park
from chainlets.store import NewInvocation, State, StoreSettings, open_store
from chainlets.store.migrate import upgrade
from chainlets.store.tables import metadata
from tests.postgres import ADMIN_URL, temporary_database

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]
CHAIN = {"handle": "bench", "steps": [  # the service benchmark's 3-step mock chain
    {"handle": "a", "plugin": "mock", "prompt": "x {n}"},
    {"handle": "b", "plugin": "mock", "prompt": "{a}"},
    {"handle": "c", "plugin": "mock", "prompt": "{b}"}]}
STEPS = ["a", "b", "c"]
SERVICE_SINGLE_REPLICA = 416  # PostgreSQL invocations/s, run_chain in one process (README)


@contextlib.contextmanager
def database(folder: Path, postgres: bool) -> Iterator[str]:
    """A fresh migrated database: PostgreSQL (dropped after) or a SQLite file in `folder`."""
    if not postgres:
        url = f"sqlite:///{folder / f'{secrets.token_hex(4)}.db'}"
        upgrade(url)
        yield url
        return
    with temporary_database("chainrunner_durability") as pg_url:
        if pg_url is None:
            raise RuntimeError(f"no PostgreSQL server answers at {ADMIN_URL}")
        upgrade(pg_url)
        yield pg_url


def postgres_available() -> bool:
    try:
        psycopg.connect(ADMIN_URL, connect_timeout=3).close()
    except psycopg.OperationalError:
        return False
    return True


class Replica:
    """A runner process on `url`, started by this benchmark and killed by its pid."""

    def __init__(self, url: str, log: Path | None, *, lease_s: float, latency_s: float,
                 poll_s: float) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runner_process", url, str(log or "-"),
             str(lease_s), str(latency_s), str(poll_s)], cwd=REPO, text=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != "ready":
            self.kill()
            raise RuntimeError("a runner process did not start")

    def rss_mib(self) -> float:
        return psutil.Process(self.process.pid).memory_info().rss / 2**20

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        if self.process.stdout is not None:
            self.process.stdout.close()


async def _until(what: str, check: Callable[[], Awaitable[bool]], timeout_s: float = 120,
                 every_s: float = 0.005) -> None:
    """Return once `check()` is true; TimeoutError naming `what` after `timeout_s`."""
    for _ in range(int(timeout_s / every_s)):
        if await check():
            return
        await asyncio.sleep(every_s)
    raise TimeoutError(f"{what}: not within {timeout_s:g} s")


def _lease_expiry(url: str, invocation_id: str) -> float:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = metadata.tables["invocations"]
            return float(conn.execute(sa.select(table.c.lease_expires_at).where(
                table.c.id == invocation_id)).scalar_one())
    finally:
        engine.dispose()


def _starts(log: Path, prompt: str) -> list[float]:
    return [float(line.split(" ", 3)[1]) for line in log.read_text().splitlines()
            if line.split(" ", 3)[3] == prompt]


async def takeover(url: str, folder: Path, trials: int, lease_s: float,
                   poll_s: float) -> list[tuple[float, float]]:
    """(lease expiry → first step resumed, SIGKILL → first step resumed) per trial, seconds:
    replica A runs a step that takes long, B is running when A is killed, B resumes it."""
    store = await open_store(StoreSettings(url=url, lease_s=lease_s))
    log = folder / "takeover.log"
    log.touch()
    results = []
    try:
        chain_id = (await store.create_chain(CHAIN)).chain_id
        for trial in range(trials):
            new = NewInvocation(chain_id=chain_id, input={"n": f"takeover-{trial}"}, steps=STEPS)
            invocation_id = (await store.create_invocation(new)).invocation.invocation_id
            first = Replica(url, log, lease_s=lease_s, latency_s=60, poll_s=poll_s)
            prompt = f"x takeover-{trial}"
            await _until("the first replica's call", functools.partial(_called, log, prompt, 1))
            second = Replica(url, log, lease_s=lease_s, latency_s=0, poll_s=poll_s)
            try:
                await asyncio.sleep(lease_s)  # A has renewed its lease at least once
                first.kill()
                killed = time.time()
                expiry = await asyncio.to_thread(_lease_expiry, url, invocation_id)
                await _until("the takeover", functools.partial(_called, log, prompt, 2))
                resumed = _starts(log, prompt)[1]
                results.append((resumed - expiry, resumed - killed))
            finally:
                first.kill()
                second.kill()
    finally:
        await store.close()
    return results


async def _called(log: Path, prompt: str, times: int) -> bool:
    return len(_starts(log, prompt)) >= times


def _count(url: str, state: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            table = metadata.tables["invocations"]
            return int(conn.execute(sa.select(sa.func.count()).select_from(table).where(
                table.c.state == state)).scalar_one())
    finally:
        engine.dispose()


async def throughput(url: str, replicas: int, invocations: int) -> tuple[float, float]:
    """(submitted/s, completed/s): `invocations` 3-step invocations stored unleased, 16 at a
    time, while `replicas` runner processes claim and run them; timed to the last one's end."""
    store = await open_store(StoreSettings(url=url))
    running = [Replica(url, None, lease_s=10, latency_s=0, poll_s=0.05)
               for _ in range(replicas)]
    try:
        chain_id = (await store.create_chain(CHAIN)).chain_id
        numbers = iter(range(invocations))
        started = time.perf_counter()

        async def submit() -> None:
            for n in numbers:
                await store.create_invocation(NewInvocation(
                    chain_id=chain_id, input={"n": str(n)}, steps=STEPS))

        await asyncio.gather(*(submit() for _ in range(16)))
        submitted = time.perf_counter() - started

        async def finished() -> bool:
            return await asyncio.to_thread(_count, url, State.SUCCEEDED.value) == invocations

        await _until("every invocation's end", finished, timeout_s=600, every_s=0.05)
        completed = time.perf_counter() - started
    finally:
        for replica in running:
            replica.kill()
        await store.close()
    return invocations / submitted, invocations / completed


async def run(args: argparse.Namespace) -> None:
    postgres = postgres_available()
    where = "PostgreSQL" if postgres else "SQLite (no PostgreSQL server answered)"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        if not args.waiting_only:
            with database(folder, postgres) as url:
                trials = await takeover(url, folder, args.takeovers, args.lease_s, args.poll_s)
            expiry = statistics.median(t[0] for t in trials)
            kill = statistics.median(t[1] for t in trials)
            print(f"## Takeover on {where} (CHAINRUNNER_LEASE_S={args.lease_s:g}, "
                  f"CHAINRUNNER_WORKER_POLL_S={args.poll_s:g}), median of {len(trials)}")
            print(f"lease expiry → first step resumed: {expiry:.2f} s; SIGKILL → first step "
                  f"resumed: {kill:.2f} s (each: {', '.join(f'{t[0]:.2f}' for t in trials)})")
            if postgres:
                print(f"\n## Sustained 3-step invocations/s on PostgreSQL ({args.invocations}, "
                      "stored unleased, claimed by the replicas)")
                print("| replicas | submitted/s | completed/s |\n|---|---|---|")
                for replicas in (1, 2):
                    with database(folder, postgres) as url:
                        submitted, completed = await throughput(url, replicas, args.invocations)
                    print(f"| {replicas} | {submitted:,.0f} | {completed:,.0f} |")
                print("(service benchmark, one process, run_chain path: "
                      f"{SERVICE_SINGLE_REPLICA}/s)")
            else:
                print("\nSustained invocations/s with replicas: skipped, needs PostgreSQL")
        with database(folder, postgres) as url:
            parked = await park(url, args.waiting, postgres=postgres)
        print(f"\n## {parked.count:,} invocations parked at a human-approval step on {where} "
              f"(each started by run_chain in this process; {parked.seconds:.1f} s to park "
              "them all)")
        print("| table | rows | bytes |\n|---|---|---|")
        for name in TABLES:
            size = parked.bytes.get(name)
            print(f"| {name} | {parked.rows[name]:,} | {'-' if size is None else f'{size:,}'} |")
        print(f"waiting rows {parked.waiting:,} (incl. {parked.warmup} warm-up), leased rows "
              f"{parked.leases}; worker: {parked.running} running, {parked.parked_gates} "
              f"approval gates; asyncio tasks {parked.tasks_before} before, "
              f"{parked.tasks_after} after ({parked.run_tasks} of an invocation or a step)")
        print(f"memory still allocated (tracemalloc, after gc): {parked.traced_bytes / 2**20:.2f}"
              f" MiB in all, {parked.traced_per_invocation:,.0f} B per parked invocation; RSS "
              f"{parked.rss_before_mib:.1f} → {parked.rss_after_mib:.1f} MiB (RSS keeps the "
              "allocator's high-water mark of parking them)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--takeovers", type=int, default=5)
    parser.add_argument("--lease-s", type=float, default=2.0)
    parser.add_argument("--poll-s", type=float, default=1.0, help="the service's default")
    parser.add_argument("--invocations", type=int, default=2000)
    parser.add_argument("--waiting", type=int, default=10_000)
    parser.add_argument("--waiting-only", action="store_true",
                        help="measure only the invocations parked at an approval step")
    asyncio.run(run(parser.parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
