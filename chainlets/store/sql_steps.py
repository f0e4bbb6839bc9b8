"""Writing a step's row under the lease fence: the fence's UPDATE, then the step's, or on
PostgreSQL both in one statement (one round trip instead of two).

The one statement is a data-modifying WITH: the fence's UPDATE of the invocation's row (which
locks it, as the fence always does), the step's UPDATE joined to the fenced row (so nothing
is written when the lease is lost), and the fenced columns read back with whether the step's
row was there. SQLite has no UPDATE inside WITH; its two statements are no round trips.
"""

import functools
from collections.abc import Mapping
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from chainlets.store import refusals, rules
from chainlets.store.models import Created, NewInvocation, State
from chainlets.store.pipeline import Staged
from chainlets.store.prepared import Prepared, first_of
from chainlets.store.rows import invocation_from_row
from chainlets.store.tables import invocations, steps

__all__ = ["FENCED", "STEP_COLUMNS", "add_step", "created", "fenced_step", "put_step",
           "staged_create"]

_inv, _steps = invocations.c, steps.c

# What a fenced write reads back: the lease and what its events need, never the invocation's
# input, options or output (JSON decoded for nothing).
FENCED = (_inv.id, _inv.chain_id, _inv.callback_url, _inv.event_seq, _inv.lease_owner,
          _inv.lease_attempt, _inv.lease_expires_at, _inv.signals)
# The columns every step transition writes (`rows.step_values`); an approval writes more.
STEP_COLUMNS = ("state", "output", "status_message", "attempts", "usage", "details",
                "started_at", "finished_at", "updated_at")

_UPDATE_STEP = Prepared(sa.update(steps).where(_steps.invocation_id == sa.bindparam("b_id"),
                                               _steps.handle == sa.bindparam("b_handle")))


def put_step(conn: sa.Connection, invocation_id: str, handle: str,
             values: Mapping[str, Any], now: float) -> None:
    """Update the step's row, or add one after the others (a step added at run time)."""
    if _UPDATE_STEP.rowcount(conn, {"b_id": invocation_id, "b_handle": handle,
                                    **values}) == 0:
        add_step(conn, invocation_id, handle, values, now)


def add_step(conn: sa.Connection, invocation_id: str, handle: str,
             values: Mapping[str, Any], now: float) -> None:
    position = conn.execute(sa.select(
        sa.func.coalesce(sa.func.max(_steps.position), -1) + 1).where(
        _steps.invocation_id == invocation_id)).scalar_one()
    conn.execute(sa.insert(steps).values(
        rules.empty_step(invocation_id, handle, position, now) | dict(values)))


@functools.cache
def fenced_step(fence_columns: tuple[str, ...], full: bool = True) -> Prepared:
    """PostgreSQL's one statement for a fence setting `fence_columns` (parameters `f_…`,
    with `b_id`, `b_owner`, `b_attempt`, `b_events`) and a step's `STEP_COLUMNS`
    (parameters `s_…`, with `b_handle`): one row of the fenced columns (`full`; else only
    `id`: a write with no events to number reads nothing else) and `stepped` (1, or 0 when
    the step has no row yet), or none when the lease is lost."""
    fenced = sa.update(invocations).where(
        _inv.id == sa.bindparam("b_id"), _inv.lease_owner == sa.bindparam("b_owner"),
        _inv.lease_attempt == sa.bindparam("b_attempt")).values(
        {"event_seq": _inv.event_seq + sa.bindparam("b_events", type_=sa.Integer),
         **{name: sa.bindparam(f"f_{name}", type_=invocations.c[name].type)
            for name in fence_columns}}).returning(*(FENCED if full else FENCED[:1])).cte(
        "fenced")
    # The key as parameters (found by the primary key), and joined to the fenced row (written
    # only when the fence let the write in).
    stepped = sa.update(steps).where(
        _steps.invocation_id == sa.bindparam("b_id"), _steps.handle == sa.bindparam("b_handle"),
        _steps.invocation_id == fenced.c.id).values(
        {name: sa.bindparam(f"s_{name}", type_=steps.c[name].type)
         for name in STEP_COLUMNS}).returning(_steps.handle).cte("stepped")
    count = sa.select(sa.func.count()).select_from(stepped).scalar_subquery()
    return Prepared(sa.select(*fenced.c, count.label("stepped")))


@functools.cache
def created(invocation: Prepared) -> Prepared:
    """PostgreSQL's one statement creating an invocation: `invocation` (the INSERT of its row
    from a SELECT, which inserts nothing once its chain is deleted) and a `waiting` row per
    step of `b_handles` in order, as `rules.initial_steps` makes them (no step reused; `b_now`,
    `b_attempts`), in one data-modifying WITH; one row, `invocations` (1, or 0: no chain)."""
    inserted = cast(sa.Insert, invocation.statement).returning(_inv.id).cte("inserted")
    handles = sa.func.unnest(sa.bindparam("b_handles", type_=postgresql.ARRAY(sa.String))
                             ).table_valued("handle", with_ordinality="ord").render_derived()
    waiting = sa.insert(steps).from_select(
        ["invocation_id", "handle", "position", "state", "attempts", "updated_at"],
        sa.select(inserted.c.id, handles.c.handle, handles.c.ord - 1,
                  sa.literal(State.WAITING.value),
                  sa.bindparam("b_attempts", type_=_steps.attempts.type),
                  sa.cast(sa.bindparam("b_now", type_=sa.Double), sa.Double)
                  ).select_from(inserted).join(handles, sa.true())
    ).returning(_steps.handle).cte("waiting")
    return Prepared(sa.select(
        sa.select(sa.func.count()).select_from(inserted).scalar_subquery().label("invocations"),
        sa.select(sa.func.count()).select_from(waiting).scalar_subquery().label("steps")))


def staged_create(statement: Prepared, new: NewInvocation, row: dict[str, Any],
                  now: float) -> Staged[Created]:
    """The staged write creating `new` (its invocation `row`, not rerun, no idempotency key,
    no events) with `statement` (`created`)."""
    rows = rules.initial_steps(new, row["id"], [], now)
    parameters = {**row, "b_handles": list(new.steps), "b_now": now, "b_attempts": []}

    def then(_conn: sa.Connection, sent: list[Any]) -> Created:
        counts = first_of(sent[0])
        if counts is None or counts["invocations"] == 0:
            raise refusals.chain_not_found(new.chain_id)
        return Created(invocation=invocation_from_row(row, rows), created=True,
                       lease=rules.lease_of(row) if row["lease_owner"] else None)

    return Staged(lambda conn: [statement.run(conn, parameters)], then)
