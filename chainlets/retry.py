"""Retry policy for generator calls: exponential backoff on transient failures only."""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import httpx
import tenacity

from chainlets.errors import TransientGenerationError
from chainlets.models import AttemptRecord

__all__ = ["RetryPolicy", "describe_error", "is_transient"]

T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Failures worth another attempt: rate limits, server errors, timeouts, lost connections."""
    return isinstance(exc, TransientGenerationError | TimeoutError | httpx.TransportError
                      | ConnectionError)


def describe_error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


@dataclass(frozen=True)
class RetryPolicy:
    """At most `max_attempts` tries; waits `initial_backoff_s`, doubling, capped, with jitter."""

    max_attempts: int = 3
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 8.0

    async def call(self, fn: Callable[[], Awaitable[T]],
                   attempts: list[AttemptRecord]) -> T:
        """Run `fn` under the policy, appending one AttemptRecord per try to `attempts`."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.max_attempts),
            wait=tenacity.wait_exponential_jitter(initial=self.initial_backoff_s,
                                                  max=self.max_backoff_s,
                                                  jitter=self.initial_backoff_s / 2),
            retry=tenacity.retry_if_exception(is_transient),
            sleep=asyncio.sleep,
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                started = datetime.now(UTC)
                try:
                    result = await fn()
                except Exception as exc:
                    attempts.append(AttemptRecord(number=len(attempts) + 1, started_at=started,
                                                  finished_at=datetime.now(UTC),
                                                  error=describe_error(exc)))
                    raise
                attempts.append(AttemptRecord(number=len(attempts) + 1, started_at=started,
                                              finished_at=datetime.now(UTC)))
                return result
        raise AssertionError("unreachable: tenacity either returns or reraises")
