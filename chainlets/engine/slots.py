"""The concurrency limit (`max_concurrency`): slots for running steps, and a queue for the rest."""

from collections import deque

__all__ = ["Slots"]


class Slots:
    """At most `limit` steps running at once (`max_concurrency`); the other ready steps wait
    in order, holding no task, until a running one ends."""

    __slots__ = ("free", "queue")

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.queue: deque[str] = deque()

    def admit(self, ready: list[str]) -> tuple[list[str], list[str]]:
        """Queue `ready`; returns the steps that take a slot now (queued first, first) and
        those of `ready` left waiting."""
        self.queue.extend(ready)
        starting = []
        while self.free and self.queue:
            self.free -= 1
            starting.append(self.queue.popleft())
        left = min(len(self.queue), len(ready))  # the queue's tail
        return starting, ready[len(ready) - left:]

    def release(self) -> None:
        """A running step ended: its slot goes to the next `admit`."""
        self.free += 1
