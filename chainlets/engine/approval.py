"""Human-approval steps in the engine: the gate that parks them, and the refusal without one.

No model answers an approval step: the engine renders its prompt and hands it to an
`ApprovalGate` (the service's), which announces it and answers with a future that a person's
`resume` (or the deadline) settles. While it is unsettled the step is *parked*: its branch
waits, independent branches go on, and when only parked steps remain the run ends without
them, so that a waiting invocation holds no task (the service runs it again once answered).
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from chainlets.engine.models import RunOptions
from chainlets.errors import ChainDefinitionError, GenerationError
from chainlets.language.compiler import CompiledChain, CompiledStep
from chainlets.language.messages import listing
from chainlets.language.plugins import APPROVAL, ApprovalConfig

__all__ = ["ApprovalError", "ApprovalGate", "ApprovalRequest", "approval_request",
           "approval_steps", "refuse_without_gate"]


class ApprovalError(GenerationError):
    """Raised (set on the gate's future) when a person refused the step, or its time ran out."""


@dataclass(frozen=True, slots=True)
class ApprovalRequest:
    """What the reviewer of one step is asked."""

    step: str
    text: str  # the step's rendered prompt
    choices: list[str] | None
    timeout_s: float


class ApprovalGate(Protocol):
    """Where approval steps wait: `open` records the request (once per step and invocation)
    and returns a future of the approved output; it fails with ApprovalError when refused or
    timed out."""

    async def open(self, request: ApprovalRequest) -> "asyncio.Future[str]": ...


def approval_steps(steps: Iterable[CompiledStep]) -> list[str]:
    return [s.handle for s in steps if s.plugin.generator == APPROVAL]


# The run-wide deadline when neither the run's options nor the chain set one.
DEFAULT_DEADLINE_S = 600.0


def run_deadline_s(options: RunOptions, chain: CompiledChain) -> float | None:
    """The run's deadline in seconds, None for none: the smaller of the options' `deadline_s`
    and the chain's own; with neither, 600 s, or none for a chain with human-approval steps (a
    person may take up to each approval's `timeout_s`: a default 600 s would close them first,
    and its steps are bounded anyway, each by `step_timeout_s` and its attempts)."""
    given = [s for s in (options.deadline_s, chain.spec.deadline_s) if s is not None]
    if given:
        return min(given)
    return None if approval_steps(chain.steps.values()) else DEFAULT_DEADLINE_S


def approval_request(step: CompiledStep, text: str) -> ApprovalRequest:
    config = step.plugin.validate_config(step.spec.plugin_config or {})
    assert isinstance(config, ApprovalConfig)  # the plugin's config model
    return ApprovalRequest(step=step.handle, text=text, choices=config.choices,
                           timeout_s=float(config.timeout_s))


def refuse_without_gate(chain: CompiledChain) -> None:
    """A run with no gate (the synchronous path, `chainrunner run`) cannot wait for a person:
    refused before any model call, naming the steps."""
    waiting = approval_steps(chain.model_calls())  # loop bodies and maps' items included
    if waiting:
        raise ChainDefinitionError(
            f"chain `{chain.handle}`: step{'s' if len(waiting) > 1 else ''} "
            f"{listing(waiting, limit=5)} {'wait' if len(waiting) > 1 else 'waits'} for human "
            "approval, which needs the service: start it with `op: run_chain` on a deployed or "
            "served runner (`chainrunner serve`), then answer with `op: resume`")
