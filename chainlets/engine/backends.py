"""Per-backend traffic control for one run: a cap on calls in flight, and a shared backoff.

A 500-way fan-out must not open 500 connections to one backend (`max_backend_calls`, default
64, bounds the calls in flight to each generator), and when the backend says it is overloaded
(HTTP 429) or refuses connections, every step of that backend waits out the same backoff
instead of each retrying on its own schedule and hitting it again at once.
"""

import asyncio
import contextlib
from collections import deque

__all__ = ["BackendGate"]


class BackendGate:
    """One backend's gate: at most `limit` calls through at once; closed while backing off.

    A call takes a slot with `try_enter` (open, a slot free: taken at once, nothing awaited)
    or else `await enter()`, and gives it back with `leave`. The slots are a counter and a
    queue of waiters rather than an asyncio.Semaphore under an async context manager: that
    made an async generator, its context manager and a weakref per call (~750 B held while
    the call is in flight, and ~3 µs), which cost the 10,000-step benchmark 7 MB.
    """

    __slots__ = ("_free", "_loop", "_open_at", "_waiters", "name")

    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self._free = limit
        self._waiters: deque[asyncio.Future[None]] = deque()  # for a slot, first come first
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

    def try_enter(self) -> bool:
        """Take a slot now if the gate is open and one is free (no one waiting before)."""
        if self._free and not self._waiters and self._open_at <= self._loop.time():
            self._free -= 1
            return True
        return False

    async def enter(self) -> None:
        """Wait until the gate is open and a slot is free, and take the slot (`leave` gives
        it back)."""
        await self._opened()
        if self._free and not self._waiters:
            self._free -= 1
        else:
            waiter = self._loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter  # `leave` hands its slot over
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.leave()  # handed a slot as it was cancelled: pass it on
                else:
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        try:
            await self._opened()  # it closed while this call waited for a slot
        except BaseException:
            self.leave()
            raise

    def leave(self) -> None:
        """A call ended: its slot goes to the first waiter, else back to the free ones."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._free += 1
