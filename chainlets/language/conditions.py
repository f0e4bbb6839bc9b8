"""Conditions of choices and loops: tests over inputs and outputs, evaluated without eval.

A condition is one test (`equals`, `contains`, `matches`, `lt`, `le`, `gt`, `ge`) of a
`value` — an input or step handle, optionally narrowed by a `path` into its JSON — or one
combinator (`all`, `any`, `not`). A path holds dict keys and list indexes only
(`scores[0].value`, `["a key"]`), never attribute access.
"""

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from chainlets.language.paths import PathProblem, parse_path, walk

__all__ = ["COMPARISONS", "Condition", "PathProblem", "Verdict", "evaluate", "parse_path",
           "problems_of", "value_names"]

COMPARISONS = ("equals", "contains", "matches", "lt", "le", "gt", "ge")
_COMBINATORS = ("all", "any", "not")

class Condition(BaseModel):
    """One test or one combinator: exactly one of the operators is set."""

    # `not` is a Python keyword: the field is `not_` in code, `not` in JSON.
    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True,
                              serialize_by_alias=True)

    value: str | None = Field(default=None, description="What a test reads: an input name or a "
                              "step handle (in a loop's `until`, also a body step).")
    path: str | None = Field(default=None, description="Into the value parsed as JSON: dict keys "
                             "and list indexes only, e.g. `scores[0].value`.")
    equals: str | int | float | bool | None = Field(
        default=None, description="The text (stripped) or the JSON value at `path` equals this.")
    contains: str | None = Field(default=None, description="The text contains this; a list at "
                                 "`path` holds it.")
    matches: str | None = Field(default=None, description="A regex searched in the text.")
    lt: float | None = Field(default=None, description="As a number, less than this.")
    le: float | None = Field(default=None, description="As a number, at most this.")
    gt: float | None = Field(default=None, description="As a number, more than this.")
    ge: float | None = Field(default=None, description="As a number, at least this.")
    ignore_case: bool = Field(default=False,
                              description="`equals`, `contains` and `matches` ignore case.")
    all: list["Condition"] | None = Field(default=None, description="Every one holds.")
    any: list["Condition"] | None = Field(default=None, description="At least one holds.")
    not_: "Condition | None" = Field(default=None, alias="not",
                                     description="This one does not hold.")

    def operators(self) -> list[str]:
        return [name for name in (*COMPARISONS, *_COMBINATORS)
                if getattr(self, "not_" if name == "not" else name) is not None]

    def children(self) -> list["Condition"]:
        return [*(self.all or ()), *(self.any or ()),
                *((self.not_,) if self.not_ is not None else ())]


def _walk(condition: Condition) -> Iterator[Condition]:
    yield condition
    for child in condition.children():
        yield from _walk(child)


def value_names(condition: Condition) -> list[str]:
    """The names a condition reads, in order."""
    return list(dict.fromkeys(c.value for c in _walk(condition) if c.value is not None))


def problems_of(condition: Condition) -> list[str]:
    """What makes a condition unusable, each naming the part and the fix."""
    problems: list[str] = []
    for part in _walk(condition):
        ops = part.operators()
        if len(ops) != 1:
            problems.append("a condition needs exactly one of " + ", ".join(
                f"`{o}`" for o in (*COMPARISONS, *_COMBINATORS)) +
                (f"; it has {', '.join(f'`{o}`' for o in ops)}" if ops else "; it has none"))
        elif ops[0] in COMPARISONS and part.value is None:
            problems.append(f"`{ops[0]}` needs `value`: the input or step handle it tests")
        elif ops[0] in _COMBINATORS and (part.value is not None or part.path is not None):
            problems.append(f"`{ops[0]}` combines conditions; move `value`/`path` into them")
        elif ops[0] in ("all", "any") and not getattr(part, ops[0]):
            problems.append(f"`{ops[0]}` is empty; list at least one condition")
        if part.path is not None:
            try:
                parse_path(part.path)
            except PathProblem as exc:
                problems.append(str(exc))
        if part.matches is not None:
            try:
                re.compile(part.matches)
            except re.error as exc:
                problems.append(f"`matches`: `{part.matches}` is not a valid regex: {exc}")
    return problems


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a condition held, and why, for a step's status message."""

    holds: bool
    reason: str


def _at(text: str, path: str | None) -> tuple[Any, str | None]:
    """The value at `path` in `text` parsed as JSON, or (None, why not)."""
    if path is None:
        return text, None
    try:
        current: Any = json.loads(text)
    except json.JSONDecodeError:
        return None, "is not JSON"
    steps = parse_path(path)
    current, taken = walk(current, steps)
    if taken < len(steps):
        return None, f"has nothing at `{path}`"
    return current, None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value).strip())
    except ValueError:
        return None


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else json.dumps(value)


def _test(c: Condition, value: Any) -> bool:
    def fold(text: str) -> str:
        return text.casefold() if c.ignore_case else text

    if c.equals is not None:
        if isinstance(value, str):
            return fold(value.strip()) == fold(str(c.equals) if not isinstance(c.equals, bool)
                                              else json.dumps(c.equals))
        return bool(value == c.equals)
    if c.contains is not None:
        if isinstance(value, list):
            return any(isinstance(v, str) and fold(v) == fold(c.contains) for v in value)
        return fold(c.contains) in fold(_text(value))
    if c.matches is not None:
        return re.search(c.matches, _text(value), re.IGNORECASE if c.ignore_case else 0) \
            is not None
    number = _number(value)
    if number is None:
        return False
    for op, bound in (("lt", c.lt), ("le", c.le), ("gt", c.gt), ("ge", c.ge)):
        if bound is not None:
            return {"lt": number < bound, "le": number <= bound, "gt": number > bound,
                    "ge": number >= bound}[op]
    return False


def _describe(c: Condition) -> str:
    op = c.operators()[0]
    target = f"`{c.value}`" + (f" at `{c.path}`" if c.path else "")
    bound = getattr(c, op)
    return f"{target} {op} {json.dumps(bound)}"


def evaluate(condition: Condition, values: Mapping[str, str]) -> Verdict:
    """Whether `condition` holds over `values` (text by name); a validated condition only."""
    if condition.all is not None:
        verdicts = [evaluate(c, values) for c in condition.all]
        failed = next((v for v in verdicts if not v.holds), None)
        return failed or Verdict(True, " and ".join(v.reason for v in verdicts))
    if condition.any is not None:
        verdicts = [evaluate(c, values) for c in condition.any]
        held = next((v for v in verdicts if v.holds), None)
        return held or Verdict(False, "none held: " + "; ".join(v.reason for v in verdicts))
    if condition.not_ is not None:
        inner = evaluate(condition.not_, values)
        return Verdict(not inner.holds, f"not ({inner.reason})")
    assert condition.value is not None  # validated
    value, why = _at(values[condition.value], condition.path)
    described = _describe(condition)
    if why is not None:
        return Verdict(False, f"{described}: `{condition.value}` {why}")
    holds = _test(condition, value)
    got = _text(value)
    got = got if len(got) <= 40 else got[:39] + "…"
    return Verdict(holds, f"{described} {'held' if holds else 'did not hold'} "
                          f"(got {json.dumps(got)})")
