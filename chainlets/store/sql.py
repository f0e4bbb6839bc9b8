"""The store on SQLite or PostgreSQL: SQLAlchemy Core, one code path for both.

Each method is one transaction. Lock order, the same in every one: the invocation's row first
(every write for an invocation updates it, which also fences lease holders), then its steps,
then its events.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from chainlets.engine.models import StepRecord
from chainlets.store import approval_rules, dialect, refusals, rules
from chainlets.store.models import (
    Created,
    Invocation,
    Lease,
    NewEvent,
    NewInvocation,
    OpenApproval,
    Page,
    State,
    StoredChain,
)
from chainlets.store.rows import (
    Clock,
    IdFactory,
    chain_from_row,
    chain_id_for,
    check_limit,
    invocation_from_row,
    new_id,
    system_clock,
    to_ts,
)
from chainlets.store.settings import Limits
from chainlets.store.sql_base import keyset
from chainlets.store.sql_outbox import SqlOutbox
from chainlets.store.tables import chains, invocations, steps

__all__ = ["SqlStore"]

_inv, _steps = invocations.c, steps.c


class SqlStore(SqlOutbox):
    """A `Store` in a database; `open_store` migrates the database first and makes one."""

    def __init__(self, url: sa.URL, *, sync: str | None = None, limits: Limits | None = None,
                 lease_s: float = 10.0, clock: Clock = system_clock,
                 ids: IdFactory = new_id) -> None:
        super().__init__(dialect.transactions(url, sync), url.get_backend_name(),
                         limits=limits or Limits(), lease_s=lease_s, clock=clock, ids=ids)

    # Chains.
    async def create_chain(self, chain: Mapping[str, Any]) -> StoredChain:
        self.limits.check_chain(chain)
        row = rules.chain_row(chain_id_for(chain), chain, self._clock())

        def work(conn: sa.Connection) -> StoredChain:
            stored = conn.execute(sa.select(chains).where(
                chains.c.id == row["id"])).mappings().first()
            if stored is not None and stored["deleted_at"] is None:
                return chain_from_row(stored)
            conn.execute(self._insert(chains).values(row).on_conflict_do_update(
                index_elements=[chains.c.id],
                set_={"created_at": row["created_at"], "deleted_at": None}))
            return chain_from_row(row)

        return await self._write(work)

    async def get_chain(self, chain_id: str) -> StoredChain:
        return await self._read(lambda conn: chain_from_row(self._chain(conn, chain_id)))

    @staticmethod
    def _chain(conn: sa.Connection, chain_id: str) -> sa.RowMapping:
        row = conn.execute(sa.select(chains).where(
            chains.c.id == chain_id, chains.c.deleted_at.is_(None))).mappings().first()
        if row is None:
            raise refusals.chain_not_found(chain_id)
        return row

    async def list_chains(self, *, limit: int = 50,
                          cursor: str | None = None) -> Page[StoredChain]:
        query = sa.select(chains).where(chains.c.deleted_at.is_(None))
        limit = check_limit(limit)
        return await self._read(lambda conn: keyset(conn, chains, query, limit, cursor,
                                                    chain_from_row))

    async def delete_chain(self, chain_id: str) -> None:
        def work(conn: sa.Connection) -> None:
            done = conn.execute(sa.update(chains).where(
                chains.c.id == chain_id, chains.c.deleted_at.is_(None)).values(
                deleted_at=self._clock()))
            if done.rowcount == 0:
                raise refusals.chain_not_found(chain_id)

        await self._write(work)

    # Invocations.
    async def create_invocation(self, new: NewInvocation, *, owner: str | None = None,
                                events: Sequence[NewEvent] = ()) -> Created:
        rules.check_new_invocation(new, self.limits)
        try:
            return await self._write(lambda conn: self._create(conn, new, owner, events))
        except IntegrityError:
            # Another request with the same idempotency key committed first: answer with it.
            existing = await self._read(lambda conn: self._by_key(conn, new)) \
                if new.idempotency_key is not None else None
            if existing is None:
                raise
            return existing

    @staticmethod
    def _by_key(conn: sa.Connection, new: NewInvocation) -> Created | None:
        row = conn.execute(sa.select(invocations).where(
            _inv.idempotency_key == new.idempotency_key)).mappings().first()
        if row is None:
            return None
        rules.check_same_request(new, row)
        return Created(invocation=invocation_from_row(row), created=False)

    def _create(self, conn: sa.Connection, new: NewInvocation, owner: str | None,
                events: Sequence[NewEvent]) -> Created:
        if new.idempotency_key is not None and (existing := self._by_key(conn, new)):
            return existing
        self._chain(conn, new.chain_id)
        source: list[sa.RowMapping] = []
        if new.rerun_of is not None:
            self._invocation(conn, new.rerun_of.invocation_id)
            source = list(conn.execute(sa.select(steps).where(
                _steps.invocation_id == new.rerun_of.invocation_id,
                _steps.handle.in_(new.reuse))).mappings())
        now = self._clock()
        row = rules.invocation_row(new, self._ids("inv"), now, owner, self.lease_s)
        rows = rules.initial_steps(new, row["id"], source, now)
        conn.execute(sa.insert(invocations).values(row))
        if rows:
            conn.execute(sa.insert(steps), rows)
        self._add_events(conn, row, events, now)
        return Created(invocation=invocation_from_row(row, rows), created=True,
                       lease=rules.lease_of(row) if owner else None)

    async def get_invocation(self, invocation_id: str) -> Invocation:
        return await self._read(lambda conn: self._full(conn, invocation_id))

    def _full(self, conn: sa.Connection, invocation_id: str) -> Invocation:
        row = self._invocation(conn, invocation_id)
        rows = conn.execute(sa.select(steps).where(
            _steps.invocation_id == invocation_id)).mappings().all()
        return invocation_from_row(row, rows)

    async def list_invocations(self, *, chain_id: str | None = None, state: State | None = None,
                               since: datetime | None = None, limit: int = 50,
                               cursor: str | None = None) -> Page[Invocation]:
        query = sa.select(invocations)
        if chain_id is not None:
            query = query.where(_inv.chain_id == chain_id)
        if state is not None:
            query = query.where(_inv.state == state.value)
        if since is not None:
            query = query.where(_inv.created_at >= to_ts(since))
        limit = check_limit(limit)
        return await self._read(lambda conn: keyset(conn, invocations, query, limit, cursor,
                                                    invocation_from_row))

    async def record_step(self, lease: Lease, step: StepRecord, *,
                          events: Sequence[NewEvent] = (),
                          approval: OpenApproval | None = None) -> None:
        self.limits.check_output(step.handle, step.output)
        now = self._clock()
        values = rules.step_columns(step, approval, now)
        closes = approval_rules.closed_by(step)

        def work(conn: sa.Connection) -> None:
            row = self._fence(conn, lease, events, now)
            key = (_steps.invocation_id == row["id"]) & (_steps.handle == step.handle)
            if closes is not None:
                if self._close_approval(conn, key, values, closes):
                    return
            elif conn.execute(sa.update(steps).where(key).values(values)).rowcount:
                return
            position = conn.execute(sa.select(
                sa.func.coalesce(sa.func.max(_steps.position), -1) + 1).where(
                _steps.invocation_id == row["id"])).scalar_one()
            conn.execute(sa.insert(steps).values(
                rules.empty_step(row["id"], step.handle, position, now) | values))

        try:
            await self._write(work)
        except IntegrityError as exc:
            if approval is None:
                raise
            raise refusals.token_reused(step.handle) from exc

    @staticmethod
    def _close_approval(conn: sa.Connection, key: sa.ColumnElement[bool],
                        values: dict[str, Any], closes: str) -> bool:
        """Write a step's end that came without an answer: an open approval closes with it
        (`closes`), a settled one (resumed, timed out) stands and so does its record. False
        when the step has no row yet."""
        settled = _steps.approval_state.is_not(None) & (_steps.approval_state != rules.OPEN)
        done = conn.execute(sa.update(steps).where(key, ~settled).values({
            **values, "approval_state": sa.case((_steps.approval_state == rules.OPEN, closes),
                                                else_=_steps.approval_state)}))
        return bool(done.rowcount) or conn.execute(sa.select(_steps.handle).where(
            key)).first() is not None

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Sequence[NewEvent] = ()) -> None:
        now = self._clock()
        values = rules.invocation_update(state, output, status_message, self.limits, now)
        await self._write(lambda conn: self._fence(conn, lease, events, now, values))

    async def suspend(self, lease: Lease, waiting_on: Collection[str], *,
                      events: Sequence[NewEvent] = ()) -> bool:
        rules.check_waiting_on(waiting_on)
        now = self._clock()

        def work(conn: sa.Connection) -> bool:
            row = self._fence(conn, lease, (), now)
            opened = conn.execute(sa.select(_steps.handle, _steps.approval_deadline).where(
                _steps.invocation_id == row["id"], _steps.approval_state == rules.OPEN)).all()
            if not set(waiting_on) <= {handle for handle, _ in opened}:
                return False
            conn.execute(sa.update(invocations).where(_inv.id == row["id"]).values(
                rules.suspended(approval_rules.wake_at(row, [d for _, d in opened]))))
            self._add_events(conn, row, events, now)
            return True

        return await self._write(work)

    async def cancel_invocation(self, invocation_id: str, *, message: str,
                                events: Sequence[NewEvent] = ()) -> Invocation:
        now = self._clock()

        def work(conn: sa.Connection) -> Invocation:
            row = conn.execute(sa.update(invocations).where(
                _inv.id == invocation_id, _inv.state.in_(rules.ACTIVE)).values(
                {**rules.cancelled_invocation(message, now), "signals": _inv.signals + 1}
            ).returning(invocations)).mappings().first()
            if row is None:
                rules.check_cancellable(self._invocation(conn, invocation_id))
                raise refusals.invocation_not_found(invocation_id)  # pragma: no cover
            waited = _steps.approval_state == rules.OPEN
            conn.execute(sa.update(steps).where(
                _steps.invocation_id == invocation_id, _steps.state.in_(rules.ACTIVE)).values(
                state=State.CANCELLED.value, finished_at=now, status_message=sa.case(
                    (waited, approval_rules.cancelled_waiting(message)), else_=message),
                updated_at=now, approval_state=sa.case(
                    (_steps.approval_state == rules.OPEN, "cancelled"),
                    else_=_steps.approval_state)))
            self._add_events(conn, row, events, now)
            return self._full(conn, invocation_id)

        return await self._write(work)

    # Leases.
    async def claim(self, owner: str, *, limit: int = 1) -> list[Lease]:
        now = self._clock()
        due = sa.and_(
            sa.or_(_inv.lease_owner.is_(None), _inv.lease_expires_at <= now),
            sa.or_(_inv.state == State.RUNNING.value,
                   sa.and_(_inv.state == State.WAITING.value, _inv.wake_at <= now)))
        chosen = self._skip_locked(sa.select(_inv.id).where(due).order_by(
            _inv.created_at, _inv.id).limit(limit))

        def work(conn: sa.Connection) -> list[Lease]:
            # Two statements: PostgreSQL may evaluate a LIMIT subquery inside UPDATE … IN
            # more than once, claiming more than `limit` rows.
            ids = conn.execute(chosen).scalars().all()
            if not ids:
                return []
            rows = conn.execute(sa.update(invocations).where(_inv.id.in_(ids), due).values(
                lease_owner=owner, lease_attempt=_inv.lease_attempt + 1,
                lease_expires_at=now + self.lease_s, state=State.RUNNING.value, wake_at=None,
                updated_at=now).returning(invocations)).mappings().all()
            return [rules.lease_of(r) for r in sorted(rows, key=lambda r: r["created_at"])]

        return await self._write(work)

    async def heartbeat(self, lease: Lease) -> Lease:
        now = self._clock()
        return rules.lease_of(await self._write(lambda conn: self._fence(
            conn, lease, (), now, {"lease_expires_at": now + self.lease_s})))

    async def release(self, lease: Lease) -> None:
        now = self._clock()
        await self._write(lambda conn: self._fence(
            conn, lease, (), now, {"lease_owner": None, "lease_expires_at": None}))
