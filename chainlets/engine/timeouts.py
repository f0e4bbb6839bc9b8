"""Per-attempt time limits (`step_timeout_s`) for one run, on one loop timer.

Every attempt of a run gets the same limit, so attempts expire in the order they started: a
queue of them in that order and one loop timer, armed for the oldest live one, serve them
all. A loop timer per attempt (asyncio.timeout, or call_later) held a TimerHandle, a copied
context and a heap entry (~250 B) per call in flight, and a heap push and pop per attempt;
here an attempt costs one slotted object and a deque entry.

An attempt's timeout cancels its task, and that cancellation is the timeout only when no one
else cancelled the task too (asyncio.timeout's rule, `Task.uncancel`).
"""

import asyncio
from collections import deque
from typing import Any

__all__ = ["Attempt", "AttemptTimer"]


class Attempt:
    """One attempt's time limit, from `AttemptTimer.start` until `AttemptTimer.stop`."""

    __slots__ = ("cancelling", "fired", "stopped", "task", "when")

    def __init__(self, task: "asyncio.Task[Any]", when: float) -> None:
        self.task = task
        self.when = when  # loop time at which it expires
        self.cancelling = task.cancelling()
        self.fired = False
        self.stopped = False

    def expire(self) -> None:
        self.fired = True
        self.task.cancel()

    def timed_out(self) -> bool:
        """Its task was cancelled by the time limit, and by no one else (checked once)."""
        if not self.fired:
            return False
        self.fired = False  # its cancel request is taken back once
        return self.task.uncancel() <= self.cancelling


class AttemptTimer:
    """The time limits, `timeout_s` each, of a run's attempts."""

    __slots__ = ("_armed", "_live", "_loop", "_queue", "_timer", "name", "timeout_s")

    def __init__(self, timeout_s: float, name: str = "step_timeout_s") -> None:
        self.timeout_s = timeout_s
        self.name = name  # the setting that set the limit, for the timeout's message
        self._loop = asyncio.get_running_loop()
        self._queue: deque[Attempt] = deque()  # in start order, stopped ones not yet dropped
        self._live = 0
        self._timer: asyncio.TimerHandle | None = None
        self._armed: Attempt | None = None  # the attempt the timer is for

    def start(self) -> Attempt:
        """The current task's attempt, cancelled once `timeout_s` has passed."""
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("an attempt's time limit needs a task")
        attempt = Attempt(task, self._loop.time() + self.timeout_s)
        self._queue.append(attempt)
        self._live += 1
        if self._timer is None:
            self._arm(attempt)
        return attempt

    def stop(self, attempt: Attempt) -> None:
        """The attempt ended; a cancel its limit requested as the answer came is taken back
        (as asyncio.timeout's exit does)."""
        attempt.stopped = True
        self._live -= 1
        if attempt.fired:
            attempt.fired = False
            attempt.task.uncancel()
        queue = self._queue
        while queue and queue[0].stopped:
            queue.popleft()
        if not queue and self._timer is not None:
            self._timer.cancel()
            self._timer = self._armed = None
        elif len(queue) > 64 and len(queue) > 2 * self._live:
            # A long attempt at the head holds the ended ones behind it: drop them.
            self._queue = deque(a for a in queue if not a.stopped)

    def _arm(self, attempt: Attempt) -> None:
        self._armed = attempt
        self._timer = self._loop.call_at(attempt.when, self._expire)

    def _expire(self) -> None:
        armed, self._timer, self._armed = self._armed, None, None
        now = self._loop.time()
        queue = self._queue
        while queue and (queue[0].stopped or queue[0] is armed or queue[0].when <= now):
            attempt = queue.popleft()
            if not attempt.stopped:
                attempt.expire()
                attempt.stopped = True  # dropped from the queue; `stop` still counts it
        if queue:
            self._arm(queue[0])
