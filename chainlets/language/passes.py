"""Validation passes 2 to 12 over a draft chain: names, catch steps, step kinds, plugins,
templates, references, control flow (flow_passes.py), output schemas (structured.py), policies
(policies.py), cycles and the output. Each pass checks what the earlier ones left readable and
records what it learnt."""

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pydantic
from pydantic_core import ErrorDetails

from chainlets.language.capabilities import Capability, Served
from chainlets.language.code import arg_templates
from chainlets.language.draft import ChainDraft, StepDraft
from chainlets.language.limits import prompt_problem
from chainlets.language.messages import (
    Problems,
    Suggestions,
    field_names,
    field_path,
    listing,
    show,
    suggest,
    without_misspelt,
)
from chainlets.language.plugins import ModelParams, Plugin, PluginRegistry
from chainlets.language.templating import NAME_PATTERN, Template, TemplateProblem, parse_template

if TYPE_CHECKING:
    from chainlets.language.structured import StructuredOutput

__all__ = ["PASSES", "Analysis", "StepFacts"]


@dataclass
class StepFacts:
    """What the passes learnt about one step."""

    plugin: Plugin | None = None  # the plugin that serves it, once routed
    params: ModelParams | None = None
    # Its acceptable plugins that exist, in preference order, with their parsed config (None:
    # invalid); routing (`routing.check_capabilities`) picks `plugin` among them.
    candidates: list[tuple[Plugin, ModelParams | None]] = field(default_factory=list)
    served: dict[Capability, Served] = field(default_factory=dict)
    templates: dict[str, Template] = field(default_factory=dict)
    names: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per field, even rejected
    deps: frozenset[str] = frozenset()  # of a loop's body step: its loop (as seen outside)
    body_deps: frozenset[str] = frozenset()  # of a loop's body step: its body siblings
    structured: "StructuredOutput | None" = None  # its output_schema, compiled


@dataclass
class Analysis:
    """The passes' shared findings, filled in pass by pass."""

    plugins: PluginRegistry
    known: set[str] = field(default_factory=set)  # readable step handles
    declared: set[str] | None = None
    steps: dict[int, StepFacts] = field(default_factory=dict)
    input_users: dict[str, list[str]] = field(default_factory=dict)  # input → steps using it
    catchers: dict[str, str] = field(default_factory=dict)  # catch step → the step it catches
    # Parsed configs shared by steps with the same plugin and config (10k-step chains).
    params_cache: dict[tuple[str, str], ModelParams | list[ErrorDetails]] = \
        field(default_factory=dict)


Pass = Callable[[ChainDraft, Analysis, Problems], None]


def check_names(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """Step handles are well-formed and unique; inputs neither clash with steps nor misname."""
    seen: set[str] = set()
    for step in draft.steps:
        analysis.steps[step.index] = StepFacts()
        if "handle" in step.broken:
            continue
        handle = step.spec.handle
        if not handle:
            problems.step(step.index, f"{step.where}: `handle` is empty; give the step a "
                                      "unique name")
        elif not NAME_PATTERN.match(handle):
            problems.step(step.index, f"{step.where}: handle `{handle}` may hold only letters, "
                                      "digits, `_` and `-`, so that prompts can reference it "
                                      f"as `{{{handle}}}`")
        elif handle in seen:
            problems.step(step.index, f"{step.where}: duplicate handle `{handle}`; handles "
                                      "must be unique, rename one of them")
        seen.add(handle)
    analysis.known = seen
    if draft.inputs is None:
        return
    analysis.declared = {decl.name for decl in draft.inputs}
    for name in sorted(analysis.declared & seen):
        problems.chain(f"input `{name}` has the same name as a step; rename one of them")
    for decl in draft.inputs:
        if not NAME_PATTERN.match(decl.name):
            problems.chain(f"input `{decl.name}`: names may hold only letters, digits, `_` "
                           "and `-`")


def _config_problem(where: str, plugin: Plugin, err: ErrorDetails, given: bool,
                    at: str = "plugin_config") -> str:
    path = field_path(err["loc"])
    options = field_names(plugin.config_model)
    if err["type"] == "extra_forbidden":
        return (f"{where}: plugin `{plugin.name}` has no option `{path}`"
                f"{suggest(path, options)}; its options are {listing(options)}")
    if err["type"] == "missing":
        info = plugin.config_model.model_fields.get(path)
        example = info.examples[0] if info is not None and info.examples else None
        fix = "add it" if example is None else \
            f"add it, e.g. `{show({path: example})}`" if given else \
            f"add `\"{at}\": {show({path: example})}`"
        return f"{where}: plugin `{plugin.name}` requires `{at}.{path}`; {fix}"
    return (f"{where}: {at}.{path} = {show(err['input'])} is invalid for plugin "
            f"`{plugin.name}`: {err['msg']}")


def _params(plugin: Plugin, config: dict[str, Any],
            analysis: Analysis) -> ModelParams | list[ErrorDetails]:
    key = (plugin.name, json.dumps(config, sort_keys=True, default=str))
    params = analysis.params_cache.get(key)
    if params is None:
        try:
            params = plugin.to_params(plugin.validate_config(config))
        except pydantic.ValidationError as exc:
            params = without_misspelt(exc.errors(), plugin.config_model)
        analysis.params_cache[key] = params
    return params


def _configs(step: StepDraft, names: list[str],
             problems: Problems) -> dict[str, tuple[dict[str, Any], str]] | None:
    """Each plugin's config and where it is (`plugin_config`, or with a list of plugins
    `plugin_config.<name>`); None when unreadable."""
    if "plugin_config" in step.broken:
        return None
    config = step.spec.plugin_config
    if isinstance(step.spec.plugin, str):
        return {names[0]: (config, "plugin_config")}
    configs: dict[str, tuple[dict[str, Any], str]] = {}
    for key, value in config.items():
        if key not in names:
            problems.step(step.index, f"{step.where}: plugin_config has `{key}`, which is not "
                                      f"one of its plugins {listing(names)}{suggest(key, names)}"
                                      "; with a list of plugins, `plugin_config` maps a plugin's"
                                      " name to its options")
        elif not isinstance(value, dict):
            problems.step(step.index, f"{step.where}: plugin_config.{key} must be a JSON object "
                                      f"of plugin `{key}`'s options, not {show(value)}")
    for name in names:
        value = config.get(name, {})
        if isinstance(value, dict):
            configs[name] = (value, f"plugin_config.{name}")
    return configs


def check_plugins(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """Each step's plugins are registered and its `plugin_config` valid for each of them."""
    plugins = analysis.plugins
    for step in draft.steps:
        if "plugin" in step.broken or step.spec.plugin is None:
            continue
        names = [step.spec.plugin] if isinstance(step.spec.plugin, str) else step.spec.plugin
        facts = analysis.steps[step.index]
        configs = _configs(step, names, problems)
        for name in dict.fromkeys(names):
            plugin = plugins.get(name)
            if plugin is None:
                problems.step(step.index, f"{step.where}: unknown plugin `{name}`; use "
                                          f"one of {listing(plugins.names())}"
                                          f"{suggest(name, plugins.names())}")
                continue
            found = configs.get(name) if configs is not None else None
            params = _params(plugin, found[0], analysis) if found is not None else None
            if isinstance(params, list):
                assert found is not None
                for err in params:
                    problems.step(step.index, _config_problem(step.where, plugin, err,
                                                              bool(found[0]), found[1]))
                params = None
            facts.candidates.append((plugin, params))
        if len(facts.candidates) == len(names) == 1:  # routing may still pick another
            facts.plugin, facts.params = facts.candidates[0]


def _template_sources(step: StepDraft) -> Iterator[tuple[str, str]]:
    spec = step.spec
    if spec.prompt is not None and "prompt" not in step.broken:
        yield "prompt", spec.prompt
    if spec.system_prompt is not None and "system_prompt" not in step.broken:
        yield "system_prompt", spec.system_prompt
    if "messages" not in step.broken:
        for i, message in enumerate(spec.messages):
            yield f"messages[{i}].content", message.content
    if spec.code is not None and "code" not in step.broken:
        yield from arg_templates(spec.code.args)


def check_templates(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """Every template uses plain `{name}` placeholders only."""
    # Templates repeat (a system prompt on every step): each distinct one is parsed once.
    parsed: dict[str, tuple[Template, tuple[str, ...]] | TemplateProblem] = {}
    for step in draft.steps:
        facts = analysis.steps[step.index]
        for name, source in _template_sources(step):
            found = parsed.get(source)
            if found is None:
                try:
                    template = parse_template(source)
                    found = parsed[source] = (template, template.names)
                except TemplateProblem as exc:
                    found = parsed[source] = exc
            if isinstance(found, TemplateProblem):
                problems.step(step.index, f"{step.where}: {name}: {found}")
                facts.names[name] = found.names
            else:
                facts.templates[name], facts.names[name] = found
        # The templates' own text already over the limit fails every run: refused now.
        problem = prompt_problem(step.where, sum(t.length({}) for t in facts.templates.values()),
                                 "the prompt's own text (its messages' templates together)")
        if problem is not None:
            problems.step(step.index, problem)


def check_references(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """Every placeholder is a step (a dependency), the step's own `input`, or a chain input:
    declared, once any are, else required."""
    known, declared = analysis.known, analysis.declared
    like_step = Suggestions(known)
    like_name = Suggestions(known | (declared or set()))
    for step in draft.steps:
        facts = analysis.steps[step.index]
        spec, where = step.spec, step.where
        deps: set[str] = set()
        if "depends_on" not in step.broken:
            for dep in spec.depends_on:
                if dep in known:
                    deps.add(dep)
                else:
                    problems.step(step.index, f"{where}: depends_on names `{dep}`, which is not "
                                              f"a step{like_step(dep)}")
        # With `input` unreadable, any name may be one of its keys: none is called unknown.
        own: set[str] | None = None if "input" in step.broken else set(spec.input)
        if own is not None and spec.map is not None and "map" not in step.broken:
            own.add(spec.map.item)
        if own is not None and step.item is not None:  # a step of a map's item sub-chain
            own.add(step.item)
        if own is not None and spec.handle in analysis.catchers:
            own.update(CATCH_NAMES)
        for name_field, names in facts.names.items():
            for name in names:
                if own is not None and name in own:
                    continue
                if name in known:
                    deps.add(name)
                    continue
                if own is None:
                    continue
                if declared is not None and name not in declared:
                    problems.step(step.index, f"{where}: {name_field} references `{{{name}}}`, "
                                              "which is neither a declared input nor a step"
                                              f"{like_name(name)}")
                    continue
                users = analysis.input_users.setdefault(name, [])
                if not users or users[-1] != spec.handle:
                    users.append(spec.handle)
        facts.deps = frozenset(deps)


def _find_cycles(deps: Mapping[str, frozenset[str]], order: list[str]) -> list[list[str]]:
    """Every elementary cycle found by DFS, each reported once, in definition order."""
    cycles: list[list[str]] = []
    position = {handle: i for i, handle in enumerate(order)}
    on_path: dict[str, int] = {}  # node → its index in `path`
    done: set[str] = set()
    reported: set[frozenset[str]] = set()
    # Iterative, with each node's remaining dependencies: a chain thousands of steps long must
    # not reach Python's recursion limit.
    path: list[str] = []
    pending: list[Iterator[str]] = []

    def enter(node: str) -> None:
        on_path[node] = len(path)
        path.append(node)
        pending.append(iter(sorted(deps.get(node, ()), key=position.__getitem__)))

    for root in order:
        if root in done or root in on_path:
            continue
        enter(root)
        while pending:
            dep = next(pending[-1], None)
            if dep is None:
                pending.pop()
                node = path.pop()
                del on_path[node]
                done.add(node)
                continue
            if dep in on_path:
                cycle = [*path[on_path[dep]:], dep]
                key = frozenset(cycle)
                if key not in reported:
                    reported.add(key)
                    cycles.append(cycle)
            elif dep not in done:
                enter(dep)
    return cycles


def check_cycles(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """No step depends on itself, directly or through others."""
    deps_of: dict[str, frozenset[str]] = {}
    for step in draft.steps:
        if step.spec.handle in analysis.known:
            # A duplicate handle (already reported) must not hide a cycle through its twin.
            deps_of[step.spec.handle] = deps_of.get(step.spec.handle, frozenset()) \
                | analysis.steps[step.index].deps
    for cycle in _find_cycles(deps_of, list(deps_of)):
        if len(cycle) == 2:
            problems.graph(f"step `{cycle[0]}` depends on itself; a step cannot use its own "
                           "output")
        else:
            problems.graph("dependency cycle " + " → ".join(f"`{h}`" for h in cycle)
                           + "; remove one of these references")


def check_output(draft: ChainDraft, analysis: Analysis, problems: Problems) -> None:
    """The chain's `output` names a step."""
    if draft.output is not None and draft.output not in analysis.known:
        problems.graph(f"chain output names `{draft.output}`, which is not a step"
                       f"{suggest(draft.output, analysis.known)}")


# Imported last: the flow, structured-output, code and policy passes use this module's
# Analysis.
from chainlets.language.code_passes import check_code  # noqa: E402
from chainlets.language.flow_passes import check_flow, check_kinds  # noqa: E402
from chainlets.language.policies import (  # noqa: E402
    CATCH_NAMES,
    check_policies,
    find_catch_steps,
)
from chainlets.language.structured import check_structured  # noqa: E402

PASSES: tuple[Pass, ...] = (check_names, find_catch_steps, check_kinds, check_plugins,
                            check_templates, check_references, check_flow, check_structured,
                            check_code, check_policies, check_cycles, check_output)
