"""Which run-wide deadline applies: the run's option and the chain's own (the smaller wins),
else 600 s, else none for a chain that waits for a person (its approvals' own timeouts bound
it); and what the store makes of a run without one."""

from typing import Any

import pytest

from chainlets.engine.approval import DEFAULT_DEADLINE_S, run_deadline_s
from chainlets.engine.models import RunOptions
from chainlets.language.compiler import compile_chain
from chainlets.store.approval_rules import run_deadline, wake_at

PLAIN = [{"handle": "a", "plugin": "mock", "prompt": "go"}]
APPROVAL = [*PLAIN, {"handle": "ok", "plugin": "human-approval", "prompt": "{a}?",
                     "plugin_config": {"timeout_s": 86_400}}]


def chain(steps: list[dict[str, Any]], **extra: Any) -> Any:
    return compile_chain({"handle": "c", "steps": steps, **extra})


@pytest.mark.parametrize(("steps", "own", "option", "expected"), [
    (PLAIN, None, None, DEFAULT_DEADLINE_S),
    (PLAIN, 3_600, None, 3_600),  # the chain's own replaces the default, longer or not
    (PLAIN, 3_600, 60, 60),
    (PLAIN, 30, 60, 30),
    (APPROVAL, None, None, None),  # a person may take the approval's whole timeout_s
    (APPROVAL, 7_200, None, 7_200),
    (APPROVAL, None, 120, 120),
])
def test_the_run_deadline_is_the_smaller_given_else_the_default(
        steps: list[dict[str, Any]], own: float | None, option: float | None,
        expected: float | None) -> None:
    extra = {} if own is None else {"deadline_s": own}
    assert run_deadline_s(RunOptions(deadline_s=option), chain(steps, **extra)) == expected


def test_an_approval_inside_a_loop_also_lifts_the_default() -> None:
    looped = chain([{"handle": "again", "loop": {"max_iterations": 2, "steps": APPROVAL}}])
    assert run_deadline_s(RunOptions(), looped) is None


def test_the_store_never_expires_a_run_without_a_deadline() -> None:
    row = {"options": {}, "created_at": 1_000.0}
    assert run_deadline(row) == float("inf")
    assert wake_at(row, [1_500.0]) == 1_500.0
    assert run_deadline({"options": {"deadline_s": 60}, "created_at": 1_000.0}) == 1_060.0
