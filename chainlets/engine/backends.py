"""Per-backend traffic control for one run: a cap on calls in flight, and a shared backoff.

A 500-way fan-out must not open 500 connections to one backend (`max_backend_calls`, default
64, bounds the calls in flight to each generator), and when the backend says it is overloaded
(HTTP 429) or refuses connections, every step of that backend waits out the same backoff
instead of each retrying on its own schedule and hitting it again at once.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator

__all__ = ["BackendGate"]


class BackendGate:
    """One backend's gate: at most `limit` calls through at once; closed while backing off."""

    __slots__ = ("_loop", "_open_at", "_slots", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(limit)
        self._loop = asyncio.get_running_loop()
        self._open_at = 0.0  # loop time before which no call starts

    @property
    def closed_for(self) -> float:
        """Seconds until the gate opens again (0: open)."""
        return max(0.0, self._open_at - self._loop.time())

    def back_off(self, delay_s: float) -> None:
        """The backend is overloaded: no call starts for `delay_s` seconds (or until a later
        reopening already set)."""
        self._open_at = max(self._open_at, self._loop.time() + delay_s)

    async def _opened(self) -> None:
        # A sleep to a time, not an Event: a later overload moves the reopening further out,
        # and each waiter then sleeps again until the latest one.
        while (wait := self.closed_for) > 0:  # noqa: ASYNC110
            await asyncio.sleep(wait)

    @contextlib.asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """Wait until the gate is open and a slot is free, and hold the slot for the call."""
        await self._opened()
        async with self._slots:
            await self._opened()  # it closed while this call waited for a slot
            yield
