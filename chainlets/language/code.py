"""A code step in the chain language: its `code` object, and its arguments' templates, parsed
and rendered."""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field

from chainlets.language.functions import Function
from chainlets.language.templating import Template

__all__ = ["CodeSpec", "CompiledCode", "arg_templates"]


class CodeSpec(BaseModel):
    """`code` of a step: call a registered function instead of a model."""

    model_config = ConfigDict(extra="forbid")

    function: str = Field(description="Name of a registered function (built in: "
                                      "`pick_winner`, `write_itinerary`).")
    args: dict[str, pydantic.JsonValue] = Field(
        default_factory=dict,
        description="The function's arguments by parameter name, as JSON. Every string, at "
                    "any depth, is a template (`{judge}`); text given to a parameter that "
                    "expects something else (a number, a list, an object) is read as JSON.")


def arg_templates(args: Mapping[str, Any], prefix: str = "code.args"
                  ) -> Iterator[tuple[str, str]]:
    """Every string in `args`, at any depth, with where it is (`code.args.meals.a`)."""
    for key, value in args.items():
        yield from _strings(value, f"{prefix}.{key}")


def _strings(value: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _strings(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, f"{where}.{key}")


@dataclass(frozen=True)
class CompiledCode:
    """A code step, validated: its function and its arguments' templates, parsed."""

    function: Function
    args: Mapping[str, Any]
    templates: Mapping[str, Template]  # by where the string is (`code.args.scores`)

    def render(self, values: Mapping[str, str]) -> dict[str, Any]:
        """The arguments with every template rendered."""
        return {key: self._render(value, f"code.args.{key}", values)
                for key, value in self.args.items()}

    def _render(self, value: Any, where: str, values: Mapping[str, str]) -> Any:
        if isinstance(value, str):
            template = self.templates.get(where)
            return value if template is None else template.render(values)
        if isinstance(value, list):
            return [self._render(item, f"{where}[{i}]", values) for i, item in enumerate(value)]
        if isinstance(value, dict):
            return {k: self._render(item, f"{where}.{k}", values) for k, item in value.items()}
        return value
