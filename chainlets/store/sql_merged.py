"""PostgreSQL: the fenced step writes of one group commit as one statement.

Every step write of a batch is the same statement with other values (sql_steps.fenced_step);
run one by one, each costs the driver's work for a statement (most of a write's CPU in the
process) and the server's. Those with the same fence columns and no events go instead as the
rows of one JSON document: the fence's UPDATE of every invocation row whose lease still
matches, the steps' UPDATE joined to the fenced rows, and, per row, whether it was fenced and
whether its step's row was there, so that each write is answered as if alone (a lost lease
raises for its own write, a step added at run time gets its row).
"""

import functools
import json
from typing import Any

import sqlalchemy as sa

from chainlets.store.prepared import Prepared
from chainlets.store.sql_steps import STEP_COLUMNS
from chainlets.store.tables import invocations, steps

__all__ = ["merged_steps", "rows_document"]

_inv, _steps = invocations.c, steps.c
_JSON_TYPES = (sa.JSON,)


def _sql_type(column: sa.Column[Any]) -> Any:
    """The row's type for a column's value (JSON stays JSON, no double encoding)."""
    return sa.JSON() if isinstance(column.type, _JSON_TYPES) else column.type


@functools.cache
def merged_steps(fence_columns: tuple[str, ...]) -> Prepared:
    """One statement for many writes of `fence_step(fence_columns, full=False)`: parameter
    `b_rows`, a JSON array of objects (`ord`, `b_id`, `b_owner`, `b_attempt`, `b_handle`,
    `f_…`, `s_…`), every `b_id` different; one row per `ord` with `fenced` and `stepped`."""
    columns: list[sa.ColumnClause[Any]] = [
        sa.column("ord", sa.Integer), sa.column("b_id", sa.String),
        sa.column("b_owner", sa.String), sa.column("b_attempt", sa.Integer),
        sa.column("b_handle", sa.String),
        *[sa.column(f"f_{name}", _sql_type(_inv[name])) for name in fence_columns],
        *[sa.column(f"s_{name}", _sql_type(_steps[name])) for name in STEP_COLUMNS]]
    document = sa.func.json_to_recordset(sa.cast(
        sa.bindparam("b_rows", type_=sa.String), sa.JSON)).table_valued(
        *columns).render_derived(name="document", with_types=True)
    rows = sa.select(*document.c).cte("given")
    fenced = sa.update(invocations).where(
        _inv.id == rows.c.b_id, _inv.lease_owner == rows.c.b_owner,
        _inv.lease_attempt == rows.c.b_attempt).values(
        {name: rows.c[f"f_{name}"] for name in fence_columns}).returning(
        rows.c.ord).cte("fenced")
    stepped = sa.update(steps).where(
        _steps.invocation_id == rows.c.b_id, _steps.handle == rows.c.b_handle,
        rows.c.ord == fenced.c.ord).values(
        {name: rows.c[f"s_{name}"] for name in STEP_COLUMNS}).returning(
        rows.c.ord).cte("stepped")
    return Prepared(sa.select(
        rows.c.ord, fenced.c.ord.is_not(None).label("fenced"),
        stepped.c.ord.is_not(None).label("stepped")).select_from(
        rows.outerjoin(fenced, fenced.c.ord == rows.c.ord).outerjoin(
            stepped, stepped.c.ord == rows.c.ord)).order_by(rows.c.ord))


def rows_document(rows: list[dict[str, Any]]) -> dict[str, str]:
    """The statement's parameters: the writes' rows as one JSON document, each numbered
    (`ord`) in order; a None is left out, which `json_to_recordset` reads as SQL NULL (a JSON
    `null` would be stored in a JSON column as the value null)."""
    return {"b_rows": json.dumps(
        [{"ord": n, **{k: v for k, v in row.items() if v is not None}}
         for n, row in enumerate(rows)], separators=(",", ":"))}
