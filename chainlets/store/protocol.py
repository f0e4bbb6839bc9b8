"""The one interface the service and the engine use for durable state; SQL-free."""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any, Protocol

from chainlets.engine.models import StepRecord
from chainlets.store.models import (
    Created,
    Event,
    EventClaim,
    Invocation,
    Lease,
    NewEvent,
    NewInvocation,
    OpenApproval,
    Page,
    PurgeCounts,
    State,
    StoredChain,
    StoredStep,
)

__all__ = ["Store"]


class Store(Protocol):
    """Chains, invocations, per-step records, the outbox, leases and approvals.

    Every method is one transaction. Writes made while running an invocation take its `Lease`
    and are fenced by (owner, attempt): when another worker holds the invocation now, or it was
    cancelled, they raise `LeaseLostError` and change nothing. `events` passed to a write are
    stored in the same transaction, numbered in order per invocation. Unknown ids raise
    `NotFoundError`; a write contradicting the current state raises `ConflictError`; a payload
    over its limit raises `PayloadTooLargeError` naming the limit and its variable.
    """

    # Chains: immutable; the id is derived from the content, so storing it again is a no-op.
    async def create_chain(self, chain: Mapping[str, Any]) -> StoredChain: ...
    async def get_chain(self, chain_id: str) -> StoredChain: ...
    async def list_chains(self, *, limit: int = 50,
                          cursor: str | None = None) -> Page[StoredChain]: ...
    async def delete_chain(self, chain_id: str) -> None: ...

    # Invocations.
    async def create_invocation(self, new: NewInvocation, *, owner: str | None = None,
                                events: Sequence[NewEvent] = ()) -> Created:
        """Store a new invocation (leased to `owner` if given), or return the one stored
        under the same idempotency key and request hash (`created` false, no lease)."""
        ...

    async def get_invocation(self, invocation_id: str) -> Invocation: ...
    async def list_invocations(self, *, chain_id: str | None = None, state: State | None = None,
                               since: datetime | None = None, limit: int = 50,
                               cursor: str | None = None) -> Page[Invocation]: ...

    async def record_step(self, lease: Lease, step: StepRecord, *,
                          events: Sequence[NewEvent] = (),
                          approval: OpenApproval | None = None) -> None:
        """Upsert the step's record (a new handle is placed after the others); committed when
        this returns, so dependents may start. With `approval`, the step waits for a human."""
        ...

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Sequence[NewEvent] = (),
                                steps: Sequence[StepRecord] = ()) -> None:
        """Set the invocation's state; a finished state also ends the lease. `steps`' records
        are written in the same transaction (as `record_step` would, without approvals): an
        invocation's last step and its end commit together."""
        ...

    async def suspend(self, lease: Lease, waiting_on: Collection[str], *,
                      events: Sequence[NewEvent] = ()) -> bool:
        """Mark the invocation `waiting` and give up its lease, if the approvals of every step
        in `waiting_on` are still open; false (nothing changed) when one was settled since.
        It is claimable again when one is resumed or the earliest deadline passes."""
        ...

    async def cancel_invocation(self, invocation_id: str, *, message: str,
                                events: Sequence[NewEvent] = ()) -> Invocation:
        """End an active invocation and its unfinished steps `cancelled`, ending its lease."""
        ...

    # Leases.
    async def claim(self, owner: str, *, limit: int = 1) -> list[Lease]:
        """Lease up to `limit` running invocations that no live lease holds, oldest first, and
        waiting ones whose approval deadline passed (they become running); never one twice."""
        ...

    async def heartbeat(self, lease: Lease) -> Lease:
        """Extend the lease; the answer's `signals` counts resumes since the invocation began."""
        ...

    async def release(self, lease: Lease) -> None: ...

    # Approvals (task tokens are stored hashed; resolution is single-use and atomic).
    async def get_approval(self, token_hash: str) -> tuple[str, StoredStep]:
        """The invocation id and step a task token belongs to, in whatever state."""
        ...

    async def resume_approval(self, token_hash: str, *, output: str | None = None,
                              error: str | None = None,
                              events: Sequence[NewEvent] = ()) -> StoredStep:
        """Complete (`output`) or fail (`error`) the step waiting on the token; `ConflictError`
        when it was already resumed, timed out or cancelled."""
        ...

    async def expire_approval(self, lease: Lease, handle: str, *, message: str,
                              events: Sequence[NewEvent] = ()) -> bool:
        """Fail a step whose approval is still open (false when already settled)."""
        ...

    # Outbox.
    async def claim_events(self, owner: str, *, limit: int = 10) -> list[EventClaim]:
        """Claim due events for delivery: per invocation only the earliest not yet delivered
        or given up, and none that another claim holds."""
        ...

    async def event_delivered(self, claim: EventClaim) -> None: ...
    async def event_failed(self, claim: EventClaim, *, error: str,
                           retry_at: datetime | None, disable_url: bool = False) -> None:
        """Record a failed attempt: retried at `retry_at`, or given up when it is None; with
        `disable_url`, every pending event for the same URL is given up too."""
        ...

    async def list_events(self, invocation_id: str) -> list[Event]: ...
    async def redeliver(self, invocation_id: str, event_id: str | None = None) -> int:
        """Send the invocation's events (or one) again, from attempt 0; returns how many."""
        ...

    # Retention.
    async def purge(self, before: datetime) -> PurgeCounts:
        """Delete invocations finished before `before`, with their steps and events, and
        deleted chains no invocation uses any more."""
        ...

    async def close(self) -> None: ...
