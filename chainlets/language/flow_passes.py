"""Validation of control flow: each step's kind, maps, choices and loops (bounded), and the
dependencies they add. Runs among the passes of passes.py, on what they left readable."""

from typing import TYPE_CHECKING

from chainlets.language.code_passes import check_code_kind
from chainlets.language.conditions import Condition, problems_of, value_names
from chainlets.language.draft import MAP_WITH_STEPS, ChainDraft, StepDraft
from chainlets.language.flow import parse_tolerance
from chainlets.language.messages import (
    Problems,
    Suggestions,
    closest,
    field_names,
    listing,
    suggest,
)
from chainlets.language.spec import StepSpec
from chainlets.language.templating import NAME_PATTERN

if TYPE_CHECKING:
    from chainlets.language.passes import Analysis

__all__ = ["check_flow", "check_kinds"]

_KINDS = ("map", "choice", "loop")


def _holder(step: StepDraft) -> str:
    return "a loop's body" if step.block == "loop" else "a map's item `steps`"


def check_kinds(draft: ChainDraft, analysis: "Analysis | None", problems: Problems) -> None:
    """A step is one kind: a prompt step (`prompt` and `plugin`, perhaps with a `map` of
    itself), a `choice`, a `loop`, or a `map` with `steps` (a sub-chain per item); a loop's
    body and a map's item steps hold prompt steps only."""
    for step in draft.steps:
        spec, where = step.spec, step.where
        kinds = [k for k in _KINDS if getattr(spec, k) is not None or k in step.broken]
        if len(kinds) > 1:
            problems.step(step.index, f"{where}: a step is one of `map`, `choice` or `loop`; "
                                      f"it has {' and '.join(f'`{k}`' for k in kinds)}; "
                                      "split it into steps")
            continue
        if step.loop is not None and kinds:
            problems.step(step.index, f"{where}: {_holder(step)} holds prompt steps only, not "
                                      f"a `{kinds[0]}`; move it out of {step.block} "
                                      f"`{step.loop}`")
            continue
        if spec.code is not None or "code" in step.broken:
            check_code_kind(step, kinds, problems)
            continue
        control = kinds and (kinds[0] in ("choice", "loop") or MAP_WITH_STEPS in step.broken
                             or (spec.map is not None and spec.map.steps is not None))
        if kinds and control:
            what = f"`{kinds[0]}`" if kinds[0] != "map" else "`map` with `steps`"
            for name in ("prompt", "plugin", "map"):
                if name != kinds[0] and getattr(spec, name) is not None \
                        and name not in step.broken:
                    fix = "remove it, or make it a step of its own" if kinds[0] != "map" \
                        else "remove it (each item runs the map's `steps`), or drop `steps` to " \
                             "map this step's own prompt"
                    problems.step(step.index, f"{where}: a {what} step has no `{name}`; {fix}")
            if spec.tools and "tools" not in step.broken:
                problems.step(step.index, f"{where}: a {what} step makes no model call, so it "
                                          "has no `tools`; list them on the steps it runs")
            if "capabilities" not in step.broken \
                    and any(level is not None for _, level in spec.capabilities):
                problems.step(step.index, f"{where}: a {what} step makes no model call, so it "
                                          "requests no `capabilities`; remove them, or request "
                                          "them on the steps it runs")
            continue
        misspelt = {closest(b, field_names(StepSpec)) for b in step.broken}
        for name in ("prompt", "plugin"):
            if getattr(spec, name) is None and name not in step.broken | misspelt:
                problems.step(step.index, f"{where}: field `{name}` is required; add it")


def _names_known(where: str, what: str, names: list[str], known: set[str],
                 declared: set[str] | None, like: Suggestions) -> list[str]:
    """Problems for each of `names` that is neither a step nor an input (once declared)."""
    return [f"{where}: {what} reads `{name}`, which is neither a declared input nor a step"
            f"{like(name)}" for name in names
            if name not in known and declared is not None and name not in declared]


def _condition(where: str, what: str, condition: Condition, known: set[str],
               analysis: "Analysis", like: Suggestions) -> tuple[list[str], set[str]]:
    """The problems of a condition and the step handles it reads."""
    found = [f"{where}: {what}: {problem}" for problem in problems_of(condition)]
    names = value_names(condition)
    found += _names_known(where, what, names, known, analysis.declared, like)
    for name in names:
        if name not in known and analysis.declared is None:
            analysis.input_users.setdefault(name, []).append(where)
    return found, {name for name in names if name in known}


def _check_map(step: StepDraft, analysis: "Analysis", problems: Problems,
               like: Suggestions) -> None:
    spec, where = step.spec, step.where
    assert spec.map is not None
    facts = analysis.steps[step.index]
    over = spec.map.over
    for problem in _names_known(where, "map", [over], analysis.known, analysis.declared, like):
        problems.step(step.index, problem)
    if over == spec.handle:
        problems.step(step.index, f"{where}: map is over `{over}`, the step itself; map over "
                                  "an input or an earlier step")
    elif over in analysis.known:
        facts.deps = facts.deps | {over}
    elif analysis.declared is None:
        analysis.input_users.setdefault(over, []).append(spec.handle)
    item = spec.map.item
    if not NAME_PATTERN.match(item):
        problems.step(step.index, f"{where}: map item variable `{item}` may hold only letters, "
                                  "digits, `_` and `-`")
    elif item in analysis.known or item in (analysis.declared or ()):
        problems.step(step.index, f"{where}: map item variable `{item}` hides the step or input "
                                  f"of that name; rename it, e.g. `\"item\": \"{item}_item\"`")
    try:
        parse_tolerance(spec.map.tolerate)
    except ValueError as exc:
        problems.step(step.index, f"{where}: map: {exc}")


def _check_choice(step: StepDraft, analysis: "Analysis", problems: Problems,
                  like: Suggestions, top: dict[str, int]) -> None:
    spec, where = step.spec, step.where
    assert spec.choice is not None
    facts = analysis.steps[step.index]
    reads: set[str] = set()
    seen: set[str] = set()
    branches = [(f"branch {i + 1}", b.when, b.then) for i, b in enumerate(spec.choice.branches)]
    for what, condition, targets in [*branches, ("otherwise", None, spec.choice.otherwise)]:
        if condition is not None:
            found, names = _condition(where, f"{what} `when`", condition, analysis.known,
                                      analysis, like)
            for problem in found:
                problems.step(step.index, problem)
            reads |= names
        for target in targets:
            if target == spec.handle:
                problems.step(step.index, f"{where}: {what} runs the choice itself; name the "
                                          "steps that follow it")
            elif target in seen:
                problems.step(step.index, f"{where}: `{target}` is in more than one branch; a "
                                          "step belongs to one branch")
            elif target not in top:
                inner = target in analysis.known
                problems.step(step.index, f"{where}: {what} names `{target}`, which is not a "
                              + ("top-level step (it is in a loop's body or a map's items)"
                                 if inner else
                                 f"step{like(target)}"))
            else:
                analysis.steps[top[target]].deps |= {spec.handle}
            seen.add(target)
    facts.deps = facts.deps | reads


def _check_body(step: StepDraft, body: list[StepDraft], analysis: "Analysis",
                problems: Problems) -> set[str]:
    """The steps a loop's body or a map's item holds: what each reads of its siblings
    (`body_deps`), no cycle among them; returns what they read outside. Seen from outside, a
    body step depends on its holder (a loop's: its last output)."""
    spec, where = step.spec, step.where
    mine = {s.spec.handle for s in body}
    outer: set[str] = set()
    for member in body:
        facts = analysis.steps[member.index]
        facts.body_deps = frozenset(facts.deps & mine)
        outer |= facts.deps - mine - {spec.handle}
        if spec.loop is None and spec.handle in facts.deps:
            problems.step(member.index, f"{member.where}: reads `{{{spec.handle}}}`, the map "
                                        "whose items it is a step of; an item cannot read the "
                                        "map's output, only the item and its sibling steps")
        facts.deps = frozenset({spec.handle})
    from chainlets.language.passes import _find_cycles  # the same search as for the chain

    body_graph = {s.spec.handle: analysis.steps[s.index].body_deps for s in body}
    fix = f"; to read an earlier iteration, use `{{{spec.handle}}}`" if spec.loop is not None \
        else "; remove one of these references"
    what = "loop's steps" if spec.loop is not None else "map's item steps"
    for cycle in _find_cycles(body_graph, list(body_graph)):
        problems.step(step.index, f"{where}: the {what} form a cycle "
                      + " → ".join(f"`{h}`" for h in cycle) + fix)
    return outer


def _check_item_steps(step: StepDraft, body: list[StepDraft], analysis: "Analysis",
                      problems: Problems) -> None:
    """A map over a sub-chain: its item steps, and the one whose output is an item's."""
    spec, where = step.spec, step.where
    assert spec.map is not None
    mine = [s.spec.handle for s in body]
    if spec.map.over in mine:
        problems.step(step.index, f"{where}: map is over `{spec.map.over}`, one of its own item "
                                  "steps; map over an input or an earlier step")
        facts = analysis.steps[step.index]
        facts.deps = facts.deps - {spec.map.over}  # not a cycle to report as well
    outer = _check_body(step, body, analysis, problems)
    output = spec.map.output
    if output is not None and output not in mine:
        problems.step(step.index, f"{where}: map `output` names `{output}`, which is not one of "
                                  f"its `steps` ({listing(mine)}){suggest(output, mine)}")
    analysis.steps[step.index].deps |= frozenset(outer)


def _outside_reads(draft: ChainDraft, analysis: "Analysis", problems: Problems) -> None:
    """A map's item steps exist once per item: nothing outside the item reads them."""
    owners = {s.spec.handle: s.loop for s in draft.steps if s.loop and s.block == "map"}
    if not owners:
        return
    for step in draft.steps:
        for dep in sorted(analysis.steps[step.index].deps):
            owner = owners.get(dep)
            if owner is not None and owner != step.loop and dep != step.spec.handle:
                problems.step(step.index, f"{step.where}: reads `{dep}`, a step of map "
                                          f"`{owner}`'s items (one per item); read `{{{owner}}}`"
                                          ", the JSON array of the items' outputs")
    if draft.output in owners:
        problems.graph(f"chain output names `{draft.output}`, a step of map "
                       f"`{owners[draft.output]}`'s items; name `{owners[draft.output]}`")


def _check_loop(step: StepDraft, body: list[StepDraft], analysis: "Analysis",
                problems: Problems, like: Suggestions) -> None:
    spec, where = step.spec, step.where
    assert spec.loop is not None
    loop = spec.loop
    if loop.max_iterations is None:
        problems.step(step.index, f"{where}: loop has no bound; add `\"max_iterations\": N` "
                                  "(every loop must end)")
    mine = {s.spec.handle for s in body}
    outer = _check_body(step, body, analysis, problems)
    if loop.until is not None:
        found, names = _condition(where, "`until`", loop.until, analysis.known, analysis, like)
        for problem in found:
            problems.step(step.index, problem)
        outer |= names - mine - {spec.handle}
    analysis.steps[step.index].deps |= frozenset(outer)


def check_flow(draft: ChainDraft, analysis: "Analysis", problems: Problems) -> None:
    """Maps read a list that exists; choices route to top-level steps on valid conditions;
    loops are bounded and their bodies acyclic. Adds the dependencies these imply."""
    like = Suggestions(analysis.known | (analysis.declared or set()))
    top = {s.spec.handle: s.index for s in draft.steps if s.loop is None}
    _outside_reads(draft, analysis, problems)
    for step in draft.steps:
        spec = step.spec
        if step.loop is not None:
            continue  # check_kinds holds a body to prompt steps
        if spec.map is not None and "map" not in step.broken and spec.loop is None \
                and spec.choice is None:
            _check_map(step, analysis, problems, like)
            if spec.map.steps is not None:
                body = [s for s in draft.steps if s.loop == spec.handle]
                _check_item_steps(step, body, analysis, problems)
        elif spec.choice is not None and "choice" not in step.broken:
            _check_choice(step, analysis, problems, like, top)
        elif spec.loop is not None and "loop" not in step.broken:
            body = [s for s in draft.steps if s.loop == spec.handle]
            _check_loop(step, body, analysis, problems, like)
