"""The store on SQLite or PostgreSQL: SQLAlchemy Core on an async engine, one code path.

Lock order, the same in every transaction: the invocation's row first (every write for an
invocation updates it, which also fences lease holders), then its steps, then its events.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chainlets.engine.models import StepRecord
from chainlets.store import rules
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
from chainlets.store.sql_base import SqlBase, keyset
from chainlets.store.sql_outbox import SqlOutbox
from chainlets.store.tables import chains, invocations, steps

__all__ = ["SqlStore"]

_inv, _steps = invocations.c, steps.c


class SqlStore(SqlOutbox, SqlBase):
    """A `Store` in a database; create it with `open_store` (which migrates first)."""

    def __init__(self, engine: AsyncEngine, *, limits: Limits | None = None,
                 lease_s: float = 10.0, clock: Clock = system_clock,
                 ids: IdFactory = new_id) -> None:
        super().__init__(engine, limits=limits or Limits(), lease_s=lease_s, clock=clock,
                         ids=ids)

    # Chains.
    async def create_chain(self, chain: Mapping[str, Any]) -> StoredChain:
        self.limits.check_chain(chain)
        row = rules.chain_row(chain_id_for(chain), chain, self._clock())
        async with self._write() as conn:
            stored = (await conn.execute(
                sa.select(chains).where(chains.c.id == row["id"]))).mappings().first()
            if stored is not None and stored["deleted_at"] is None:
                return chain_from_row(stored)
            upsert = self._insert(chains).values(row)
            await conn.execute(upsert.on_conflict_do_update(
                index_elements=[chains.c.id],
                set_={"created_at": row["created_at"], "deleted_at": None}))
        return chain_from_row(row)

    async def get_chain(self, chain_id: str) -> StoredChain:
        async with self._read() as conn:
            return chain_from_row(await self._chain(conn, chain_id))

    async def _chain(self, conn: AsyncConnection, chain_id: str) -> sa.RowMapping:
        row = (await conn.execute(sa.select(chains).where(
            chains.c.id == chain_id, chains.c.deleted_at.is_(None)))).mappings().first()
        if row is None:
            raise rules.chain_not_found(chain_id)
        return row

    async def list_chains(self, *, limit: int = 50,
                          cursor: str | None = None) -> Page[StoredChain]:
        query = sa.select(chains).where(chains.c.deleted_at.is_(None))
        async with self._read() as conn:
            return await keyset(conn, chains, query, check_limit(limit), cursor,
                                chain_from_row)

    async def delete_chain(self, chain_id: str) -> None:
        async with self._write() as conn:
            done = await conn.execute(sa.update(chains).where(
                chains.c.id == chain_id, chains.c.deleted_at.is_(None)).values(
                deleted_at=self._clock()))
            if done.rowcount == 0:
                raise rules.chain_not_found(chain_id)

    # Invocations.
    async def create_invocation(self, new: NewInvocation, *, owner: str | None = None,
                                events: Sequence[NewEvent] = ()) -> Created:
        rules.check_new_invocation(new, self.limits)
        try:
            return await self._create_invocation(new, owner, events)
        except IntegrityError:
            # Another request with the same idempotency key committed first: answer with it.
            if new.idempotency_key is None:
                raise
            async with self._read() as conn:
                existing = await self._by_key(conn, new)
            if existing is None:
                raise
            return existing

    async def _by_key(self, conn: AsyncConnection, new: NewInvocation) -> Created | None:
        row = (await conn.execute(sa.select(invocations).where(
            _inv.idempotency_key == new.idempotency_key))).mappings().first()
        if row is None:
            return None
        rules.check_same_request(new, row)
        return Created(invocation=invocation_from_row(row), created=False)

    async def _create_invocation(self, new: NewInvocation, owner: str | None,
                                 events: Sequence[NewEvent]) -> Created:
        async with self._write() as conn:
            if new.idempotency_key is not None:
                existing = await self._by_key(conn, new)
                if existing is not None:
                    return existing
            await self._chain(conn, new.chain_id)
            source: list[sa.RowMapping] = []
            if new.rerun_of is not None:
                source_id = new.rerun_of.invocation_id
                await self._invocation(conn, source_id)
                if new.reuse:
                    source = list((await conn.execute(sa.select(steps).where(
                        _steps.invocation_id == source_id,
                        _steps.handle.in_(new.reuse)))).mappings())
            now = self._clock()
            row = rules.invocation_row(new, self._ids("inv"), now, owner, self.lease_s)
            rows = rules.initial_steps(new, row["id"], source, now)
            await conn.execute(sa.insert(invocations).values(row))
            if rows:
                await conn.execute(sa.insert(steps), rows)
            await self._add_events(conn, row, events, now)
        return Created(invocation=invocation_from_row(row, rows), created=True,
                       lease=rules.lease_of(row) if owner else None)

    async def get_invocation(self, invocation_id: str) -> Invocation:
        async with self._read() as conn:
            row = await self._invocation(conn, invocation_id)
            rows = (await conn.execute(sa.select(steps).where(
                _steps.invocation_id == invocation_id))).mappings().all()
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
        async with self._read() as conn:
            return await keyset(conn, invocations, query, check_limit(limit), cursor,
                                invocation_from_row)

    async def record_step(self, lease: Lease, step: StepRecord, *,
                          events: Sequence[NewEvent] = (),
                          approval: OpenApproval | None = None) -> None:
        self.limits.check_output(step.handle, step.output)
        now = self._clock()
        values = rules.step_columns(step, approval, now)
        try:
            async with self._write() as conn:
                row = await self._fence(conn, lease, events, now)
                key = (_steps.invocation_id == row["id"]) & (_steps.handle == step.handle)
                done = await conn.execute(sa.update(steps).where(key).values(values))
                if done.rowcount == 0:
                    position = (await conn.execute(sa.select(
                        sa.func.coalesce(sa.func.max(_steps.position), -1) + 1).where(
                        _steps.invocation_id == row["id"]))).scalar_one()
                    await conn.execute(sa.insert(steps).values(rules.empty_step(
                        row["id"], step.handle, position, now) | values))
        except IntegrityError as exc:
            if approval is None:
                raise
            raise rules.token_reused(step.handle) from exc

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Sequence[NewEvent] = ()) -> None:
        now = self._clock()
        values = rules.invocation_update(state, output, status_message, self.limits, now)
        async with self._write() as conn:
            await self._fence(conn, lease, events, now, values)

    async def suspend(self, lease: Lease, waiting_on: Collection[str], *,
                      events: Sequence[NewEvent] = ()) -> bool:
        rules.check_waiting_on(waiting_on)
        now = self._clock()
        async with self._write() as conn:
            row = await self._fence(conn, lease, (), now)
            opened = (await conn.execute(sa.select(
                _steps.handle, _steps.approval_state, _steps.approval_deadline).where(
                _steps.invocation_id == row["id"],
                _steps.approval_state == rules.OPEN))).all()
            if not set(waiting_on) <= {h for h, _, _ in opened}:
                return False
            await conn.execute(sa.update(invocations).where(_inv.id == row["id"]).values(
                rules.suspended(min(d for _, _, d in opened))))
            await self._add_events(conn, row, events, now)
        return True

    async def cancel_invocation(self, invocation_id: str, *, message: str,
                                events: Sequence[NewEvent] = ()) -> Invocation:
        now = self._clock()
        async with self._write() as conn:
            row = (await conn.execute(sa.update(invocations).where(
                _inv.id == invocation_id, _inv.state.in_(rules.ACTIVE)).values(
                {**rules.cancelled_invocation(message, now), "signals": _inv.signals + 1}
            ).returning(invocations))).mappings().first()
            if row is None:
                rules.check_cancellable(await self._invocation(conn, invocation_id))
            assert row is not None
            await conn.execute(sa.update(steps).where(
                _steps.invocation_id == invocation_id, _steps.state.in_(rules.ACTIVE)).values(
                state=State.CANCELLED.value, status_message=message, finished_at=now,
                updated_at=now, approval_state=sa.case(
                    (_steps.approval_state == rules.OPEN, "cancelled"),
                    else_=_steps.approval_state)))
            await self._add_events(conn, row, events, now)
        return await self.get_invocation(invocation_id)

    # Leases.
    async def claim(self, owner: str, *, limit: int = 1) -> list[Lease]:
        now = self._clock()
        due = sa.and_(
            sa.or_(_inv.lease_owner.is_(None), _inv.lease_expires_at <= now),
            sa.or_(_inv.state == State.RUNNING.value,
                   sa.and_(_inv.state == State.WAITING.value, _inv.wake_at <= now)))
        chosen = self._skip_locked(sa.select(_inv.id).where(due).order_by(
            _inv.created_at, _inv.id).limit(limit))
        async with self._write() as conn:
            # Two statements: PostgreSQL may evaluate a LIMIT subquery inside UPDATE … IN more
            # than once, claiming more than `limit` rows.
            ids = (await conn.execute(chosen)).scalars().all()
            if not ids:
                return []
            rows = (await conn.execute(sa.update(invocations).where(
                _inv.id.in_(ids), due).values(
                lease_owner=owner, lease_attempt=_inv.lease_attempt + 1,
                lease_expires_at=now + self.lease_s, state=State.RUNNING.value, wake_at=None,
                updated_at=now).returning(invocations))).mappings().all()
        return [rules.lease_of(r) for r in sorted(rows, key=lambda r: r["created_at"])]

    async def heartbeat(self, lease: Lease) -> Lease:
        now = self._clock()
        async with self._write() as conn:
            row = await self._fence(conn, lease, (), now,
                                    {"lease_expires_at": now + self.lease_s})
        return rules.lease_of(row)

    async def release(self, lease: Lease) -> None:
        async with self._write() as conn:
            await self._fence(conn, lease, (), self._clock(),
                              {"lease_owner": None, "lease_expires_at": None})
