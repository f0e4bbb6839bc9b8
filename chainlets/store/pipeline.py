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
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import sqlalchemy as sa

__all__ = ["Staged", "run_staged", "stages"]

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


def stages(connection: sa.Connection) -> bool:
    """Whether staged writes on `connection` share a round trip (PostgreSQL's pipeline)."""
    return connection.dialect.name == "postgresql"


def run_staged(connection: sa.Connection, works: Sequence[Staged[Any]]) -> list[Any]:
    """Every write's `send` in one pipeline, then every `then` in order; their results. The
    first error propagates (the caller's transaction is then rolled back)."""
    raw = connection.connection.dbapi_connection
    assert raw is not None
    sent: list[Sent] = []
    try:
        with raw.pipeline():
            for work in works:
                sent.append(work.send(connection))
        return [work.then(connection, cursors) for work, cursors in zip(works, sent, strict=True)]
    finally:
        for cursors in sent:
            _close(cursors)


def _close(cursors: Sent) -> None:
    for cursor in cursors:
        with contextlib.suppress(Exception):
            cursor.close()
