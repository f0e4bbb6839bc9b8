"""Validation of code steps and tools: a code step calls a registered function by name with
arguments its parameters accept; a step's `tools` name registered functions."""

from typing import TYPE_CHECKING

from chainlets.language.draft import ChainDraft, StepDraft
from chainlets.language.messages import Problems, listing, suggest

if TYPE_CHECKING:
    from chainlets.language.passes import Analysis

__all__ = ["check_code", "check_code_kind"]

# A code step calls its function, not a model: none of a model call's fields apply (nor a
# reply's repairs: a function's output is JSON by its return type).
_MODEL_FIELDS = ("prompt", "plugin", "system_prompt", "output_schema", "max_repairs")


def check_code_kind(step: StepDraft, kinds: list[str], problems: Problems) -> None:
    """A `code` step is neither a choice nor a loop and has no model-call fields (it may map,
    and may be in a loop's body)."""
    spec, where = step.spec, step.where
    other = [k for k in kinds if k in ("choice", "loop")]
    if other:
        problems.step(step.index, f"{where}: a step is one of `code`, `choice` or `loop`; it "
                                  f"has `code` and `{other[0]}`; split it into steps")
        return
    for name in _MODEL_FIELDS:
        if getattr(spec, name) is not None and name not in step.broken:
            problems.step(step.index, f"{where}: a `code` step calls a function, not a model, "
                                      f"so it has no `{name}`; remove it, or make it a step "
                                      "of its own")
    for name, used in (("messages", bool(spec.messages)), ("tools", bool(spec.tools)),
                       ("capabilities", any(level is not None
                                            for _, level in spec.capabilities))):
        if used and name not in step.broken:
            problems.step(step.index, f"{where}: a `code` step calls a function, not a model, "
                                      f"so it has no `{name}`; remove them")


def _literal(analysis: "Analysis", step: StepDraft, key: str) -> bool:
    """Whether argument `key` holds no placeholder (its value is known now)."""
    facts = analysis.steps[step.index]
    where = f"code.args.{key}"
    for name, names in facts.names.items():
        if (name == where or name.startswith((f"{where}.", f"{where}["))) and names:
            return False
    return True


def check_code(draft: ChainDraft, analysis: "Analysis", problems: Problems) -> None:
    """Each code step's function is registered and its arguments match its parameters (names
    always; types too where an argument holds no placeholder); each tool is registered."""
    functions = analysis.plugins.functions
    names = functions.names()
    for step in draft.steps:
        spec, where = step.spec, step.where
        if spec.code is not None and "code" not in step.broken:
            function = functions.get(spec.code.function)
            if function is None:
                problems.step(step.index, f"{where}: unknown function `{spec.code.function}`; "
                                          f"use one of {listing(names)}"
                                          f"{suggest(spec.code.function, names)}")
            else:
                for problem in function.arg_problems(where, spec.code.args):
                    problems.step(step.index, problem)
                for key, value in spec.code.args.items():
                    if _literal(analysis, step, key):
                        literal = function.check_literal(where, key, value)
                        if literal is not None:
                            problems.step(step.index, literal)
        if spec.tools and spec.output_schema is not None and "tools" not in step.broken:
            problems.step(step.index, f"{where}: a step with `tools` has no `output_schema` (a "
                                      "reply after tool calls is not repaired); give the "
                                      "schema to a step that reads this one")
        if "tools" not in step.broken:
            for tool in dict.fromkeys(spec.tools):
                if functions.get(tool) is None:
                    problems.step(step.index, f"{where}: tools names `{tool}`, which is not a "
                                              f"registered function; use one of "
                                              f"{listing(names)}{suggest(tool, names)}")
            if len(set(spec.tools)) != len(spec.tools):
                problems.step(step.index, f"{where}: tools lists a function twice; list each "
                                          "once")
