"""The offline mock model: deterministic, marked, word-capped, and scriptable from a file."""

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import pytest
import truss_chains as chains

from chainlets.engine.models import GenerationRequest
from chainlets.errors import ChainDefinitionError, GenerationError, TransientGenerationError
from chainlets.generators.mock import MockGenerator
from chainlets.generators.mock_model import (
    DEFAULT_MAX_WORDS,
    LATENCY_ENV,
    SCRIPT_ENV,
    MockModel,
    MockRule,
    MockScript,
)
from chainlets.language.plugins import ModelParams
from chainlets.language.spec import ChatMessage

LONG_PROMPT = " ".join(f"w{i}" for i in range(500))


def request(prompt: str = "Tell me a joke about cats", step: str = "tell-joke",
            max_words: int | None = None, system: str | None = None) -> GenerationRequest:
    messages = [ChatMessage(role="system", content=system)] if system is not None else []
    messages.append(ChatMessage(role="user", content=prompt))
    return GenerationRequest(step=step, plugin="mock", messages=messages,
                             params=ModelParams(max_words=max_words))


def scripted(*rules: dict[str, Any]) -> MockModel:
    return MockModel(MockScript(rules=[MockRule.model_validate(r) for r in rules]))


async def reply(model: MockModel, req: GenerationRequest | None = None) -> str:
    return (await model.generate(req or request())).text


@pytest.fixture
def no_mock_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SCRIPT_ENV, raising=False)
    monkeypatch.delenv(LATENCY_ENV, raising=False)


# --- unscripted replies -------------------------------------------------------------------------


async def test_same_request_gives_the_same_text_across_models_and_calls() -> None:
    first, second = MockModel(), MockModel()
    texts = [await reply(first), await reply(first), await reply(second)]
    assert len(set(texts)) == 1


async def test_reply_is_marked_and_names_the_step_and_the_prompt_tail() -> None:
    assert await reply(MockModel()) == "[mock] tell-joke re: Tell me a joke about cats"


async def test_different_prompts_give_different_replies() -> None:
    model = MockModel()
    assert await reply(model, request("about cats")) != await reply(model, request("about dogs"))


@pytest.mark.parametrize("max_words", [1, 3, 10, 200], ids=lambda n: f"max_words={n}")
async def test_reply_never_exceeds_max_words(max_words: int) -> None:
    text = await reply(MockModel(), request(LONG_PROMPT, max_words=max_words))
    assert text.startswith("[mock]")
    assert len(text.split()) == max_words


async def test_reply_is_capped_at_the_default_without_max_words() -> None:
    text = await reply(MockModel(), request(LONG_PROMPT))
    assert len(text.split()) == DEFAULT_MAX_WORDS
    assert text.endswith("w499")


async def test_usage_counts_words_of_every_message_and_of_the_reply() -> None:
    generation = await MockModel().generate(request("one two three", system="four five"))
    assert generation.model == "mock"
    assert generation.usage is not None
    assert generation.usage.prompt_tokens == 5
    assert generation.usage.completion_tokens == len(generation.text.split())
    assert generation.usage.total_tokens == 5 + generation.usage.completion_tokens


# --- scripted rules -----------------------------------------------------------------------------


async def test_scripted_reply_is_returned_unmarked() -> None:
    assert await reply(scripted({"match": "joke", "reply": "YES"})) == "YES"


async def test_scripted_reply_is_cut_to_max_words() -> None:
    model = scripted({"reply": "one two three four five"})
    assert await reply(model, request(max_words=2)) == "one two"


@pytest.mark.parametrize(
    ("rule", "req", "expected"),
    [
        ({"step": "judge-joke", "reply": "YES"}, request(step="judge-joke"), "YES"),
        ({"step": "judge-joke", "reply": "YES"}, request(step="tell-joke"), "[mock]"),
        ({"match": r"funny\?", "reply": "YES"}, request("Is it funny?"), "YES"),
        ({"match": "^funny", "reply": "YES"}, request("Is it funny?"), "[mock]"),
        ({"match": "critic", "reply": "YES"}, request("lyrics", system="a critic"), "[mock]"),
        ({"step": "s", "match": "x", "reply": "YES"}, request("x", step="s"), "YES"),
        ({"step": "s", "match": "x", "reply": "YES"}, request("y", step="s"), "[mock]"),
        ({"step": "s", "match": "x", "reply": "YES"}, request("x", step="t"), "[mock]"),
        ({"match": "x"}, request("x"), "[mock]"),
    ],
    ids=["step-matches", "other-step", "regex-matches", "regex-is-searched-not-anchored-only",
         "system-message-is-not-searched", "step-and-match", "step-but-not-match",
         "match-but-not-step", "rule-without-reply-or-error"],
)
async def test_a_rule_applies_only_when_its_step_and_match_both_apply(
        rule: dict[str, Any], req: GenerationRequest, expected: str) -> None:
    assert (await reply(scripted(rule), req)).startswith(expected)


async def test_the_first_applicable_rule_decides() -> None:
    model = scripted({"step": "other", "reply": "A"}, {"match": "cats", "reply": "B"},
                     {"reply": "C"})
    assert await reply(model) == "B"


async def test_a_rule_with_times_is_passed_over_once_used_up() -> None:
    model = scripted({"reply": "first", "times": 2}, {"reply": "then"})
    assert [await reply(model) for _ in range(4)] == ["first", "first", "then", "then"]


async def test_times_counts_only_calls_the_rule_applied_to() -> None:
    model = scripted({"step": "judge-joke", "reply": "YES", "times": 1})
    await reply(model, request(step="tell-joke"))
    assert await reply(model, request(step="judge-joke")) == "YES"
    assert (await reply(model, request(step="judge-joke"))).startswith("[mock]")


async def test_transient_rule_raises_a_retryable_error_until_used_up() -> None:
    model = scripted({"step": "tell-joke", "error": "transient", "times": 2})
    for _ in range(2):
        with pytest.raises(TransientGenerationError,
                           match="mock: scripted transient failure for step `tell-joke`"):
            await reply(model)
    assert (await reply(model)).startswith("[mock]")


async def test_fatal_rule_raises_a_non_retryable_error() -> None:
    model = scripted({"step": "judge-joke", "error": "fatal"})
    with pytest.raises(GenerationError,
                       match="mock: scripted failure for step `judge-joke`") as excinfo:
        await reply(model, request(step="judge-joke"))
    assert not isinstance(excinfo.value, TransientGenerationError)


# --- loading scripts ----------------------------------------------------------------------------


def test_load_reads_rules_and_latency(tmp_path: Path) -> None:
    path = tmp_path / "script.json"
    path.write_text(json.dumps({"latency_ms": 5, "rules": [
        {"match": "Is it funny", "reply": "YES"}, {"step": "s", "error": "fatal", "times": 1}]}))
    script = MockScript.load(path)
    assert script.latency_ms == 5
    assert script.rules == [MockRule(match="Is it funny", reply="YES"),
                            MockRule(step="s", error="fatal", times=1)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"rules": [{"match": "(", "reply": "x"}]}', r"`\(` is not a valid regex"),
        ('{"rules": [{"stepp": "x"}]}', r"rules\.0\.stepp\s+Extra inputs are not permitted"),
        ('{"rulez": []}', r"rulez\s+Extra inputs are not permitted"),
        ('{"rules": [{"error": "sometimes"}]}', r"rules\.0\.error"),
        ('{"rules": [{"reply": "x", "times": 0}]}', r"rules\.0\.times"),
        ('{"latency_ms": -1}', r"latency_ms"),
        ('{"rules": [', r"Invalid JSON"),
    ],
    ids=["invalid-regex", "unknown-rule-key", "unknown-script-key", "unknown-error-kind",
         "zero-times", "negative-latency", "bad-json-syntax"],
)
def test_invalid_script_is_rejected_naming_the_file(tmp_path: Path, content: str,
                                                    message: str) -> None:
    path = tmp_path / "script.json"
    path.write_text(content)
    pattern = rf"^mock script {re.escape(str(path))} is invalid: (.|\n)*{message}"
    with pytest.raises(ChainDefinitionError, match=pattern):
        MockScript.load(path)


def test_missing_script_file_is_rejected_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / "nope.json"
    with pytest.raises(ChainDefinitionError,
                       match=rf"^mock script {re.escape(str(path))}: cannot read it: "
                             rf"No such file or directory; fix or unset \${SCRIPT_ENV}$"):
        MockScript.load(path)


@pytest.mark.usefixtures("no_mock_env")
def test_from_env_without_variables_is_an_empty_script() -> None:
    assert MockScript.from_env() == MockScript()


@pytest.mark.usefixtures("no_mock_env")
def test_from_env_loads_the_script_and_the_latency_overrides_its_own(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "script.json"
    path.write_text('{"latency_ms": 5, "rules": [{"reply": "YES"}]}')
    monkeypatch.setenv(SCRIPT_ENV, str(path))
    monkeypatch.setenv(LATENCY_ENV, "12.5")
    script = MockScript.from_env()
    assert script.latency_ms == 12.5
    assert script.rules == [MockRule(reply="YES")]


@pytest.mark.usefixtures("no_mock_env")
def test_from_env_rejects_a_latency_that_is_not_a_number(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LATENCY_ENV, "fast")
    with pytest.raises(ChainDefinitionError,
                       match=rf"^\${LATENCY_ENV}='fast' is not a number of milliseconds$"):
        MockScript.from_env()


@pytest.mark.usefixtures("no_mock_env")
def test_from_env_rejects_a_missing_script_file(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SCRIPT_ENV, str(tmp_path / "nope.json"))
    with pytest.raises(ChainDefinitionError, match="cannot read it"):
        MockScript.from_env()


async def test_latency_delays_every_reply() -> None:
    model = MockModel(MockScript(latency_ms=30))
    loop = asyncio.get_running_loop()
    started = loop.time()
    await reply(model)
    # A lower bound only (minus the loop's clock slack); how much longer it took is not tested.
    assert loop.time() - started >= 0.03 - 0.001


# --- the MockGenerator chainlet -----------------------------------------------------------------


@pytest.mark.usefixtures("no_mock_env")
async def test_mock_generator_chainlet_answers_offline() -> None:
    with chains.run_local():
        generator = MockGenerator()
        generation = await generator.run_remote(request(max_words=10))
    assert generation.text == "[mock] tell-joke re: Tell me a joke about cats"
    assert generation.model == "mock"


@pytest.mark.usefixtures("no_mock_env")
async def test_mock_generator_chainlet_follows_the_script_in_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "script.json"
    path.write_text('{"rules": [{"match": "Is it funny", "reply": "YES"}, '
                    '{"step": "boom", "error": "fatal"}]}')
    monkeypatch.setenv(SCRIPT_ENV, str(path))
    with chains.run_local():
        generator = MockGenerator()
        funny = await generator.run_remote(request("Is it funny? YES/NO:"))
        with pytest.raises(GenerationError, match="scripted failure for step `boom`"):
            await generator.run_remote(request(step="boom"))
    assert funny.text == "YES"


@pytest.mark.usefixtures("no_mock_env")
def test_mock_generator_chainlet_rejects_an_invalid_script_when_built(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "script.json"
    path.write_text('{"rules": [{"match": "("}]}')
    monkeypatch.setenv(SCRIPT_ENV, str(path))
    with chains.run_local(), pytest.raises(ChainDefinitionError,
                                           match=f"mock script {re.escape(str(path))} is invalid"):
        MockGenerator()
