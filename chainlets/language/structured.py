"""Structured output: a step's `output_schema`, checked at validation and applied to replies.

The validation pass `check_structured` checks each `output_schema` itself (against its draft's
metaschema, every problem at once), its `$ref`s, `max_repairs`, and every path read
(`{judge.score}`, a condition's `path`) of a step with a schema against the schema's
properties. `StructuredOutput`
is what the engine's repair loop (engine/repair.py) applies to each reply: parsed as JSON,
validated, and written back canonically, or the validation errors to re-prompt with.

jsonschema is imported when a chain has a schema, so `validate` of other chains stays quick.
"""

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chainlets.language.conditions import Condition
from chainlets.language.draft import ChainDraft, StepDraft
from chainlets.language.messages import Problems, listing, suggest
from chainlets.language.paths import PathProblem, PathStep, format_path, parse_path
from chainlets.language.plugins import APPROVAL
from chainlets.language.spec import DEFAULT_REPAIRS

if TYPE_CHECKING:
    from jsonschema.protocols import Validator

    from chainlets.language.passes import Analysis

__all__ = ["MAX_ERRORS_SHOWN", "SchemaUnusable", "StructuredOutput", "check_structured",
           "schema_path_problem"]

# Validation errors shown to the model and in the step's error, and the length of each.
MAX_ERRORS_SHOWN = 5
_ERROR_CHARS = 200
# A reply wrapped in one Markdown code fence (```json … ```), as chat models often write it.
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n\s*```\s*$", re.DOTALL)
_UNSURE = ("$ref", "$dynamicRef", "anyOf", "oneOf", "allOf", "if", "not")


class SchemaUnusable(Exception):
    """An output schema that cannot be applied to a reply: a `$ref` that does not resolve."""


def _short(text: str, limit: int = _ERROR_CHARS) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"`{name}` is not JSON")


@dataclass(frozen=True)
class StructuredOutput:
    """A step's output schema, compiled: `apply` a reply to it."""

    schema: dict[str, Any]
    validator: "Validator"
    max_repairs: int

    def apply(self, text: str) -> tuple[str | None, list[str]]:
        """(the reply as canonical JSON text, []) when it parses and validates; else (None, the
        errors, at most MAX_ERRORS_SHOWN, each `at <path>: <message>`). A reply wrapped in one
        Markdown code fence is read inside it. Raises SchemaUnusable for a `$ref` that does not
        resolve."""
        from referencing.exceptions import Unresolvable  # loaded with the validator
        fenced = _FENCE.match(text)
        body = fenced.group(1) if fenced else text
        try:
            value = json.loads(body, parse_constant=_reject_constant)
        except json.JSONDecodeError as exc:
            return None, [f"the reply is not JSON: {exc.msg} at line {exc.lineno}, column "
                          f"{exc.colno}"]
        except ValueError as exc:  # NaN, Infinity
            return None, [f"the reply is not JSON: {exc}"]
        errors: list[str] = []
        try:
            for error in self.validator.iter_errors(value):
                if len(errors) == MAX_ERRORS_SHOWN:
                    errors.append("… and more")
                    break
                errors.append(f"at `{error.json_path}`: {_short(error.message)}")
        except Unresolvable as exc:
            raise SchemaUnusable(f"{type(exc).__name__}: {exc}") from None
        if errors:
            return None, errors
        return json.dumps(value, ensure_ascii=False), []


def _validator_class(schema: dict[str, Any]) -> Any:
    from jsonschema import Draft202012Validator
    from jsonschema.validators import validator_for

    return validator_for(schema, default=Draft202012Validator)


def _walk_refs(node: Any) -> Iterator[tuple[str, bool]]:
    """Every `$ref` in a schema, each with whether an `$id` above it changes its base."""
    stack: list[tuple[Any, bool]] = [(node, False)]
    while stack:
        current, based = stack.pop()
        if isinstance(current, dict):
            ref = current.get("$ref")
            if isinstance(ref, str):
                yield ref, based
            nested = based or (current is not node and "$id" in current)
            stack.extend((value, nested) for value in current.values())
        elif isinstance(current, list):
            stack.extend((value, based) for value in current)


def _ref_problems(schema: dict[str, Any]) -> list[str]:
    """`$ref`s that resolve nowhere in the schema itself (nothing is ever fetched)."""
    from referencing import Registry
    from referencing.exceptions import Unresolvable
    from referencing.jsonschema import specification_with

    spec = specification_with(str(schema.get("$schema", "https://json-schema.org/draft/"
                                                         "2020-12/schema")))
    uri = str(schema.get("$id", ""))
    resolver = Registry().with_resource(uri, spec.create_resource(schema)).resolver(uri)
    found = []
    for ref, based in _walk_refs(schema):
        if based:
            continue  # relative to a nested `$id`: left to the validator
        try:
            resolver.lookup(ref)
        except Unresolvable:
            found.append(f"`$ref` `{ref}` does not resolve within the schema (references "
                         "to other documents are never fetched); point it at `$defs`")
    return found


def _compile(schema: dict[str, Any], max_repairs: int) -> StructuredOutput | list[str]:
    from referencing.jsonschema import UnknownDialect, specification_with

    dialect = schema.get("$schema")
    if dialect is not None:
        try:
            specification_with(str(dialect))
        except UnknownDialect:
            return [f"`$schema` `{dialect}` is not a JSON Schema draft jsonschema knows; "
                    "remove it (draft 2020-12 is the default)"]
    cls = _validator_class(schema)
    errors = sorted(cls(cls.META_SCHEMA).iter_errors(schema), key=lambda e: e.json_path)
    problems = [f"output_schema{error.json_path[1:]}: {_short(error.message)}"
                for error in errors]
    if problems:
        return problems
    refs = [f"output_schema: {problem}" for problem in _ref_problems(schema)]
    return refs or StructuredOutput(schema=schema, max_repairs=max_repairs,
                                    validator=cls(schema, format_checker=cls.FORMAT_CHECKER))


def schema_path_problem(schema: Any, path: tuple[PathStep, ...]) -> str | None:
    """Why `path` can never lead anywhere in a value valid against `schema`, or None (it may,
    or the schema does not say: combinators and references are not followed)."""
    node = schema
    for index, step in enumerate(path):
        if not isinstance(node, dict) or any(key in node for key in _UNSURE):
            return None
        at = f"`{format_path(path[:index])}`" if index else "the top"
        kind = node.get("type")
        kinds = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else None
        want = "object" if isinstance(step, str) else "array"
        if kinds is not None and want not in kinds:
            return f"at {at} the schema has type {listing([str(k) for k in kinds])}, not {want}"
        if isinstance(step, str):
            props = node.get("properties")
            extra = node.get("additionalProperties")
            if isinstance(props, dict) and step in props:
                node = props[step]
            elif isinstance(extra, dict):
                node = extra
            elif not isinstance(props, dict) or extra is True or "patternProperties" in node:
                return None
            else:
                return (f"at {at} the schema has no property `{step}`{suggest(step, props)}; "
                        f"its properties are {listing(list(props), limit=8)}")
        else:
            prefix, items = node.get("prefixItems"), node.get("items")
            if isinstance(prefix, list) and step < len(prefix):
                node = prefix[step]
            elif isinstance(items, dict):
                node = items
            else:
                return None
    return None


def _check_step(step: StepDraft, analysis: "Analysis", problems: Problems,
                cache: dict[str, StructuredOutput | list[str]]) -> None:
    spec, where = step.spec, step.where
    if "max_repairs" not in step.broken and spec.max_repairs is not None \
            and spec.output_schema is None and "output_schema" not in step.broken:
        problems.step(step.index, f"{where}: `max_repairs` needs an `output_schema` to repair "
                                  "against; add one, or remove `max_repairs`")
    if spec.output_schema is None or "output_schema" in step.broken:
        return
    if spec.choice is not None or spec.loop is not None \
            or (spec.map is not None and spec.map.steps is not None):
        kind = "`choice`" if spec.choice is not None else "`loop`" if spec.loop is not None \
            else "`map` with `steps`"
        problems.step(step.index, f"{where}: a {kind} step makes no model call, so it has no "
                                  "`output_schema`; put it on the steps it runs")
        return
    if APPROVAL in ([spec.plugin] if isinstance(spec.plugin, str) else spec.plugin or []):
        problems.step(step.index, f"{where}: a `{APPROVAL}` step's answer comes from a person, "
                                  "not a model to repair; remove `output_schema`")
        return
    key = json.dumps(spec.output_schema, sort_keys=True)
    compiled = cache.get(key)
    if compiled is None:
        compiled = cache[key] = _compile(spec.output_schema, DEFAULT_REPAIRS)
    if isinstance(compiled, list):
        for problem in compiled:
            problems.step(step.index, f"{where}: {problem}")
        return
    repairs = DEFAULT_REPAIRS if spec.max_repairs is None else spec.max_repairs
    analysis.steps[step.index].structured = StructuredOutput(
        compiled.schema, compiled.validator, repairs)


def _check_reads(step: StepDraft, analysis: "Analysis", schemas: dict[str, Any],
                 problems: Problems) -> None:
    """Each path read of a step with a schema can lead somewhere in a valid output."""
    own = set(step.spec.input)
    for name, template in analysis.steps[step.index].templates.items():
        for field, (base, path) in template.reads.items():
            schema = schemas.get(base)
            if schema is None or base in own:
                continue
            why = schema_path_problem(schema, path)
            if why is not None:
                problems.step(step.index, f"{step.where}: {name} reads `{{{field}}}`, which step "
                                          f"`{base}`'s output_schema never has: {why}")


def _conditions(step: StepDraft) -> Iterator[tuple[str, Condition]]:
    """Every test of a choice's branches and a loop's `until`, with where it is."""
    spec = step.spec
    roots: list[tuple[str, Condition]] = []
    if spec.choice is not None and "choice" not in step.broken:
        roots = [(f"branch {i + 1} `when`", b.when) for i, b in enumerate(spec.choice.branches)]
    elif spec.loop is not None and "loop" not in step.broken and spec.loop.until is not None:
        roots = [("`until`", spec.loop.until)]
    for what, root in roots:
        stack = [root]
        while stack:
            condition = stack.pop()
            stack.extend(condition.children())
            yield what, condition


def _check_condition_paths(step: StepDraft, schemas: dict[str, Any],
                           problems: Problems) -> None:
    for what, condition in _conditions(step):
        schema = schemas.get(condition.value or "")
        if schema is None or condition.path is None:
            continue
        try:
            path = parse_path(condition.path)
        except PathProblem:
            continue  # reported by the flow pass
        why = schema_path_problem(schema, path)
        if why is not None:
            problems.step(step.index, f"{step.where}: {what}: path `{condition.path}` of "
                                      f"`{condition.value}` is never in its output_schema: {why}")


def check_structured(draft: ChainDraft, analysis: "Analysis", problems: Problems) -> None:
    """Output schemas are valid JSON Schemas (every problem at once), `max_repairs` has one to
    repair against, and path reads fit the schema of the step they read."""
    cache: dict[str, StructuredOutput | list[str]] = {}
    schemas: dict[str, Any] = {}
    for step in draft.steps:
        if step.spec.output_schema is None and step.spec.max_repairs is None:
            continue
        _check_step(step, analysis, problems, cache)
        structured = analysis.steps[step.index].structured
        if structured is not None and step.spec.map is None:  # a map's output is a list
            schemas[step.spec.handle] = structured.schema
    if schemas:
        for step in draft.steps:
            if any(template.reads for template in analysis.steps[step.index].templates.values()):
                _check_reads(step, analysis, schemas, problems)
            _check_condition_paths(step, schemas, problems)
