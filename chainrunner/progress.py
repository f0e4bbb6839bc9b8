"""Terminal progress for `chainrunner run`: a live table, or one line per change off-terminal."""

import time
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType

from rich.console import Console, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from chainlets.engine.models import InvocationResult, RunState, StepRecord

__all__ = ["Progress", "result_table"]

_STYLE = {RunState.WAITING: "dim", RunState.RUNNING: "yellow", RunState.SUCCEEDED: "green",
          RunState.FAILED: "bold red", RunState.SKIPPED: "magenta"}


def _preview(text: str | None, width: int = 60) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _elapsed(record: StepRecord) -> str:
    if record.started_at is None:
        return ""
    end = record.finished_at or datetime.now(UTC)
    return f"{(end - record.started_at).total_seconds():.2f}s"


def result_table(result: InvocationResult) -> Table:
    return _table(f"chain `{result.chain}`: {result.state.value}", result.steps)


def _table(title: str, records: Iterable[StepRecord]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("step", "state", "tries", "time", "output / message"):
        table.add_column(column)
    for record in records:
        table.add_row(escape(record.handle),
                      f"[{_STYLE[record.state]}]{record.state.value}[/]",
                      str(len(record.attempts) or ""), _elapsed(record),
                      escape(_preview(record.output if record.state == RunState.SUCCEEDED
                                      else record.statusMessage)))
    return table


class Progress:
    """Observer for the engine that shows every step's state on stderr as it changes."""

    def __init__(self, console: Console, chain: str, handles: Iterable[str]) -> None:
        self._console = console
        self._chain = chain
        self._records = {h: StepRecord(handle=h) for h in handles}
        self._live: Live | None = None
        self._start = time.monotonic()

    def _render(self) -> RenderableType:
        return _table(f"chain `{self._chain}`: running", self._records.values())

    def __enter__(self) -> "Progress":
        if self._console.is_terminal:
            self._live = Live(get_renderable=self._render, console=self._console,
                              refresh_per_second=10, transient=True)
            self._live.__enter__()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def __call__(self, record: StepRecord) -> None:
        self._records[record.handle] = record
        if self._live is None:
            detail = record.statusMessage if record.state in (
                RunState.FAILED, RunState.SKIPPED) else _preview(record.output, 50)
            self._console.print(
                f"[{time.monotonic() - self._start:6.2f}s] {record.handle:<24} "
                f"[{_STYLE[record.state]}]{record.state.value:<9}[/] {escape(detail or '')}",
                highlight=False)
