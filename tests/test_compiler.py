"""Static validation: every problem reported at once, naming the step, the field and the fix."""

from pathlib import Path
from typing import Any

import pytest

from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import load_chain, parse_chain


def step(handle: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


def problems(chain: dict[str, Any]) -> list[str]:
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(parse_chain(chain))
    return excinfo.value.problems


def test_steamship_chain_compiles_with_its_dependency_and_required_input() -> None:
    chain = compile_chain(load_chain(Path(__file__).parent.parent / "chains/specs/joke.json"))
    assert chain.steps["judge-joke"].deps == {"tell-joke"}
    assert chain.dependents["tell-joke"] == ("judge-joke",)
    assert chain.required_inputs == ("topic",)
    assert chain.output_handle == "judge-joke"
    assert chain.steps["tell-joke"].params.max_words == 10


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ({"handle": "c", "steps": [step("", "x")]},
         "steps[0]: `handle` is empty; give the step a unique name"),
        ({"handle": "c", "steps": [step("a", "x"), step("a", "y")]},
         "step `a`: duplicate handle `a`; handles must be unique, rename one of them"),
        ({"handle": "c", "steps": [step("a b", "x")]},
         "step `a b`: handle `a b` may hold only letters, digits, `_` and `-`, so that prompts "
         "can reference it as `{a b}`"),
        ({"handle": "c", "steps": [step("a", "{b}"), step("b", "{a}")]},
         "dependency cycle `a` → `b` → `a`; remove one of these references"),
        ({"handle": "c", "steps": [step("a", "{a}")]},
         "step `a` depends on itself; a step cannot use its own output"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt3"}]},
         "step `a`: unknown plugin `gpt3`; use one of `gpt-3`, `mock`, `openai` "
         "(did you mean `gpt-3`?)"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt-3"}]},
         "step `a`: plugin_config.max_words = {} is invalid for plugin `gpt-3`: Field required"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt-3",
                                    "plugin_config": {"max_words": 0}}]},
         "step `a`: plugin_config.max_words = 0 is invalid for plugin `gpt-3`: Input should be "
         "greater than 0"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "openai",
                                    "plugin_config": {"temprature": 0.5}}]},
         "step `a`: plugin_config.temprature = 0.5 is invalid for plugin `openai`: Extra "
         "inputs are not permitted"),
        ({"handle": "c", "steps": [step("a", "{x.__class__}")]},
         "step `a`: prompt: `{x.__class__}` is not a plain name (letters, digits, `_`, `-`); "
         "attribute and index access are not allowed"),
        ({"handle": "c", "steps": [step("a", "x", system_prompt="{s!r}")]},
         "step `a`: system_prompt: `{s!r}` uses a conversion or format spec, which is not "
         "allowed; write `{s}`"),
        ({"handle": "c", "steps": [step("a", "x",
                                        messages=[{"role": "user", "content": "{m[0]}"}])]},
         "step `a`: messages[0].content: `{m[0]}` is not a plain name (letters, digits, `_`, "
         "`-`); attribute and index access are not allowed"),
        ({"handle": "c", "inputs": [{"name": "topic"}],
          "steps": [step("tell-joke", "{topic}"), step("judge", "{tell_joke}")]},
         "step `judge`: prompt references `{tell_joke}`, which is neither a declared input nor "
         "a step (did you mean `tell-joke`?)"),
        ({"handle": "c", "steps": [step("a", "x", depends_on=["b"])]},
         "step `a`: depends_on names `b`, which is not a step"),
        ({"handle": "c", "output": "nope", "steps": [step("a", "x")]},
         "chain output names `nope`, which is not a step"),
        ({"handle": "c", "inputs": [{"name": "a"}], "steps": [step("a", "x")]},
         "input `a` has the same name as a step; rename one of them"),
    ],
    ids=["empty-handle", "duplicate-handle", "bad-handle", "cycle", "self-reference",
         "unknown-plugin", "missing-plugin-config", "invalid-plugin-config",
         "unknown-plugin-config-key", "template-attribute", "template-conversion",
         "template-index-in-message", "unresolved-name-with-suggestion", "unknown-depends-on",
         "unknown-output", "input-shadows-step"],
)
def test_each_validation_error(chain: dict[str, Any], expected: str) -> None:
    assert problems(chain) == [expected]


def test_all_problems_are_reported_together_in_one_error() -> None:
    found = problems({"handle": "c", "inputs": [],
                      "steps": [step("a", "{b} {zz}"), step("b", "{a}"),
                                {"handle": "c", "prompt": "{q.x}", "plugin": "nope"}]})
    assert len(found) == 4
    assert any("unknown plugin `nope`" in p for p in found)
    assert any("`{q.x}`" in p for p in found)
    assert any("`{zz}`" in p for p in found)
    assert any("dependency cycle" in p for p in found)


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ChainDefinitionError, match=r"chain `c` is invalid \(2 problems\)"):
        compile_chain(parse_chain({"handle": "c", "steps": [step("a", "{a}"),
                                                            step("b", "{x.y}")]}))


def test_schema_errors_name_the_step_by_handle_and_suggest_a_fix() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        parse_chain({"handle": "c", "steps": [{"handle": "judge", "prompt": "x",
                                               "plugin": "mock", "promt": "typo"},
                                              {"handle": "other"}]})
    assert excinfo.value.problems == [
        "step `judge`.promt: Extra inputs are not permitted (remove it, or check its spelling "
        "against `chainrunner schema`)",
        "step `other`.prompt: Field required (add it)",
        "step `other`.plugin: Field required (add it)",
    ]


def test_a_chain_without_steps_is_rejected() -> None:
    with pytest.raises(ChainDefinitionError, match="steps: List should have at least 1 item"):
        parse_chain({"handle": "c", "steps": []})


def test_step_input_overrides_resolve_names_without_dependencies() -> None:
    chain = compile_chain(parse_chain({"handle": "c", "steps": [
        step("a", "x"), step("b", "{a} {topic}", input={"a": "fixed", "topic": 3})]}))
    assert chain.steps["b"].deps == frozenset()
    assert chain.steps["b"].literals == {"a": "fixed", "topic": "3"}
    assert chain.required_inputs == ()


def test_depends_on_orders_without_interpolation() -> None:
    chain = compile_chain(parse_chain({"handle": "c", "steps": [
        step("a", "x"), step("b", "y", depends_on=["a"])]}))
    assert chain.steps["b"].deps == {"a"}


def test_undeclared_chain_requires_every_unresolved_name_and_lists_all_missing() -> None:
    chain = compile_chain(parse_chain({"handle": "c", "steps": [
        step("a", "{topic} {style}"), step("b", "{a} {audience}")]}))
    assert chain.required_inputs == ("topic", "style", "audience")
    with pytest.raises(InputsError) as excinfo:
        chain.resolve_inputs({"style": "dry"})
    assert excinfo.value.problems == [
        "missing input `topic`: pass it with --input topic=VALUE",
        "missing input `audience`: pass it with --input audience=VALUE",
    ]
    assert chain.resolve_inputs({"topic": "t", "style": "s", "audience": "a", "extra": "ok"}) \
        == {"topic": "t", "style": "s", "audience": "a", "extra": "ok"}


def test_declared_inputs_fill_defaults_and_reject_unknown_names() -> None:
    chain = compile_chain(parse_chain({
        "handle": "c",
        "inputs": [{"name": "topic", "default": "food"}, {"name": "tone"}],
        "steps": [step("a", "{topic} {tone}")]}))
    assert chain.required_inputs == ("tone",)
    assert chain.resolve_inputs({"tone": "dry"}) == {"topic": "food", "tone": "dry"}
    with pytest.raises(InputsError) as excinfo:
        chain.resolve_inputs({"tone": "dry", "topc": "x"})
    assert excinfo.value.problems == [
        "unknown input `topc`: this chain declares `tone`, `topic` (did you mean `topic`?)"]


def test_all_cycles_are_named() -> None:
    found = problems({"handle": "c", "steps": [
        step("a", "{b}"), step("b", "{a}"), step("c", "{d}"), step("d", "{e}"),
        step("e", "{c}")]})
    assert found == ["dependency cycle `a` → `b` → `a`; remove one of these references",
                     "dependency cycle `c` → `d` → `e` → `c`; remove one of these references"]


def test_a_rejected_template_still_has_its_other_names_checked() -> None:
    found = problems({"handle": "c", "inputs": [{"name": "topic"}], "steps": [
        step("tell-joke", "{topic}"), step("judge", "{tell_joke} {x.__class__}")]})
    assert found == [
        "step `judge`: prompt: `{x.__class__}` is not a plain name (letters, digits, `_`, `-`); "
        "attribute and index access are not allowed",
        "step `judge`: prompt references `{tell_joke}`, which is neither a declared input nor "
        "a step (did you mean `tell-joke`?)"]


def test_a_duplicate_handle_does_not_hide_a_cycle() -> None:
    found = problems({"handle": "c", "steps": [step("a", "{b}"), step("b", "{a}"),
                                               step("b", "x")]})
    assert found == ["step `b`: duplicate handle `b`; handles must be unique, rename one of them",
                     "dependency cycle `a` → `b` → `a`; remove one of these references"]


def test_a_long_chain_written_last_step_first_compiles_and_its_cycle_is_found() -> None:
    """Thousands of steps in a line, listed against dependency order (beyond Python's
    recursion limit for a recursive search)."""
    length = 3_000
    steps = [step(f"s{i}", f"{{s{i - 1}}}" if i else "start") for i in reversed(range(length))]
    chain = compile_chain(parse_chain({"handle": "long", "steps": steps}))
    assert chain.steps["s2999"].deps == {"s2998"}
    steps[-1] = step("s0", f"{{s{length - 1}}}")
    found = problems({"handle": "long", "steps": steps})
    assert len(found) == 1 and found[0].startswith("dependency cycle `s2999` → `s2998` → ")
