"""Capabilities: requests validated against each plugin's declared support in the one validation
round, routing to the first able plugin, and the level each request was served at."""

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from chainlets.engine.models import GenerationRequest, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError
from chainlets.generators.mock_model import MockModel, MockRule, MockScript
from chainlets.language.capabilities import (
    Capability,
    RequestLevel,
    Served,
    SupportLevel,
    serve,
)
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS, MockConfig, ModelParams, Plugin
from chainlets.language.spec import ChatMessage, chain_json_schema
from chainrunner.cli import main
from mocks.fake_generator import FakeGenerator
from tests.test_schema import validator

FAST = RunOptions(llm="mock", initial_backoff_s=0, max_backoff_s=0)


def chain(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps)}


def step(handle: str, plugin: str | list[str] = "mock", **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": "Tell {topic}", "plugin": plugin, **extra}


def problems(data: dict[str, Any], plugins: Any = DEFAULT_PLUGINS) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(data, plugins)
    return excinfo.value.problems


UNSERVABLE = chain(
    step("a", "gpt-3", plugin_config={"max_words": 5},
         messages=[{"role": "user", "content": "hi"}], capabilities={"json_mode": "native"}),
    step("b", capabilities={"streaming": "best-effort"}),
    step("c", "openai", capabilities={"function_calling": "optional"}),
    step("d", system_prompt="Be brief.", capabilities={"system_prompt": "disable"}),
    step("e", ["gpt-3", "mock"], plugin_config={"gpt-3": {"max_words": 3}},
         capabilities={"streaming": "native", "json_mode": "native"}),
    step("f", ["mock", "openaj"], plugin_config={"mok": {}},
         capabilities={"json_mod": "native", "streaming": "always"}),
)


def test_every_unmet_request_of_every_step_is_reported_at_once() -> None:
    assert problems(UNSERVABLE) == [
        "step `a`: plugin `gpt-3` cannot serve capabilities.json_mode = `native` (it does not "
        "support it); use a plugin that can (`mock`, `openai`), or lower the request",
        "step `a`: plugin `gpt-3` cannot serve `messages` (capabilities.conversation, `native` "
        "by default) (it does not support it); use a plugin that can (`mock`, `openai`), or "
        "lower the request",
        "step `b`: plugin `mock` cannot serve capabilities.streaming = `best-effort` (it does "
        "not support it); use a plugin that can (`openai`), or lower the request",
        "step `c`: capabilities.function_calling = `optional`, but the step lists no `tools`; "
        "add `\"tools\": [\"FUNCTION\"]` (registered functions) or remove the request",
        "step `d`: capabilities.system_prompt is `disable`, but the step sets `system_prompt`; "
        "remove one of them",
        "step `e`: none of its plugins can serve its capabilities: `gpt-3` lacks json_mode "
        "(`native`), streaming (`native`); `mock` lacks streaming (`native`); use a plugin "
        "that can (`openai`), or lower the requests",
        "step `f`: `capabilities.streaming` = \"always\" is invalid: Input should be 'native', "
        "'best-effort', 'optional' or 'disable'",
        "step `f`: unknown field `capabilities.json_mod` (did you mean `json_mode`?); remove it "
        "or correct its spelling",
        "step `f`: plugin_config has `mok`, which is not one of its plugins `mock`, `openaj` "
        "(did you mean `mock`?); with a list of plugins, `plugin_config` maps a plugin's name "
        "to its options",
        "step `f`: unknown plugin `openaj`; use one of `gpt-3`, `human-approval`, `mock`, "
        "`openai` (did you mean `openai`?)",
    ]


def test_the_cli_refuses_before_any_model_call(tmp_path: Path) -> None:
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps(UNSERVABLE), encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(spec), "-i", "topic=x", "--llm", "mock",
                                       "--json"], catch_exceptions=False)
    assert result.exit_code == 2
    error = json.loads(result.stdout)
    assert error["kind"] == "invalid_chain"
    assert len(error["problems"]) == 10


@pytest.mark.parametrize(
    ("level", "support", "served"),
    [(RequestLevel.NATIVE, SupportLevel.NATIVE, Served.NATIVE),
     (RequestLevel.NATIVE, SupportLevel.BEST_EFFORT, None),
     (RequestLevel.BEST_EFFORT, SupportLevel.NATIVE, Served.NATIVE),
     (RequestLevel.BEST_EFFORT, SupportLevel.BEST_EFFORT, Served.BEST_EFFORT),
     (RequestLevel.BEST_EFFORT, SupportLevel.NONE, None),
     (RequestLevel.OPTIONAL, SupportLevel.BEST_EFFORT, Served.BEST_EFFORT),
     (RequestLevel.OPTIONAL, SupportLevel.NONE, Served.IGNORED),
     (RequestLevel.DISABLE, SupportLevel.NONE, Served.DISABLED),
     (RequestLevel.DISABLE, SupportLevel.NATIVE | SupportLevel.CAN_DISABLE, Served.DISABLED),
     (RequestLevel.DISABLE, SupportLevel.NATIVE, None)],
    ids=["native-native", "native-best-effort", "best-effort-native", "best-effort-emulated",
         "best-effort-none", "optional-served", "optional-ignored", "disable-unsupported",
         "disable-can", "disable-cannot"])
def test_the_seeds_semantics(level: RequestLevel, support: SupportLevel,
                             served: Served | None) -> None:
    assert serve(level, support) == served


ALWAYS_STREAMS = Plugin("stream", MockConfig, lambda _: ModelParams(), generator="mock",
                        capabilities={Capability.STREAMING: SupportLevel.NATIVE})


def test_a_plugin_that_cannot_turn_a_capability_off_refuses_disable() -> None:
    plugins = DEFAULT_PLUGINS.with_plugins(ALWAYS_STREAMS)
    assert problems(chain(step("a", "stream", capabilities={"streaming": "disable"})),
                    plugins) == [
        "step `a`: plugin `stream` cannot serve capabilities.streaming = `disable` (it supports "
        "it natively but cannot turn it off); use a plugin that can (`gpt-3`, "
        "`human-approval`, `mock`, `openai`), or lower the request"]
    # Without a system prompt declared, a system prompt requested `optional` is left out.
    compiled = compile_chain(chain(step("a", "stream", system_prompt="S",
                                        capabilities={"system_prompt": "optional"})), plugins)
    assert compiled.steps["a"].served == {Capability.SYSTEM_PROMPT: Served.IGNORED}
    assert compiled.steps["a"].render_messages({"topic": "t"}) == [
        {"role": "user", "content": "Tell t"}]


def test_routing_picks_the_first_plugin_that_meets_every_request() -> None:
    routed = step("a", ["gpt-3", "openai"], system_prompt="Be {topic}.",
                  plugin_config={"gpt-3": {"max_words": 7}, "openai": {"temperature": 0.5}})
    plain = compile_chain(chain(routed)).steps["a"]
    assert (plain.plugin.name, plain.params.max_words) == ("gpt-3", 7)
    assert plain.served == {Capability.SYSTEM_PROMPT: Served.BEST_EFFORT}
    json_step = compile_chain(chain({**routed, "capabilities": {"json_mode": "native"}}))
    chosen = json_step.steps["a"]
    assert (chosen.plugin.name, chosen.params.temperature) == ("openai", 0.5)
    assert chosen.served == {Capability.SYSTEM_PROMPT: Served.NATIVE,
                             Capability.JSON_MODE: Served.NATIVE}


async def run(compiled: CompiledChain, fake: FakeGenerator) -> Any:
    return await run_chain(compiled, {"topic": "cats"}, {"openai": fake, "mock": fake},
                           RunOptions(llm="openai", initial_backoff_s=0))


async def test_a_best_effort_system_prompt_is_concatenated_and_recorded() -> None:
    fake = FakeGenerator()
    compiled = compile_chain(chain(step("a", "gpt-3", system_prompt="You are {topic}.",
                                        plugin_config={"max_words": 9})))
    result = await run(compiled, fake)
    request = fake.requests[0]
    assert [(m.role, m.content) for m in request.messages] == [
        ("user", "You are cats.\n\nTell cats")]
    assert request.capabilities == {Capability.SYSTEM_PROMPT: Served.BEST_EFFORT}
    assert result.step("a").capabilities == {Capability.SYSTEM_PROMPT: Served.BEST_EFFORT}


async def test_a_native_system_prompt_stays_a_system_message() -> None:
    fake = FakeGenerator()
    result = await run(compile_chain(chain(step("a", "openai", system_prompt="S {topic}"))),
                       fake)
    assert [(m.role, m.content) for m in fake.requests[0].messages] == [
        ("system", "S cats"), ("user", "Tell cats")]
    assert fake.requests[0].plugin == "openai"
    assert result.step("a").capabilities == {Capability.SYSTEM_PROMPT: Served.NATIVE}


async def test_a_step_requesting_nothing_records_nothing() -> None:
    result = await run(compile_chain(chain(step("a"))), FakeGenerator())
    assert result.step("a").capabilities is None


def request(**capabilities: Served) -> GenerationRequest:
    return GenerationRequest(step="s", plugin="mock",
                             messages=[ChatMessage(role="user", content="Give me a cat")],
                             capabilities={Capability(k): v for k, v in capabilities.items()})


async def test_the_mock_answers_json_mode_with_a_json_document() -> None:
    generation = await MockModel().generate(request(json_mode=Served.NATIVE))
    assert json.loads(generation.text) == {"mock": "s", "re": "Give me a cat"}
    assert generation.capabilities == {Capability.JSON_MODE: Served.NATIVE}
    plain = await MockModel().generate(request())
    assert plain.text == "[mock] s re: Give me a cat"
    assert plain.capabilities is None
    scripted = MockModel(MockScript(rules=[MockRule(reply='{"broken": ')]))
    assert (await scripted.generate(request(json_mode=Served.NATIVE))).text == '{"broken": '


async def test_the_mock_standing_in_for_openai_says_it_did_not_stream() -> None:
    generation = await MockModel().generate(request(streaming=Served.NATIVE,
                                                    json_mode=Served.NATIVE))
    assert generation.capabilities == {Capability.STREAMING: Served.UNSERVED,
                                       Capability.JSON_MODE: Served.NATIVE}


def test_the_cli_runs_a_json_mode_step_on_the_mock(tmp_path: Path) -> None:
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps(chain(step("a", capabilities={"json_mode": "native"}))),
                    encoding="utf-8")
    result = CliRunner().invoke(main, ["run", str(spec), "-i", "topic=cats", "--llm", "mock",
                                       "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["state"] == RunState.SUCCEEDED
    assert json.loads(document["output"]) == {"mock": "a", "re": "Tell cats"}
    assert document["steps"][0]["capabilities"] == {"json_mode": "native"}


def test_the_schema_offers_capabilities_and_routing() -> None:
    schema = chain_json_schema()
    requests = schema["$defs"]["CapabilityRequests"]["properties"]
    assert set(requests) == {"system_prompt", "conversation", "json_mode", "streaming",
                             "function_calling"}
    assert schema["$defs"]["RequestLevel"]["enum"] == ["native", "best-effort", "optional",
                                                       "disable"]
    check = validator(schema)
    check.validate(chain(step("a", ["gpt-3", "openai"],
                              plugin_config={"gpt-3": {"max_words": 3}},
                              capabilities={"json_mode": "best-effort"})))
    assert not check.is_valid(chain(step("a", ["gpt-3"], plugin_config={"max_words": 3})))
    assert not check.is_valid(chain(step("a", capabilities={"json_mode": "always"})))
    assert not check.is_valid(chain(step("a", [])))


def test_the_readme_example_routes_to_openai() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("```json\n", readme.index("### Capabilities and routing")) + 8
    example = json.loads(readme[start:readme.index("\n```", start)])
    compiled = compile_chain(chain(example)).steps["extract"]
    assert (compiled.plugin.name, compiled.params.temperature) == ("openai", 0)
    assert compiled.served == {Capability.SYSTEM_PROMPT: Served.NATIVE,
                               Capability.JSON_MODE: Served.NATIVE,
                               Capability.STREAMING: Served.NATIVE}
