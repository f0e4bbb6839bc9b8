"""Per-step policies in the chain language: the models, the limits, validation of every problem
at once, and the JSON Schema an editor sees."""

from typing import Any

import jsonschema
import pytest

from chainlets.errors import ChainDefinitionError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import chain_json_schema


def step(handle: str, prompt: str = "go", **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


def chain(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"handle": "c", "steps": list(steps), **extra}


def problems(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(data)
    return excinfo.value.problems


def test_every_policy_problem_is_reported_in_one_round() -> None:
    found = problems(chain(
        step("a", "{b}", retry={"on": ["timout", "model"], "max_attempts": 50},
             timeout_s=99_999, catch={"step": "h", "errors": ["nope"]}),
        step("b", retry={"initial_backoff_s": 9, "max_backoff_s": 2},
             catch={"output": "x", "step": "h"}),
        step("h", "{error} {a} {z}"),
        step("z", catch={"step": "z"}),
        step("q", catch={"step": "hh"}),
        step("r", catch={}),
        {"handle": "ch", "choice": {"branches": [{"when": {"value": "b", "equals": "x"},
                                                  "then": ["q"]}]}, "retry": {}},
        {"handle": "l", "loop": {"max_iterations": 2, "steps": [
            step("body", catch={"step": "b"})]}, "timeout_s": 3},
        output="q", deadline_s=100_000))
    assert found == [
        "chain: `deadline_s` = 100000 is invalid: 100,000 is over the limit of 86,400 seconds "
        "set by CHAINRUNNER_MAX_DEADLINE_S; lower it or raise CHAINRUNNER_MAX_DEADLINE_S",
        "step `a`: `retry.max_attempts` = 50 is invalid: 50 is over the limit of 20 attempts "
        "set by CHAINRUNNER_MAX_STEP_ATTEMPTS; lower it or raise CHAINRUNNER_MAX_STEP_ATTEMPTS",
        "step `a`: `retry.on[0]` = \"timout\" is invalid: not an error kind (did you mean "
        "`timeout`?); use `transient`, `model`, `timeout`, `connection`, `schema`, `internal`",
        "step `a`: `timeout_s` = 99999 is invalid: 99,999 is over the limit of 3,600 seconds "
        "set by CHAINRUNNER_MAX_STEP_TIMEOUT_S; lower it or raise "
        "CHAINRUNNER_MAX_STEP_TIMEOUT_S",
        "step `a`: `catch.errors[0]` = \"nope\" is invalid: not an error kind; use "
        "`transient`, `model`, `timeout`, `connection`, `schema`, `internal`",
        "step `b`: retry.initial_backoff_s = 9 is more than retry.max_backoff_s = 2; lower it "
        "or raise max_backoff_s",
        "step `b`: catch needs exactly one of `output` (a fallback value) or `step` (a catch "
        "step), not both",
        "step `z`: catch.step names the step itself; name another step, which runs when this "
        "one fails",
        "step `q`: catch.step names `hh`, which is not a step (did you mean `h`?); declare it "
        "in `steps`",
        "step `r`: catch needs exactly one of `output` (a fallback value) or `step` (a catch "
        "step), not neither",
        "step `ch`: a `choice` step makes no call and does not fail, so it has no `retry`; "
        "remove it",
        "step `l`: a `loop` step makes no call of its own; set `retry` and `timeout_s` on the "
        "steps of its body (a loop may have `catch`)",
        "step `body`: catch.step is not supported inside loop `l`; use `catch.output`, or "
        "catch the loop",
    ]


def test_a_catch_step_reads_only_what_its_step_reads_and_the_error() -> None:
    found = problems(chain(step("src"), step("other"),
                           step("a", "{src}", catch={"step": "h"}),
                           step("h", "{src} {error_kind} {error} {a} {other}"),
                           step("out", "{a}")))
    assert found == [
        "step `h`: it is the catch step of `a`, so it runs only when `a` failed and cannot "
        "read `{a}`; read `{error}` instead",
        "step `h`: it is the catch step of `a` and may read only what `a` reads, not "
        "`other`; add them to `a`'s `depends_on`, or read them in a later step",
    ]


@pytest.mark.parametrize(("steps", "expected"), [
    ([step("a", "{h}", catch={"step": "h"}), step("h"), step("out", "{a}")],
     "step `a`: catch step `h` is also a step it reads; a catch step runs only after this "
     "one failed: name another step, or stop reading it"),
    ([step("a", catch={"step": "h"}), step("b", catch={"step": "h"}), step("h", "{error}"),
      step("out", "{a}{b}")],
     "step `b`: catch.step `h` is already the catch step of `a`; a step catches for one step "
     "only: give this one a catch step of its own"),
    ([step("a", catch={"step": "m"}), step("m", "{item}", map={"over": "xs"}),
      step("out", "{a}")],
     "step `a`: catch step `m` is a `map` step; a catch step is a top-level prompt step"),
    ([step("a", catch={"step": "h"}), step("h", "{error}")],
     "the chain's output defaults to its last step, `h`, the catch step of `a`, which runs "
     "only when that fails; set the chain's `output`"),
    ([step("a", catch={"step": "b"}), step("b", "{error}", catch={"step": "a"}),
      step("out", "{a}")],
     "step `b`: catch step `a` is also a step it reads; a catch step runs only after this "
     "one failed: name another step, or stop reading it"),
], ids=["reads-its-catch-step", "two-catchers", "map-catch-step", "default-output", "cycle"])
def test_catch_step_problems(steps: list[dict[str, Any]], expected: str) -> None:
    assert expected in problems(chain(*steps, inputs=[{"name": "xs", "default": []}]))


def test_a_catch_step_error_is_no_chain_input_and_depends_on_its_step() -> None:
    compiled = compile_chain(chain(step("a", catch={"step": "h", "errors": ["transient"]}),
                                   step("h", "{error} ({error_kind})"), step("b", "{a}")))
    assert compiled.required_inputs == () and compiled.catch_steps == {"h": "a"}
    assert compiled.steps["h"].deps == {"a"} and compiled.catching


def test_the_limits_are_set_by_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_STEP_ATTEMPTS", "3")
    monkeypatch.setenv("CHAINRUNNER_MAX_BACKOFF_S", "5")
    found = problems(chain(step("a", retry={"max_attempts": 4, "max_backoff_s": 6})))
    assert found == [
        "step `a`: `retry.max_attempts` = 4 is invalid: 4 is over the limit of 3 attempts set "
        "by CHAINRUNNER_MAX_STEP_ATTEMPTS; lower it or raise CHAINRUNNER_MAX_STEP_ATTEMPTS",
        "step `a`: `retry.max_backoff_s` = 6 is invalid: 6 is over the limit of 5 seconds set "
        "by CHAINRUNNER_MAX_BACKOFF_S; lower it or raise CHAINRUNNER_MAX_BACKOFF_S"]
    compile_chain(chain(step("a", retry={"max_attempts": 3, "max_backoff_s": 5})))


def test_the_json_schema_has_the_policies() -> None:
    schema = chain_json_schema()
    defs = schema["$defs"]
    step_props = defs["StepSpec"]["properties"]
    assert {"retry", "timeout_s", "catch"} <= set(step_props)
    assert "deadline_s" in schema["properties"]
    assert defs["RetrySpec"]["properties"]["on"]["items"]["enum"] == [
        "transient", "model", "timeout", "connection", "schema", "internal"]
    jsonschema.Draft202012Validator.check_schema(schema)
    check = jsonschema.Draft202012Validator(schema)
    good = chain(step("a", retry={"max_attempts": 2, "on": ["timeout"]}, timeout_s=5,
                      catch={"step": "h", "errors": ["schema"]}),
                 step("h", "{error}"), step("out", "{a}"), deadline_s=60)
    assert list(check.iter_errors(good)) == []
    compile_chain(good)
    for bad in (chain(step("a", retry={"on": ["timout"]})),
                chain(step("a", catch={"output": "x", "step": "h"}), step("h")),
                chain(step("a", catch={"errors": ["model"]})),
                chain(step("a", timeout_s=0)),
                chain(step("a", retry={"tries": 2}))):
        assert list(check.iter_errors(bad)), bad
        with pytest.raises(ChainDefinitionError):
            compile_chain(bad)
