"""Static validation: every problem reported at once, naming the step, the field and the fix."""

import json
from pathlib import Path
from typing import Any

import pytest

from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import ChainSpec, load_chain, parse_chain


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
         "step `a`: unknown plugin `gpt3`; use one of `gpt-3`, `human-approval`, `mock`, `openai` "
         "(did you mean `gpt-3`?)"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt-3"}]},
         'step `a`: plugin `gpt-3` requires `plugin_config.max_words`; add `"plugin_config": '
         '{"max_words": 50}`'),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt-3",
                                    "plugin_config": {"max_word": 5}}]},
         "step `a`: plugin `gpt-3` has no option `max_word` (did you mean `max_words`?); its "
         "options are `max_words`"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "gpt-3",
                                    "plugin_config": {"max_words": 0}}]},
         "step `a`: plugin_config.max_words = 0 is invalid for plugin `gpt-3`: Input should be "
         "greater than 0"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "openai",
                                    "plugin_config": {"temprature": 0.5}}]},
         "step `a`: plugin `openai` has no option `temprature` (did you mean `temperature`?); "
         "its options are `model`, `temperature`, `max_tokens`, `top_p`, `stop`, `seed`"),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "openai",
                                    "plugin_config": {"temperature": 3}}]},
         "step `a`: plugin_config.temperature = 3 is invalid for plugin `openai`: Input should "
         "be less than or equal to 2"),
        ({"handle": "c", "steps": [step("a", "{x['__class__']}")]},
         "step `a`: prompt: `{x['__class__']}` is neither a plain name nor a path read: read a "
         "JSON field as `{name.key}`, `{name[0]}` or `{name[\"a key\"]}` (dict keys and list "
         "indexes only; attribute access is not allowed)"),
        ({"handle": "c", "steps": [step("a", "x", system_prompt="{s!r}")]},
         "step `a`: system_prompt: `{s!r}` uses a conversion or format spec, which is not "
         "allowed; write `{s}`"),
        ({"handle": "c", "steps": [step("a", "x",
                                        messages=[{"role": "user", "content": "{m[-1]}"}])]},
         "step `a`: messages[0].content: `{m[-1]}` is neither a plain name nor a path read: "
         "read a JSON field as `{name.key}`, `{name[0]}` or `{name[\"a key\"]}` (dict keys "
         "and list indexes only; attribute access is not allowed)"),
        ({"handle": "c", "steps": [step("a", 'Answer as JSON: {"urgent": true}')]},
         'step `a`: prompt: `{"urgent": true}` is not a placeholder; for literal braces write '
         '`{{"urgent": true}}`'),
        ({"handle": "c", "steps": [step("a", "Hello { topic }")]},
         "step `a`: prompt: `{ topic }` has spaces inside the braces; write `{topic}`"),
        ({"handle": "c", "steps": [step("a", "a set: 1, 2} and more")]},
         "step `a`: prompt: a lone `}` at character 12 (in `a set: 1, 2} and more`); write `{{` "
         "and `}}` for literal braces"),
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
         "unknown-plugin", "missing-plugin-config", "misspelt-plugin-config-key",
         "invalid-plugin-config", "unknown-plugin-config-key", "out-of-range-plugin-config",
         "template-attribute", "template-conversion", "template-index-in-message",
         "literal-json-brace", "spaces-in-placeholder", "lone-brace",
         "unresolved-name-with-suggestion", "unknown-depends-on", "unknown-output",
         "input-shadows-step"],
)
def test_each_validation_error(chain: dict[str, Any], expected: str) -> None:
    assert problems(chain) == [expected]


def test_all_problems_are_reported_together_in_one_error() -> None:
    found = problems({"handle": "c", "inputs": [],
                      "steps": [step("a", "{b} {zz}"), step("b", "{a}"),
                                {"handle": "c", "prompt": "{q.}", "plugin": "nope"}]})
    assert len(found) == 4
    assert any("unknown plugin `nope`" in p for p in found)
    assert any("`{q.}`" in p for p in found)
    assert any("`{zz}`" in p for p in found)
    assert any("dependency cycle" in p for p in found)


def test_error_message_lists_every_problem() -> None:
    with pytest.raises(ChainDefinitionError, match=r"chain `c` is invalid \(2 problems\)"):
        compile_chain(parse_chain({"handle": "c", "steps": [step("a", "{a}"),
                                                            step("b", "{x!r}")]}))


def test_schema_errors_name_the_step_by_handle_and_suggest_a_fix() -> None:
    with pytest.raises(ChainDefinitionError) as excinfo:
        parse_chain({"handle": "c", "steps": [{"handle": "judge", "prompt": "x",
                                               "plugin": "mock", "promt": "typo"},
                                              {"handle": "other"}]})
    assert excinfo.value.problems == [
        "step `judge`: unknown field `promt` (did you mean `prompt`?); remove it or correct its "
        "spelling",
        "step `other`: field `prompt` is required; add it",
        "step `other`: field `plugin` is required; add it",
    ]


def test_a_chain_without_steps_is_rejected() -> None:
    with pytest.raises(ChainDefinitionError, match="chain: `steps` is empty; add at least one "
                                                   "step"):
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
        "missing input `topic` (used by step `a`): pass it with --input topic=VALUE",
        "missing input `audience` (used by step `b`): pass it with --input audience=VALUE",
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
        step("tell-joke", "{topic}"), step("judge", "{tell_joke} {x.}")]})
    assert found == [
        "step `judge`: prompt: `{x.}` is neither a plain name nor a path read: read a JSON "
        "field as `{name.key}`, `{name[0]}` or `{name[\"a key\"]}` (dict keys and list "
        "indexes only; attribute access is not allowed)",
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


# --- one round: schema problems and what the parts that parsed reveal, together ----------------


def test_schema_and_semantic_problems_are_reported_in_one_round() -> None:
    """Six schema errors no longer hide the plugin config, template, reference, cycle and
    output problems of the parts that did parse."""
    chain = {
        "handle": "c", "extra": 1, "output": "zz",
        "inputs": [{"name": "topic", "defualt": "x"}],
        "steps": [
            {"handle": "a", "promt": "Tell {topic}", "plugin": "gpt-3"},
            {"handle": "b", "prompt": '{a} {nope} {"urgent": true}', "plugin": "mock",
             "depends_on": "a"},
            {"handle": 5, "prompt": "{b}", "plugin": "mock"},
            "not a step",
            {"handle": "d", "prompt": "{d}", "plugin": "openai",
             "plugin_config": {"temperature": 3}, "messages": [{"role": "bot", "content": "hi"}]},
        ]}
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain, source="chain.json")
    assert str(excinfo.value).startswith("chain.json: chain `c` is invalid (13 problems):\n")
    assert excinfo.value.problems == [
        "input `topic`: unknown field `defualt` (did you mean `default`?); remove it or correct "
        "its spelling",
        "chain: unknown field `extra`; remove it or correct its spelling",
        "step `a`: unknown field `promt` (did you mean `prompt`?); remove it or correct its "
        "spelling",
        'step `a`: plugin `gpt-3` requires `plugin_config.max_words`; add `"plugin_config": '
        '{"max_words": 50}`',
        'step `b`: `depends_on` = "a" is invalid: Input should be a valid list',
        'step `b`: prompt: `{"urgent": true}` is not a placeholder; for literal braces write '
        '`{{"urgent": true}}`',
        "step `b`: prompt references `{nope}`, which is neither a declared input nor a step",
        "steps[2]: `handle` = 5 is invalid: Input should be a valid string",
        'steps[3] must be a JSON object, not "not a step"',
        "step `d`: `messages[0].role` = \"bot\" is invalid: Input should be 'system', 'user' or "
        "'assistant'",
        "step `d`: plugin_config.temperature = 3 is invalid for plugin `openai`: Input should be "
        "less than or equal to 2",
        "step `d` depends on itself; a step cannot use its own output",
        "chain output names `zz`, which is not a step",
    ]


@pytest.mark.parametrize(
    ("chain", "expected"),
    [
        ([1], ["chain: must be a JSON object with `handle` and `steps`, not [1]"]),
        ({"handle": "c", "steps": "a"}, ['chain: `steps` = "a" is invalid: Input should be a '
                                         "valid list"]),
        ({"steps": [step("a", "{a}")]},
         ["chain: field `handle` is required; add it",
          "step `a` depends on itself; a step cannot use its own output"]),
        ({"handle": "c", "steps": [{"handle": "a", "plugin": "mock", "promt": "{x.y}"}]},
         ["step `a`: unknown field `promt` (did you mean `prompt`?); remove it or correct its "
          "spelling"]),
        ({"handle": "c", "inputs": [], "steps": [step("a", "{x} {b}", input=3), step("b", "y")]},
         ["step `a`: `input` must be a JSON object, not 3"]),
        ({"handle": "c", "inputs": [{"name": 1}], "steps": [step("a", "{x}")]},
         ["inputs[0]: `name` = 1 is invalid: Input should be a valid string"]),
        ({"handle": "c", "steps": [{"handle": "a", "prompt": "{b}", "plugin": "mock",
                                    "depends_on": ["b"], "plugin_config": []},
                                   {"handle": "b", "prompt": "{a}", "plugin": 7}]},
         ["step `a`: `plugin_config` must be a JSON object, not []",
          "step `b`: `plugin` = 7 is invalid: Input should be a plugin name or a non-empty "
              "list of plugin names",
          "dependency cycle `a` → `b` → `a`; remove one of these references"]),
    ],
    ids=["not-an-object", "steps-not-a-list", "missing-handle", "misspelt-prompt-not-checked",
         "unreadable-input-hides-no-dependency", "unreadable-input-name",
         "cycle-through-steps-with-schema-errors"],
)
def test_what_did_not_parse_is_reported_once_and_the_rest_still_checked(
        chain: Any, expected: list[str]) -> None:
    """A field that did not parse is not checked again (no second message for it), and no
    message guesses at it: an unreadable `input` or input list calls no name undeclared."""
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain)
    assert excinfo.value.problems == expected


def test_raw_json_compiles_to_the_same_chain_as_the_parsed_spec() -> None:
    data = {"handle": "c", "steps": [step("a", "{topic}"), step("b", "{a}", depends_on=["a"])]}
    from_data, from_spec = compile_chain(data), compile_chain(parse_chain(data))
    assert from_data.spec == from_spec.spec
    assert from_data.steps["b"].deps == from_spec.steps["b"].deps == {"a"}
    assert from_data.required_inputs == from_spec.required_inputs == ("topic",)


def test_a_misspelt_plugin_config_key_of_a_present_config_shows_the_key_to_add() -> None:
    assert problems({"handle": "c", "steps": [
        {"handle": "a", "prompt": "x", "plugin": "gpt-3", "plugin_config": {"length": 5}}]}) == [
        'step `a`: plugin `gpt-3` requires `plugin_config.max_words`; add it, e.g. '
        '`{"max_words": 50}`',
        "step `a`: plugin `gpt-3` has no option `length`; its options are `max_words`"]


# --- inputs name the steps that use them --------------------------------------------------------


def test_a_missing_input_names_its_steps_and_a_step_it_may_misspell() -> None:
    chain = compile_chain(parse_chain({"handle": "c", "steps": [
        step("tell-joke", "{topic}"), step("judge", "{tell_joke} {nope_ref}"),
        step("c", "{nope_ref}"), step("d", "{nope_ref}"), step("e", "{nope_ref} {topic}")]}))
    assert chain.input_users == {"topic": ("tell-joke", "e"), "tell_joke": ("judge",),
                                 "nope_ref": ("judge", "c", "d", "e")}
    with pytest.raises(InputsError) as excinfo:
        chain.resolve_inputs({"topic": "t"})
    assert excinfo.value.problems == [
        "missing input `tell_joke` (used by step `judge`; did you mean step `tell-joke`?): pass "
        "it with --input tell_joke=VALUE",
        "missing input `nope_ref` (used by steps `judge`, `c`, `d` and 1 more): pass it with "
        "--input nope_ref=VALUE"]


def test_a_declared_input_names_its_steps_and_suggests_no_step() -> None:
    chain = compile_chain(parse_chain({"handle": "c", "inputs": [{"name": "tell_joke"}],
                                       "steps": [step("tell-joke", "x"),
                                                 step("judge", "{tell_joke}")]}))
    assert chain.input_usage("tell_joke") == "used by step `judge`"
    assert chain.input_usage("unused") == "used by no step"


# --- the `$schema` key --------------------------------------------------------------------------


def test_a_schema_key_is_accepted_and_survives_a_json_round_trip() -> None:
    spec = parse_chain({"$schema": "./chain.schema.json", "handle": "c",
                        "steps": [step("a", "x")]})
    assert spec.schema_uri == "./chain.schema.json"
    dumped = json.loads(spec.model_dump_json())
    assert dumped["$schema"] == "./chain.schema.json" and "schema_uri" not in dumped
    assert ChainSpec.model_validate_json(spec.model_dump_json()) == spec
    assert compile_chain(dumped).spec == spec
