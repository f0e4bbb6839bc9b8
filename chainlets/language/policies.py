"""Per-step policies in the chain language: `retry`, `timeout_s` and `catch`.

The JSON models (`RetrySpec`, `CatchSpec`), the error kinds a policy may name, and the
validation pass that checks them with every other problem (`check_policies`, among the passes
of passes.py). The engine reads the policies off each step's spec (engine/policies.py).

A catch step (`"catch": {"step": "handle"}`) runs only when the step that names it fails: it
depends on that step, may read only what that step reads (its inputs and dependencies) and
`{error}`/`{error_kind}`, and is skipped when the step succeeds.
"""

import json
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, PositiveInt
from pydantic.json_schema import WithJsonSchema
from pydantic_core import PydanticCustomError

from chainlets.language.limits import (
    MAX_BACKOFF_S,
    MAX_DEADLINE_S,
    MAX_STEP_ATTEMPTS,
    MAX_STEP_TIMEOUT_S,
    at_most,
)
from chainlets.language.messages import Problems, listing, suggest
from chainlets.language.templating import NAME_PATTERN

if TYPE_CHECKING:  # spec.py imports the models: the draft, built on spec.py, only for types
    from chainlets.language.draft import ChainDraft, StepDraft
    from chainlets.language.passes import Analysis

__all__ = ["CATCH_NAMES", "ERROR_KINDS", "TRANSIENT", "Attempts", "BackoffSeconds", "CatchSpec",
           "ChainSeconds", "RetrySpec", "StepSeconds", "catch_text", "check_policies",
           "find_catch_steps", "kind_matches"]

# The engine's ErrorKind values a policy may name (`cancelled` ends a run: nothing catches it
# or retries it); tests/test_policies_engine.py pins them to ErrorKind.
ERROR_KINDS = ("model", "timeout", "connection", "schema", "internal")
# Any failure worth another attempt: HTTP 429/5xx, timeouts, lost connections (the default).
TRANSIENT = "transient"
_NAMES = (TRANSIENT, *ERROR_KINDS)
# What a catch step's templates read about the failure it handles.
CATCH_NAMES = ("error", "error_kind")



def _error_name(value: str) -> str:
    if value not in _NAMES:
        # No `{` in the message: pydantic would read it as a placeholder.
        raise PydanticCustomError("error_kind", f"not an error kind{suggest(value, _NAMES)}; "
                                  f"use {listing(_NAMES)}")
    return value


ErrorName = Annotated[str, AfterValidator(_error_name),
                      WithJsonSchema({"type": "string", "enum": list(_NAMES)})]
Attempts = Annotated[PositiveInt, BeforeValidator(at_most(MAX_STEP_ATTEMPTS))]
BackoffSeconds = Annotated[float, Field(ge=0), BeforeValidator(at_most(MAX_BACKOFF_S))]
StepSeconds = Annotated[float, Field(gt=0), BeforeValidator(at_most(MAX_STEP_TIMEOUT_S))]
ChainSeconds = Annotated[float, Field(gt=0), BeforeValidator(at_most(MAX_DEADLINE_S))]
_Name = Annotated[str, WithJsonSchema({"type": "string", "pattern": NAME_PATTERN.pattern})]


class RetrySpec(BaseModel):
    """How a step's failed calls are tried again; unset fields keep the run's options."""

    model_config = ConfigDict(extra="forbid")

    max_attempts: Attempts | None = Field(
        default=None, description="Tries in all, the first included (1: no retry); default "
        "the run's `max_attempts`. At most CHAINRUNNER_MAX_STEP_ATTEMPTS (20).")
    initial_backoff_s: BackoffSeconds | None = Field(
        default=None, description="Wait before the second try; doubles each time. Default the "
        "run's. At most CHAINRUNNER_MAX_BACKOFF_S (60).")
    max_backoff_s: BackoffSeconds | None = Field(
        default=None, description="Cap on one wait; default the run's. At most "
        "CHAINRUNNER_MAX_BACKOFF_S (60).")
    jitter: bool = Field(default=True, description="Add up to half of `initial_backoff_s` at "
                         "random to each wait, so that failed steps do not retry in step.")
    on: list[ErrorName] = Field(
        default_factory=lambda: [TRANSIENT], min_length=1,
        description="Which failures are retried: `transient` (HTTP 429/5xx, timeouts, lost "
        "connections), or error kinds: `timeout`, `model`, `connection`, `schema`, "
        "`internal`.")


class CatchSpec(BaseModel):
    """What a step's final failure (after its retries) becomes: a value, or a step's output.
    The step then succeeds with that output, its record saying what it caught."""

    output: Any = Field(default=None, description="The fallback output: text, or any JSON "
                        "(sent on as JSON text).")
    step: _Name | None = Field(
        default=None, description="A step of the chain that runs only when this one fails "
        "(else it is skipped); it reads `{error}` and `{error_kind}`, and its output becomes "
        "this step's.")
    errors: list[ErrorName] | None = Field(
        default=None, min_length=1, description="Catch only these kinds (`transient` or "
        "error kinds); default every failure but a cancelled or timed-out run.")

    model_config = ConfigDict(extra="forbid", json_schema_extra={
        "oneOf": [{"required": ["output"]}, {"required": ["step"]}]})


def catch_text(output: Any) -> str:
    """A fallback value as the step's output text: text as is, other JSON as JSON."""
    return output if isinstance(output, str) else json.dumps(output, ensure_ascii=False)


def kind_matches(names: Iterable[str], kind: str, transient: bool) -> bool:
    """Whether a failure of `kind` (`transient`: worth another attempt) is one of `names`."""
    return any(name == kind or (name == TRANSIENT and transient) for name in names)


def find_catch_steps(draft: "ChainDraft", analysis: "Analysis", problems: Problems) -> None:
    """Which steps are catch steps, and of which step (before the references pass, which lets
    them read `{error}`); each step is the catch step of one step at most."""
    for step in draft.steps:
        catch = step.spec.catch
        if catch is None or "catch" in step.broken or catch.step is None \
                or catch.output is not None:
            continue
        other = analysis.catchers.get(catch.step)
        if catch.step == step.spec.handle or catch.step not in analysis.known:
            continue  # reported by check_policies
        if other is not None:
            problems.step(step.index, f"{step.where}: catch.step `{catch.step}` is already the "
                                      f"catch step of `{other}`; a step catches for one step "
                                      "only: give this one a catch step of its own")
            continue
        analysis.catchers[catch.step] = step.spec.handle


def _check_retry(step: "StepDraft", problems: Problems) -> None:
    retry = step.spec.retry
    if retry is None or "retry" in step.broken:
        return
    if retry.initial_backoff_s is not None and retry.max_backoff_s is not None \
            and retry.initial_backoff_s > retry.max_backoff_s:
        problems.step(step.index, f"{step.where}: retry.initial_backoff_s = "
                                  f"{retry.initial_backoff_s:g} is more than retry.max_backoff_s"
                                  f" = {retry.max_backoff_s:g}; lower it or raise max_backoff_s")


def _check_catch(step: "StepDraft", drafts: Mapping[str, "StepDraft"], analysis: "Analysis",
                 problems: Problems) -> None:
    catch, where, handle = step.spec.catch, step.where, step.spec.handle
    if catch is None or "catch" in step.broken:
        return
    if (catch.output is None) == (catch.step is None):
        problems.step(step.index, f"{where}: catch needs exactly one of `output` (a fallback "
                                  "value) or `step` (a catch step), not "
                                  + ("both" if catch.step is not None else "neither"))
        return
    target = catch.step
    if target is None:
        return
    if step.loop is not None:
        problems.step(step.index, f"{where}: catch.step is not supported inside loop "
                                  f"`{step.loop}`; use `catch.output`, or catch the loop")
        return
    if target == handle:
        problems.step(step.index, f"{where}: catch.step names the step itself; name another "
                                  "step, which runs when this one fails")
        return
    if target not in analysis.known or target not in drafts:
        problems.step(step.index, f"{where}: catch.step names `{target}`, which is not a step"
                                  f"{suggest(target, analysis.known)}; declare it in `steps`")
        return
    if analysis.catchers.get(target) != handle:
        return  # the catch step of another step: reported by find_catch_steps
    other = drafts[target]
    if other.loop is not None or other.spec.kind != "prompt":
        kind = f"in loop `{other.loop}`" if other.loop is not None else \
            f"a `{other.spec.kind}` step"
        problems.step(step.index, f"{where}: catch step `{target}` is {kind}; a catch step is "
                                  "a top-level prompt step")
        return
    mine = analysis.steps[step.index].deps
    facts = analysis.steps[other.index]
    if target in mine:
        problems.step(step.index, f"{where}: catch step `{target}` is also a step it reads; a "
                                  "catch step runs only after this one failed: name another "
                                  "step, or stop reading it")
        return
    if handle in facts.deps:
        problems.step(other.index, f"{other.where}: it is the catch step of `{handle}`, so it "
                                   f"runs only when `{handle}` failed and cannot read "
                                   f"`{{{handle}}}`; read `{{error}}` instead")
    extra = sorted(facts.deps - mine - {handle})
    if extra:
        problems.step(other.index, f"{other.where}: it is the catch step of `{handle}` and may "
                                   f"read only what `{handle}` reads, not {listing(extra)}; "
                                   f"add them to `{handle}`'s `depends_on`, or read them in a "
                                   "later step")
    facts.deps = facts.deps | {handle}


def check_policies(draft: "ChainDraft", analysis: "Analysis", problems: Problems) -> None:
    """Retry kinds and backoff, catch values and catch steps; a `choice` has no policy and a
    `loop` only `catch`. Makes each catch step depend on the step it catches."""
    drafts = {d.spec.handle: d for d in draft.steps}
    for step in draft.steps:
        spec, where = step.spec, step.where
        kind = spec.kind
        policies = [name for name in ("retry", "timeout_s", "catch")
                    if getattr(spec, name) is not None and name not in step.broken]
        if kind == "choice" and policies:
            problems.step(step.index, f"{where}: a `choice` step makes no call and does not "
                                      f"fail, so it has no {listing(policies)}; remove "
                                      + ("it" if len(policies) == 1 else "them"))
            continue
        if kind == "loop" and {"retry", "timeout_s"} & set(policies):
            problems.step(step.index, f"{where}: a `loop` step makes no call of its own; set "
                                      "`retry` and `timeout_s` on the steps of its body (a loop "
                                      "may have `catch`)")
        _check_retry(step, problems)
        _check_catch(step, drafts, analysis, problems)
    if draft.output is None and draft.steps:
        last = [s for s in draft.steps if s.loop is None][-1].spec.handle
        if last in analysis.catchers:
            problems.graph(f"the chain's output defaults to its last step, `{last}`, the catch "
                           f"step of `{analysis.catchers[last]}`, which runs only when that "
                           "fails; set the chain's `output`")
