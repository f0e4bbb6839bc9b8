"""Staged writes: a write's statements sent ahead, its results read after, so that a group
commit's writes on PostgreSQL share one round trip instead of one each.

A `Staged` write is two halves: `send` issues its statements on the driver's cursors and
returns them unread; `then` reads their results and finishes the write (raising, e.g., a lost
lease). Alone, it is `then(send())`, as any write. In a group commit on PostgreSQL, the sends of
consecutive staged writes go out in one psycopg pipeline (with the transaction's `BEGIN`), the
server answers them all at once, and each `then` runs in turn, in the writes' order: one round
trip where there were one per statement. A statement that fails there aborts the pipeline and
the transaction, so the group commit runs each write again alone (group_commit), where its
error is raised as SQLAlchemy's, as outside a pipeline. SQLite runs in process, with no round
trips to save: its staged writes run one by one.
"""

import contextlib
from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

from chainlets.store.prepared import Prepared

__all__ = ["Merged", "Staged", "run_staged", "stages"]

T = TypeVar("T")
Sent = list[Any]  # the driver's cursors a send executed on, unread


class Staged(Generic[T]):
    """A write as `send` (statements out, their cursors back) then `then` (results read)."""

    __slots__ = ("send", "then")

    def __init__(self, send: Callable[[sa.Connection], Sent],
                 then: Callable[[sa.Connection, Sent], T]) -> None:
        self.send, self.then = send, then

    def __call__(self, connection: sa.Connection) -> T:
        sent = self.send(connection)
        try:
            return self.then(connection, sent)
        finally:
            _close(sent)


class Merged(Staged[T]):
    """A staged write that may go out as one row of a statement shared with writes like it
    (same `key`): `statement(rows)` gives that statement and its parameters for the rows of
    such writes (`row`), with a result row per write, in order, which `answer` reads. Writes
    whose `unique` values repeat in a batch are sent one by one (rows of one statement see
    the same snapshot: two writes to one invocation would not see each other)."""

    __slots__ = ("answer", "key", "row", "statement", "unique")

    def __init__(self, send: Callable[[sa.Connection], Sent],
                 then: Callable[[sa.Connection, Sent], T], *, key: Hashable, unique: Hashable,
                 row: dict[str, Any],
                 statement: Callable[[list[dict[str, Any]]], tuple[Prepared, Any]],
                 answer: Callable[[sa.Connection, dict[str, Any]], T]) -> None:
        super().__init__(send, then)
        self.key, self.unique, self.row = key, unique, row
        self.statement, self.answer = statement, answer


def stages(connection: sa.Connection) -> bool:
    """Whether staged writes on `connection` share a round trip (PostgreSQL's pipeline)."""
    return connection.dialect.name == "postgresql"


def run_staged(connection: sa.Connection, works: Sequence[Staged[Any]]) -> list[Any]:
    """Every write's `send` in one pipeline, then every `then` in order; their results. The
    first error propagates (the caller's transaction is then rolled back)."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    groups = _groups(works)
    sent: list[Sent] = []
    shared: dict[Hashable, Any] = {}  # each group's cursor
    try:
        with raw.pipeline():  # psycopg's Connection
            for work in works:
                group = groups.get(work.key) if isinstance(work, Merged) else None
                if group is None:
                    sent.append(work.send(connection))
                    continue
                sent.append([])
                first = group[0]
                if first.key not in shared:
                    statement, parameters = first.statement([w.row for w in group])
                    shared[first.key] = statement.run(connection, parameters)
        answers = {key: cursor.fetchall() for key, cursor in shared.items()}
        names = {key: [d[0] for d in cursor.description] for key, cursor in shared.items()}
        place = {id(w): n for group in groups.values() for n, w in enumerate(group)}
        results = []
        for work, cursors in zip(works, sent, strict=True):
            if isinstance(work, Merged) and work.key in answers:
                row = answers[work.key][place[id(work)]]
                results.append(work.answer(connection, dict(zip(names[work.key], row,
                                                                strict=True))))
            else:
                results.append(work.then(connection, cursors))
        return results
    finally:
        for cursors in (*sent, list(shared.values())):
            _close(cursors)


def _groups(works: Sequence[Staged[Any]]) -> dict[Hashable, list["Merged[Any]"]]:
    """The merged writes by key, where two or more share one and no `unique` repeats."""
    merged = [w for w in works if isinstance(w, Merged)]
    if len({w.unique for w in merged}) != len(merged):
        return {}
    groups: dict[Hashable, list[Merged[Any]]] = {}
    for work in merged:
        groups.setdefault(work.key, []).append(work)
    return {key: group for key, group in groups.items() if len(group) >= 2}


def _close(cursors: Sent) -> None:
    for cursor in cursors:
        with contextlib.suppress(Exception):
            cursor.close()
