"""The public Python API: exactly the names in `__all__`, each documented, and how they behave."""

import asyncio
import inspect
import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pydantic
import pytest
import truss_chains as chains
from pydantic import BaseModel, ConfigDict

import chainrunner
from chainrunner import (
    DEFAULT_PLUGINS,
    ChainDefinitionError,
    ChainRunner,
    ChainSpec,
    Generation,
    GenerationError,
    GenerationRequest,
    GeneratorProtocol,
    InputsError,
    InvocationResult,
    MockGenerator,
    ModelParams,
    OpenAIGenerator,
    Plugin,
    RunOptions,
    RunState,
    StepRecord,
    StepSpec,
)

REPO = Path(__file__).resolve().parent.parent
JOKE = REPO / "chains" / "specs" / "joke.json"
_BACKEND_ENV = ("OPENAI_API_KEY", "CHAINRUNNER_MOCK_SCRIPT", "CHAINRUNNER_MOCK_LATENCY_MS")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _BACKEND_ENV:
        monkeypatch.delenv(name, raising=False)


def test_all_is_exactly_the_public_api() -> None:
    assert chainrunner.__all__ == [
        "DEFAULT_FUNCTIONS",
        "DEFAULT_PLUGINS",
        "ChainDefinitionError",
        "ChainRunner",
        "ChainSpec",
        "ChainrunnerError",
        "ChatMessage",
        "CodeRunner",
        "CompiledChain",
        "ConflictError",
        "Function",
        "FunctionCallError",
        "FunctionRegistry",
        "Generation",
        "GenerationError",
        "GenerationRequest",
        "GeneratorProtocol",
        "InputDecl",
        "InputsError",
        "InvocationResult",
        "MockGenerator",
        "ModelParams",
        "OpenAIGenerator",
        "Plugin",
        "PluginRegistry",
        "RunOptions",
        "RunState",
        "StepRecord",
        "StepSpec",
        "TransientGenerationError",
        "Usage",
        "__version__",
        "chain_json_schema",
        "compile_chain",
        "load_chain",
        "parse_chain",
        "run",
        "run_sync",
        "validate",
    ]


@pytest.mark.parametrize("name", [n for n in chainrunner.__all__ if n != "__version__"])
def test_every_public_name_is_documented(name: str) -> None:
    obj = getattr(chainrunner, name)
    # A constant is documented by its class; everything else by its own docstring.
    doc = obj.__doc__ if inspect.isclass(obj) or callable(obj) else type(obj).__doc__
    assert doc and doc.strip(), f"chainrunner.{name} has no docstring"
    assert name in dir(chainrunner)


def test_version_is_the_installed_distribution() -> None:
    assert chainrunner.__version__ == version("chainrunner")


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="has no attribute 'nope'"):
        chainrunner.nope  # noqa: B018  # the lookup is the point of the test


def _modules_loaded_by(code: str) -> list[str]:
    heavy = ("pydantic", "truss_chains", "truss", "openai", "httpx", "rich")
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=REPO, timeout=60)
    loaded: list[str] = json.loads(done.stdout.strip().replace("'", '"'))
    return loaded


def test_importing_the_package_imports_no_dependency() -> None:
    assert _modules_loaded_by("import chainrunner") == []


def test_validating_does_not_import_truss_or_the_openai_sdk() -> None:
    loaded = _modules_loaded_by(f"import chainrunner; chainrunner.validate({str(JOKE)!r})")
    assert loaded == ["pydantic"]


def _chain(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps), **extra}


def _mock(handle: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


async def test_run_a_chain_file_in_one_call() -> None:
    result = await chainrunner.run(JOKE, {"topic": "food"}, llm="mock")
    assert isinstance(result, InvocationResult)
    assert result.state == RunState.SUCCEEDED
    assert [s.handle for s in result.steps] == ["tell-joke", "judge-joke"]
    assert result.output == result.step("judge-joke").output
    assert result.output is not None and result.output.startswith("[mock] judge-joke re:")
    assert InvocationResult.model_validate_json(result.model_dump_json()) == result


@pytest.mark.parametrize("form", ["path-str", "mapping", "spec", "compiled"])
async def test_run_takes_a_chain_in_every_form(form: str) -> None:
    data = _chain(_mock("a", "hi {who}"), _mock("b", "{a}!", plugin_config={"max_words": 4}))
    chain: Any = {"mapping": data, "spec": ChainSpec.model_validate(data),
                  "compiled": chainrunner.validate(data)}.get(form)
    if form == "path-str":
        chain = str(JOKE)
        result = await chainrunner.run(chain, {"topic": "bo"}, llm="mock")
    else:
        result = await chainrunner.run(chain, {"who": "bo"}, llm="mock")
        assert result.step("b").output == "[mock] b re: bo!"
    assert result.state == RunState.SUCCEEDED


def test_run_sync_needs_no_event_loop() -> None:
    result = chainrunner.run_sync(_chain(_mock("a", "x {n} {flag}")), {"n": 3, "flag": True},
                                  llm="mock")
    assert result.state == RunState.SUCCEEDED
    assert result.input == {"n": "3", "flag": "true"}


def test_validate_returns_the_compiled_chain() -> None:
    compiled = chainrunner.validate(JOKE)
    assert compiled.handle == "single-prompt"
    assert compiled.required_inputs == ("topic",)
    assert list(compiled.steps) == ["tell-joke", "judge-joke"]


def test_validate_reports_every_problem_together() -> None:
    bad = _chain(_mock("a", "{nope_ref}", depends_on=["ghost"]),
                 {"handle": "b", "prompt": "x", "plugin": "gpt-4"},
                 inputs=[{"name": "topic"}])
    with pytest.raises(ChainDefinitionError) as excinfo:
        chainrunner.validate(bad)
    problems = excinfo.value.problems
    assert len(problems) == 3, problems
    assert any("depends_on names `ghost`" in p for p in problems)
    assert any("unknown plugin `gpt-4`" in p for p in problems)
    assert any("`{nope_ref}`" in p for p in problems)


def test_validate_reports_schema_and_semantic_problems_together(tmp_path: Path) -> None:
    bad = _chain({"handle": "a", "promt": "x", "plugin": "gpt-3"}, _mock("b", "{b}"))
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad), encoding="utf-8")
    for chain in (bad, path):
        with pytest.raises(ChainDefinitionError) as excinfo:
            chainrunner.validate(chain)
        assert excinfo.value.problems == [
            "step `a`: unknown field `promt` (did you mean `prompt`?); remove it or correct its "
            "spelling",
            'step `a`: plugin `gpt-3` requires `plugin_config.max_words`; add `"plugin_config": '
            '{"max_words": 50}`',
            "step `b` depends on itself; a step cannot use its own output"]
    assert str(excinfo.value).startswith(f"{path}: chain ")


def test_validate_reports_an_unreadable_path_and_a_wrong_type(tmp_path: Path) -> None:
    with pytest.raises(ChainDefinitionError, match=r"cannot read chain file .*missing\.json"):
        chainrunner.validate(tmp_path / "missing.json")
    with pytest.raises(ChainDefinitionError, match="not list"):
        chainrunner.validate([1, 2])  # type: ignore[arg-type]  # what a caller may still pass


async def test_an_invalid_chain_or_missing_input_raises_before_any_call() -> None:
    with pytest.raises(ChainDefinitionError, match="unknown plugin `gpt-4`"):
        await chainrunner.run(_chain({"handle": "a", "prompt": "x", "plugin": "gpt-4"}),
                              llm="mock")
    with pytest.raises(InputsError, match="missing input `topic`") as excinfo:
        await chainrunner.run(JOKE, {}, llm="mock")
    assert excinfo.value.problems == [
        "missing input `topic` (used by step `tell-joke`): pass it with --input topic=VALUE"]
    with pytest.raises(InputsError, match=r"input `topic` must be text, a number, a boolean, "
                                          r"or a list or dict of JSON values, not set"):
        await chainrunner.run(JOKE, {"topic": {"a"}}, llm="mock")  # type: ignore[dict-item]
    with pytest.raises(InputsError, match=r"input `topic`: `topic\[1\]` is not a JSON value"):
        await chainrunner.run(JOKE, {"topic": ["a", b"bytes"]}, llm="mock")


async def test_inputs_may_be_json_lists_and_objects() -> None:
    chain = {"handle": "m", "steps": [
        {"handle": "greet", "plugin": "mock", "plugin_config": {"max_words": 20},
         "map": {"over": "people", "item": "who"}, "prompt": "Hello {who} of {team}"}]}
    result = await chainrunner.run(chain, {"people": ["Ann", {"name": "Bob"}],
                                           "team": {"name": "blue"}}, llm="mock")
    assert result.state == RunState.SUCCEEDED
    assert result.input == {"people": ["Ann", {"name": "Bob"}], "team": {"name": "blue"}}
    assert json.loads(result.output or "") == [
        '[mock] greet[0] re: Hello Ann of {"name": "blue"}',
        '[mock] greet[1] re: Hello {"name": "Bob"} of {"name": "blue"}']


async def test_options_are_validated_and_overrides_win() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_attempts"):
        await chainrunner.run(JOKE, {"topic": "x"}, llm="mock", max_attempts=0)
    with pytest.raises(pydantic.ValidationError, match="llm"):
        await chainrunner.run(JOKE, {"topic": "x"}, llm="gpt")  # type: ignore[arg-type]
    result = await chainrunner.run(JOKE, {"topic": "x"},
                                   options={"llm": "mock", "max_concurrency": 1},
                                   max_attempts=1)
    assert result.state == RunState.SUCCEEDED


async def test_without_a_key_the_default_backend_is_the_mock() -> None:
    result = await chainrunner.run(JOKE, {"topic": "x"}, options=RunOptions(max_attempts=1))
    assert result.output is not None and result.output.startswith("[mock]")


async def test_the_openai_backend_is_chosen_when_a_key_is_set(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK is pointed at a closed loopback port: the call fails to connect, nothing leaves.
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    result = await chainrunner.run(JOKE, {"topic": "x"}, max_attempts=1)
    assert result.state == RunState.FAILED
    assert "APIConnectionError" in (result.step("tell-joke").statusMessage or "")


async def test_the_observer_sees_every_state_change() -> None:
    seen: list[tuple[str, RunState]] = []

    def observe(record: StepRecord) -> None:
        seen.append((record.handle, record.state))

    await chainrunner.run(_chain(_mock("a", "x"), _mock("b", "{a}")), llm="mock",
                          observer=observe)
    assert seen == [("a", RunState.RUNNING), ("a", RunState.SUCCEEDED),
                    ("b", RunState.RUNNING), ("b", RunState.SUCCEEDED)]


# A user's own generator and runner, as the README shows: no engine edit.

class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail: bool = False


class ShoutGenerator(chains.ChainletBase):
    """Echoes the prompt upper-cased, or fails for good when its step's config says so."""

    async def run_remote(self, request: GenerationRequest) -> Generation:
        if request.params.model == "fail":
            raise GenerationError(f"step `{request.step}`: shout refused")
        return Generation(text=request.messages[-1].content.upper())


def _shout_params(config: BaseModel) -> ModelParams:
    assert isinstance(config, ShoutConfig)
    return ModelParams(model="fail" if config.fail else None)


class ShoutRunner(ChainRunner):
    plugins = DEFAULT_PLUGINS.with_plugins(
        Plugin("shout", ShoutConfig, _shout_params, generator="shout"))

    def __init__(self, openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 shout: GeneratorProtocol = chains.depends(ShoutGenerator)) -> None:
        super().__init__(openai=openai, mock=mock)
        self.generators = {**self.generators, "shout": shout}


SHOUT_CHAIN = ChainSpec(handle="loud", steps=[
    StepSpec(handle="a", prompt="hi {who}", plugin="shout"),
    StepSpec(handle="b", prompt="{a}!", plugin="mock", plugin_config={"max_words": 4})])


async def test_a_custom_generator_runs_through_a_runner_subclass() -> None:
    assert chainrunner.validate(SHOUT_CHAIN, ShoutRunner.plugins).steps["a"].plugin.name \
        == "shout"
    result = await chainrunner.run(SHOUT_CHAIN, {"who": "bo"}, llm="mock", runner=ShoutRunner)
    assert result.state == RunState.SUCCEEDED
    assert result.step("a").output == "HI BO"
    assert result.step("b").output == "[mock] b re: BO!"  # max_words 4


async def test_a_custom_plugin_is_unknown_to_the_default_runner() -> None:
    with pytest.raises(ChainDefinitionError, match="step `a`: unknown plugin `shout`"):
        chainrunner.validate(SHOUT_CHAIN)
    with pytest.raises(ChainDefinitionError, match="step `a`: unknown plugin `shout`"):
        await chainrunner.run(SHOUT_CHAIN, {"who": "bo"}, llm="mock")


async def test_a_failing_custom_generator_fails_its_step_not_the_call() -> None:
    chain = SHOUT_CHAIN.model_copy(update={"steps": [
        StepSpec(handle="a", prompt="x", plugin="shout", plugin_config={"fail": True}),
        StepSpec(handle="b", prompt="{a}", plugin="mock")]})
    result = await chainrunner.run(chain, llm="mock", runner=ShoutRunner)
    assert result.state == RunState.FAILED
    assert "step `a`: shout refused" in (result.step("a").statusMessage or "")
    assert result.step("b").state == RunState.SKIPPED


async def test_runs_with_different_runners_go_on_at_once() -> None:
    loud, plain = await asyncio.gather(
        chainrunner.run(SHOUT_CHAIN, {"who": "x"}, llm="mock", runner=ShoutRunner),
        chainrunner.run(JOKE, {"topic": "y"}, llm="mock"))
    assert (loud.state, plain.state) == (RunState.SUCCEEDED, RunState.SUCCEEDED)


async def test_a_runner_must_be_a_chainrunner_subclass() -> None:
    with pytest.raises(ChainDefinitionError, match=r"runner must be a subclass of .*ChainRunner"):
        await chainrunner.run(JOKE, {"topic": "y"}, llm="mock",
                              runner=ShoutGenerator)  # type: ignore[arg-type]
