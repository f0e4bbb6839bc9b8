"""Problem messages of the validation passes: where, the bad value, and the fix."""

import difflib
import functools
import json
import types
import typing
from collections.abc import Collection, Sequence
from typing import Any

from pydantic import BaseModel
from pydantic_core import ErrorDetails

__all__ = ["Problems", "Suggestions", "closest", "field_names", "field_path", "invalid",
           "listing", "required_fields", "schema_problem", "show", "suggest", "without_misspelt"]

_CHAIN, _STEP, _GRAPH = range(3)


class Problems:
    """Every problem found, in reading order: the chain's own fields, then step by step (each
    step's problems in pass order), then the graph (cycles, output)."""

    def __init__(self) -> None:
        self._found: list[tuple[int, int, str]] = []

    def chain(self, message: str) -> None:
        self._found.append((_CHAIN, 0, message))

    def step(self, index: int, message: str) -> None:
        self._found.append((_STEP, index, message))

    def graph(self, message: str) -> None:
        self._found.append((_GRAPH, 0, message))

    def __bool__(self) -> bool:
        return bool(self._found)

    def messages(self) -> list[str]:
        return [message for _, _, message in sorted(self._found, key=lambda p: p[:2])]


def listing(names: Sequence[str], limit: int = 0) -> str:
    """`a`, `b`, `c` — or `a`, `b` and 3 more when `limit` is set."""
    if not names:
        return "none"
    shown = ", ".join(f"`{n}`" for n in names[:limit or None])
    rest = len(names) - limit if limit else 0
    return f"{shown} and {rest} more" if rest > 0 else shown


def closest(name: str, candidates: Collection[str]) -> str | None:
    """The candidate `name` most likely misspells (`tell_joke` → `tell-joke`), if any."""
    return _closest(name, tuple(candidates))


@functools.lru_cache(maxsize=1024)  # the same typo in many steps costs one search
def _closest(name: str, candidates: tuple[str, ...]) -> str | None:
    normalized = {c.replace("-", "_").lower(): c for c in candidates}
    close = normalized.get(name.replace("-", "_").lower())
    if close is None:
        matches = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        close = matches[0] if matches else None
    return close


def suggest(name: str, candidates: Collection[str]) -> str:
    """` (did you mean `x`?)` for the closest candidate, or ""."""
    close = closest(name, candidates)
    return f" (did you mean `{close}`?)" if close else ""


class Suggestions:
    """`suggest` against one fixed set of candidates (say 1,000 step handles), memoized.

    A fuzzy search scans every candidate, so only the first FUZZY_SEARCHES distinct names get
    one: a chain with a thousand different unknown names still validates in milliseconds, each
    name still reported, the later ones with only the `_`/`-`/case suggestion.
    """

    FUZZY_SEARCHES = 25

    def __init__(self, candidates: Collection[str]) -> None:
        self._candidates = tuple(candidates)
        self._normalized = {c.replace("-", "_").lower(): c for c in self._candidates}
        self._memo: dict[str, str | None] = {}

    def closest(self, name: str) -> str | None:
        if name not in self._memo:
            close = self._normalized.get(name.replace("-", "_").lower())
            if close is None and len(self._memo) < self.FUZZY_SEARCHES:
                close = _closest(name, self._candidates)
            self._memo[name] = close
        return self._memo[name]

    def __call__(self, name: str) -> str:
        close = self.closest(name)
        return f" (did you mean `{close}`?)" if close else ""


def show(value: Any, limit: int = 60) -> str:
    """A value as JSON, shortened: the user wrote JSON, so show JSON (`"x"`, `null`)."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def field_path(loc: Sequence[int | str]) -> str:
    """`messages[0].content` from pydantic's ('messages', 0, 'content')."""
    text = ""
    for key in loc:
        text += f"[{key}]" if isinstance(key, int) else (f".{key}" if text else str(key))
    return text


@functools.cache
def field_names(model: type[BaseModel]) -> tuple[str, ...]:
    """`model`'s fields as JSON spells them (`$schema`), looked up once: a chain with an error
    in every step asks a thousand times."""
    return tuple(info.alias or name for name, info in model.model_fields.items())


@functools.cache
def required_fields(model: type[BaseModel]) -> tuple[str, ...]:
    return tuple(info.alias or name for name, info in model.model_fields.items()
                 if info.is_required())


def invalid(source: str | None, handle: str | None) -> str:
    """The first line of a ChainDefinitionError: "chain.json: chain `c` is invalid"."""
    name = f"chain `{handle}`" if handle else "chain"
    return f"{source}: {name} is invalid" if source else f"{name} is invalid"


@functools.cache
def _model_at(model: type[BaseModel], loc: tuple[str, ...]) -> type[BaseModel] | None:
    """The model whose field `loc` ends in, for suggestions (`messages[0].rol` → ChatMessage);
    `loc` without list indexes."""
    current: type[BaseModel] | None = model
    for key in loc:
        if current is None or key not in current.model_fields:
            return None
        current = _first_model(current.model_fields[key].annotation)
    return current


def _owner(model: type[BaseModel], loc: Sequence[int | str]) -> type[BaseModel] | None:
    return _model_at(model, tuple(key for key in loc if isinstance(key, str)))


def _first_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (list, dict, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _first_model(arg)
            if found is not None:
                return found
    return None


def schema_problem(where: str, err: ErrorDetails, model: type[BaseModel]) -> str:
    """One pydantic error of `model`, located by `where` (e.g. "step `judge`")."""
    loc = tuple(err["loc"])
    path = field_path(loc)
    if err["type"] == "extra_forbidden":
        owner = _owner(model, loc[:-1])
        fields = field_names(owner) if owner is not None else ()
        return (f"{where}: unknown field `{path}`{suggest(str(loc[-1]), fields)}; remove it or "
                "correct its spelling")
    if err["type"] == "missing":
        return f"{where}: field `{path}` is required; add it"
    if err["type"] in ("model_type", "dict_type"):
        where = f"{where}: `{path}`" if loc else where
        return f"{where} must be a JSON object, not {show(err['input'])}"
    return f"{where}: `{path}` = {show(err['input'])} is invalid: {err['msg']}"


def without_misspelt(errors: list[ErrorDetails], model: type[BaseModel]) -> list[ErrorDetails]:
    """`errors` less each missing field that an unknown field beside it misspells: `promt` is
    reported once, as an unknown field that means `prompt`, not also as `prompt` missing."""
    misspelt: set[tuple[int | str, ...]] = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = tuple(err["loc"])
            owner = _owner(model, loc[:-1])
            close = closest(str(loc[-1]), field_names(owner)) if owner else None
            if close is not None:
                misspelt.add((*loc[:-1], close))
    return [err for err in errors
            if err["type"] != "missing" or tuple(err["loc"]) not in misspelt]
