"""The SQL store's approvals, outbox and retention."""

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from chainlets.store import approval_rules, refusals, rules
from chainlets.store.models import (
    Event,
    EventClaim,
    Lease,
    NewEvent,
    PurgeCounts,
    State,
    StoredStep,
)
from chainlets.store.rows import event_from_row, step_from_row
from chainlets.store.sql_base import SqlBase
from chainlets.store.tables import chains, events, invocations, steps

__all__ = ["SqlOutbox"]

_inv, _steps, _ev = invocations.c, steps.c, events.c
_PURGE_BATCH = 500


class SqlOutbox(SqlBase):
    # Approvals.
    @staticmethod
    def _token(conn: sa.Connection, token_hash: str) -> sa.RowMapping:
        row = conn.execute(sa.select(steps).where(
            _steps.token_hash == token_hash)).mappings().first()
        if row is None:
            raise refusals.token_not_found()
        return row

    async def get_approval(self, token_hash: str) -> tuple[str, StoredStep]:
        row = await self._read(lambda conn: self._token(conn, token_hash))
        return row["invocation_id"], step_from_row(row)

    async def resume_approval(self, token_hash: str, *, output: str | None = None,
                              error: str | None = None,
                              events: Sequence[NewEvent] = ()) -> StoredStep:
        now = self._clock()

        def work(conn: sa.Connection) -> StoredStep:
            step = self._token(conn, token_hash)
            invocation_id = step["invocation_id"]
            values = rules.resumed_step(invocation_id, step, output, error, self.limits, now)
            waiting = _inv.state == State.WAITING.value
            row = conn.execute(sa.update(invocations).where(
                _inv.id == invocation_id, _inv.state.in_(rules.ACTIVE)).values(
                state=sa.case((waiting, State.RUNNING.value), else_=_inv.state),
                wake_at=sa.case((waiting, None), else_=_inv.wake_at),
                signals=_inv.signals + 1, updated_at=now).returning(invocations)).mappings().first()
            if row is None:
                rules.check_resumable(self._invocation(conn, invocation_id))
                raise refusals.invocation_not_found(invocation_id)  # pragma: no cover
            approval_rules.check_in_time(row, step, now)  # raising rolls the update back
            # Settled by a timeout or a cancel since it was read: the first one wins.
            if conn.execute(sa.update(steps).where(
                    _steps.token_hash == token_hash,
                    _steps.approval_state == rules.OPEN).values(values)).rowcount == 0:
                rules.resumed_step(invocation_id, self._token(conn, token_hash), output, error,
                                   self.limits, now)
            self._add_events(conn, row, events, now)
            return step_from_row(self._token(conn, token_hash))

        return await self._write(work)

    async def expire_approval(self, lease: Lease, handle: str, *, message: str,
                              events: Sequence[NewEvent] = ()) -> bool:
        now = self._clock()

        def work(conn: sa.Connection) -> bool:
            row = self._fence(conn, lease, (), now)
            key = (_steps.invocation_id == row["id"]) & (_steps.handle == handle)
            if conn.execute(sa.update(steps).where(key, _steps.approval_state == rules.OPEN)
                            .values(rules.timed_out_step(message, now))).rowcount == 0:
                if conn.execute(sa.select(_steps.handle).where(key)).first() is None:
                    raise refusals.step_not_found(row["id"], handle)
                return False
            self._add_events(conn, row, events, now)
            return True

        return await self._write(work)

    # Outbox.
    async def claim_events(self, owner: str, *, limit: int = 10) -> list[EventClaim]:
        now = self._clock()
        earlier = events.alias("earlier")
        head = ~sa.exists().where(earlier.c.invocation_id == _ev.invocation_id,
                                  earlier.c.state.in_(rules.UNDELIVERED),
                                  earlier.c.seq < _ev.seq)
        due = sa.and_(_ev.state.in_(rules.UNDELIVERED), _ev.next_attempt_at <= now,
                      sa.or_(_ev.claimed_by.is_(None), _ev.claim_expires_at <= now))
        chosen = self._skip_locked(sa.select(_ev.id).where(due, head).order_by(
            _ev.next_attempt_at, _ev.id).limit(limit), events)

        def work(conn: sa.Connection) -> list[EventClaim]:
            ids = conn.execute(chosen).scalars().all()
            if not ids:
                return []
            rows = conn.execute(sa.update(events).where(_ev.id.in_(ids)).values(
                claimed_by=owner, claim_attempt=_ev.claim_attempt + 1,
                claim_expires_at=now + self.lease_s).returning(events)).mappings().all()
            return [rules.event_claim(r) for r in sorted(
                rows, key=lambda r: (r["next_attempt_at"], r["id"]))]

        return await self._write(work)

    @staticmethod
    def _mark(conn: sa.Connection, claim: EventClaim, values: dict[str, Any]) -> None:
        if conn.execute(sa.update(events).where(
                _ev.id == claim.event.event_id, _ev.state.in_(rules.UNDELIVERED),
                _ev.claimed_by == claim.owner, _ev.claim_attempt == claim.attempt).values(
                values)).rowcount == 0:
            raise refusals.event_claim_lost(claim)

    async def event_delivered(self, claim: EventClaim) -> None:
        values = rules.delivered({"attempts": claim.event.attempts}, self._clock())
        await self._write(lambda conn: self._mark(conn, claim, values))

    async def event_failed(self, claim: EventClaim, *, error: str,
                           retry_at: datetime | None, disable_url: bool = False) -> None:
        values = rules.attempt_failed({"attempts": claim.event.attempts}, error, retry_at,
                                      disable_url, self._clock())

        def work(conn: sa.Connection) -> None:
            self._mark(conn, claim, values)
            if disable_url:
                conn.execute(sa.update(events).where(
                    _ev.url == claim.event.url, _ev.state.in_(rules.UNDELIVERED)).values(
                    rules.gone(error)))

        await self._write(work)

    def _events(self, conn: sa.Connection, invocation_id: str) -> Sequence[sa.RowMapping]:
        self._invocation(conn, invocation_id)
        return conn.execute(sa.select(events).where(
            _ev.invocation_id == invocation_id).order_by(_ev.seq)).mappings().all()

    async def list_events(self, invocation_id: str) -> list[Event]:
        rows = await self._read(lambda conn: self._events(conn, invocation_id))
        return [event_from_row(r) for r in rows]

    async def redeliver(self, invocation_id: str, event_id: str | None = None) -> int:
        now = self._clock()

        def work(conn: sa.Connection) -> int:
            rows = self._events(conn, invocation_id)
            chosen = [r["id"] for r in rules.redeliverable(rows, invocation_id, event_id)]
            if chosen:
                conn.execute(sa.update(events).where(_ev.id.in_(chosen)).values(
                    rules.redelivered(now)))
            return len(chosen)

        return await self._write(work)

    # Retention.
    async def purge(self, before: datetime) -> PurgeCounts:
        counts, cutoff = PurgeCounts(), before.timestamp()

        def batch(conn: sa.Connection) -> int:
            ids = conn.execute(sa.select(_inv.id).where(_inv.finished_at < cutoff).limit(
                _PURGE_BATCH)).scalars().all()
            if ids:
                counts.steps += conn.execute(sa.delete(steps).where(
                    _steps.invocation_id.in_(ids))).rowcount
                counts.events += conn.execute(sa.delete(events).where(
                    _ev.invocation_id.in_(ids))).rowcount
                counts.invocations += conn.execute(sa.delete(invocations).where(
                    _inv.id.in_(ids))).rowcount
            return len(ids)

        while await self._write(batch) == _PURGE_BATCH:
            pass  # in batches, so no transaction holds the database for long

        def unused_chains(conn: sa.Connection) -> int:
            used = sa.exists().where(_inv.chain_id == chains.c.id)
            return conn.execute(sa.delete(chains).where(chains.c.deleted_at.is_not(None),
                                                        ~used)).rowcount

        counts.chains = await self._write(unused_chains)
        return counts
