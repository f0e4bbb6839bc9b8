"""Control flow meets capabilities, routing and approvals: map items and loop iterations are
served as their step was routed; choices and loops (plugin `control`) request nothing."""

from typing import Any

import pytest

from chainlets.engine.models import RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError
from chainlets.language.capabilities import Capability, Served
from chainlets.language.compiler import CONTROL, compile_chain
from mocks.fake_generator import FakeGenerator

FAST = RunOptions(llm="openai", initial_backoff_s=0, max_backoff_s=0)
ROUTED = {"plugin": ["gpt-3", "openai"], "system_prompt": "Be brief.",
          "plugin_config": {"gpt-3": {"max_words": 9}, "openai": {"temperature": 0}},
          "capabilities": {"json_mode": "native"}}
NATIVE = {Capability.SYSTEM_PROMPT: Served.NATIVE, Capability.JSON_MODE: Served.NATIVE}


def chain(*steps: dict[str, Any]) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps)}


MAPPED = chain({"handle": "arc", "prompt": "Arc of {who}", **ROUTED,
                "map": {"over": "people", "item": "who"}})
LOOPED = chain({"handle": "debate", "loop": {
    "steps": [{"handle": "chef", "prompt": "A dish after {debate}", **ROUTED}],
    "until": {"value": "chef", "contains": "done"}, "max_iterations": 2}})
CHOSEN = chain({"handle": "ask", "plugin": "mock", "prompt": "yes or no"},
               {"handle": "route", "choice": {
                   "branches": [{"when": {"value": "ask", "equals": "yes"}, "then": ["yes"]}],
                   "otherwise": ["no"]}},
               {"handle": "yes", "plugin": "mock", "prompt": "Y"},
               {"handle": "no", "plugin": "mock", "prompt": "N"})


def test_a_routed_map_and_loop_body_are_served_by_the_plugin_routing_picked() -> None:
    for data, handle in ((MAPPED, "arc"), (LOOPED, "chef")):
        step = compile_chain(data).steps[handle]
        assert (step.plugin.name, step.served) == ("openai", NATIVE)
    loop = compile_chain(LOOPED).steps["debate"]
    assert (loop.plugin, loop.served) == (CONTROL, {})


@pytest.mark.parametrize(("data", "inputs", "calls"), [
    (MAPPED, {"people": ["Ann", "Bob"]}, ["arc[0]", "arc[1]"]),
    (LOOPED, {}, ["chef[0]", "chef[1]"])])
async def test_each_item_and_iteration_is_sent_and_recorded_as_served(
        data: dict[str, Any], inputs: dict[str, Any], calls: list[str]) -> None:
    fake = FakeGenerator()
    result = await run_chain(compile_chain(data), inputs, {"openai": fake}, FAST)
    assert result.state == RunState.SUCCEEDED
    assert [r.step for r in fake.requests] == calls
    for request in fake.requests:
        assert (request.plugin, request.capabilities) == ("openai", NATIVE)
        assert request.messages[0].role == "system"
    for handle in calls:
        assert result.step(handle).capabilities == NATIVE


async def test_choice_and_loop_steps_pass_the_capability_pass_and_the_approval_refusal() -> None:
    fake = FakeGenerator(replies={"ask": "yes"})
    result = await run_chain(compile_chain(CHOSEN), {}, {"mock": fake}, FAST)
    assert result.state == RunState.SUCCEEDED
    assert result.step("route").state == RunState.SUCCEEDED
    assert result.step("no").state == RunState.SKIPPED


def test_a_choice_or_loop_requesting_capabilities_is_refused_naming_it() -> None:
    data = chain(*CHOSEN["steps"][:1], {**CHOSEN["steps"][1], "capabilities": {
        "json_mode": "native"}}, *CHOSEN["steps"][2:])
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(data)
    assert excinfo.value.problems == [
        "step `route`: a `choice` step makes no model call, so it requests no `capabilities`; "
        "remove them, or request them on the steps it runs"]


async def test_an_approval_inside_a_loop_is_refused_without_a_gate() -> None:
    data = chain({"handle": "pitch", "loop": {
        "steps": [{"handle": "idea", "plugin": "mock", "prompt": "An idea after {pitch}"},
                  {"handle": "producer", "plugin": "human-approval", "prompt": "{idea}?",
                   "plugin_config": {"timeout_s": 60}}],
        "until": {"value": "producer", "equals": "approve"}, "max_iterations": 3}})
    with pytest.raises(ChainDefinitionError, match="`producer` waits for human approval"):
        await run_chain(compile_chain(data), {}, {"mock": FakeGenerator()}, FAST)


@pytest.mark.parametrize(("data", "inputs", "kept", "called"), [
    (MAPPED, {"people": ["Ann", "Bob"]}, "arc[0]", ["arc[1]"]),
    (LOOPED, {}, "chef[0]", ["chef[1]"])])
async def test_a_resumed_run_keeps_the_items_and_iterations_that_succeeded(
        data: dict[str, Any], inputs: dict[str, Any], kept: str, called: list[str]) -> None:
    # As the service resumes a run (a lost lease, an approval answered): only `kept` is done.
    first = await run_chain(compile_chain(data), inputs, {"openai": FakeGenerator()}, FAST)
    first.steps = [r for r in first.steps if r.handle == kept]
    fake = FakeGenerator()
    result = await run_chain(compile_chain(data), inputs, {"openai": fake}, FAST,
                             previous=first)
    assert result.state == RunState.SUCCEEDED
    assert [r.step for r in fake.requests] == called
    assert result.step(kept).output == first.step(kept).output
