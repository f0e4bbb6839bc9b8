"""Code steps: a registered, typed function called with JSON arguments, validated by name and
signature before any call, its arguments checked against its type hints when it runs, its
output JSON, and never able to hang the chain."""

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import truss_chains as chains
from pydantic import BaseModel

from chainlets.code_runner import CodeRunner
from chainlets.engine.code import CodeRunnerProtocol, FunctionRunner
from chainlets.engine.code_models import CodeCall, CodeResult
from chainlets.engine.models import ErrorKind, InvocationResult, RunOptions
from chainlets.engine.models import RunState as S
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError, FunctionCallError, UnknownFunctionError
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.language.builtin_functions import DEFAULT_FUNCTIONS, write_itinerary
from chainlets.language.compiler import compile_chain
from chainlets.language.functions import Function
from chainlets.language.plugins import DEFAULT_PLUGINS, PluginRegistry
from chainlets.language.spec import parse_chain
from chainlets.runner import ChainRunner
from chainrunner.mermaid import to_mermaid
from mocks.fake_generator import FakeGenerator


class Stats(BaseModel):
    total: int
    mean: float


def stats(values: list[int], label: str = "") -> Stats:
    """Sum and mean of `values`."""
    return Stats(total=sum(values), mean=sum(values) / len(values))


def fail(reason: str) -> None:
    raise RuntimeError(reason)


RELEASE = threading.Event()


def hang() -> str:
    """Blocks its thread until the test releases it: a function that never answers."""
    RELEASE.wait()
    return "late"


async def hang_async() -> str:
    await asyncio.Event().wait()
    return "never"


PLUGINS = DEFAULT_PLUGINS.with_functions(stats, fail, hang, hang_async)


@pytest.fixture(autouse=True)
def released() -> Iterator[None]:
    """A hung function's thread is let go once its test is over."""
    RELEASE.clear()
    yield
    RELEASE.set()


def code_step(handle: str, function: str, **args: Any) -> dict[str, Any]:
    return {"handle": handle, "code": {"function": function, "args": args}}


def problems(*steps: dict[str, Any], plugins: PluginRegistry = PLUGINS) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain({"handle": "c", "steps": list(steps)}, plugins)
    return excinfo.value.problems


async def run(*steps: dict[str, Any], inputs: dict[str, Any] | None = None,
              options: RunOptions | None = None) -> InvocationResult:
    chain = compile_chain({"handle": "c", "steps": list(steps)}, PLUGINS)
    return await run_chain(chain, inputs or {}, {"mock": FakeGenerator()},
                           options or RunOptions(llm="mock", max_attempts=1))


# --- validation: every problem at once, before any call ------------------------------------


def test_validation_names_every_problem_of_code_steps_at_once() -> None:
    assert problems(
        code_step("a", "stat", values=[1]),
        code_step("b", "stats", valuez=[1], label=3),
        {**code_step("c", "stats", values="{nope}"), "prompt": "hi", "tools": ["stats"]},
        {"handle": "d", "plugin": "gpt-3", "plugin_config": {"max_words": 5}, "prompt": "x",
         "tools": ["stats", "fial"]},
        {"handle": "e", "choice": {"branches": [{"when": {"value": "d", "equals": "x"},
                                                  "then": ["a"]}]}, "tools": ["stats"]},
        {**code_step("f", "stats", values=[1]), "loop": {"steps": [
            {"handle": "g", "plugin": "mock", "prompt": "x"}], "max_iterations": 1}},
        plugins=PLUGINS.with_plugins()) == [
        "step `a`: unknown function `stat`; use one of `fail`, `hang`, `hang_async`, "
        "`pick_winner`, `stats`, `write_itinerary` (did you mean `stats`?)",
        "step `b`: function `stats` has no parameter `valuez` (did you mean `values`?); its "
        "parameters are `values`, `label`",
        "step `b`: function `stats` requires `args.values`; add it",
        "step `b`: function `stats` argument `label` = 3 is not a valid str: Input should be a "
        "valid string",
        "step `c`: a `code` step calls a function, not a model, so it has no `prompt`; remove "
        "it, or make it a step of its own",
        "step `c`: a `code` step calls a function, not a model, so it has no `tools`; remove "
        "them",
        "step `d`: tools names `fial`, which is not a registered function; use "
        "one of `fail`, `hang`, `hang_async`, `pick_winner`, `stats`, `write_itinerary` (did "
        "you mean `fail`?)",
        "step `d`: plugin `gpt-3` cannot serve `tools` (capabilities.function_calling, `native` "
        "by default) (it does not support it); use a plugin that can (`mock`, `openai`), or "
        "lower the request",
        "step `e`: a `choice` step makes no model call, so it has no `tools`; list them on the "
        "steps it runs",
        "step `f`: a step is one of `code`, `choice` or `loop`; it has `code` and `loop`; split "
        "it into steps",
    ]


def test_a_code_steps_placeholders_are_its_dependencies() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        {"handle": "ask", "plugin": "mock", "prompt": "numbers"},
        code_step("sum", "stats", values="{ask}", label="of {topic}")]}, PLUGINS)
    assert chain.steps["sum"].deps == {"ask"}
    assert chain.required_inputs == ("topic",)
    assert chain.steps["sum"].plugin.generator == "code"


def test_functions_without_nameable_parameters_are_refused_when_registered() -> None:
    def variadic(*values: int) -> int:
        return sum(values)

    with pytest.raises(ValueError, match="parameter `values` is variadic positional; code "
                                         "steps pass arguments by name"):
        Function.of(variadic)


# --- running: JSON in, JSON out ------------------------------------------------------------


async def test_arguments_are_json_and_text_is_read_as_json_where_the_type_needs_it() -> None:
    result = await run({"handle": "nums", "plugin": "mock", "prompt": "x"},
                       code_step("sum", "stats", values="[1, 2, {n}]", label="{n} items"),
                       code_step("literal", "stats", values=[4, 6]),
                       inputs={"n": 3})
    assert result.state == S.SUCCEEDED, result.statusMessage
    assert json.loads(result.step("sum").output or "") == {"total": 6, "mean": 2.0}
    assert result.step("literal").output == '{"total":10,"mean":5.0}'
    record = result.step("sum")
    assert (record.backend, record.model, len(record.attempts)) == ("code", "stats", 1)


async def test_a_type_mismatch_fails_the_step_naming_step_argument_value_and_type() -> None:
    result = await run(code_step("sum", "stats", values="{n}"), inputs={"n": "lots"})
    record = result.step("sum")
    assert record.state == S.FAILED and record.error_kind == ErrorKind.MODEL
    assert record.statusMessage == (
        "FunctionCallError: step `sum`: function `stats` argument `values` = \"lots\" is not "
        "a valid list[int]: Input should be a valid list")
    assert len(record.attempts) == 1  # not retried: the same arguments fail the same way


async def test_an_exception_in_the_function_fails_the_step_once() -> None:
    result = await run(code_step("boom", "fail", reason="no {what}"), inputs={"what": "luck"},
                       options=RunOptions(llm="mock", max_attempts=3))
    record = result.step("boom")
    assert record.statusMessage == ("FunctionCallError: step `boom`: function `fail` raised "
                                    "RuntimeError: no luck")
    assert len(record.attempts) == 1


@pytest.mark.parametrize("function", ["hang", "hang_async"], ids=["blocking", "async"])
async def test_a_hung_function_times_out_and_the_chain_goes_on(function: str) -> None:
    result = await run(code_step("stuck", function),
                       {"handle": "other", "plugin": "mock", "prompt": "independent"},
                       options=RunOptions(llm="mock", max_attempts=2, step_timeout_s=0.05,
                                          initial_backoff_s=0))
    stuck = result.step("stuck")
    assert (stuck.state, stuck.error_kind) == (S.FAILED, ErrorKind.TIMEOUT)
    assert [a.error_kind for a in stuck.attempts] == [ErrorKind.TIMEOUT] * 2
    assert "step_timeout_s=0.05 s" in (stuck.statusMessage or "")
    assert result.step("other").state == S.SUCCEEDED


async def test_the_function_runner_names_an_unknown_function() -> None:
    runner = FunctionRunner(DEFAULT_FUNCTIONS)
    with pytest.raises(UnknownFunctionError, match="step `s`: function `stats` is not "
                                                   "registered with the code runner"):
        await runner.run_remote(CodeCall(step="s", function="stats"))


async def test_a_function_returning_no_json_fails_saying_so() -> None:
    def opaque() -> object:
        return object()

    runner = FunctionRunner(DEFAULT_FUNCTIONS.with_functions(opaque))
    with pytest.raises(FunctionCallError, match="function `opaque` returned object, which is "
                                                "not JSON"):
        await runner.run_remote(CodeCall(step="s", function="opaque"))


# --- through the runner chainlet: the CodeRunner, and a subclass's own functions -----------


class StatsCodeRunner(CodeRunner):
    functions = DEFAULT_FUNCTIONS.with_functions(stats)


class StatsRunner(ChainRunner):
    """Validates with `stats`; its code runner has it too."""

    plugins = DEFAULT_PLUGINS.with_functions(stats)

    def __init__(self, openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 code: CodeRunnerProtocol = chains.depends(StatsCodeRunner)) -> None:
        super().__init__(openai=openai, mock=mock, code=code)


class LocalStatsRunner(ChainRunner):
    """`stats` in its plugins only: the CodeRunner lacks it, so it runs in this process."""

    plugins = DEFAULT_PLUGINS.with_functions(stats)


SUM = {"handle": "c", "steps": [code_step("sum", "stats", values=[1, 2])]}


@pytest.mark.parametrize("runner", [ChainRunner, StatsRunner, LocalStatsRunner],
                         ids=["built-in", "own-code-runner", "in-process-fallback"])
async def test_code_steps_run_through_the_runner_chainlet(runner: type[ChainRunner]) -> None:
    with chains.run_local():
        instance = runner()
    if runner is ChainRunner:
        result = await instance.execute(parse_chain({"handle": "c", "steps": [code_step(
            "win", "pick_winner", scores={"a": 1, "b": 2})]}), {})
        assert json.loads(result.output or "")["name"] == "b"
        return
    result = await instance.execute(parse_chain(SUM), {})
    assert result.state == S.SUCCEEDED, result.statusMessage
    assert result.output == '{"total":3,"mean":1.5}'


def test_code_models_round_trip_through_json() -> None:
    call = CodeCall(step="s", function="stats", args={"values": [1, 2], "label": "x"},
                    timeout_s=2.5)
    assert CodeCall.model_validate_json(call.model_dump_json()) == call
    result = CodeResult(output='{"total":3}')
    assert CodeResult.model_validate_json(result.model_dump_json()) == result
    spec = parse_chain({"handle": "c", "steps": [code_step("s", "stats", values="{a}")]})
    assert type(spec).model_validate_json(spec.model_dump_json()) == spec


async def test_a_code_step_may_map_and_may_be_in_a_loops_body() -> None:
    result = await run(
        {"handle": "lists", "plugin": "mock", "prompt": "x"},
        {**code_step("sums", "stats", values="{numbers}"),
         "map": {"over": "batches", "item": "numbers"}},
        {"handle": "again", "loop": {"max_iterations": 2, "steps": [
            {"handle": "ask", "plugin": "mock", "prompt": "more"},
            code_step("tally", "stats", values=[1, 2, 3], label="{ask}")]}},
        inputs={"batches": [[1, 2], [3, 5]]})
    assert result.state == S.SUCCEEDED, result.statusMessage
    assert [result.step(f"sums[{i}]").output for i in range(2)] == [
        '{"total":3,"mean":1.5}', '{"total":8,"mean":4.0}']
    assert result.step("tally[1]").output == '{"total":6,"mean":2.0}'


def test_write_itinerary_refuses_a_link_planted_at_its_file_name(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, elsewhere = tmp_path / "out", tmp_path / "elsewhere.md"
    folder.mkdir()
    elsewhere.write_text("keep me", encoding="utf-8")
    (folder / "lisbon.md").symlink_to(elsewhere)
    monkeypatch.setenv("CHAINRUNNER_ITINERARY_DIR", str(folder))
    with pytest.raises(ValueError, match=r"lisbon\.md in the itinerary directory is a link "
                                         "to elsewhere; remove it"):
        write_itinerary("Lisbon", "Day 1")
    assert elsewhere.read_text(encoding="utf-8") == "keep me"


def test_the_graph_shows_a_code_steps_function_and_the_inputs_it_reads() -> None:
    chain = compile_chain({"handle": "c", "steps": [
        code_step("sum", "stats", values="[{n}]")]}, PLUGINS)
    assert to_mermaid(chain) == ('flowchart TD\n    s0["sum<br/>code: stats"]\n'
                                 '    in0[/"n"/]\n    in0 --> s0\n')


def test_a_code_step_or_a_step_with_tools_has_no_output_schema() -> None:
    schema = {"type": "object"}
    assert problems(
        {**code_step("a", "stats", values=[1]), "output_schema": schema},
        {"handle": "b", "plugin": "openai", "prompt": "x", "tools": ["stats"],
         "output_schema": schema}) == [
        "step `a`: a `code` step calls a function, not a model, so it has no `output_schema`; "
        "remove it, or make it a step of its own",
        "step `b`: a step with `tools` has no `output_schema` (a reply after tool calls is not "
        "repaired); give the schema to a step that reads this one"]
