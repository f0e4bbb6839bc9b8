"""Prompt templates: `str.format` syntax restricted to plain names, rendered without eval."""

import re
import string
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["NAME_PATTERN", "Template", "TemplateProblem", "parse_template"]

# Handles and placeholder names: no `.`/`[` (they would reach object internals under
# `str.format`), no spaces, and `-` allowed because Steamship handles use it (`{tell-joke}`).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*$")

_FORMATTER = string.Formatter()


class TemplateProblem(Exception):
    """Why a template is rejected; the compiler adds the step and field.

    `names` holds the placeholders that are fine, so that they can still be checked.
    """

    def __init__(self, message: str, names: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.names = names


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: alternating literal text and placeholder names."""

    parts: tuple[tuple[str, str | None], ...]

    @property
    def names(self) -> tuple[str, ...]:
        """Placeholder names in order of first appearance."""
        seen: dict[str, None] = {}
        for _, name in self.parts:
            if name is not None:
                seen.setdefault(name)
        return tuple(seen)

    def length(self, values: Mapping[str, str]) -> int:
        """Characters `render(values)` would return, a name missing from `values` counted as
        empty: a lower bound before every value is known."""
        return sum(len(literal) + (len(values.get(name, "")) if name is not None else 0)
                   for literal, name in self.parts)

    def render(self, values: Mapping[str, object]) -> str:
        """Substitute every placeholder; the caller guarantees every name is present."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(str(values[name]))
        return "".join(out)


# A field that reaches into an object (`{x.attr}`, `{x[0]}`): rejected, never evaluated.
_ACCESS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*[.\[]")
# Python's format-spec mini-language; anything else after a `:` is literal text, e.g. JSON.
_FORMAT_SPEC = re.compile(r"^(?:.?[<>=^])?[-+ ]?z?#?0?\d*[,_]?(?:\.\d+)?[bcdeEfFgGnosxX%]?$")

_PARSE_ERRORS = {
    "Single '{' encountered in format string": "a lone `{`",
    "Single '}' encountered in format string": "a lone `}`",
    "expected '}' before end of string": "a `{` that is never closed",
}


def _lone_brace(source: str) -> int:
    """Where `string.Formatter` gave up: the first brace that is neither doubled nor part of a
    `{...}` field."""
    i = 0
    while i < len(source):
        char = source[i]
        if source.startswith(char * 2, i) and char in "{}":
            i += 2
        elif char == "}":
            return i
        elif char == "{":
            close = source.find("}", i)
            if close < 0:
                return i
            i = close + 1
        else:
            i += 1
    return len(source)


def _check_field(field: str, conversion: str | None, spec: str) -> tuple[str | None, str | None]:
    """(the problem with a `{...}` field or None, the name it means or None)."""
    shown = "{" + field + (f"!{conversion}" if conversion else "") + \
        (f":{spec}" if spec else "") + "}"
    if field == "" or field.isdigit():
        return f"positional placeholder `{shown}` is not allowed; name it, e.g. `{{topic}}`", None
    if NAME_PATTERN.match(field):
        if not conversion and not spec:
            return None, field
        if conversion or "{" in spec or _FORMAT_SPEC.match(spec):
            return (f"`{shown}` uses a conversion or format spec, which is not allowed; "
                    f"write `{{{field}}}`"), field
    elif NAME_PATTERN.match(field.strip()) and not conversion and not spec:
        name = field.strip()
        return f"`{shown}` has spaces inside the braces; write `{{{name}}}`", name
    elif _ACCESS.match(field):
        return (f"`{shown}` is not a plain name (letters, digits, `_`, `-`); attribute and index "
                "access are not allowed"), None
    doubled = shown.replace("{", "{{").replace("}", "}}")
    return f"`{shown}` is not a placeholder; for literal braces write `{doubled}`", None


def parse_template(source: str) -> Template:
    """Parse `source`, raising TemplateProblem for anything beyond plain `{name}` fields."""
    try:
        parsed = list(_FORMATTER.parse(source))
    except ValueError as exc:
        at = _lone_brace(source)
        what = _PARSE_ERRORS.get(str(exc), "an unbalanced brace")
        excerpt = source[max(0, at - 20):at + 20].replace("\n", " ")
        raise TemplateProblem(
            f"{what} at character {at + 1} (in `{excerpt}`); write `{{{{` and `}}}}` for literal "
            "braces") from exc
    problems: list[str] = []
    parts: list[tuple[str, str | None]] = []
    meant: dict[str, None] = {}  # names meant as placeholders, even if written wrongly
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        problem, name = _check_field(field, conversion, spec or "")
        if name is not None:
            meant.setdefault(name)
        if problem is not None:
            problems.append(problem)
        parts.append((literal, field))
    if problems:
        raise TemplateProblem("; ".join(problems), tuple(meant))
    return Template(parts=tuple(parts))
