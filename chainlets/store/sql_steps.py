"""Writing a step's row under the lease fence: the fence's UPDATE, then the step's, or on
PostgreSQL both in one statement (one round trip instead of two).

The one statement is a data-modifying WITH: the fence's UPDATE of the invocation's row (which
locks it, as the fence always does), the step's UPDATE joined to the fenced row (so nothing
is written when the lease is lost), and the fenced columns read back with whether the step's
row was there. SQLite has no UPDATE inside WITH; its two statements are no round trips.
"""

import functools
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from chainlets.store import rules
from chainlets.store.prepared import Prepared
from chainlets.store.tables import invocations, steps

__all__ = ["FENCED", "STEP_COLUMNS", "add_step", "fenced_step", "put_step"]

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
def fenced_step(fence_columns: tuple[str, ...]) -> Prepared:
    """PostgreSQL's one statement for a fence setting `fence_columns` (parameters `f_…`,
    with `b_id`, `b_owner`, `b_attempt`, `b_events`) and a step's `STEP_COLUMNS`
    (parameters `s_…`, with `b_handle`): one row of the fenced columns and `stepped` (1, or
    0 when the step has no row yet), or none when the lease is lost."""
    fenced = sa.update(invocations).where(
        _inv.id == sa.bindparam("b_id"), _inv.lease_owner == sa.bindparam("b_owner"),
        _inv.lease_attempt == sa.bindparam("b_attempt")).values(
        {"event_seq": _inv.event_seq + sa.bindparam("b_events", type_=sa.Integer),
         **{name: sa.bindparam(f"f_{name}", type_=invocations.c[name].type)
            for name in fence_columns}}).returning(*FENCED).cte("fenced")
    # The key as parameters (found by the primary key), and joined to the fenced row (written
    # only when the fence let the write in).
    stepped = sa.update(steps).where(
        _steps.invocation_id == sa.bindparam("b_id"), _steps.handle == sa.bindparam("b_handle"),
        _steps.invocation_id == fenced.c.id).values(
        {name: sa.bindparam(f"s_{name}", type_=steps.c[name].type)
         for name in STEP_COLUMNS}).returning(_steps.handle).cte("stepped")
    count = sa.select(sa.func.count()).select_from(stepped).scalar_subquery()
    return Prepared(sa.select(*fenced.c, count.label("stepped")))
