"""A map over a sub-chain: each item runs a block of steps, `arcs[i]` with its steps
`arcs[i].outline`, …; validated with every problem at once, tolerant, bounded, resumable."""

import json
from typing import Any

import pytest

from chainlets.engine.models import GenerationRequest, InvocationResult, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError, GenerationError
from chainlets.language.compiler import compile_chain
from mocks.fake_generator import FakeGenerator

FAST = RunOptions(initial_backoff_s=0, max_backoff_s=0, max_attempts=1)
S = RunState


def prompt(handle: str, text: str, **more: Any) -> dict[str, Any]:
    return {"handle": handle, "plugin": "mock", "prompt": text, **more}


def arcs(**more: Any) -> dict[str, Any]:
    """A map of each character to an outline, then an arc reading it."""
    return {"handle": "arcs", "map": {"over": "people", "item": "who", **more, "steps": [
        prompt("outline", "Outline {who} in {place}"),
        prompt("arc", "Arc of {who} from {outline}")]}}


def chain(*steps: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps), **more}


CHAIN = chain(arcs(), prompt("story", "Story of {arcs}"))


def echo(request: GenerationRequest) -> str:
    return f"<{request.step}: {request.messages[-1].content}>"


async def run(data: dict[str, Any], fake: FakeGenerator, inputs: dict[str, Any] | None = None,
              options: RunOptions = FAST, previous: InvocationResult | None = None
              ) -> InvocationResult:
    given: dict[str, Any] = {"people": ["Ann", "Bo", "Cy"], "place": "sea"} \
        if inputs is None else inputs
    return await run_chain(compile_chain(data), given, {"mock": fake}, options,
                           previous=previous)


def states(result: InvocationResult) -> dict[str, RunState]:
    return {r.handle: r.state for r in result.steps}


async def test_each_item_runs_the_sub_chain_and_the_map_keeps_input_order() -> None:
    fake = FakeGenerator(default=echo)
    result = await run(CHAIN, fake)
    assert result.state == S.SUCCEEDED, result.statusMessage
    assert list(states(result)) == [
        "arcs", "story",
        "arcs[0]", "arcs[1]", "arcs[2]",
        "arcs[0].outline", "arcs[1].outline", "arcs[2].outline",
        "arcs[0].arc", "arcs[1].arc", "arcs[2].arc"]
    assert set(states(result).values()) == {S.SUCCEEDED}
    assert result.step("arcs[1].outline").output == "<arcs[1].outline: Outline Bo in sea>"
    arc_1 = "<arcs[1].arc: Arc of Bo from <arcs[1].outline: Outline Bo in sea>>"
    assert result.step("arcs[1]").output == arc_1  # an item's output: its last step's
    outputs = json.loads(result.step("arcs").output or "")
    assert outputs[1] == arc_1 and [o.split(":")[0] for o in outputs] == [
        "<arcs[0].arc", "<arcs[1].arc", "<arcs[2].arc"]
    item_usage, map_usage = result.step("arcs[0]").usage, result.step("arcs").usage
    assert item_usage is not None and item_usage.total_tokens == 4  # its two calls
    assert map_usage is not None and map_usage.total_tokens == 12
    assert len(fake.requests) == 7  # 3 items of 2 steps, and the story


async def test_output_names_the_item_step_whose_output_is_the_items() -> None:
    result = await run(chain(arcs(output="outline")), FakeGenerator(default=echo))
    assert json.loads(result.step("arcs").output or "")[2] == \
        "<arcs[2].outline: Outline Cy in sea>"


async def test_max_concurrency_bounds_the_items_in_flight() -> None:
    fake = FakeGenerator(default=echo, latency_s=0.005)
    people = [f"p{i}" for i in range(7)]
    result = await run(chain(arcs(max_concurrency=2)), fake, {"people": people, "place": "x"})
    assert result.state == S.SUCCEEDED
    assert fake.max_in_flight == 2  # an item's steps run one after the other
    per_run = RunOptions(initial_backoff_s=0, map_concurrency={"arcs": 3})
    fake = FakeGenerator(default=echo, latency_s=0.005)
    await run(chain(arcs(max_concurrency=2)), fake, {"people": people, "place": "x"},
              options=per_run)
    assert fake.max_in_flight == 3


async def test_a_failed_step_fails_its_item_and_tolerate_keeps_the_map_going() -> None:
    fake = FakeGenerator(default=echo,
                         replies={"arcs[1].outline": GenerationError("no outline")})
    result = await run(chain(arcs(tolerate=1), prompt("story", "Story of {arcs}")), fake)
    assert result.state == S.SUCCEEDED, result.statusMessage
    got = states(result)
    assert (got["arcs[1]"], got["arcs[1].outline"], got["arcs[1].arc"]) == (
        S.FAILED, S.FAILED, S.SKIPPED)
    assert result.step("arcs[1]").statusMessage == \
        "step `arcs[1].outline` failed: GenerationError: no outline"
    assert json.loads(result.step("arcs").output or "")[1] is None
    assert result.step("arcs").statusMessage == "1 of 3 items failed, tolerated (tolerates 1)"
    assert fake.calls("arcs[1].arc") == 0 and got["story"] == S.SUCCEEDED

    strict = await run(chain(arcs(), prompt("story", "Story of {arcs}")),
                       FakeGenerator(default=echo,
                                     replies={"arcs[1].arc": GenerationError("no arc")}))
    assert strict.state == S.FAILED
    assert strict.step("arcs").statusMessage == (
        "1 of 3 items failed (tolerates 0); `arcs[1]`: step `arcs[1].arc` failed: "
        "GenerationError: no arc")
    assert states(strict)["story"] == S.SKIPPED


async def test_a_resumed_run_calls_only_what_did_not_succeed() -> None:
    first = await run(CHAIN, FakeGenerator(
        default=echo, replies={"arcs[2].arc": GenerationError("down")}))
    assert first.state == S.FAILED
    fake = FakeGenerator(default=echo)
    again = await run(CHAIN, fake, previous=first)
    assert again.state == S.SUCCEEDED, again.statusMessage
    assert [r.step for r in fake.requests] == ["arcs[2].arc", "story"]
    assert again.step("arcs[0].arc").output == first.step("arcs[0].arc").output
    done = await run(CHAIN, FakeGenerator(default=echo), previous=again)
    assert done.step("arcs").output == again.step("arcs").output  # a finished map stands


async def test_the_single_step_map_is_unchanged() -> None:
    fake = FakeGenerator(default=echo)
    result = await run(chain(prompt("greet", "Hi {who}", map={"over": "people",
                                                               "item": "who"})), fake)
    assert list(states(result)) == ["greet", "greet[0]", "greet[1]", "greet[2]"]
    assert json.loads(result.output or "")[0] == "<greet[0]: Hi Ann>"


def test_every_problem_of_a_map_over_steps_is_reported_at_once() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain(
            prompt("list", "names"),
            {"handle": "m", "prompt": "x", "capabilities": {"json_mode": "optional"},
             "map": {"over": "list", "output": "ark", "steps": [
                 prompt("a", "{item} {b} {m}"), prompt("b", "{a}"),
                 {"handle": "inner", "loop": {"max_iterations": 2, "steps": [
                     prompt("deep", "x")]}}]}},
            {"handle": "n", "map": {"over": "c2", "steps": [prompt("c2", "{item}")]}},
            prompt("after", "{a}"), output="b"))
    assert excinfo.value.problems == [
        "step `m`: a `map` with `steps` step has no `prompt`; remove it (each item runs the "
        "map's `steps`), or drop `steps` to map this step's own prompt",
        "step `m`: a `map` with `steps` step makes no model call, so it requests no "
        "`capabilities`; remove them, or request them on the steps it runs",
        "step `m`: the map's item steps form a cycle `a` → `b` → `a`; remove one of these "
        "references",
        "step `m`: map `output` names `ark`, which is not one of its `steps` (`a`, `b`, "
        "`inner`)",
        "step `a`: reads `{m}`, the map whose items it is a step of; an item cannot read the "
        "map's output, only the item and its sibling steps",
        "step `inner`: a map's item `steps` holds prompt steps only, not a `loop`; move it out "
        "of map `m`",
        "step `n`: map is over `c2`, one of its own item steps; map over an input or an "
        "earlier step",
        "step `after`: reads `a`, a step of map `m`'s items (one per item); read `{m}`, the "
        "JSON array of the items' outputs",
        "chain output names `b`, a step of map `m`'s items; name `m`"]


def test_a_map_over_steps_is_in_the_json_schema_and_round_trips() -> None:
    from chainlets.language.spec import ChainSpec, chain_json_schema

    spec = ChainSpec.model_validate(CHAIN)
    assert ChainSpec.model_validate_json(spec.model_dump_json()) == spec
    step = chain_json_schema()["$defs"]["StepSpec"]
    assert {"required": ["map"], "properties": {"map": {"required": ["steps"]}}} \
        in step["anyOf"]


async def test_approval_steps_in_items_are_refused_without_the_service() -> None:
    data = chain({"handle": "m", "map": {"over": "people", "steps": [
        {"handle": "ok", "plugin": "human-approval", "prompt": "{item}?",
         "plugin_config": {"timeout_s": 60}}]}})
    with pytest.raises(ChainDefinitionError, match="step `ok` waits for human approval"):
        await run(data, fake := FakeGenerator())
    assert fake.requests == []


def test_a_map_over_steps_has_no_output_schema_its_steps_may() -> None:
    schema = {"type": "object"}
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain({**arcs(), "output_schema": schema}))
    assert excinfo.value.problems == [
        "step `arcs`: a `map` with `steps` step makes no model call, so it has no "
        "`output_schema`; put it on the steps it runs"]
    inner = arcs()
    inner["map"]["steps"][1] = {**inner["map"]["steps"][1], "output_schema": schema}
    assert compile_chain(chain(inner)).steps["arcs"].flow is not None


def test_a_map_whose_steps_do_not_parse_is_not_asked_for_a_prompt() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain(prompt("list", "names"),
                            {"handle": "m", "map": {"over": "list", "steps": []}}))
    assert excinfo.value.problems == [
        "step `m`: `map.steps` = [] is invalid: List should have at least 1 item after "
        "validation, not 0"]
