"""The store in memory, for unit tests and runs that keep nothing: the same rows and rules as
the SQL store, each method one uninterrupted step of the event loop (so one transaction)."""

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from chainlets.engine.models import StepRecord
from chainlets.store import approval_rules, refusals, rules
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
from chainlets.store.rows import (
    Clock,
    IdFactory,
    chain_from_row,
    chain_id_for,
    event_from_row,
    event_rows,
    invocation_from_row,
    new_id,
    step_from_row,
    system_clock,
    to_ts,
)
from chainlets.store.settings import Limits

__all__ = ["MemoryStore"]

_Row = dict[str, Any]


class MemoryStore:
    """A `Store` whose rows live in dicts; nothing survives the process."""

    def __init__(self, *, limits: Limits | None = None, lease_s: float = 10.0,
                 clock: Clock = system_clock, ids: IdFactory = new_id) -> None:
        self.limits, self.lease_s, self._clock, self._ids = limits or Limits(), lease_s, clock, ids
        self._chains: dict[str, _Row] = {}
        self._invocations: dict[str, _Row] = {}
        self._steps: dict[str, dict[str, _Row]] = {}
        self._events: dict[str, _Row] = {}
        self._keys: dict[str, str] = {}  # idempotency key → invocation id
        self._tokens: dict[str, tuple[str, str]] = {}  # token hash → (invocation id, handle)

    # Chains.
    async def create_chain(self, chain: Mapping[str, Any]) -> StoredChain:
        self.limits.check_chain(chain)
        chain_id = chain_id_for(chain)
        row = self._chains.get(chain_id)
        if row is None or row["deleted_at"] is not None:
            row = self._chains[chain_id] = rules.chain_row(chain_id, chain, self._clock())
        return chain_from_row(row)

    async def get_chain(self, chain_id: str) -> StoredChain:
        return chain_from_row(self._chain(chain_id))

    async def list_chains(self, *, limit: int = 50,
                          cursor: str | None = None) -> Page[StoredChain]:
        rows = [r for r in self._chains.values() if r["deleted_at"] is None]
        return rules.page(rows, limit, cursor, chain_from_row)

    async def delete_chain(self, chain_id: str) -> None:
        self._chain(chain_id)["deleted_at"] = self._clock()

    def _chain(self, chain_id: str) -> _Row:
        row = self._chains.get(chain_id)
        if row is None or row["deleted_at"] is not None:
            raise refusals.chain_not_found(chain_id)
        return row

    # Invocations.
    async def create_invocation(self, new: NewInvocation, *, owner: str | None = None,
                                events: Sequence[NewEvent] = ()) -> Created:
        rules.check_new_invocation(new, self.limits)
        if new.idempotency_key is not None and new.idempotency_key in self._keys:
            row = self._invocations[self._keys[new.idempotency_key]]
            rules.check_same_request(new, row)
            return Created(invocation=invocation_from_row(row), created=False)
        self._chain(new.chain_id)
        now = self._clock()
        row = rules.invocation_row(new, self._ids("inv"), now, owner, self.lease_s)
        source = self._source_steps(new)
        steps = rules.initial_steps(new, row["id"], source, now)
        self._invocations[row["id"]] = row
        self._steps[row["id"]] = {s["handle"]: s for s in steps}
        if new.idempotency_key is not None:
            self._keys[new.idempotency_key] = row["id"]
        self._add_events(row, events, now)
        return Created(invocation=invocation_from_row(row, steps), created=True,
                       lease=rules.lease_of(row) if owner else None)

    def _source_steps(self, new: NewInvocation) -> list[_Row]:
        if new.rerun_of is None:
            return []
        source = new.rerun_of.invocation_id
        if source not in self._invocations:
            raise refusals.invocation_not_found(source)
        return [r for h, r in self._steps[source].items() if h in set(new.reuse)]

    async def get_invocation(self, invocation_id: str) -> Invocation:
        row = self._invocation(invocation_id)
        return invocation_from_row(row, list(self._steps[invocation_id].values()))

    async def list_invocations(self, *, chain_id: str | None = None, state: State | None = None,
                               since: datetime | None = None, limit: int = 50,
                               cursor: str | None = None) -> Page[Invocation]:
        after = to_ts(since)
        rows = [r for r in self._invocations.values()
                if (chain_id is None or r["chain_id"] == chain_id)
                and (state is None or r["state"] == state.value)
                and (after is None or r["created_at"] >= after)]
        return rules.page(rows, limit, cursor, invocation_from_row)

    def _invocation(self, invocation_id: str) -> _Row:
        row = self._invocations.get(invocation_id)
        if row is None:
            raise refusals.invocation_not_found(invocation_id)
        return row

    def _fenced(self, lease: Lease) -> _Row:
        row = self._invocations.get(lease.invocation_id)
        if row is None or (row["lease_owner"], row["lease_attempt"]) != (lease.owner,
                                                                         lease.attempt):
            raise refusals.lease_lost(lease)
        return row

    def _add_events(self, row: _Row, events: Sequence[NewEvent], now: float) -> None:
        row["updated_at"] = now
        if events:
            for event in event_rows(events, row, row["event_seq"], now, self._ids):
                self._events[event["id"]] = event
            row["event_seq"] += len(events)

    async def record_step(self, lease: Lease, step: StepRecord, *,
                          events: Sequence[NewEvent] = (),
                          approval: OpenApproval | None = None) -> None:
        self.limits.check_output(step.handle, step.output)
        row = self._fenced(lease)
        if approval is not None and approval.token_hash in self._tokens:
            raise refusals.token_reused(step.handle)
        now = self._clock()
        self._put_step(row["id"], step, approval, now)
        if approval is not None:
            self._tokens[approval.token_hash] = (row["id"], step.handle)
        self._add_events(row, events, now)

    def _put_step(self, invocation_id: str, step: StepRecord, approval: OpenApproval | None,
                  now: float) -> None:
        steps = self._steps[invocation_id]
        target = steps.get(step.handle)
        if target is None:
            position = max((s["position"] for s in steps.values()), default=-1) + 1
            target = steps[step.handle] = rules.empty_step(invocation_id, step.handle, position,
                                                           now)
        closes = approval_rules.closed_by(step)
        if closes is not None and target["approval_state"] not in (None, rules.OPEN):
            return  # an answer (or timeout) came first: it stands, and so does its record
        target.update(rules.step_columns(step, approval, now))
        if closes is not None and target["approval_state"] == rules.OPEN:
            target["approval_state"] = closes

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Sequence[NewEvent] = (),
                                steps: Sequence[StepRecord] = ()) -> None:
        for step in steps:
            self.limits.check_output(step.handle, step.output)
        values = rules.invocation_update(state, output, status_message, self.limits,
                                         now := self._clock())
        row = self._fenced(lease)
        for step in steps:
            self._put_step(row["id"], step, None, now)
        row.update(values)
        self._add_events(row, events, now)

    async def suspend(self, lease: Lease, waiting_on: Collection[str], *,
                      events: Sequence[NewEvent] = ()) -> bool:
        rules.check_waiting_on(waiting_on)
        row = self._fenced(lease)
        steps = self._steps[row["id"]]
        pending = [steps[h] for h in waiting_on if h in steps]
        if len(pending) < len(set(waiting_on)) or \
                any(s["approval_state"] != rules.OPEN for s in pending):
            return False
        deadlines = [s["approval_deadline"] for s in steps.values()
                     if s["approval_state"] == rules.OPEN]
        row.update(rules.suspended(approval_rules.wake_at(row, deadlines)))
        self._add_events(row, events, self._clock())
        return True

    async def cancel_invocation(self, invocation_id: str, *, message: str,
                                events: Sequence[NewEvent] = ()) -> Invocation:
        row = self._invocation(invocation_id)
        rules.check_cancellable(row)
        now = self._clock()
        row.update(rules.cancelled_invocation(message, now), signals=row["signals"] + 1)
        for step in self._steps[invocation_id].values():
            if step["state"] in rules.ACTIVE:
                step.update(rules.cancelled_step(step, message, now))
        self._add_events(row, events, now)
        return await self.get_invocation(invocation_id)

    # Leases.
    async def claim(self, owner: str, *, limit: int = 1) -> list[Lease]:
        now = self._clock()
        due = sorted((r for r in self._invocations.values() if rules.claimable(r, now)),
                     key=lambda r: (r["created_at"], r["id"]))
        for row in due[:limit]:
            row.update(rules.claimed(row, owner, now, self.lease_s))
        return [rules.lease_of(r) for r in due[:limit]]

    async def heartbeat(self, lease: Lease) -> Lease:
        row = self._fenced(lease)
        row["lease_expires_at"] = self._clock() + self.lease_s
        return rules.lease_of(row)

    async def release(self, lease: Lease) -> None:
        self._fenced(lease).update(lease_owner=None, lease_expires_at=None)

    # Approvals.
    def _token(self, token_hash: str) -> tuple[_Row, _Row]:
        if token_hash not in self._tokens:
            raise refusals.token_not_found()
        invocation_id, handle = self._tokens[token_hash]
        return self._invocations[invocation_id], self._steps[invocation_id][handle]

    async def get_approval(self, token_hash: str) -> tuple[str, StoredStep]:
        row, step = self._token(token_hash)
        return row["id"], step_from_row(step)

    async def resume_approval(self, token_hash: str, *, output: str | None = None,
                              error: str | None = None,
                              events: Sequence[NewEvent] = ()) -> StoredStep:
        row, step = self._token(token_hash)
        values = rules.resumed_step(row["id"], step, output, error, self.limits,
                                    now := self._clock())
        rules.check_resumable(row)
        approval_rules.check_in_time(row, step, now)
        step.update(values)
        row.update(rules.woken(row), signals=row["signals"] + 1)
        self._add_events(row, events, now)
        return step_from_row(step)

    async def expire_approval(self, lease: Lease, handle: str, *, message: str,
                              events: Sequence[NewEvent] = ()) -> bool:
        row = self._fenced(lease)
        step = self._steps[row["id"]].get(handle)
        if step is None:
            raise refusals.step_not_found(row["id"], handle)
        if step["approval_state"] != rules.OPEN:
            return False
        step.update(rules.timed_out_step(message, now := self._clock()))
        self._add_events(row, events, now)
        return True

    # Outbox.
    async def claim_events(self, owner: str, *, limit: int = 10) -> list[EventClaim]:
        now = self._clock()
        heads: dict[str, _Row] = {}
        for event in sorted(self._events.values(), key=lambda e: e["seq"]):
            if event["state"] in rules.UNDELIVERED:
                heads.setdefault(event["invocation_id"], event)
        due = sorted((e for e in heads.values() if rules.event_due(e, now)),
                     key=lambda e: (e["next_attempt_at"], e["id"]))[:limit]
        for event in due:
            event.update(rules.event_claimed(event, owner, now, self.lease_s))
        return [rules.event_claim(e) for e in due]

    def _claimed_event(self, claim: EventClaim) -> _Row:
        row = self._events.get(claim.event.event_id)
        if row is None or not rules.holds_event(row, claim):
            raise refusals.event_claim_lost(claim)
        return row

    async def event_delivered(self, claim: EventClaim) -> None:
        row = self._claimed_event(claim)
        row.update(rules.delivered(row, self._clock()))

    async def event_failed(self, claim: EventClaim, *, error: str,
                           retry_at: datetime | None, disable_url: bool = False) -> None:
        row = self._claimed_event(claim)
        row.update(rules.attempt_failed(row, error, retry_at, disable_url, self._clock()))
        if disable_url:
            for other in self._events.values():
                if other["url"] == row["url"] and other["state"] in rules.UNDELIVERED:
                    other.update(rules.gone(error))

    async def list_events(self, invocation_id: str) -> list[Event]:
        self._invocation(invocation_id)
        return [event_from_row(e) for e in self._events_of([invocation_id])]

    def _events_of(self, invocation_ids: Iterable[str]) -> list[_Row]:
        wanted = set(invocation_ids)
        return sorted((e for e in self._events.values() if e["invocation_id"] in wanted),
                      key=lambda e: (e["invocation_id"], e["seq"]))

    async def redeliver(self, invocation_id: str, event_id: str | None = None) -> int:
        self._invocation(invocation_id)
        chosen = rules.redeliverable(self._events_of([invocation_id]), invocation_id, event_id)
        now = self._clock()
        for event in chosen:
            event.update(rules.redelivered(now))
        return len(chosen)

    # Retention.
    async def purge(self, before: datetime) -> PurgeCounts:
        cutoff = before.timestamp()
        gone = [i for i, r in self._invocations.items() if rules.purgeable(r, cutoff)]
        counts = PurgeCounts(invocations=len(gone))
        for invocation_id in gone:
            row = self._invocations.pop(invocation_id)
            self._keys.pop(row["idempotency_key"], None)
            counts.steps += len(self._steps.pop(invocation_id))
        self._tokens = {h: t for h, t in self._tokens.items() if t[0] in self._invocations}
        dropped = self._events_of(gone)
        for event in dropped:
            del self._events[event["id"]]
        counts.events = len(dropped)
        used = {r["chain_id"] for r in self._invocations.values()}
        unused = [c for c, r in self._chains.items()
                  if r["deleted_at"] is not None and c not in used]
        for chain_id in unused:
            del self._chains[chain_id]
        counts.chains = len(unused)
        return counts

    async def close(self) -> None:
        return None
