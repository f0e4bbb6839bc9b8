"""Small builders shared by the store's tests."""

from datetime import UTC, datetime
from typing import Any

from chainlets.engine.models import AttemptRecord, RunState, StepRecord, Usage
from chainlets.store import Lease, NewEvent, NewInvocation, Store

CHAIN: dict[str, Any] = {
    "handle": "joke",
    "steps": [{"handle": "tell", "plugin": "gpt-3", "prompt": "Tell a joke about {topic}"},
              {"handle": "judge", "plugin": "gpt-3", "prompt": "Is it funny? {tell}"}]}
STEPS = ["tell", "judge"]
URL = "https://receiver.example/hook"


def chain(n: int = 0) -> dict[str, Any]:
    """A different chain for each `n` (an edited chain is a new one)."""
    return {**CHAIN, "handle": f"joke-{n}"} if n else CHAIN


async def start(store: Store, owner: str | None = "A", *, callback_url: str | None = None,
                key: str | None = None, request_hash: str | None = None,
                inputs: dict[str, str] | None = None) -> tuple[str, Lease | None]:
    """A stored chain and a new invocation of it (leased to `owner`)."""
    stored = await store.create_chain(CHAIN)
    created = await store.create_invocation(
        NewInvocation(chain_id=stored.chain_id, input=inputs or {"topic": "food"},
                      steps=STEPS, callback_url=callback_url, idempotency_key=key,
                      request_hash=request_hash), owner=owner)
    return created.invocation.invocation_id, created.lease


def at(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def step(handle: str, state: RunState = RunState.SUCCEEDED, output: str | None = None,
         *, ts: float = 1_800_000_000.0, message: str | None = None) -> StepRecord:
    """A step's record as the engine reports it."""
    done = state in (RunState.SUCCEEDED, RunState.FAILED)
    return StepRecord(
        handle=handle, state=state, statusMessage=message,
        output=output if output is not None else (f"out-{handle}" if done else None),
        attempts=[AttemptRecord(number=1, started_at=at(ts), finished_at=at(ts + 1),
                                error=message)] if done else [],
        started_at=at(ts), finished_at=at(ts + 1) if done else None,
        usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7) if done else None)


def finished(handle: str) -> NewEvent:
    return NewEvent(type="step.finished", step=handle, data={"state": "succeeded"})
