"""The store's hot statements, run straight on the driver's cursor.

SQLAlchemy Core builds each statement once; its compiled SQL, parameter order and bind
processors (JSON encoding) are kept per dialect and parameter names, and each run is one
`cursor.execute` inside the connection's open transaction. SQLAlchemy's own execution path
(an execution context, parameter processing, a result object, events) cost about twice the
driver's work for these small statements. Only statements whose results need no type
processing (strings and numbers) belong here; everything else runs through `Connection`.
"""

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import sqlalchemy as sa

__all__ = ["Prepared", "first_of", "rowcount_of"]

Processor = Callable[[Any], Any] | None


class _Compiled:
    """One dialect's SQL for a statement with a given set of parameter names."""

    def __init__(self, statement: sa.Executable, dialect: sa.Dialect,
                 keys: Sequence[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=list(keys))  # type: ignore[attr-defined]
        self.sql: str = compiled.string
        self.positional: tuple[str, ...] | None = tuple(compiled.positiontup) \
            if compiled.positional else None
        self.processors: dict[str, Processor] = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for name, bind in compiled.binds.items()}
        # Parameters bound in the statement itself (none of ours), then the caller's.
        self.constants = {name: bind.value for name, bind in compiled.binds.items()
                          if name not in keys and not bind.required}

    def parameters(self, values: Mapping[str, Any]) -> Any:
        merged = {**self.constants, **values} if self.constants else values
        processed = {name: (processor(merged[name]) if processor is not None
                            else merged[name])
                     for name, processor in self.processors.items() if name in merged}
        if self.positional is None:
            return processed
        return tuple(processed[name] for name in self.positional)


class Prepared:
    """A statement built once, compiled once per dialect and set of parameter names."""

    def __init__(self, statement: sa.Executable) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, tuple[str, ...]], _Compiled] = {}

    def _for(self, conn: sa.Connection, keys: tuple[str, ...]) -> _Compiled:
        key = (conn.dialect.name, keys)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _Compiled(self.statement, conn.dialect, keys)
        return compiled

    def run(self, conn: sa.Connection, values: Mapping[str, Any]) -> Any:
        """Execute with `values` (parameters by name) in `conn`'s transaction; the driver's
        cursor, to read `rowcount` or rows from. The driver's errors are raised as
        SQLAlchemy's (`IntegrityError`, …), as `Connection.execute` raises them."""
        compiled = self._for(conn, tuple(values))
        return _send(conn, compiled.sql, compiled.parameters(values), many=False)

    def run_many(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (all rows with the same parameter names)."""
        self.send_many(conn, rows).close()

    def send_many(self, conn: sa.Connection, rows: Sequence[Mapping[str, Any]]) -> Any:
        """`run_many`, returning the driver's cursor (in a pipeline, still to be answered)."""
        compiled = self._for(conn, tuple(rows[0]))
        return _send(conn, compiled.sql, [compiled.parameters(r) for r in rows], many=True)

    def rowcount(self, conn: sa.Connection, values: Mapping[str, Any]) -> int:
        """Rows the statement changed (with RETURNING, the rows returned: sqlite3 counts
        those only once fetched)."""
        cursor = self.run(conn, values)
        try:
            return rowcount_of(cursor)
        finally:
            cursor.close()

    def first(self, conn: sa.Connection, values: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row of the result as a dict by column name (None: no row)."""
        cursor = self.run(conn, values)
        try:
            return first_of(cursor)
        finally:
            cursor.close()


def rowcount_of(cursor: Any) -> int:
    """What `Prepared.rowcount` answers, of a cursor `run` executed on."""
    if cursor.description is not None:
        return len(cursor.fetchall())
    count: int = cursor.rowcount
    return count


def first_of(cursor: Any) -> dict[str, Any] | None:
    """What `Prepared.first` answers, of a cursor `run` executed on."""
    row = cursor.fetchone()
    if row is None:
        return None
    return dict(zip([d[0] for d in cursor.description], row, strict=True))


def _send(conn: sa.Connection, sql: str, parameters: Any, *, many: bool) -> Any:
    """`sql` sent on a new driver cursor of `conn` (`executemany` with `many`); the cursor,
    or the driver's error raised as SQLAlchemy's."""
    cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
    try:
        (cursor.executemany if many else cursor.execute)(sql, parameters)
    except conn.dialect.loaded_dbapi.Error as exc:
        cursor.close()
        raise _translated(conn, sql, parameters, exc) from exc
    return cursor


def _translated(conn: sa.Connection, sql: str, parameters: Any,
                exc: Exception) -> sa.exc.StatementError:
    """The driver's error as the SQLAlchemy exception `Connection.execute` would raise."""
    return sa.exc.DBAPIError.instance(sql, parameters, exc, conn.dialect.loaded_dbapi.Error)
