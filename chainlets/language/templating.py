"""Prompt templates: `str.format` syntax restricted to plain names and JSON path reads,
rendered by our code, without eval or `str.format`.

`{name}` is a value as text. `{name.key}`, `{name[0]}`, `{name["a key"]}` (paths.py, the
syntax of conditions' `path`) read a field of the value parsed as JSON: dict keys and list
indexes only, so `{x.__class__}` looks up a key named `__class__` and never reaches a Python
object. Templates without path reads render on the plain fast path.
"""

import json
import re
import string
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chainlets.errors import StepDataError
from chainlets.language.paths import PathProblem, PathStep, format_path, parse_path, walk

__all__ = ["NAME_PATTERN", "Read", "Template", "TemplateProblem", "parse_template", "text_of"]

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


# A path read: the name whose value is read, and the path into it.
Read = tuple[str, tuple[PathStep, ...]]
_NO_READS: Mapping[str, Read] = MappingProxyType({})


def text_of(value: Any) -> str:
    """A JSON value as a template shows it: a string as is, anything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _excerpt(text: str, limit: int = 60) -> str:
    return json.dumps(text if len(text) <= limit else text[:limit - 1] + "…", ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Template:
    """A parsed template: alternating literal text and placeholder fields; `reads` maps each
    field that reads a path (`judge.score`) to its name and path."""

    parts: tuple[tuple[str, str | None], ...]
    reads: Mapping[str, Read] = field(default_factory=lambda: _NO_READS)

    @property
    def names(self) -> tuple[str, ...]:
        """Names read (a path read's name), in order of first appearance."""
        seen: dict[str, None] = {}
        reads = self.reads
        for _, name in self.parts:
            if name is not None:
                seen.setdefault(reads[name][0] if name in reads else name)
        return tuple(seen)

    def length(self, values: Mapping[str, str]) -> int:
        """Characters `render(values)` would return, a name missing from `values` counted as
        empty: a lower bound before every value is known."""
        return sum(len(literal) + (len(values.get(name, "")) if name is not None else 0)
                   for literal, name in self.parts)

    def render(self, values: Mapping[str, object]) -> str:
        """Substitute every placeholder; the caller guarantees every name is present.

        A path read of a value that is not JSON, or has nothing at the path, raises
        StepDataError saying which."""
        if self.reads:
            return self._render_reads(values)
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(str(values[name]))
        return "".join(out)

    def _render_reads(self, values: Mapping[str, object]) -> str:
        parsed: dict[str, Any] = {}  # each value parsed once, however many fields read it
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is None:
                continue
            read = self.reads.get(name)
            if read is None:
                out.append(str(values[name]))
                continue
            base, path = read
            if base not in parsed:
                text = str(values[base])
                try:
                    parsed[base] = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise StepDataError(f"`{{{name}}}` reads a field of `{base}`, which is not "
                                        f"JSON ({exc.msg}): {_excerpt(text)}") from None
            value, taken = walk(parsed[base], path)
            if taken < len(path):
                raise StepDataError(_nothing_at(name, base, path, taken, parsed[base]))
            out.append(text_of(value))
        return "".join(out)


def _nothing_at(name: str, base: str, path: tuple[PathStep, ...], taken: int,
                whole: Any) -> str:
    """Why a path read found nothing: where it stopped, and what is there."""
    there, _ = walk(whole, path[:taken])
    at = f"`{format_path(path[:taken])}`" if taken else "the top"
    if isinstance(there, dict):
        keys = ", ".join(f"`{k}`" for k in list(there)[:8]) or "none"
        has = f"an object with keys {keys}" + (" and more" if len(there) > 8 else "")
    elif isinstance(there, list):
        has = f"a list of {len(there)} item{'s' if len(there) != 1 else ''}"
    else:
        shown = json.dumps(there, ensure_ascii=False)
        has = f"{shown if len(shown) <= 40 else shown[:39] + '…'}, not an object or a list"
    return (f"`{{{name}}}`: `{base}` has nothing at `{format_path(path)}` (at {at} it has "
            f"{has})")


# A field that reads into a value (`{x.key}`, `{x[0]}`): a path read, walked by paths.py.
_ACCESS = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]*[.\[]")


def _read_of(field: str) -> Read | str:
    """A path-read field as (name, path), or why it is not one."""
    try:
        steps = parse_path(field)
    except PathProblem:
        return (f"`{{{field}}}` is neither a plain name nor a path read: read a JSON field as "
                "`{name.key}`, `{name[0]}` or `{name[\"a key\"]}` (dict keys and list "
                "indexes only; attribute access is not allowed)")
    base = steps[0]
    assert isinstance(base, str)  # the field starts with a name's character
    return base, steps[1:]
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
    if NAME_PATTERN.match(field) or _ACCESS.match(field):
        read = _read_of(field) if _ACCESS.match(field) else None
        name = field if read is None else read[0]
        if isinstance(read, str):
            return read, None
        if name.isdigit():
            return (f"positional placeholder `{shown}` is not allowed; name it, e.g. "
                    "`{topic}`"), None
        if not conversion and not spec:
            return None, name
        if conversion or "{" in spec or _FORMAT_SPEC.match(spec):
            return (f"`{shown}` uses a conversion or format spec, which is not allowed; "
                    f"write `{{{field}}}`"), name
    elif NAME_PATTERN.match(field.strip()) and not conversion and not spec:
        name = field.strip()
        return f"`{shown}` has spaces inside the braces; write `{{{name}}}`", name
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
    reads: dict[str, Read] = {}
    meant: dict[str, None] = {}  # names meant as placeholders, even if written wrongly
    for literal, field_, spec, conversion in parsed:
        if field_ is None:
            parts.append((literal, None))
            continue
        problem, name = _check_field(field_, conversion, spec or "")
        if name is not None:
            meant.setdefault(name)
            if name != field_ and problem is None:
                read = _read_of(field_)
                assert not isinstance(read, str)
                reads[field_] = read
        if problem is not None:
            problems.append(problem)
        parts.append((literal, field_))
    if problems:
        raise TemplateProblem("; ".join(problems), tuple(meant))
    return Template(parts=tuple(parts), reads=reads or _NO_READS)
