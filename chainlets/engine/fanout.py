"""Fan-out prepared ahead: while a step runs, tasks for the dependents that wait for it alone
are created and wait at its gate, so that its success starts them without creating tasks.

This pays on a wide fan-out: 500 task creations after the source step succeeds lie on the
critical path; made while its model call is under way, they cost nothing there, as in
hand-written asyncio that creates every task up front (benchmarks/engine.py, shape `wide`).
"""

import asyncio
from collections.abc import Callable, Iterable, Mapping

__all__ = ["FanOut", "GateFuture", "Values"]

Values = Mapping[str, str]  # a step's input values
GateFuture = asyncio.Future[dict[str, Values]]  # the values of each dependent that starts


class _Gate:
    __slots__ = ("future", "held", "values")

    def __init__(self, future: GateFuture) -> None:
        self.future = future
        self.held: list[tuple[str, asyncio.Task[None]]] = []
        self.values: dict[str, Values] = {}  # of the dependents claimed


class FanOut:
    """The prepared tasks of running steps' dependents, and the gates they wait at."""

    __slots__ = ("ended", "gates", "loop", "prepared")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.gates: dict[str, _Gate] = {}  # by the running step they wait for
        self.prepared: dict[str, tuple[_Gate, asyncio.Task[None]]] = {}  # by dependent
        self.ended: list[asyncio.Task[None]] = []  # not started: ending at their gate

    def prepare(self, holder: str, dependents: Iterable[str],
                spawn: Callable[[str, GateFuture], "asyncio.Task[None]"]) -> None:
        """Create, with `spawn`, a task waiting at `holder`'s gate for each of `dependents`
        that has none yet."""
        gate = _Gate(self.loop.create_future())
        for child in dependents:
            if child not in self.prepared:
                task = spawn(child, gate.future)
                self.prepared[child] = gate, task
                gate.held.append((child, task))
        if gate.held:
            self.gates[holder] = gate

    def claim(self, child: str, values: Values) -> "asyncio.Task[None] | None":
        """`child` starts with `values`: its prepared task, which gets them when the gate
        opens, or None when it has none."""
        entry = self.prepared.pop(child, None)
        if entry is None:
            return None
        gate, task = entry
        gate.values[child] = values
        return task

    def open(self, holder: str) -> None:
        """`holder` finished: its gate lets the claimed tasks go; the others end there."""
        gate = self.gates.pop(holder, None)
        if gate is None:
            return
        if gate.values:
            gate.future.set_result(gate.values)
        else:
            gate.future.cancel()
        for child, task in gate.held:
            if child not in gate.values:
                del self.prepared[child]
                self.ended.append(task)

    def tasks(self) -> list["asyncio.Task[None]"]:
        """Every task not claimed: to cancel and await when the run ends."""
        return [*(task for _gate, task in self.prepared.values()), *self.ended]
