"""Maps, choices and bounded loops: validated with every problem at once, run by the engine."""

import json
from typing import Any

import pytest

from chainlets.engine.models import InvocationResult, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import ChainDefinitionError, GenerationError
from chainlets.language.compiler import compile_chain
from chainlets.language.conditions import Condition, PathProblem, evaluate, parse_path
from chainlets.language.spec import ChainSpec
from mocks.fake_generator import FakeGenerator

FAST = RunOptions(initial_backoff_s=0, max_backoff_s=0)


def prompt(handle: str, text: str, **more: Any) -> dict[str, Any]:
    return {"handle": handle, "plugin": "mock", "prompt": text, **more}


def chain(*steps: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps), **more}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(data)
    return excinfo.value.problems


async def run(data: dict[str, Any], fake: FakeGenerator, inputs: dict[str, Any] | None = None,
              options: RunOptions = FAST) -> InvocationResult:
    return await run_chain(compile_chain(data), inputs or {}, {"mock": fake}, options)


def by_handle(result: InvocationResult) -> dict[str, tuple[RunState, str | None, str | None]]:
    return {r.handle: (r.state, r.output, r.statusMessage) for r in result.steps}


# --- validation -----------------------------------------------------------------------------


def test_every_flow_problem_is_reported_at_once() -> None:
    assert problems(chain(
        prompt("list", "names"),
        prompt("each", "{x}", map={"over": "lisst", "item": "x", "tolerate": "120%"}),
        {"handle": "route", "choice": {"branches": [
            {"when": {"value": "list", "path": "a..b", "equals": "y", "contains": "z"},
             "then": ["nowhere", "each"]}], "otherwise": ["each"]}},
        {"handle": "again", "loop": {"steps": [prompt("inner", "{inner2}"),
                                               prompt("inner2", "{inner}")]}},
        {"handle": "both", "prompt": "x", "plugin": "mock", "choice": {"branches": [
            {"when": {"value": "list", "equals": "y"}, "then": ["list"]}]}},
        inputs=[])) == [
        "step `each`: map reads `lisst`, which is neither a declared input nor a step "
        "(did you mean `list`?)",
        "step `each`: map: `tolerate` = '120%' must be a count of items (e.g. 2) or a "
        'percentage from 0% to 100% (e.g. "10%")',
        "step `route`: branch 1 `when`: a condition needs exactly one of `equals`, `contains`, "
        "`matches`, `lt`, `le`, `gt`, `ge`, `all`, `any`, `not`; it has `equals`, `contains`",
        "step `route`: branch 1 `when`: path `a..b` is not keys and list indexes (like "
        "`scores[0].value`) at character 2",
        "step `route`: branch 1 names `nowhere`, which is not a step",
        "step `route`: `each` is in more than one branch; a step belongs to one branch",
        "step `again`: loop has no bound; add `\"max_iterations\": N` (every loop must end)",
        "step `again`: the loop's steps form a cycle `inner` → `inner2` → `inner`; to read an "
        "earlier iteration, use `{again}`",
        "step `both`: a `choice` step has no `prompt`; remove it, or make it a step of its own",
        "step `both`: a `choice` step has no `plugin`; remove it, or make it a step of its own",
        "dependency cycle `list` → `both` → `list`; remove one of these references",
    ]


def test_a_loop_body_holds_prompt_steps_and_an_item_variable_hides_nothing() -> None:
    assert problems(chain(
        prompt("a", "x"),
        prompt("m", "{a}", map={"over": "a", "item": "a"}),
        {"handle": "l", "loop": {"max_iterations": 2, "steps": [
            {"handle": "inner", "choice": {"branches": [
                {"when": {"value": "a", "equals": "y"}, "then": ["a"]}]}}]}})) == [
        'step `m`: map item variable `a` hides the step or input of that name; rename it, e.g. '
        '`"item": "a_item"`',
        "step `inner`: a loop's body holds prompt steps only, not a `choice`; move it out of "
        "loop `l`",
    ]


def test_flow_models_round_trip_through_json_for_code_first_chains() -> None:
    spec = ChainSpec.model_validate(chain(
        prompt("names", "list"),
        prompt("each", "{name}", map={"over": "names", "item": "name", "split": "lines",
                                      "max_concurrency": 2, "tolerate": "10%"}),
        {"handle": "route", "choice": {"branches": [{"when": {"not": {"all": [
            {"value": "names", "matches": "^A", "ignore_case": True}]}}, "then": ["done"]}]}},
        prompt("done", "ok"),
        {"handle": "l", "loop": {"max_iterations": 3, "on_limit": "fail",
                                 "until": {"value": "x", "path": "[0].v", "ge": 2},
                                 "steps": [prompt("x", "{l}")]}}))
    again = ChainSpec.model_validate_json(spec.model_dump_json(exclude_none=True))
    assert again == spec
    compile_chain(again)


@pytest.mark.parametrize(("path", "steps"), [
    ("scores[0].value", ("scores", 0, "value")), ('["a key"][2]', ("a key", 2)),
    ("[1]", (1,))], ids=["keys-and-index", "quoted-key", "index-only"])
def test_a_path_is_keys_and_indexes(path: str, steps: tuple[str | int, ...]) -> None:
    assert parse_path(path) == steps


@pytest.mark.parametrize("path", ["a.__class__()", "a[-1]", ".a", "a[0", "a b"],
                         ids=["call", "negative", "leading-dot", "unclosed", "space"])
def test_a_path_with_anything_else_is_rejected(path: str) -> None:
    with pytest.raises(PathProblem):
        parse_path(path)


@pytest.mark.parametrize(("condition", "text", "holds"), [
    ({"value": "v", "equals": "yes", "ignore_case": True}, " Yes\n", True),
    ({"value": "v", "contains": "pass"}, "I pass on it", True),
    ({"value": "v", "matches": r"^\d+$"}, "12a", False),
    ({"value": "v", "gt": 50}, "73", True),
    ({"value": "v", "le": 50}, "not a number", False),
    ({"value": "v", "path": "scores[1]", "lt": 10}, '{"scores": [50, 3]}', True),
    ({"value": "v", "path": "scores[5]", "lt": 10}, '{"scores": [50, 3]}', False),
    ({"value": "v", "path": "agree", "equals": True}, '{"agree": true}', True),
    ({"value": "v", "path": "tags", "contains": "vegan"}, '{"tags": ["vegan"]}', True),
    ({"any": [{"value": "v", "equals": "a"}, {"not": {"value": "v", "equals": "b"}}]}, "c",
     True),
    ({"all": [{"value": "v", "equals": "c"}, {"value": "v", "equals": "d"}]}, "c", False),
], ids=["equals-case", "contains", "matches", "gt", "not-a-number", "path-index",
        "path-missing", "json-bool", "list-contains", "any-not", "all"])
def test_conditions(condition: dict[str, Any], text: str, holds: bool) -> None:
    assert evaluate(Condition.model_validate(condition), {"v": text}).holds is holds


# --- map ------------------------------------------------------------------------------------


async def test_a_map_runs_each_item_as_a_step_and_keeps_input_order() -> None:
    fake = FakeGenerator(replies={"each[0]": "slow A"},
                         default=lambda r: "out " + r.messages[-1].content, latency_s=0.01)
    result = await run(chain(prompt("names", "list"),
                             prompt("each", "about {name} of {names}",
                                    map={"over": "people", "item": "name", "max_concurrency": 2}),
                             prompt("all", "{each}")), fake,
                       {"people": ["Ann", "Bob", {"who": "Cy"}]})
    steps = by_handle(result)
    assert json.loads(steps["each"][1] or "") == ["slow A", "out about Bob of out list",
                                                  'out about {"who": "Cy"} of out list']
    assert [steps[f"each[{i}]"][0] for i in range(3)] == [RunState.SUCCEEDED] * 3
    assert fake.max_in_flight == 2 and fake.calls("each[2]") == 1
    record = result.step("each[1]")
    assert len(record.attempts) == 1 and record.usage is not None
    usage = result.step("each").usage
    assert usage is not None and usage.total_tokens == 6
    assert result.input == {"people": ["Ann", "Bob", {"who": "Cy"}]}


async def test_a_map_tolerates_failures_up_to_its_bound() -> None:
    data = chain(prompt("names", "list"),
                 prompt("each", "{item}", map={"over": "names", "split": "lines",
                                               "tolerate": "34%"}))
    failing = {"each[1]": GenerationError("no")}
    fake = FakeGenerator(replies={"names": "a\n\nb\nc\n", **failing})
    result = await run(data, fake)
    assert result.state == RunState.SUCCEEDED
    assert json.loads(result.output or "") == ["ok", None, "ok"]
    assert result.step("each").statusMessage == "1 of 3 items failed, tolerated (tolerates " \
        "34% = 1)"
    fake = FakeGenerator(replies={"names": "a\nb\nc", **failing, "each[2]": GenerationError("x")})
    result = await run(data, fake)
    assert result.state == RunState.FAILED
    assert result.step("each").statusMessage == "2 of 3 items failed (tolerates 34% = 1); " \
        "`each[1]`: GenerationError: no"


async def test_a_map_over_text_that_is_not_a_list_fails_saying_so() -> None:
    result = await run(chain(prompt("names", "list"), prompt("each", "{item}",
                                                             map={"over": "names"})),
                       FakeGenerator(replies={"names": "Ann, Bob"}))
    assert result.step("each").statusMessage == (
        'map: `names` is not a JSON array (Expecting value): "Ann, Bob"; make it one, or map '
        'over its lines with `"split": "lines"`')


async def test_map_concurrency_is_overridable_per_run_and_checked() -> None:
    data = chain(prompt("each", "{item}", map={"over": "xs", "max_concurrency": 1}))
    fake = FakeGenerator(latency_s=0.01)
    await run(data, fake, {"xs": list(range(6))}, FAST.model_copy(
        update={"map_concurrency": {"each": 3}}))
    assert fake.max_in_flight == 3
    with pytest.raises(ChainDefinitionError, match="names `eahc`, not a map step of chain `c` "
                                                   r"\(its maps: `each`\)"):
        await run(data, fake, {"xs": []}, FAST.model_copy(
            update={"map_concurrency": {"eahc": 3}}))


# --- choice ---------------------------------------------------------------------------------


BOOK = chain(
    prompt("is-book", "Is {title} a book?"),
    {"handle": "route", "choice": {"branches": [
        {"when": {"value": "is-book", "equals": "yes", "ignore_case": True},
         "then": ["summary"]}], "otherwise": ["refusal"]}},
    prompt("summary", "Summarise {title}"), prompt("advert", "Advertise {summary}"),
    prompt("refusal", "Say {title} is not a book"))


async def test_a_choice_runs_the_branch_taken_and_skips_the_rest_with_the_reason() -> None:
    result = await run(BOOK, FakeGenerator(replies={"is-book": "Yes"}), {"title": "Emma"})
    steps = by_handle(result)
    assert steps["route"] == (RunState.SUCCEEDED, "summary",
                              'took branch 1: `is-book` equals "yes" held (got "Yes")')
    assert steps["advert"][0] == RunState.SUCCEEDED
    assert steps["refusal"] == (RunState.SKIPPED, None, 'not run: choice `route` took branch 1 '
                                '(`is-book` equals "yes" held (got "Yes"))')

    result = await run(BOOK, FakeGenerator(replies={"is-book": "no"}), {"title": "Emma"})
    steps = by_handle(result)
    assert steps["summary"][2] == ('not run: choice `route` took otherwise (no branch held: '
                                   '`is-book` equals "yes" did not hold (got "no"))')
    assert steps["advert"] == (RunState.SKIPPED, None,
                               "not run: depends on `summary`, which was skipped")
    assert steps["refusal"][0] == RunState.SUCCEEDED and result.state == RunState.SUCCEEDED


# --- loops ----------------------------------------------------------------------------------


DEBATE = chain(
    {"handle": "debate", "loop": {
        "max_iterations": 3, "until": {"value": "judge", "path": "agree", "equals": True},
        "steps": [prompt("chef-a", "A {dish} after {debate}"), prompt("chef-b", "B {dish}"),
                  prompt("judge", "{chef-a} vs {chef-b}")]}},
    prompt("recipe", "{chef-a} | {debate}"))


async def test_a_loop_repeats_until_its_condition_and_keeps_every_iteration() -> None:
    fake = FakeGenerator(replies={"judge[0]": '{"agree": false}', "judge[1]": '{"agree": true}'},
                         default=lambda r: r.step)
    result = await run(DEBATE, fake, {"dish": "soup"})
    assert result.state == RunState.SUCCEEDED
    steps = by_handle(result)
    assert json.loads(steps["debate"][1] or "") == [
        {"chef-a": "chef-a[0]", "chef-b": "chef-b[0]", "judge": '{"agree": false}'},
        {"chef-a": "chef-a[1]", "chef-b": "chef-b[1]", "judge": '{"agree": true}'}]
    assert steps["debate"][2] == ("`until` held after 2 iteration(s): `judge` at `agree` equals "
                                  'true held (got "true")')
    assert steps["chef-a"][1] == "chef-a[1]"
    assert "judge[2]" not in steps
    second = next(r for r in fake.requests if r.step == "chef-a[1]").messages[-1].content
    assert second.startswith('A soup after [{"chef-a": "chef-a[0]"')
    judged = next(r for r in fake.requests if r.step == "judge[0]").messages[-1].content
    assert judged == "chef-a[0] vs chef-b[0]"


async def test_a_loop_stops_at_its_bound_or_fails_when_told_to() -> None:
    fake = FakeGenerator(default='{"agree": false}')
    result = await run(DEBATE, fake, {"dish": "soup"})
    assert result.state == RunState.SUCCEEDED and fake.calls("judge[2]") == 1
    assert (result.step("debate").statusMessage or "").startswith(
        "stopped at max_iterations = 3 (`judge` at `agree` equals true did not hold")
    strict = json.loads(json.dumps(DEBATE))
    strict["steps"][0]["loop"]["on_limit"] = "fail"
    result = await run(strict, FakeGenerator(default='{"agree": false}'), {"dish": "soup"})
    assert result.state == RunState.FAILED
    assert result.step("recipe").state == RunState.SKIPPED


async def test_a_failed_iteration_fails_the_loop_and_skips_what_was_left() -> None:
    fake = FakeGenerator(replies={"chef-b[0]": GenerationError("burnt")})
    result = await run(DEBATE, fake, {"dish": "soup"})
    steps = by_handle(result)
    assert steps["debate"] == (RunState.FAILED, None, "iteration 0: step `chef-b[0]` failed: "
                               "GenerationError: burnt")
    assert steps["judge[0]"] == (RunState.SKIPPED, None,
                                 "not run: depends on `chef-b[0]`, which failed")
    assert steps["chef-a"][0] == RunState.SKIPPED and steps["recipe"][0] == RunState.SKIPPED
