"""Templates: plain names only, literal braces, and every injection form rejected."""

import pytest

from chainlets.language.templating import TemplateProblem, parse_template


def test_plain_names_are_found_in_order_without_duplicates() -> None:
    template = parse_template("A {topic} joke: {tell-joke} about {topic}")
    assert template.names == ("topic", "tell-joke")


def test_render_substitutes_values_and_keeps_literal_braces() -> None:
    template = parse_template("{{literal}} {name} {{ and }} {a_b-c}")
    assert template.names == ("name", "a_b-c")
    assert template.render({"name": "N", "a_b-c": 7}) == "{literal} N { and } 7"


def test_render_does_not_reinterpret_substituted_values() -> None:
    """A value containing braces is inserted verbatim, never formatted again."""
    template = parse_template("say {x}")
    assert template.render({"x": "{y.__class__} {{z}}"}) == "say {y.__class__} {{z}}"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("{x['key']}", "neither a plain name nor a path read"),
        ("{x.}", "neither a plain name nor a path read"),
        ("{x.[0]}", "neither a plain name nor a path read"),
        ("{x[-1]}", "neither a plain name nor a path read"),
        ("{x.a b}", "neither a plain name nor a path read"),
        ("{x.__class__!r}", "conversion or format spec"),
        ("{x!r}", "conversion or format spec"),
        ("{x!s}", "conversion or format spec"),
        ("{x:>10}", "conversion or format spec"),
        ("{x:{y}}", "conversion or format spec"),
        ("{}", "positional placeholder"),
        ("{0}", "positional placeholder"),
        ("{ topic }", "spaces inside the braces"),
        ("{0.__globals__}", "positional placeholder"),
        ("{0[0]}", "positional placeholder"),
        ("unbalanced {", "literal braces"),
        ("unbalanced }", "literal braces"),
        ('{"urgent": true}', "not a placeholder"),
    ],
    ids=["quoted-key", "trailing-dot", "dot-index", "negative-index", "space-in-path",
         "path-conversion", "conversion-r", "conversion-s", "format-spec", "nested-spec",
         "empty", "positional", "spaces", "positional-attr", "positional-index", "open-brace",
         "close-brace", "json-object"],
)
def test_forbidden_syntax_is_rejected(source: str, message: str) -> None:
    with pytest.raises(TemplateProblem, match=message):
        parse_template(source)


@pytest.mark.parametrize(
    ("source", "message", "names"),
    [
        ('Reply as JSON: {"urgent": true} about {topic}',
         '`{"urgent": true}` is not a placeholder; for literal braces write `{{"urgent": true}}`',
         ("topic",)),
        ('{"a": {"b": 1}}',
         '`{"a": {"b": 1}}` is not a placeholder; for literal braces write `{{"a": {{"b": 1}}}}`',
         ()),
        ("{urgent: true}",
         "`{urgent: true}` is not a placeholder; for literal braces write `{{urgent: true}}`", ()),
        ("{ topic }", "`{ topic }` has spaces inside the braces; write `{topic}`", ("topic",)),
        ("{x:>10}", "`{x:>10}` uses a conversion or format spec, which is not allowed; write `{x}`",
         ("x",)),
        ("the set {1, 2}", "`{1, 2}` is not a placeholder; for literal braces write `{{1, 2}}`",
         ()),
        ("x {{ok}} }}} z",
         "a lone `}` at character 12 (in `x {{ok}} }}} z`); write `{{` and `}}` for literal braces",
         ()),
        ("a { b", "a `{` that is never closed at character 3 (in `a { b`); write `{{` and `}}` "
                  "for literal braces", ()),
    ],
    ids=["json", "nested-json", "unquoted-json", "spaces", "format-spec", "set", "lone-close",
         "unclosed"],
)
def test_each_message_says_how_to_write_it(source: str, message: str,
                                           names: tuple[str, ...]) -> None:
    """Literal text in braces is told to double them; a misspelt placeholder is told its
    spelling, and its name is still checked against the chain."""
    with pytest.raises(TemplateProblem) as excinfo:
        parse_template(source)
    assert str(excinfo.value) == message
    assert excinfo.value.names == names


def test_every_problem_in_one_template_is_reported() -> None:
    with pytest.raises(TemplateProblem) as excinfo:
        parse_template("{a.} {c!r} {}")
    text = str(excinfo.value)
    assert "`{a.}`" in text and "`{c!r}`" in text and "`{}`" in text
