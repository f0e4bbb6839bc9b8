"""Validation pass 1, the schema: raw JSON to a draft that keeps every part that parsed.

A step with a misspelt field still has its handle, plugin and prompt checked by the later
passes, so one round of validation reports schema and semantic problems together.
"""

from dataclasses import dataclass
from typing import Any, TypeVar

import pydantic
from pydantic import BaseModel
from pydantic_core import ErrorDetails

from chainlets.language.messages import Problems, required_fields, without_misspelt
from chainlets.language.spec import ChainSpec, InputDecl, StepSpec, chain_problem

__all__ = ["MAP_WITH_STEPS", "ChainDraft", "StepDraft", "read_draft"]

M = TypeVar("M", bound=BaseModel)


# In a step's `broken` fields: its `map` did not parse but has `steps` (a sub-chain map, which
# takes no `prompt` or `plugin`).
MAP_WITH_STEPS = "map.steps"


@dataclass(frozen=True, slots=True)
class StepDraft:
    """A step as far as it parsed: `broken` fields hold placeholders and are not checked again."""

    index: int  # in the flattened order: each loop's body steps follow the loop step
    spec: StepSpec
    broken: frozenset[str] = frozenset()
    loop: str | None = None  # the handle of the loop (or map) whose block holds this step
    block: str = "loop"  # which holds it: `loop` (its body) or `map` (an item's steps)
    item: str | None = None  # in a map's item: the item variable

    @property
    def where(self) -> str:
        if "handle" in self.broken or not self.spec.handle:
            return f"steps[{self.index}]"
        return f"step `{self.spec.handle}`"


@dataclass(frozen=True)
class ChainDraft:
    """A chain as far as it parsed; `spec` is set only when all of it did."""

    handle: str | None
    inputs: tuple[InputDecl, ...] | None  # None: none declared (or unreadable: check leniently)
    output: str | None
    steps: tuple[StepDraft, ...]
    spec: ChainSpec | None

    @classmethod
    def of(cls, spec: ChainSpec) -> "ChainDraft":
        return cls(handle=spec.handle,
                   inputs=None if spec.inputs is None else tuple(spec.inputs),
                   output=spec.output,
                   steps=_flatten(_numbered([(step, frozenset()) for step in spec.steps])),
                   spec=spec)


def _body(step: StepSpec, broken: frozenset[str]) -> list[StepSpec]:
    """The steps `step` holds (a loop's body, a map's item steps) when they parsed."""
    return [] if "loop" in broken or "map" in broken else step.block


def _numbered(steps: list[tuple[StepSpec, frozenset[str]]]
              ) -> list[tuple[int, StepSpec, frozenset[str]]]:
    """`steps` with their indexes in the flattened order."""
    numbered, index = [], 0
    for step, broken in steps:
        numbered.append((index, step, broken))
        index += 1 + len(_body(step, broken))
    return numbered


def _flatten(steps: list[tuple[int, StepSpec, frozenset[str]]]) -> tuple[StepDraft, ...]:
    """Drafts of `steps` (index, step, broken fields), each loop's body after the loop."""
    drafts: list[StepDraft] = []
    for index, step, broken in steps:
        drafts.append(StepDraft(index, step, broken))
        mapped = step.loop is None and step.map is not None
        drafts.extend(StepDraft(index + 1 + i, body, loop=step.handle,
                                block="map" if mapped else "loop",
                                item=step.map.item if mapped and step.map is not None else None)
                      for i, body in enumerate(_body(step, broken)))
    return tuple(drafts)


def _salvage(model: type[M], raw: Any,
             errors: list[ErrorDetails]) -> tuple[M | None, frozenset[str]]:
    """`raw` validated without the fields that have errors; required ones among them become
    empty strings (every required field of StepSpec and InputDecl is a string)."""
    if not isinstance(raw, dict):
        return None, frozenset()
    broken = frozenset(str(err["loc"][0]) for err in errors if err["loc"])
    kept = {key: value for key, value in raw.items() if key not in broken}
    for name in required_fields(model):
        kept.setdefault(name, "")
    try:
        return model.model_validate(kept), broken
    except pydantic.ValidationError:
        return None, broken


def _items(data: dict[str, Any], key: str) -> list[Any]:
    value = data.get(key)
    return value if isinstance(value, list) else []


def read_draft(data: Any, problems: Problems) -> ChainDraft:
    """Parse `data`, adding a problem for every schema error, and keep what parsed."""
    try:
        return ChainDraft.of(ChainSpec.model_validate(data))
    except pydantic.ValidationError as exc:
        errors = exc.errors()
    per_item: dict[tuple[str, int], list[ErrorDetails]] = {}
    for err in errors:
        loc = err["loc"]
        if len(loc) >= 2 and loc[0] in ("steps", "inputs") and isinstance(loc[1], int):
            per_item.setdefault((str(loc[0]), loc[1]), []).append({**err, "loc": loc[2:]})
    salvaged: list[tuple[int, StepSpec, frozenset[str]]] = []
    flat_index: dict[int, int] = {}  # a step's index in `steps` → in the flattened drafts
    at = 0
    for index, raw in enumerate(_items(data, "steps") if isinstance(data, dict) else ()):
        flat_index[index] = at
        step, broken = _salvage(StepSpec, raw, per_item.get(("steps", index), []))
        if "map" in broken and isinstance(raw.get("map"), dict) and "steps" in raw["map"]:
            broken |= {MAP_WITH_STEPS}  # unreadable, but a sub-chain map: no prompt of its own
        if step is not None:
            salvaged.append((at, step, broken))
            at += len(_body(step, broken))
        at += 1
    for err in without_misspelt(errors, ChainSpec):
        loc = err["loc"]
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            problems.step(flat_index.get(loc[1], loc[1]), chain_problem(data, err))
        else:
            problems.chain(chain_problem(data, err))
    if not isinstance(data, dict):
        return ChainDraft(handle=None, inputs=(), output=None, steps=(), spec=None)

    steps = _flatten(salvaged)
    inputs: tuple[InputDecl, ...] | None = None
    if isinstance(data.get("inputs"), list):
        decls = [_salvage(InputDecl, raw, per_item.get(("inputs", i), []))
                 for i, raw in enumerate(data["inputs"])]
        # An input whose name is unreadable leaves the declared names unknown: no reference
        # can then be called undeclared.
        if all(decl is not None and "name" not in broken for decl, broken in decls):
            inputs = tuple(decl for decl, _ in decls if decl is not None)
    handle, output = data.get("handle"), data.get("output")
    return ChainDraft(handle=handle if isinstance(handle, str) else None, inputs=inputs,
                      output=output if isinstance(output, str) else None,
                      steps=steps, spec=None)
