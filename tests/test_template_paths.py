"""Path reads in templates (`{judge.score}`, `{items[0].name}`): dict keys and list indexes over
the value parsed as JSON, walked by our code; no Python object is ever reached."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chainlets.errors import StepDataError
from chainlets.language.templating import TemplateProblem, parse_template

CARD = json.dumps({"name": "Ada", "age": 36, "tags": ["math", {"k": [1, 2]}], "a key": True,
                   "nested": {"x": None}})


@pytest.mark.parametrize(
    ("source", "rendered"),
    [
        ("{card.name}", "Ada"),
        ("{card.age}", "36"),
        ("{card.tags[0]}", "math"),
        ("{card.tags[1].k[1]}", "2"),
        ("{card.tags[1]}", '{"k": [1, 2]}'),
        ('{card["a key"]}', "true"),
        ("{card.nested.x}", "null"),
        ("{card.name} is {card.age}; {plain}", "Ada is 36; {not.a.read}"),
    ],
    ids=["key", "number", "index", "deep", "object-as-json", "quoted-key", "null", "mixed"],
)
def test_a_path_read_renders_the_field(source: str, rendered: str) -> None:
    template = parse_template(source)
    assert template.render({"card": CARD, "plain": "{not.a.read}"}) == rendered


def test_a_path_read_names_the_value_it_reads() -> None:
    template = parse_template("{judge.score} {judge.why} {items[0].name} {topic}")
    assert template.names == ("judge", "items", "topic")
    assert dict(template.reads) == {"judge.score": ("judge", ("score",)),
                                    "judge.why": ("judge", ("why",)),
                                    "items[0].name": ("items", (0, "name"))}


def test_plain_templates_have_no_reads() -> None:
    assert not parse_template("{a} and {b-c}").reads


@pytest.mark.parametrize(
    "source",
    ["{x.__class__}", "{x.__class__.__mro__}", "{x.__init__.__globals__}", "{x[0].__dict__}",
     "{x.format}", "{x.upper}", '{x["__class__"]}'],
)
def test_python_attributes_are_never_reached(source: str) -> None:
    """Over text, a dict and a list, an attribute-looking path is a key lookup that finds
    nothing: no attribute of a str, dict or list is ever rendered."""
    template = parse_template(source)
    for value in ("some text", '{"a": 1}', "[1, 2]", '"a JSON string"'):
        with pytest.raises(StepDataError):
            template.render({"x": value})


def test_an_attribute_name_is_only_ever_a_json_key() -> None:
    template = parse_template("{x.__class__} {x.upper}")
    assert template.render({"x": '{"__class__": "a key", "upper": "another"}'}) == \
        "a key another"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not json", '`{x.a.b}` reads a field of `x`, which is not JSON (Expecting value): '
                     '"not json"'),
        ('{"a": {"c": 1}}', "`{x.a.b}`: `x` has nothing at `a.b` (at `a` it has an object "
                            "with keys `c`)"),
        ('{"a": 3}', "`{x.a.b}`: `x` has nothing at `a.b` (at `a` it has 3, not an object or "
                     "a list)"),
        ("[1]", "`{x.a.b}`: `x` has nothing at `a.b` (at the top it has a list of 1 item)"),
    ],
    ids=["not-json", "missing-key", "into-a-number", "list-not-object"],
)
def test_a_read_that_finds_nothing_says_where(value: str, message: str) -> None:
    with pytest.raises(StepDataError) as excinfo:
        parse_template("{x.a.b}").render({"x": value})
    assert str(excinfo.value) == message


def test_an_index_past_the_end_finds_nothing() -> None:
    with pytest.raises(StepDataError, match=r"has nothing at `\[3\]`"):
        parse_template("{x[3]}").render({"x": "[0, 1, 2]"})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet="abc _.[]\"'"),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "__class__", "upper", "0", "a b"]), inner,
                      max_size=3), max_leaves=8)


@settings(max_examples=300, deadline=None)
@given(field=st.text(alphabet='x.[]"_09a\\-!:', min_size=1, max_size=14), value=_JSON)
def test_any_field_is_rejected_or_read_from_json_only(field: str, value: object) -> None:
    """Whatever is written between braces: refused at parse time, or rendered from the JSON
    value alone (failing with StepDataError when nothing is there); never a Python object's
    attribute or repr (no `<` can appear: the values hold none)."""
    try:
        template = parse_template("{" + field + "}")
    except TemplateProblem:
        return
    values = {name: json.dumps(value) for name in template.names}
    try:
        rendered = template.render(values)
    except StepDataError:
        return
    assert "<" not in rendered
    if not template.reads:
        assert rendered == values[template.names[0]]
