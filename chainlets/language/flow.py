"""Control flow in the chain language: map a step over items, choose a branch, loop a block.

The JSON models (`MapSpec`, `ChoiceSpec`, `Branch`; `LoopSpec` lives in spec.py, beside the
steps it holds) and what the compiler makes of them (`MapFlow`, `ChoiceFlow`, `LoopFlow`,
`MemberFlow`), which the engine's flow controllers run.
"""

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import WithJsonSchema

from chainlets.language.conditions import Condition
from chainlets.language.templating import NAME_PATTERN

if TYPE_CHECKING:
    from chainlets.language.compiler import CompiledStep
    from chainlets.language.spec import StepSpec

__all__ = ["Branch", "ChoiceFlow", "ChoiceSpec", "ItemFlow", "LoopFlow", "MapFlow", "MapSpec",
           "MemberFlow", "Tolerance", "parse_tolerance"]

_Name = Annotated[str, WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern})]
_PERCENT = re.compile(r"^(\d+(?:\.\d+)?)%$")


class MapSpec(BaseModel):
    """Run the step once per item of a list; its output is the JSON array of the items'
    outputs, in input order. With `steps`, each item runs that block of steps (a sub-chain),
    and the map step itself has no prompt."""

    model_config = ConfigDict(extra="forbid")

    over: _Name = Field(description="The list: an input (a JSON list, or text) or a step "
                        "handle whose output is split by `split`.")
    split: Literal["json", "lines"] = Field(
        default="json", description="How text becomes items: a JSON array, or its non-empty "
        "lines.")
    item: _Name = Field(default="item", description="The template variable holding the item "
                        "(JSON text unless the item is a string).")
    max_concurrency: int | None = Field(
        default=None, ge=1, description="At most this many items running at once (per run: "
        "`map_concurrency`). Default: all.")
    tolerate: int | str = Field(
        default=0, description="Failed items allowed before the map fails: a count (`2`) or a "
        "percentage of the items (`\"10%\"`). A failed item's output is null.")
    steps: "list[StepSpec] | None" = Field(
        default=None, min_length=1, description="A sub-chain run once per item: prompt steps, "
        "handles unique in the whole chain, reading the item, each other, inputs and outer "
        "steps. Item `i` is the step `map-handle[i]`, its steps `map-handle[i].step`.")
    output: _Name | None = Field(
        default=None, description="With `steps`: the step whose output is an item's output "
        "(default: the last step of `steps`).")


class Branch(BaseModel):
    """One branch of a choice: the steps it runs when its condition holds."""

    model_config = ConfigDict(extra="forbid")

    when: Condition = Field(description="The condition; branches are tried in order.")
    then: list[_Name] = Field(min_length=1, description="Steps that run when this branch is "
                              "taken; each waits for the choice.")


class ChoiceSpec(BaseModel):
    """Route on conditions: the first branch whose condition holds runs; the steps of every
    other branch (and `otherwise`) are skipped with the reason, and so is what depends on
    them. The choice's output is the first step of the branch taken (`none` if none)."""

    model_config = ConfigDict(extra="forbid")

    branches: list[Branch] = Field(min_length=1, description="Tried in order.")
    otherwise: list[_Name] = Field(default_factory=list,
                                   description="Steps that run when no branch is taken.")


@dataclass(frozen=True, slots=True)
class Tolerance:
    """Failed items a map allows: a count, or a fraction of the items."""

    count: int = 0
    fraction: float | None = None

    def allows(self, failed: int, items: int) -> bool:
        allowed = self.count if self.fraction is None else int(self.fraction * items)
        return failed <= allowed

    def describe(self, items: int) -> str:
        if self.fraction is None:
            return f"tolerates {self.count}"
        return f"tolerates {self.fraction:.0%} = {int(self.fraction * items)}"


def parse_tolerance(value: int | str) -> Tolerance:
    """`2` or `"10%"`; ValueError with the fix for anything else."""
    if isinstance(value, int) and value >= 0:
        return Tolerance(count=value)
    found = _PERCENT.match(value) if isinstance(value, str) else None
    if found is None or float(found.group(1)) > 100:
        raise ValueError(f"`tolerate` = {value!r} must be a count of items (e.g. 2) or a "
                         "percentage from 0% to 100% (e.g. \"10%\")")
    return Tolerance(fraction=float(found.group(1)) / 100)


@dataclass(frozen=True, slots=True)
class ItemFlow:
    """One item of a map over a sub-chain: its steps in an order where each comes after the
    ones it reads (`body_deps`), and the step whose output is the item's."""

    body: tuple["CompiledStep", ...]
    body_deps: dict[str, frozenset[str]]
    output: str


@dataclass(frozen=True, slots=True)
class MapFlow:
    """A compiled map: the step itself is the item template, or with `item_flow` each item
    runs that sub-chain."""

    over: str
    split: Literal["json", "lines"]
    item: str
    max_concurrency: int | None
    tolerance: Tolerance
    item_flow: ItemFlow | None = None


@dataclass(frozen=True, slots=True)
class ChoiceFlow:
    """A compiled choice: (condition, the steps it runs) in order, then `otherwise`."""

    branches: tuple[tuple[Condition, tuple[str, ...]], ...]
    otherwise: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class LoopFlow:
    """A compiled loop: body steps in an order where each comes after the body steps it
    reads (`body_deps`), the `until` condition and the bound."""

    body: tuple["CompiledStep", ...]
    body_deps: dict[str, frozenset[str]]
    until: Condition | None
    max_iterations: int
    on_limit: Literal["stop", "fail"]


@dataclass(frozen=True, slots=True)
class MemberFlow:
    """A body step as seen from outside its loop: its last iteration's output."""

    loop: str
