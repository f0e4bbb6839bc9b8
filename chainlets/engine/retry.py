"""Retry policy for generator calls: exponential backoff on transient failures only."""

import asyncio
import random
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import NamedTuple, TypeVar

import httpx

from chainlets.errors import TransientGenerationError

__all__ = ["Attempt", "RetryPolicy", "describe_error", "is_transient"]

T = TypeVar("T")
A = TypeVar("A")


def _chainlet_connection_error(exc: BaseException) -> bool:
    # Deployed, truss calls dependency chainlets with aiohttp; its connection errors (refused,
    # server disconnected) are not ConnectionErrors. An aiohttp error exists only once aiohttp
    # is imported, so it is looked up, not imported: that would cost every process that loads
    # the engine (`chainrunner run` included) 60 ms, and aiohttp is not installed everywhere.
    aiohttp = sys.modules.get("aiohttp")
    return aiohttp is not None and isinstance(exc, aiohttp.ClientConnectionError)


def is_transient(exc: BaseException) -> bool:
    """Failures worth another attempt: rate limits, server errors, timeouts, lost connections."""
    return isinstance(exc, TransientGenerationError | TimeoutError | httpx.TransportError
                      | ConnectionError) or _chainlet_connection_error(exc)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


class Attempt(NamedTuple):
    """One try, as the policy records it (plain data: the hot path builds no models).

    Its fields are AttemptRecord's, with times as POSIX timestamps (`time.time()`): reading the
    clock that way costs a tenth of `datetime.now`, and the engine converts once per record.
    """

    number: int
    started_at: float
    finished_at: float
    error: str | None


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

    async def call(self, fn: Callable[[A], Awaitable[T]], arg: A,
                   attempts: list[Attempt]) -> T:
        """Run `fn(arg)` under the policy, appending one Attempt per try to `attempts`.

        Re-raises the last error when it is not transient or the attempts are used up.
        """
        number = 0
        while True:
            number += 1
            started = time.time()
            try:
                result = await fn(arg)
            except Exception as exc:
                attempts.append(Attempt(len(attempts) + 1, started, time.time(),
                                        describe_error(exc)))
                if number >= self.max_attempts or not is_transient(exc):
                    raise
            else:
                attempts.append(Attempt(len(attempts) + 1, started, time.time(), None))
                return result
            await asyncio.sleep(self.backoff_s(number))
