"""The run's step graph: which steps wait for which, and which a finished step frees or blocks.

Plain bookkeeping, no tasks and no records: the scheduler asks it what is ready.
"""

from collections.abc import Collection, Container, Mapping

from chainlets.errors import ChainDefinitionError
from chainlets.language.compiler import CompiledChain, CompiledStep

__all__ = ["StepGraph"]


class StepGraph:
    """Steps in definition order, each one's dependents, and the waiting steps' counts of
    dependencies that have not succeeded yet."""

    __slots__ = ("_copied", "dependents", "pending", "steps")

    def __init__(self, chain: CompiledChain, succeeded: Collection[str]) -> None:
        """The chain's graph, with the steps in `succeeded` done already (a resumed run)."""
        # The chain's mapping, read only, until a step is added (then the run's own copy): a
        # copy up front cost the 10,000-step benchmark ~0.6 MB of its peak.
        self.steps: Mapping[str, CompiledStep] = chain.steps
        self._copied: dict[str, CompiledStep] | None = None
        # The chain's own tuples, shared: a step's becomes a list of the run's own when a step
        # is added after it (copy on write). A copy of every one cost ~100 B a step (1 MB of
        # the 10,000-step benchmark's peak).
        self.dependents: dict[str, tuple[str, ...] | list[str]] = dict(chain.dependents)
        self.pending = {handle: sum(d not in succeeded for d in step.deps)
                        for handle, step in self.steps.items() if handle not in succeeded}

    def ready(self) -> list[str]:
        """The waiting steps that wait for nothing, taken out of `pending`."""
        ready = [handle for handle, count in self.pending.items() if count == 0]
        for handle in ready:
            del self.pending[handle]
        return ready

    def add(self, step: CompiledStep, succeeded: Container[str], *, blocked: bool) -> bool:
        """Add `step`, whose dependencies must be steps of the graph. It waits for those not in
        `succeeded`, unless `blocked` (one of them failed: it will not run). True when it is
        ready now (then it is not in `pending`)."""
        handle = step.handle
        if handle in self.steps:
            raise ChainDefinitionError(f"step `{handle}` is already part of this run")
        unknown = sorted(step.deps - self.steps.keys())
        if unknown:
            raise ChainDefinitionError(
                f"step `{handle}` depends on {', '.join(unknown)}, not steps of this run")
        if self._copied is None:
            self.steps = self._copied = dict(self.steps)
        self._copied[handle] = step
        self.dependents[handle] = []
        for dep in step.deps:
            children = self.dependents[dep]
            if isinstance(children, tuple):
                self.dependents[dep] = [*children, handle]
            else:
                children.append(handle)
        waiting_on = sum(d not in succeeded for d in step.deps)
        if blocked or waiting_on == 0:
            return not blocked
        self.pending[handle] = waiting_on
        return False

    def succeed(self, handle: str) -> list[str]:
        """`handle` succeeded: the dependents it was the last to wait for, taken out of
        `pending`, in definition order."""
        pending = self.pending
        ready = []
        for child in self.dependents[handle]:
            if child in pending:
                pending[child] -= 1
                if pending[child] == 0:
                    del pending[child]
                    ready.append(child)
        return ready

    def block(self, handle: str) -> list[tuple[str, str]]:
        """`handle` failed or was skipped: every waiting step behind it, with the dependency
        that blocks it, each taken out of `pending`; causes come before the steps they block."""
        blocked: list[tuple[str, str]] = []
        stack = [(child, handle) for child in reversed(self.dependents[handle])]
        while stack:
            child, cause = stack.pop()
            if child not in self.pending:
                continue
            del self.pending[child]
            blocked.append((child, cause))
            stack.extend((grandchild, child) for grandchild in reversed(self.dependents[child]))
        return blocked
