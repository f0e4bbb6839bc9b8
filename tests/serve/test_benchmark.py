"""The serve benchmark's requests are valid chains, and its statistics are what they say."""

import pytest

from benchmarks import serve as bench
from benchmarks import serve_faults
from chainlets.engine.models import RunOptions
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import ChainSpec


@pytest.mark.parametrize("payload", [bench.sequential_chain(4), bench.SOUNDTRACK,
                                     serve_faults.kill_payload()["chain"]],
                         ids=["sequential", "soundtrack", "kill"])
def test_the_chains_it_sends_compile(payload: dict[str, object]) -> None:
    assert compile_chain(ChainSpec.model_validate(payload)).steps


def test_the_hop_chain_calls_the_model_once_per_step_in_sequence() -> None:
    compiled = compile_chain(ChainSpec.model_validate(bench.sequential_chain(3)))
    assert [sorted(step.deps) for step in compiled.steps.values()] == [[], ["s0"], ["s1"]]


def test_its_options_are_valid_run_options() -> None:
    assert RunOptions.model_validate(bench.MOCK).max_attempts == 1


@pytest.mark.parametrize(("q", "value"), [(0, 1.0), (50, 3.0), (99, 5.0), (100, 5.0)])
def test_percentile_picks_the_nearest_rank(q: float, value: float) -> None:
    assert bench.percentile([5.0, 1.0, 3.0, 2.0, 4.0], q) == value


def test_the_kill_measure_sends_valid_run_options() -> None:
    assert RunOptions.model_validate(serve_faults.kill_payload()["options"]).max_attempts == 1


@pytest.mark.parametrize(("status", "body", "reason"), [
    (200, {"state": "succeeded"}, None),
    (200, {"state": "failed", "statusMessage": "step `s1`: boom"}, "200 step `sN`: boom"),
    (503, {"error": "chainlet `R` (pid 12, port 345) dropped the connection"},
     "503 chainlet `R` (pid N, port N) dropped the connection"),
], ids=["succeeded", "failed-run", "unavailable"])
def test_failures_are_counted_by_reason_without_pids_and_ports(
        status: int, body: dict[str, str], reason: str | None) -> None:
    assert serve_faults.failure_reason(status, body) == reason
