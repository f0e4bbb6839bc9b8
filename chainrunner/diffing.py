"""What changed between two invocations, step by step (say a rerun and its source): each
step's prompt template, output and state; `chainrunner diff` shows it."""

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from chainlets.language.spec import ChainSpec
from chainlets.service.responses import InvocationStatus

__all__ = ["InvocationDiff", "StepDiff", "diff_invocations", "render"]

Field_ = Literal["prompt", "output", "state"]


class StepSide(BaseModel):
    """One step in one invocation (null where the chain has no such step)."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = None
    output: str | None = None
    state: str | None = None


class StepDiff(BaseModel):
    """A step of either invocation: what differs between them, and both sides."""

    model_config = ConfigDict(extra="forbid")

    step: str
    changed: list[Field_] = Field(description="Empty when the step is the same in both.")
    a: StepSide | None = Field(description="Null when invocation A has no such step.")
    b: StepSide | None = Field(description="Null when invocation B has no such step.")


class InvocationDiff(BaseModel):
    """`diff --json`'s document."""

    model_config = ConfigDict(extra="forbid")

    a: str
    b: str
    rerun_of: str | None = Field(description="B's source invocation, when B is a rerun.")
    state: tuple[str, str]
    output_changed: bool
    steps: list[StepDiff]


def prompts(chain: ChainSpec | Mapping[str, Any]) -> dict[str, str]:
    """Each prompt step's template, loop bodies included, from a chain or its JSON (a choice
    or a loop has none)."""
    specs: list[Mapping[str, Any]]
    if isinstance(chain, ChainSpec):
        specs = [s.model_dump() for s in chain.steps]
    else:
        specs = [s for s in chain.get("steps") or () if isinstance(s, Mapping)]
    found: dict[str, str] = {}
    for spec in specs:
        loop = spec.get("loop")
        if isinstance(loop, Mapping):
            found.update(prompts({"steps": loop.get("steps") or ()}))
        elif isinstance(spec.get("prompt"), str):
            found[str(spec.get("handle"))] = spec["prompt"]
    return found


def _sides(status: InvocationStatus, chain: ChainSpec | Mapping[str, Any],
           ) -> dict[str, StepSide]:
    prompt = prompts(chain)
    # A map's item or a loop's iteration (`arc[2]`) was rendered from its step's template.
    return {r.handle: StepSide(prompt=prompt.get(r.handle.split("[", 1)[0]), output=r.output,
                               state=r.state.value) for r in status.steps}


def diff_invocations(a: InvocationStatus, a_chain: ChainSpec | Mapping[str, Any],
                     b: InvocationStatus, b_chain: ChainSpec | Mapping[str, Any],
                     ) -> InvocationDiff:
    """Every step of A, then B's steps A lacks, with the fields that differ."""
    left, right = _sides(a, a_chain), _sides(b, b_chain)
    fields: tuple[Field_, ...] = ("prompt", "output", "state")
    steps = []
    for handle in [*left, *(h for h in right if h not in left)]:
        one, two = left.get(handle), right.get(handle)
        changed = list(fields) if one is None or two is None else \
            [f for f in fields if getattr(one, f) != getattr(two, f)]
        steps.append(StepDiff(step=handle, changed=changed, a=one, b=two))
    return InvocationDiff(a=a.invocation_id, b=b.invocation_id,
                          rerun_of=b.rerun_of.invocation_id if b.rerun_of else None,
                          state=(a.state.value, b.state.value),
                          output_changed=a.output != b.output, steps=steps)


def _shown(text: str | None, width: int = 70) -> str:
    if text is None:
        return "—"
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[:width - 1] + "…"


def render(result: InvocationDiff) -> str:
    lines = [f"A {result.a} ({result.state[0]})  →  B {result.b} ({result.state[1]})"
             + (f", a rerun of {result.rerun_of}" if result.rerun_of else "")]
    for step in result.steps:
        if not step.changed:
            lines.append(f"  = {step.step}")
            continue
        lines.append(f"  ~ {step.step}: {', '.join(step.changed)} changed")
        for name in step.changed:
            before = getattr(step.a, name) if step.a else None
            after = getattr(step.b, name) if step.b else None
            lines.append(f"      {name}: {_shown(before)}")
            lines.append(f"      {' ' * len(name)}→ {_shown(after)}")
    lines.append("output " + ("changed" if result.output_changed else "unchanged"))
    return "\n".join(lines)
