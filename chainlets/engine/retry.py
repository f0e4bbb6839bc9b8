"""Retry policy for generator calls: exponential backoff on the failures it retries (by
default the transient ones; a step's `retry.on` names others)."""

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from chainlets.engine.backends import BackendGate
from chainlets.engine.failures import StepTimeoutError, describe_failure, is_overload, is_transient
from chainlets.engine.models import AttemptRecord
from chainlets.engine.timeouts import AttemptTimer
from chainlets.language.policies import kind_matches

__all__ = ["RetryPolicy"]

T = TypeVar("T")
A = TypeVar("A")


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries; waits `initial_backoff_s`, doubling, capped, with jitter
    unless `jitter` is off. Retries the failures `on` names (policies.py: `transient` or error
    kinds); None: the transient ones.

    The loop is ours rather than tenacity's: driving tenacity's async iterator cost ~45 µs a
    call, the engine's largest per-step cost (benchmarks/engine.py), for a policy this small.
    """

    max_attempts: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0
    jitter: bool = True
    on: frozenset[str] | None = None

    def backoff_s(self, failed: int) -> float:
        """Delay after `failed` tries in a row failed: `initial_backoff_s * 2**(failed - 1)`
        plus up to half of `initial_backoff_s` of jitter, at most `max_backoff_s`."""
        delay = self.initial_backoff_s * 2.0 ** (failed - 1)
        if self.jitter:
            delay += random.uniform(0, self.initial_backoff_s / 2)
        return min(delay, self.max_backoff_s)

    def retries(self, exc: BaseException, kind: str) -> bool:
        """Whether a try that failed with `exc`, of `kind`, is tried again (attempts left)."""
        if self.on is None:
            return is_transient(exc)
        return kind_matches(self.on, kind, is_transient(exc))

    async def call(self, fn: Callable[[A], Awaitable[T]], arg: A, attempts: list[AttemptRecord],
                   generator: str, *, gate: BackendGate | None = None,
                   timer: AttemptTimer | None = None) -> T:
        """Run `fn(arg)`, a call to `generator`, under the policy, appending one record per
        try to `attempts`.

        Each try waits for `gate` (the backend's cap on calls in flight, closed while its
        backends back off) and may take at most `timer.timeout_s` seconds: one that takes
        longer is recorded as a timeout and retried. An overload (HTTP 429, a refused connection)
        closes `gate` for the backoff, so every call to that backend waits it out together.
        Re-raises the last error when the policy does not retry it or the attempts are used up.
        """
        number = 0
        while True:
            number += 1
            try:
                if gate is not None and not gate.try_enter():
                    await gate.enter()
                started = datetime.now(UTC)  # waiting for the gate is no part of the try
                try:
                    if timer is None:
                        result = await fn(arg)
                    else:  # inline, not a helper coroutine: one frame less per call in flight
                        attempt = timer.start()
                        try:
                            result = await fn(arg)
                        except asyncio.CancelledError:
                            if attempt.timed_out():
                                raise StepTimeoutError(
                                    f"generator `{generator}` gave no answer within "
                                    f"{timer.name}={timer.timeout_s:g} s; the attempt was "
                                    "abandoned") from None
                            raise
                        finally:
                            timer.stop(attempt)
                finally:
                    if gate is not None:
                        gate.leave()
            except Exception as exc:
                failure = describe_failure(exc, f"generator `{generator}`")
                attempts.append(AttemptRecord(
                    number=len(attempts) + 1, started_at=started, finished_at=datetime.now(UTC),
                    error=failure.message, error_kind=failure.kind))
                if number >= self.max_attempts or not self.retries(exc, failure.kind):
                    raise
                delay = self.backoff_s(number)
                if gate is not None and is_overload(exc):
                    gate.back_off(delay)
            else:
                attempts.append(AttemptRecord(number=len(attempts) + 1, started_at=started,
                                              finished_at=datetime.now(UTC)))
                return result
            await asyncio.sleep(delay)
