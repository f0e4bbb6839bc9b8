"""Retry policy for generator calls: exponential backoff on transient failures only."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from chainlets.engine.backends import BackendGate
from chainlets.engine.failures import StepTimeoutError, describe_failure, is_overload, is_transient
from chainlets.engine.models import AttemptRecord

__all__ = ["RetryPolicy"]

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries; waits `initial_backoff_s`, doubling, capped, with jitter.

    The loop is ours rather than tenacity's: driving tenacity's async iterator cost ~45 µs a
    call, the engine's largest per-step cost (benchmarks/engine.py), for a policy this small.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    def backoff_s(self, failed: int) -> float:
        """Delay after `failed` tries in a row failed: `initial_backoff_s * 2**(failed - 1)`
        plus up to half of `initial_backoff_s` of jitter, at most `max_backoff_s`."""
        delay = self.initial_backoff_s * 2.0 ** (failed - 1) \
            + random.uniform(0, self.initial_backoff_s / 2)
        return min(delay, self.max_backoff_s)

    async def call(self, fn: Callable[[A], Awaitable[T]], arg: A, attempts: list[AttemptRecord],
                   generator: str, *, gate: BackendGate | None = None,
                   timeout_s: float | None = None) -> T:
        """Run `fn(arg)`, a call to `generator`, under the policy, appending one record per
        try to `attempts`.

        Each try waits for `gate` (the backend's cap on calls in flight, closed while its
        backends back off) and may take at most `timeout_s` seconds: one that takes longer
        is recorded as a timeout and retried. An overload (HTTP 429, a refused connection)
        closes `gate` for the backoff, so every call to that backend waits it out together.
        Re-raises the last error when it is not transient or the attempts are used up.
        """
        number = 0
        while True:
            number += 1
            try:
                if gate is not None and not gate.try_enter():
                    await gate.enter()
                started = datetime.now(UTC)  # waiting for the gate is no part of the try
                try:
                    if timeout_s is None:
                        result = await fn(arg)
                    else:  # inline, not a helper coroutine: one frame less per call in flight
                        expiry = _Expiry.start(timeout_s)
                        try:
                            result = await fn(arg)
                        except asyncio.CancelledError:
                            if expiry.ours():
                                raise StepTimeoutError(
                                    f"generator `{generator}` gave no answer within "
                                    f"step_timeout_s={timeout_s:g} s; the attempt was "
                                    "abandoned") from None
                            raise
                        finally:
                            expiry.stop()
                finally:
                    if gate is not None:
                        gate.leave()
            except Exception as exc:
                failure = describe_failure(exc, f"generator `{generator}`")
                attempts.append(AttemptRecord(
                    number=len(attempts) + 1, started_at=started, finished_at=datetime.now(UTC),
                    error=failure.message, error_kind=failure.kind))
                if number >= self.max_attempts or not is_transient(exc):
                    raise
                delay = self.backoff_s(number)
                if gate is not None and is_overload(exc):
                    gate.back_off(delay)
            else:
                attempts.append(AttemptRecord(number=len(attempts) + 1, started_at=started,
                                              finished_at=datetime.now(UTC)))
                return result
            await asyncio.sleep(delay)


class _Expiry:
    """One attempt's time limit, as asyncio.timeout keeps it: a timer cancels the attempt's
    task, and that cancellation is the timeout only when no one else cancelled the task too.

    A loop.call_later timer calling this slotted object, rather than asyncio.timeout: its
    Timeout object (with a __dict__), its __aenter__/__aexit__ coroutines and the helper
    coroutine around them cost every call in flight ~400 B (4 MB in the 10,000-step
    benchmark) and ~2 µs.
    """

    __slots__ = ("cancelling", "fired", "task", "timer")

    def __init__(self, task: "asyncio.Task[Any]", timeout_s: float) -> None:
        self.task = task
        self.cancelling = task.cancelling()
        self.fired = False
        self.timer = task.get_loop().call_later(timeout_s, self)

    @classmethod
    def start(cls, timeout_s: float) -> "_Expiry":
        """The current task's attempt, cancelled after `timeout_s` seconds."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a step's time limit needs a task")
        return cls(task, timeout_s)

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()

    def ours(self) -> bool:
        """The task was cancelled by this timer, and by no one else."""
        if not self.fired:
            return False
        self.fired = False  # its cancel request is taken back once
        return self.task.uncancel() <= self.cancelling

    def stop(self) -> None:
        """The attempt ended: no timer; a cancel it requested as the answer came is taken
        back (as asyncio.timeout's exit does)."""
        self.timer.cancel()
        if self.fired:
            self.fired = False
            self.task.uncancel()
