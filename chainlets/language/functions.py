"""Code steps' functions: named, typed Python functions a step calls (`code`) or a model calls
(`tools`), registered like plugins, and how their JSON arguments meet their type hints.

A `Function` wraps a plain function (sync or async). Its parameters' type hints are the
contract: arguments arrive as JSON (a code step's `args`, rendered; a model's tool call) and
are validated by pydantic against each hint. Text given where a parameter expects something
other than text is read as JSON first, so `"scores": "{judge}"` passes the judge's JSON reply
to a `dict` parameter. The return value is the step's output, as JSON text.
"""

import functools
import inspect
import json
import typing
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import pydantic
import pydantic_core
from pydantic import TypeAdapter

from chainlets.errors import ConfigurationError, FunctionCallError
from chainlets.language.messages import listing, show, suggest
from chainlets.language.templating import NAME_PATTERN

__all__ = ["FUNCTION_ENTRY_POINT_GROUP", "Function",
           "FunctionRegistry", "installed_functions", "type_name",
           "with_installed"]

FUNCTION_ENTRY_POINT_GROUP = "chainrunner.functions"


def type_name(annotation: Any) -> str:
    """A type as a message shows it: `int`, `dict[str, float]`, `Winner`."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return "any JSON value"
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return repr(annotation).replace("typing.", "")


def _first_line(text: str | None) -> str:
    return " ".join((text or "").strip().split("\n\n")[0].split())


@dataclass(frozen=True)
class Function:
    """A function a code step or a model may call, by `name`.

    Its parameters must be nameable (no `*args`, `**kwargs` or positional-only ones); a
    parameter without a hint takes any JSON value. `description` (default: the docstring's
    first paragraph) is what a model reads when the function is offered as a tool.
    """

    name: str
    fn: Callable[..., Any]
    description: str = ""

    def __post_init__(self) -> None:
        if not NAME_PATTERN.match(self.name):
            raise ValueError(f"function name `{self.name}` may hold only letters, digits, `_` "
                             "and `-`")
        for parameter in inspect.signature(self.fn).parameters.values():
            if parameter.kind not in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                raise ValueError(f"function `{self.name}`: parameter `{parameter.name}` is "
                                 f"{parameter.kind.description}; code steps pass arguments by "
                                 "name, so make it an ordinary parameter")
        if not self.description:
            object.__setattr__(self, "description", _first_line(self.fn.__doc__))

    @classmethod
    def of(cls, fn: Callable[..., Any], name: str | None = None) -> "Function":
        """`fn` as a Function named `name` (default: its own name)."""
        return cls(name or fn.__name__, fn)

    @functools.cached_property
    def _hints(self) -> dict[str, Any]:
        return typing.get_type_hints(self.fn, include_extras=True)

    @functools.cached_property
    def parameters(self) -> dict[str, inspect.Parameter]:
        return dict(inspect.signature(self.fn).parameters)

    @property
    def required(self) -> list[str]:
        return [name for name, p in self.parameters.items() if p.default is p.empty]

    def annotation(self, name: str) -> Any:
        return self._hints.get(name, Any)

    @functools.cached_property
    def _adapters(self) -> dict[str, TypeAdapter[Any]]:
        return {name: TypeAdapter(self.annotation(name)) for name in self.parameters}

    @functools.cached_property
    def _returns(self) -> TypeAdapter[Any]:
        return TypeAdapter(self._hints.get("return", Any))

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.fn)

    def arg_problems(self, where: str, given: Iterable[str]) -> list[str]:
        """Problems with the argument names `given`: unknown ones, required ones missing."""
        names = list(self.parameters)
        given = list(given)
        found = [f"{where}: function `{self.name}` has no parameter `{arg}`"
                 f"{suggest(arg, names)}; its parameters are {listing(names) or 'none'}"
                 for arg in given if arg not in self.parameters]
        missing = [name for name in self.required if name not in given]
        if missing:
            found.append(f"{where}: function `{self.name}` requires "
                         f"{listing([f'args.{m}' for m in missing])}; add "
                         f"{'it' if len(missing) == 1 else 'them'}")
        return found

    def bind(self, step: str, args: Mapping[str, Any]) -> dict[str, Any]:
        """`args` validated against the parameters' hints; FunctionCallError names the step,
        the argument, its value and the type expected."""
        problems = self.arg_problems(f"step `{step}`", args)
        if problems:
            raise FunctionCallError("; ".join(problems))
        return {name: self._validate(step, name, value) for name, value in args.items()}

    def _validate(self, step: str, name: str, value: Any) -> Any:
        adapter = self._adapters[name]
        try:
            return adapter.validate_python(value)
        except pydantic.ValidationError as exc:
            error = exc
        if isinstance(value, str):  # text where the hint wants more: read it as JSON
            try:
                parsed = json.loads(value)
            except ValueError:
                pass
            else:
                try:
                    return adapter.validate_python(parsed)
                except pydantic.ValidationError as exc:
                    error = exc
        raise FunctionCallError(
            f"step `{step}`: function `{self.name}` argument `{name}` = {show(value)} is not a "
            f"valid {type_name(self.annotation(name))}: {_reasons(error)}") from None

    def check_literal(self, where: str, name: str, value: Any) -> str | None:
        """The problem with an argument known at validation (no placeholder in it), if any."""
        if name not in self.parameters:
            return None  # reported by arg_problems
        try:
            self._validate("?", name, value)
        except FunctionCallError as exc:
            return f"{where}: {str(exc).split(': ', 1)[1]}"
        return None

    def output(self, step: str, result: Any) -> str:
        """The function's return value as JSON text, the step's output."""
        try:
            return self._returns.dump_json(result).decode()
        except (pydantic_core.PydanticSerializationError, pydantic.ValidationError) as exc:
            raise FunctionCallError(f"step `{step}`: function `{self.name}` returned "
                                    f"{type(result).__name__}, which is not JSON: {exc}") from None

    def json_schema(self) -> dict[str, Any]:
        """Its parameters as a JSON Schema object: what a model is told a tool takes."""
        fields: dict[str, Any] = {
            name: (self.annotation(name), ... if p.default is p.empty else p.default)
            for name, p in self.parameters.items()}
        model = pydantic.create_model(f"{self.name}_arguments", **fields)
        schema = model.model_json_schema()
        schema.pop("title", None)
        return schema


def _reasons(error: pydantic.ValidationError) -> str:
    shown = []
    for err in error.errors()[:3]:
        loc = ".".join(str(part) for part in err["loc"])
        shown.append(f"{loc}: {err['msg']}" if loc else err["msg"])
    more = error.error_count() - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "")


class FunctionRegistry:
    """The functions code steps and tools may name."""

    def __init__(self, functions: Iterable[Function] = ()) -> None:
        self._functions: dict[str, Function] = {}
        for function in functions:
            self._functions[function.name] = function

    def get(self, name: str) -> Function | None:
        return self._functions.get(name)

    def names(self) -> list[str]:
        return sorted(self._functions)

    def __iter__(self) -> Iterator[Function]:
        return iter(self._functions.values())

    def __len__(self) -> int:
        return len(self._functions)

    def with_functions(self, *functions: "Function | Callable[..., Any]") -> "FunctionRegistry":
        """A copy with more functions (a plain callable is registered under its own name)."""
        return FunctionRegistry([*self, *(f if isinstance(f, Function) else Function.of(f)
                                          for f in functions)])


def installed_functions() -> list[tuple[str, Function]]:
    """The functions installed packages register under the `chainrunner.functions` entry point
    group, each with its entry point's name; an entry point names a Function, a function, or a
    list of them. ConfigurationError says which entry point is broken."""
    found: list[tuple[str, Function]] = []
    for entry_point in entry_points(group=FUNCTION_ENTRY_POINT_GROUP):
        package = f" of package `{entry_point.dist.name}`" if entry_point.dist else ""
        where = f"entry point `{entry_point.name} = {entry_point.value}`{package}"
        try:
            loaded = entry_point.load()
        except Exception as exc:  # the user's package failed: say which
            raise ConfigurationError(f"loading {where} raised {type(exc).__name__}: {exc}"
                                     ) from exc
        items = loaded if isinstance(loaded, list | tuple) else [loaded]
        for item in items:
            if isinstance(item, Function):
                found.append((entry_point.name, item))
            elif callable(item) and not isinstance(item, type):
                try:
                    found.append((entry_point.name, Function.of(item)))
                except ValueError as exc:
                    raise ConfigurationError(f"{where}: {exc}") from exc
            else:
                raise ConfigurationError(f"{where} must be a Function, a function or a list of "
                                         f"them, not {type(item).__name__}")
    return found


def with_installed(registry: FunctionRegistry) -> FunctionRegistry:
    """`registry` plus every installed package's functions; ConfigurationError when one takes
    a name already registered (a function registered twice under one name is one)."""
    added: dict[str, tuple[Function, str]] = {}
    for entry, function in installed_functions():
        same = registry.get(function.name)
        if same is not None and same.fn is not function.fn:
            raise ConfigurationError(f"entry point `{entry}` registers function "
                                     f"`{function.name}`, which the runner already has; "
                                     "rename it")
        if function.name in added and added[function.name][0].fn is not function.fn:
            raise ConfigurationError(f"entry points `{added[function.name][1]}` and `{entry}` "
                                     f"both register function `{function.name}`")
        if same is None:
            added.setdefault(function.name, (function, entry))
    return registry.with_functions(*(f for f, _ in added.values())) if added else registry
