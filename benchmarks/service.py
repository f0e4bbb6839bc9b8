"""The service's benchmarks (issue 9 §5), one command: `python -m benchmarks.service`.

1. Sustained 3-step invocations/s from `run_chain` to their final state, in process, on a
   generator answering at once, on the in-memory store, SQLite and PostgreSQL, with DBOS
   Transact running the same 3-step chain on the same kind of database in the same run (in its
   own venv, .chainrunner/bench-dbos, made with `pip install dbos` on first use; skipped with
   the reason where it cannot be installed). Target: >= 5x DBOS on both databases.
2. The cost of durability: the soundtrack chain at 50 ms per model call through the store vs
   the engine alone in memory. Target: ratio <= 1.10x; the store's ms per critical-path step.
3. Through `chainrunner serve`: `run_chain` latency p50/p99, then 1,000 invocations submitted
   at once: 0 lost, 0 errors, all final, a `chain.finished` callback for each.

PostgreSQL is the server at $CHAINRUNNER_TEST_POSTGRES (a database made for the run and dropped
after; skipped without one).
"""

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from benchmarks.service_anchor import dbos_rate, sqlite_url
from benchmarks.service_inprocess import Durability, durability, throughput
from benchmarks.service_serve import Submission, through_serve
from benchmarks.store import _backend
from chainlets.store.settings import SYNC_MODES
from tests.postgres import ADMIN_URL, temporary_database

__all__ = ["main", "run_inprocess"]

TARGET_X_DBOS = 5.0
TARGET_RATIO = 1.10


def _anchor(backend: str, folder: Path, invocations: int, concurrency: int) -> float | str:
    if backend == "sqlite":
        return dbos_rate(sqlite_url(folder / "dbos.db"), invocations, concurrency)
    with temporary_database("chainrunner_dbos") as url:
        if url is None:
            return f"no PostgreSQL server at {ADMIN_URL}"
        return dbos_rate(url, invocations, concurrency)


Row = tuple[str, float | None, float | str | None]  # backend, ours, DBOS (or why not)


async def run_inprocess(folder: Path, invocations: int, concurrency: int, runs: int,
                        anchor: bool, sync: str | None = None,
                        ) -> tuple[list[Row], list[tuple[str, Durability]]]:
    rows: list[Row] = []
    costs: list[tuple[str, Durability]] = []
    for name in ("memory", "sqlite", "postgresql"):
        async with _backend(name, folder, sync) as store:
            if store is None:
                rows.append((name, None, None))
                continue
            rate = await throughput(store, invocations, concurrency)
            if name != "memory":
                costs.append((name, await durability(store, runs)))
        dbos: float | str | None = None
        if anchor and name != "memory":
            dbos = await asyncio.to_thread(_anchor, name, folder, invocations, concurrency)
        rows.append((name, rate, dbos))
    return rows, costs


def _render_rates(rows: list[Row], concurrency: int) -> list[str]:
    lines = [f"| backend | 3-step invocations/s ({concurrency} at once) | DBOS Transact, same "
             f"chain, same run | x DBOS (target >= {TARGET_X_DBOS:.0f}x) |", "|---|---|---|---|"]
    notes = []
    for name, rate, dbos in rows:
        ours = "skipped (no server)" if rate is None else f"{rate:,.0f}"
        if isinstance(dbos, float) and rate is not None:
            anchor, ratio = f"{dbos:,.0f}", f"{rate / dbos:.1f}x"
        else:
            anchor, ratio = "-", "-"
            if isinstance(dbos, str):
                notes.append(f"DBOS anchor on {name} skipped: {dbos}")
        lines.append(f"| {name} | {ours} | {anchor} | {ratio} |")
    return lines + notes


def _render_costs(costs: list[tuple[str, Durability]]) -> list[str]:
    lines = [f"| backend | soundtrack in memory | with the store | ratio (target <= "
             f"{TARGET_RATIO:.2f}x) | store ms per critical-path step |", "|---|---|---|---|---|"]
    for name, d in costs:
        lines.append(f"| {name} | {d.memory_s * 1000:.0f} ms | {d.store_s * 1000:.0f} ms | "
                     f"{d.ratio:.3f}x | {d.per_step_ms:.2f} ms ({d.critical_steps} of "
                     f"{d.steps} steps) |")
    return lines


def _render_serve(s: Submission) -> list[str]:
    return [f"serve (SQLite): run_chain latency p50 {s.latency_p50_ms:.1f} ms, "
            f"p99 {s.latency_p99_ms:.1f} ms",
            f"serve: {s.submitted:,} submitted at once: {s.accepted:,} accepted, "
            f"{s.errors} errors, {s.lost} lost, {s.final:,} final, callbacks for "
            f"{s.callbacks:,}, {s.bad_signatures} bad signatures, all done in "
            f"{s.drain_s:.1f} s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--invocations", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5, help="soundtrack runs of each kind")
    parser.add_argument("--submitted", type=int, default=1000,
                        help="invocations sent at once through serve")
    parser.add_argument("--latency-calls", type=int, default=200)
    parser.add_argument("--no-dbos", action="store_true", help="skip the DBOS anchor")
    parser.add_argument("--no-serve", action="store_true", help="skip the serve part")
    parser.add_argument("--sync", choices=SYNC_MODES, default=None,
                        help="the store's commit durability (CHAINRUNNER_DB_SYNC; default: "
                             "SQLite normal, PostgreSQL the server's setting)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        rows, costs = asyncio.run(run_inprocess(folder, args.invocations, args.concurrency,
                                                args.runs, not args.no_dbos, args.sync))
        print("\n".join(_render_rates(rows, args.concurrency)))
        print()
        print("\n".join(_render_costs(costs)))
        submission = None if args.no_serve else through_serve(
            folder, latency_calls=args.latency_calls, submitted=args.submitted)
    if submission is not None:
        print()
        print("\n".join(_render_serve(submission)))
        if submission.errors or submission.lost or submission.callbacks != submission.accepted:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
