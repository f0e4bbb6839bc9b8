"""What every SQL store method builds on: transactions, the lease fence, events, keyset pages.

A method's SQL is a plain function over a `Connection`, run in one transaction by the
dialect's `Transactions` (the store's worker threads).
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa

from chainlets.store import dialect, refusals
from chainlets.store.models import Lease, NewEvent, Page
from chainlets.store.prepared import Prepared
from chainlets.store.rows import Clock, IdFactory, Row, decode_cursor, encode_cursor, event_rows
from chainlets.store.settings import Limits
from chainlets.store.sql_steps import FENCED, STEP_COLUMNS, add_step, fenced_step, put_step
from chainlets.store.tables import events, invocations

__all__ = ["SqlBase", "keyset"]

T = TypeVar("T")
_inv = invocations.c

# Hot statements built once: SQLAlchemy then finds each compiled in its cache by a memoized
# key, instead of building, keying and coercing a fresh expression per call (most of a write's
# CPU). The values set are passed as parameters named like their columns.
_FENCE = Prepared(sa.update(invocations).where(
    _inv.id == sa.bindparam("b_id"), _inv.lease_owner == sa.bindparam("b_owner"),
    _inv.lease_attempt == sa.bindparam("b_attempt")).values(
    event_seq=_inv.event_seq + sa.bindparam("b_events", type_=sa.Integer)).returning(*FENCED))
_COUNT_EVENTS = sa.update(invocations).where(_inv.id == sa.bindparam("b_id")).values(
    event_seq=_inv.event_seq + sa.bindparam("b_events", type_=sa.Integer)).returning(
    _inv.event_seq)
_INVOCATION = sa.select(invocations).where(_inv.id == sa.bindparam("b_id"))
_INSERT_EVENTS = Prepared(sa.insert(events))


class SqlBase:
    """The transactions, the seams (clock, ids) and the limits; the fence."""

    def __init__(self, transactions: dialect.Transactions, dialect_name: str, *, limits: Limits,
                 lease_s: float, clock: Clock, ids: IdFactory) -> None:
        self.transactions, self.limits, self.lease_s = transactions, limits, lease_s
        self._clock, self._ids, self._dialect = clock, ids, dialect_name

    async def _read(self, work: Callable[[sa.Connection], T]) -> T:
        return await self.transactions.run(work, write=False)

    async def _write(self, work: Callable[[sa.Connection], T]) -> T:
        return await self.transactions.run(work, write=True)

    def _insert(self, table: sa.Table) -> Any:
        return dialect.insert(table, self._dialect)

    def _skip_locked(self, query: sa.Select[Any], *of: sa.Table) -> sa.Select[Any]:
        return dialect.skip_locked(query, self._dialect, *of)

    @staticmethod
    def _invocation(conn: sa.Connection, invocation_id: str) -> sa.RowMapping:
        row = conn.execute(_INVOCATION, {"b_id": invocation_id}).mappings().first()
        if row is None:
            raise refusals.invocation_not_found(invocation_id)
        return row

    def _fence(self, conn: sa.Connection, lease: Lease, new_events: Sequence[NewEvent],
               now: float, values: Mapping[str, Any] | None = None,
               then: Callable[[Row], None] | None = None) -> Row:
        """Update the invocation's row only while `lease` holds it (which also locks the row
        for the rest of the transaction), do `then` (its steps' writes), and append
        `new_events`."""
        row = _FENCE.first(conn, {
            "b_id": lease.invocation_id, "b_owner": lease.owner, "b_attempt": lease.attempt,
            "b_events": len(new_events), "updated_at": now, **(values or {})})
        if row is None:
            raise refusals.lease_lost(lease)
        if then is not None:
            then(row)
        self._append_events(conn, row, new_events, now)
        return row

    def _append_events(self, conn: sa.Connection, row: Row, new_events: Sequence[NewEvent],
                       now: float) -> None:
        """Insert `new_events`, whose numbers the fence that read back `row` reserved."""
        if new_events:
            _INSERT_EVENTS.run_many(conn, event_rows(
                new_events, row, row["event_seq"] - len(new_events), now, self._ids))

    def _fence_steps(self, conn: sa.Connection, lease: Lease, new_events: Sequence[NewEvent],
                     now: float, records: Sequence[tuple[str, Mapping[str, Any]]],
                     values: Mapping[str, Any] | None = None) -> Row:
        """`_fence`, writing the steps' `records` (handle, columns) in between; on PostgreSQL
        a single step's transition and the fence are one statement (sql_steps)."""
        if self._dialect != "postgresql" or len(records) != 1 \
                or tuple(records[0][1]) != STEP_COLUMNS:
            def put_steps(row: Row) -> None:
                for handle, columns in records:
                    put_step(conn, row["id"], handle, columns, now)
            return self._fence(conn, lease, new_events, now, values, then=put_steps)
        fence = {"updated_at": now, **(values or {})}
        [(handle, columns)] = records
        row = fenced_step(tuple(fence)).first(conn, {
            "b_id": lease.invocation_id, "b_owner": lease.owner, "b_attempt": lease.attempt,
            "b_events": len(new_events), "b_handle": handle,
            **{f"f_{k}": v for k, v in fence.items()},
            **{f"s_{k}": v for k, v in columns.items()}})
        if row is None:
            raise refusals.lease_lost(lease)
        if not row["stepped"]:  # a step added at run time: its row comes now
            add_step(conn, row["id"], handle, columns, now)
        self._append_events(conn, row, new_events, now)
        return row

    def _add_events(self, conn: sa.Connection, row: Row, new_events: Sequence[NewEvent],
                    now: float) -> None:
        """Append events for an invocation whose row this transaction already wrote."""
        if not new_events:
            return
        last = conn.execute(_COUNT_EVENTS, {"b_id": row["id"], "b_events": len(new_events)}
                            ).scalar_one()
        _INSERT_EVENTS.run_many(conn, event_rows(
            new_events, row, last - len(new_events), now, self._ids))

    async def close(self) -> None:
        await self.transactions.close()


def keyset(conn: sa.Connection, table: sa.Table, query: sa.Select[Any], limit: int,
           cursor: str | None, build: Callable[[Row], T]) -> Page[T]:
    """Newest first by (created_at, id), strictly after `cursor`; one row more than asked
    tells whether another page follows."""
    created, row_id = table.c.created_at, table.c.id
    if cursor is not None:
        at, after = decode_cursor(cursor)
        query = query.where(sa.or_(created < at, sa.and_(created == at, row_id < after)))
    rows = conn.execute(query.order_by(created.desc(), row_id.desc()).limit(
        limit + 1)).mappings().all()
    items = rows[:limit]
    more = len(rows) > limit
    return Page(items=[build(r) for r in items],
                next_cursor=encode_cursor(items[-1]["created_at"], items[-1]["id"])
                if more else None)
