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

    def render(self, values: Mapping[str, object]) -> str:
        """Substitute every placeholder; the caller guarantees every name is present."""
        out: list[str] = []
        for literal, name in self.parts:
            out.append(literal)
            if name is not None:
                out.append(str(values[name]))
        return "".join(out)


def parse_template(source: str) -> Template:
    """Parse `source`, raising TemplateProblem for anything beyond plain `{name}` fields."""
    try:
        parsed = list(_FORMATTER.parse(source))
    except ValueError as exc:
        raise TemplateProblem(
            f"{exc} (write `{{{{` and `}}}}` for literal braces)") from exc
    problems: list[str] = []
    parts: list[tuple[str, str | None]] = []
    for literal, field, spec, conversion in parsed:
        if field is None:
            parts.append((literal, None))
            continue
        shown = "{" + field + (f"!{conversion}" if conversion else "") + \
            (f":{spec}" if spec else "") + "}"
        if field == "" or field.isdigit():
            problems.append(f"positional placeholder `{shown}` is not allowed; name it, "
                            "e.g. `{topic}`")
        elif conversion or spec:
            problems.append(f"`{shown}` uses a conversion or format spec, which is not allowed; "
                            f"write `{{{field}}}`")
        elif not NAME_PATTERN.match(field):
            problems.append(f"`{shown}` is not a plain name (letters, digits, `_`, `-`); "
                            "attribute and index access are not allowed")
        parts.append((literal, field))
    if problems:
        fine = dict.fromkeys(name for _, name in parts
                             if name is not None and NAME_PATTERN.match(name))
        raise TemplateProblem("; ".join(problems), tuple(fine))
    return Template(parts=tuple(parts))
