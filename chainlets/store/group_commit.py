"""Group commit: concurrent write transactions of one process committed together.

Every step of every running invocation writes, so a busy worker issues hundreds of small write
transactions a second; each pays a commit (and, on PostgreSQL, the round trips around it). The
writes waiting at a moment run instead in one transaction. Should any of them fail (a fenced
write whose lease was lost, a unique key taken) or the transaction itself (a deadlock with
another process, a lost connection), nothing of it is committed and each write runs again
alone, in a transaction of its own: a failing write fails only its own caller. (Failures are
rare, so the common path pays no savepoint per write.) Each caller is answered only once the
transaction holding its write has committed.
"""

import asyncio
import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

__all__ = ["ThreadGroupCommit", "Write", "run_together"]

T = TypeVar("T")


@dataclass
class Write(Generic[T]):
    """One caller's write: its work, and the future its caller awaits."""

    work: Callable[[sa.Connection], T]
    future: asyncio.Future[T]
    loop: asyncio.AbstractEventLoop = field(init=False)
    outcome: tuple[bool, Any] | None = None  # (succeeded, result or exception)

    def __post_init__(self) -> None:
        self.loop = self.future.get_loop()


def _resolve(future: asyncio.Future[Any], outcome: tuple[bool, Any]) -> None:
    if future.done():  # the caller stopped waiting; its write stands (or failed) regardless
        return
    succeeded, value = outcome
    if succeeded:
        future.set_result(value)
    else:
        future.set_exception(value)


def run_together(connection: sa.Connection, writes: list[Write[Any]]) -> None:
    """Each write's work inside the open transaction, recording each outcome (the caller
    commits, then settles them). The first error propagates: the transaction rolls back and
    every write of it runs again alone, so that only the failing one fails."""
    for write in writes:
        write.outcome = (True, write.work(connection))


class ThreadGroupCommit:
    """For a store whose writes run on one worker thread (SQLite): `submit` queues a write and,
    unless `drains` are already queued or running, a drain on the thread; a drain commits every
    write queued by then, in one transaction, until none is left. With two drains (two
    writer threads and connections), one batch runs while the other waits for its commit to
    be flushed to disk."""

    def __init__(self, transaction: Callable[[Callable[[sa.Connection], None]], None],
                 thread: Callable[[Callable[[], None]], object],
                 max_batch: int = 500, drains: int = 1) -> None:
        self._transaction, self._thread, self._max_batch = transaction, thread, max_batch
        self._queue: list[Write[Any]] = []
        self._drains, self._draining = drains, 0  # drains queued or running on the threads
        self._lock = threading.Lock()

    def submit(self, work: Callable[[sa.Connection], T]) -> "asyncio.Future[T]":
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        with self._lock:
            self._queue.append(Write(work, future))
            start = self._draining < self._drains
            self._draining += start
        if start:
            self._thread(self.drain)
        return future

    def drain(self) -> None:
        """Run on the writer thread: the writes queued so far, in one transaction each batch,
        their callers answered together, until the queue is empty."""
        while True:
            with self._lock:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
                if not batch:
                    self._draining -= 1
                    return
            try:
                _commit(batch, lambda together: self._transaction(together))
            finally:
                _settle(batch)


def _settle(batch: list[Write[Any]]) -> None:
    """Answer a batch's callers with one wake-up of each event loop, not one per write."""
    loops: dict[asyncio.AbstractEventLoop, list[Write[Any]]] = {}
    for write in batch:
        if write.outcome is None:  # the drain itself failed (not the database): say so
            write.outcome = (False, RuntimeError("the store's writer stopped"))
        loops.setdefault(write.loop, []).append(write)
    for loop, writes in loops.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_resolve_all, writes)


def _resolve_all(writes: list[Write[Any]]) -> None:
    for write in writes:
        assert write.outcome is not None
        _resolve(write.future, write.outcome)


def _commit(batch: list[Write[Any]],
            transaction: Callable[[Callable[[sa.Connection], None]], None]) -> None:
    """Commit `batch` in one transaction, recording each write's outcome; should any fail,
    each runs again alone."""
    try:
        transaction(lambda connection: run_together(connection, batch))
    except Exception as exc:
        if len(batch) == 1:
            batch[0].outcome = (False, exc)
        else:  # nothing was committed: each write again, alone
            for write in batch:
                write.outcome = None
                _commit([write], transaction)
