"""Progress display and run summary: every step's state as the engine reports it (queued
included), and wall time against the sum of step times."""

import io
from datetime import UTC, datetime, timedelta

import pytest
from rich.console import Console

from chainlets.engine.models import (
    CaughtError,
    ErrorKind,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import parse_chain
from chainrunner.progress import Progress, result_table, timing_summary
from mocks.fake_generator import FakeGenerator

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def step(handle: str, start_s: float, end_s: float | None) -> StepRecord:
    return StepRecord(handle=handle, state=RunState.SUCCEEDED,
                      started_at=T0 + timedelta(seconds=start_s),
                      finished_at=None if end_s is None else T0 + timedelta(seconds=end_s))


@pytest.mark.parametrize(("steps", "summary"), [
    ([step("a", 0, 0.5), step("b", 0.5, 1.0), step("c", 0.5, 1.0), step("d", 0.5, 1.0)],
     "wall 1.00 s vs 2.00 s of step time: 2.0\N{MULTIPLICATION SIGN} from running steps in "
     "parallel"),
    ([step("a", 0, 0.4), step("b", 0.4, 0.8)],
     "wall 0.80 s vs 0.80 s of step time: the steps did not overlap"),
    ([step("a", 0, 0.001), step("b", 0.001, 0.002)], "wall 0.00 s vs 0.00 s of step time"),
    ([StepRecord(handle="a", state=RunState.SKIPPED)], "no step ran"),
], ids=["fan-out", "sequence", "instant", "none-ran"])
def test_timing_summary_compares_wall_time_with_step_time(steps: list[StepRecord],
                                                          summary: str) -> None:
    result = InvocationResult(chain="c", state=RunState.SUCCEEDED, steps=steps)
    assert timing_summary(result) == summary


def test_a_step_still_running_does_not_count() -> None:
    result = InvocationResult(chain="c", steps=[step("a", 0, 1.0), step("b", 0, None)])
    assert timing_summary(result).startswith("wall 1.00 s vs 1.00 s of step time")


async def test_off_a_terminal_each_change_is_one_line_queued_included() -> None:
    compiled = compile_chain(parse_chain({"handle": "c", "steps": [
        {"handle": h, "prompt": "go", "plugin": "mock"} for h in ("first", "second")]}))
    out = io.StringIO()
    console = Console(file=out, force_terminal=False, width=120)
    with Progress(console, compiled.handle, list(compiled.steps)) as progress:
        result = await run_chain(compiled, {}, {"mock": FakeGenerator()},
                                 RunOptions(max_concurrency=1), observer=progress)
    assert result.state == RunState.SUCCEEDED
    changes = [line.split()[2:4] for line in out.getvalue().splitlines()]
    assert changes == [["first", "running"], ["second", "queued"], ["first", "succeeded"],
                       ["second", "running"], ["second", "succeeded"]]


def test_the_table_shows_queued_steps() -> None:
    out = io.StringIO()
    Console(file=out, width=120).print(result_table(InvocationResult(
        chain="c", state=RunState.RUNNING,
        steps=[StepRecord(handle="waits-for-a-slot", state=RunState.QUEUED)])))
    (row,) = [line for line in out.getvalue().splitlines() if "waits-for-a-slot" in line]
    assert row.split("│")[2].strip() == "queued"


def test_the_table_says_when_a_catch_gave_the_output() -> None:
    out = io.StringIO()
    Console(file=out, width=120).print(result_table(InvocationResult(
        chain="c", state=RunState.SUCCEEDED,
        steps=[StepRecord(handle="draft", state=RunState.SUCCEEDED, output="sorry",
                          caught=CaughtError(error="x", error_kind=ErrorKind.TIMEOUT))])))
    (row,) = [line for line in out.getvalue().splitlines() if "draft" in line]
    assert row.split("│")[5].strip() == "caught a `timeout` error: sorry"
