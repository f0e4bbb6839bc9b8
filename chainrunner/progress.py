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

__all__ = ["Progress", "result_table", "timing_summary"]

_STYLE = {RunState.WAITING: "dim", RunState.QUEUED: "cyan", RunState.RUNNING: "yellow",
          RunState.SUCCEEDED: "green", RunState.FAILED: "bold red", RunState.SKIPPED: "magenta",
          RunState.CANCELLED: "red"}


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


def timing_summary(result: InvocationResult) -> str:
    """The run's wall time (first step started to last step finished) against the sum of its
    steps' times: what running steps in parallel saved, e.g.
    `wall 0.62 s vs 2.10 s of step time: 3.4\N{MULTIPLICATION SIGN} from running steps in
    parallel`."""
    timed = [(r.started_at, r.finished_at) for r in result.steps
             if r.started_at is not None and r.finished_at is not None]
    if not timed:
        return "no step ran"
    wall_s = (max(end for _, end in timed) - min(start for start, _ in timed)).total_seconds()
    step_s = sum((end - start).total_seconds() for start, end in timed)
    line = f"wall {wall_s:.2f} s vs {step_s:.2f} s of step time"
    if wall_s < 0.01:  # e.g. the mock without latency: nothing worth comparing
        return line
    # Below 5 % the difference is bookkeeping, not overlap.
    if step_s < 1.05 * wall_s:
        return f"{line}: the steps did not overlap"
    return f"{line}: {step_s / wall_s:.1f}\N{MULTIPLICATION SIGN} from running steps in parallel"


def _table(title: str, records: Iterable[StepRecord]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("step", "state", "tries", "time", "output / message"):
        table.add_column(column)
    for record in records:
        table.add_row(escape(record.handle),
                      f"[{_STYLE[record.state]}]{record.state.value}[/]",
                      str(len(record.attempts) or ""), _elapsed(record),
                      escape(_preview(_detail(record))))
    return table


def _detail(record: StepRecord) -> str | None:
    """A succeeded step's output (saying so when its `catch` gave it), else its message."""
    if record.state != RunState.SUCCEEDED:
        return record.statusMessage
    if record.caught is not None:
        return f"caught a `{record.caught.error_kind}` error: {record.output}"
    return record.output


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
                RunState.FAILED, RunState.SKIPPED, RunState.CANCELLED) \
                else _preview(_detail(record), 50)
            self._console.print(
                f"[{time.monotonic() - self._start:6.2f}s] {record.handle:<24} "
                f"[{_STYLE[record.state]}]{record.state.value:<9}[/] {escape(detail or '')}",
                highlight=False)
