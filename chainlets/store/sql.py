"""The store on SQLite or PostgreSQL: SQLAlchemy Core, one code path for both.

Each method is one transaction. Lock order, the same in every one: the invocation's row first
(every write for an invocation updates it, which also fences lease holders), then its steps,
then its events.
"""

from collections.abc import Callable, Collection, Mapping, Sequence
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
from chainlets.store.prepared import Prepared
from chainlets.store.rows import (
    Clock,
    IdFactory,
    Row,
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
from chainlets.store.sql_steps import add_step, created, put_step, staged_create
from chainlets.store.tables import chains, invocations, steps

__all__ = ["SqlStore"]

_inv, _steps = invocations.c, steps.c

# Hot statements built once (see sql_base): values are passed as parameters named like their
# columns, keys as `b_…` parameters.
_LIVE_CHAIN = sa.select(chains).where(chains.c.id == sa.bindparam("b_id"),
                                      chains.c.deleted_at.is_(None))
def _typed(column: sa.Column[Any]) -> sa.ColumnElement[Any]:
    """A parameter for `column` in a SELECT list; PostgreSQL types an untyped one as text,
    which a number column refuses (its `None`), so numbers are cast."""
    bind = sa.bindparam(column.name, type_=column.type)
    return sa.cast(bind, column.type) if isinstance(column.type, sa.Double) else bind


# The invocation's row, only while its chain is stored: a chain deleted meanwhile is caught
# without a statement of its own (no row inserted).
_INSERT_INVOCATION = Prepared(sa.insert(invocations).from_select(
    [c.name for c in invocations.c],
    sa.select(*[_typed(c) for c in invocations.c]).where(
        sa.exists().where(chains.c.id == sa.bindparam("chain_id", type_=_inv.chain_id.type),
                          chains.c.deleted_at.is_(None)))))
_INSERT_STEPS = Prepared(sa.insert(steps))
_STEPS_OF = sa.select(steps).where(_steps.invocation_id == sa.bindparam("b_id"))


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
        row = conn.execute(_LIVE_CHAIN, {"b_id": chain_id}).mappings().first()
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
            return await self._write(self._creating(new, owner, events))
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

    def _creating(self, new: NewInvocation, owner: str | None,
                  events: Sequence[NewEvent]) -> Callable[[sa.Connection], Created]:
        """The write creating `new`: on PostgreSQL, when it reads nothing first (no
        idempotency key, no rerun) and has no events, one statement (sql_steps.created),
        staged (sent ahead with the group commit's other writes: pipeline)."""
        if self._dialect != "postgresql" or new.idempotency_key is not None \
                or new.rerun_of is not None or events:
            return lambda conn: self._create(conn, new, owner, events)
        now = self._clock()
        row = rules.invocation_row(new, self._ids("inv"), now, owner, self.lease_s)
        return staged_create(created(_INSERT_INVOCATION), new, row, now)

    def _create(self, conn: sa.Connection, new: NewInvocation, owner: str | None,
                events: Sequence[NewEvent]) -> Created:
        if new.idempotency_key is not None and (existing := self._by_key(conn, new)):
            return existing
        source: list[sa.RowMapping] = []
        if new.rerun_of is not None:
            self._invocation(conn, new.rerun_of.invocation_id)
            source = list(conn.execute(sa.select(steps).where(
                _steps.invocation_id == new.rerun_of.invocation_id,
                _steps.handle.in_(new.reuse))).mappings())
        now = self._clock()
        row = rules.invocation_row(new, self._ids("inv"), now, owner, self.lease_s)
        rows = rules.initial_steps(new, row["id"], source, now)
        if _INSERT_INVOCATION.rowcount(conn, row) == 0:
            raise refusals.chain_not_found(new.chain_id)
        if rows:
            _INSERT_STEPS.run_many(conn, rows)
        self._add_events(conn, row, events, now)
        return Created(invocation=invocation_from_row(row, rows), created=True,
                       lease=rules.lease_of(row) if owner else None)

    async def get_invocation(self, invocation_id: str) -> Invocation:
        return await self._read(lambda conn: self._full(conn, invocation_id))

    def _full(self, conn: sa.Connection, invocation_id: str) -> Invocation:
        row = self._invocation(conn, invocation_id)
        rows = conn.execute(_STEPS_OF, {"b_id": invocation_id}).mappings().all()
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
        records = [(step.handle, values, approval_rules.closed_by(step))]

        try:
            await self._write(self._write_steps(lease, events, now, records))
        except IntegrityError as exc:
            if approval is None:
                raise
            raise refusals.token_reused(step.handle) from exc

    def _write_steps(self, lease: Lease, events: Sequence[NewEvent], now: float,
                     records: Sequence[tuple[str, dict[str, Any], str | None]],
                     values: Mapping[str, Any] | None = None) -> Callable[[sa.Connection], Any]:
        """The write of `_fenced_steps`, except that a step ending without an answer (`closes`
        set) closes its open approval with it and never overrides a settled one: decided
        under the fence's lock, so a resume is either before it (and stands) or after it
        (refused)."""
        if all(closes is None for _, _, closes in records):
            return self._fenced_steps(lease, events, now, [(h, c) for h, c, _ in records],
                                      values)

        def work(conn: sa.Connection) -> Row:
            def put(row: Row) -> None:
                for handle, columns, closes in records:
                    if closes is None:
                        put_step(conn, row["id"], handle, columns, now)
                    else:
                        self._close_approval(conn, row["id"], handle, columns, closes, now)

            return self._fence(conn, lease, events, now, values, then=put)

        return work

    @staticmethod
    def _close_approval(conn: sa.Connection, invocation_id: str, handle: str,
                        values: dict[str, Any], closes: str, now: float) -> None:
        """Write a step's end that came without an answer: an open approval closes with it
        (`closes`), a settled one (resumed, timed out) stands and so does its record."""
        key = (_steps.invocation_id == invocation_id) & (_steps.handle == handle)
        settled = _steps.approval_state.is_not(None) & (_steps.approval_state != rules.OPEN)
        done = conn.execute(sa.update(steps).where(key, ~settled).values({
            **values, "approval_state": sa.case((_steps.approval_state == rules.OPEN, closes),
                                                else_=_steps.approval_state)}))
        if not done.rowcount and conn.execute(sa.select(_steps.handle).where(key)).first() is None:
            add_step(conn, invocation_id, handle, values, now)

    async def update_invocation(self, lease: Lease, *, state: State, output: str | None = None,
                                status_message: str | None = None,
                                events: Sequence[NewEvent] = (),
                                steps: Sequence[StepRecord] = ()) -> None:
        for step in steps:
            self.limits.check_output(step.handle, step.output)
        now = self._clock()
        values = rules.invocation_update(state, output, status_message, self.limits, now)
        records = [(s.handle, rules.step_columns(s, None, now), approval_rules.closed_by(s))
                   for s in steps]

        await self._write(self._write_steps(lease, events, now, records, values))

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
            started = conn.execute(sa.select(_inv.created_at, _inv.options).where(
                _inv.id == row["id"])).mappings().one()  # the fence reads back neither
            conn.execute(sa.update(invocations).where(_inv.id == row["id"]).values(
                rules.suspended(approval_rules.wake_at(started, [d for _, d in opened]))))
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
