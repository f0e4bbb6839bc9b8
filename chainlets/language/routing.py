"""Validation pass: capabilities and routing. Each step is served by the first of its acceptable
plugins that meets every capability it requests; a step no plugin can serve is a problem."""

from chainlets.language.capabilities import (
    Capability,
    RequestLevel,
    Served,
    SupportLevel,
    requested,
    serve,
    unmet,
    with_schema,
)
from chainlets.language.draft import ChainDraft, StepDraft
from chainlets.language.messages import Problems, listing
from chainlets.language.passes import Analysis, StepFacts
from chainlets.language.plugins import Plugin, PluginRegistry

__all__ = ["check_capabilities"]

# The step field that requests a capability implicitly.
_USES = {Capability.SYSTEM_PROMPT: "system_prompt", Capability.CONVERSATION: "messages",
         Capability.FUNCTION_CALLING: "tools"}


def _able(plugins: PluginRegistry, requests: dict[Capability, RequestLevel]) -> list[str]:
    return sorted(p.name for p in plugins if unmet(requests, p.capabilities) is None)


def _fix(plugins: PluginRegistry, requests: dict[Capability, RequestLevel]) -> str:
    able = _able(plugins, requests)
    return f"use a plugin that can ({listing(able)})" if able \
        else "no registered plugin can serve them all"


def _conflicts(step: StepDraft, requests: dict[Capability, RequestLevel]) -> list[str]:
    """A feature the step uses while it disables it, and function calling without tools."""
    found = []
    spec, where = step.spec, step.where
    for cap, used, name in ((Capability.SYSTEM_PROMPT, spec.system_prompt is not None,
                             "system_prompt"),
                            (Capability.CONVERSATION, bool(spec.messages), "messages"),
                            (Capability.FUNCTION_CALLING, bool(spec.tools), "tools")):
        if used and requests.get(cap) is RequestLevel.DISABLE:
            found.append(f"{where}: capabilities.{cap} is `disable`, but the step sets "
                         f"`{name}`; remove one of them")
    level = requests.get(Capability.FUNCTION_CALLING)
    if level is not None and level is not RequestLevel.DISABLE and not spec.tools:
        found.append(f"{where}: capabilities.function_calling = `{level}`, but the step lists "
                     "no `tools`; add `\"tools\": [\"FUNCTION\"]` (registered functions) or "
                     "remove the request")
    return found


# A plugin's answer to a set of requests: the levels it serves them at, or why it cannot.
Verdict = tuple[dict[Capability, Served] | None, dict[Capability, str] | None]


Memo = dict[tuple[str, bool, frozenset[tuple[Capability, RequestLevel]]], Verdict]


def _verdict(plugin: Plugin, requests: dict[Capability, RequestLevel], schema: bool,
             memo: Memo) -> Verdict:
    # Steps repeat their requests: each plugin answers each distinct set once per chain.
    key = (plugin.name, schema, frozenset(requests.items()))
    found = memo.get(key)
    if found is None:
        # With an output schema, JSON mode is at worst emulated by validation and repair.
        support = with_schema(plugin.capabilities) if schema else plugin.capabilities
        missing = unmet(requests, support)
        served = None if missing is not None else {
            cap: level_served for cap, level in requests.items()
            if (level_served := serve(level, support.get(cap, SupportLevel.NONE)))
            is not None}
        found = memo[key] = (served, missing)
    return found


def _route(step: StepDraft, facts: StepFacts, requests: dict[Capability, RequestLevel],
           plugins: PluginRegistry, problems: Problems, memo: Memo) -> None:
    """Pick the first candidate that meets every request, or report why none does."""
    if not requests and facts.candidates:
        facts.plugin, facts.params = facts.candidates[0]
        return
    misses: list[tuple[Plugin, dict[Capability, str]]] = []
    for plugin, params in facts.candidates:
        served, missing = _verdict(plugin, requests, facts.structured is not None, memo)
        if served is not None:
            facts.plugin, facts.params, facts.served = plugin, params, dict(served)
            return
        assert missing is not None
        misses.append((plugin, missing))
    facts.plugin = facts.params = None
    if not misses:
        return  # no candidate is a known plugin: reported by check_plugins
    if len(misses) == 1:
        plugin, missing = misses[0]
        explicit = {name for name, level in step.spec.capabilities if level is not None}
        for cap, why in missing.items():
            asked = f"capabilities.{cap} = `{requests[cap]}`" if cap in explicit else \
                f"`{_USES[cap]}` (capabilities.{cap}, `{requests[cap]}` by default)"
            problems.step(step.index, f"{step.where}: plugin `{plugin.name}` cannot serve "
                                      f"{asked} (it {why}); "
                                      f"{_fix(plugins, {cap: requests[cap]})}, or lower the "
                                      "request")
        return
    lacks = "; ".join(f"`{plugin.name}` lacks "
                      + ", ".join(f"{cap} (`{requests[cap]}`)" for cap in missing)
                      for plugin, missing in misses)
    problems.step(step.index, f"{step.where}: none of its plugins can serve its capabilities: "
                              f"{lacks}; {_fix(plugins, requests)}, or lower the requests")


def check_capabilities(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """Every step's capability requests are met by one of its plugins, which then serves it.

    Runs after `check_plugins`, which lists each step's candidates."""
    memo: Memo = {}
    for step in draft.steps:
        spec = step.spec
        if "capabilities" in step.broken or spec.plugin is None:
            continue  # a choice or loop makes no call: check_kinds refuses requests on one
        requests = requested(spec.capabilities,
                             None if "system_prompt" in step.broken else spec.system_prompt,
                             () if "messages" in step.broken else spec.messages,
                             analysis.steps[step.index].structured is not None,
                             () if "tools" in step.broken else spec.tools)
        for message in _conflicts(step, requests):
            problems.step(step.index, message)
        _route(step, analysis.steps[step.index], requests, analysis.plugins, problems, memo)
