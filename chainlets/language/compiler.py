"""Static validation ("compile"): every problem in a chain, found before any model call."""

import difflib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import pydantic

from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin, PluginRegistry
from chainlets.language.spec import ChainSpec, StepSpec
from chainlets.language.templating import NAME_PATTERN, Template, TemplateProblem, parse_template

__all__ = ["CompiledChain", "CompiledStep", "compile_chain"]


@dataclass(frozen=True)
class CompiledStep:
    """A validated step: parsed templates, resolved dependencies, translated parameters."""

    spec: StepSpec
    plugin: Plugin
    params: ModelParams
    system: Template | None
    history: tuple[tuple[str, Template], ...]
    prompt: Template
    deps: frozenset[str]  # step handles that must finish first
    literals: Mapping[str, str]  # the step's own `input`, stringified

    @property
    def handle(self) -> str:
        return self.spec.handle

    def render_messages(self, values: Mapping[str, str]) -> list[dict[str, str]]:
        """The chat messages, rendered: system prompt, earlier messages, then the prompt."""
        prompt = {"role": "user", "content": self.prompt.render(values)}
        if self.system is None and not self.history:
            return [prompt]
        messages = []
        if self.system is not None:
            messages.append({"role": "system", "content": self.system.render(values)})
        messages.extend({"role": role, "content": t.render(values)} for role, t in self.history)
        messages.append(prompt)
        return messages


@dataclass(frozen=True)
class CompiledChain:
    """A chain that passed validation and is ready to run."""

    spec: ChainSpec
    steps: Mapping[str, CompiledStep]  # in definition order
    dependents: Mapping[str, tuple[str, ...]]
    required_inputs: tuple[str, ...]
    defaults: Mapping[str, str]
    output_handle: str

    @property
    def handle(self) -> str:
        return self.spec.handle

    def resolve_inputs(self, given: Mapping[str, str]) -> dict[str, str]:
        """The run's inputs with defaults filled in; InputsError lists every missing name."""
        values = {**self.defaults, **given}
        problems = [f"missing input `{name}`: pass it with --input {name}=VALUE"
                    for name in self.required_inputs if name not in values]
        if self.spec.inputs is not None:
            declared = {d.name for d in self.spec.inputs}
            for name in given:
                if name not in declared:
                    problems.append(f"unknown input `{name}`: this chain declares "
                                    f"{_listing(sorted(declared))}{_suggest(name, declared)}")
        if problems:
            raise InputsError.from_problems(f"chain `{self.handle}` cannot run with these inputs",
                                            problems)
        return values


def _listing(names: list[str]) -> str:
    return ", ".join(f"`{n}`" for n in names) if names else "no inputs"


def _suggest(name: str, candidates: set[str] | list[str]) -> str:
    normalized = {c.replace("-", "_").lower(): c for c in candidates}
    close = normalized.get(name.replace("-", "_").lower())
    if close is None:
        matches = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.6)
        close = matches[0] if matches else None
    return f" (did you mean `{close}`?)" if close else ""


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


def compile_chain(spec: ChainSpec, plugins: PluginRegistry = DEFAULT_PLUGINS) -> CompiledChain:
    """Validate `spec` against `plugins`; raise ChainDefinitionError naming every problem."""
    problems: list[str] = []
    handles = [s.handle for s in spec.steps]
    known = set(handles)
    declared = {d.name for d in spec.inputs} if spec.inputs is not None else None

    seen: set[str] = set()
    for index, step in enumerate(spec.steps):
        where = f"step `{step.handle}`" if step.handle else f"steps[{index}]"
        if not step.handle:
            problems.append(f"{where}: `handle` is empty; give the step a unique name")
        elif not NAME_PATTERN.match(step.handle):
            problems.append(f"{where}: handle `{step.handle}` may hold only letters, digits, "
                            "`_` and `-`, so that prompts can reference it as "
                            f"`{{{step.handle}}}`")
        elif step.handle in seen:
            problems.append(f"{where}: duplicate handle `{step.handle}`; handles must be "
                            "unique, rename one of them")
        seen.add(step.handle)

    if declared is not None:
        for name in sorted(declared & known):
            problems.append(f"input `{name}` has the same name as a step; rename one of them")
        for decl in spec.inputs or ():
            if not NAME_PATTERN.match(decl.name):
                problems.append(f"input `{decl.name}`: names may hold only letters, digits, "
                                "`_` and `-`")

    compiled: dict[str, CompiledStep] = {}
    params_cache: dict[tuple[str, str], ModelParams] = {}
    deps_of: dict[str, frozenset[str]] = {}
    required: dict[str, None] = {}
    for step in spec.steps:
        where = f"step `{step.handle}`"
        plugin = plugins.get(step.plugin)
        params: ModelParams | None = None
        if plugin is None:
            problems.append(f"{where}: unknown plugin `{step.plugin}`; use one of "
                            f"{_listing(plugins.names())}"
                            f"{_suggest(step.plugin, plugins.names())}")
        else:
            # Steps with the same plugin and config share one ModelParams (10k-step chains).
            key = (plugin.name, json.dumps(step.plugin_config, sort_keys=True, default=str))
            try:
                params = params_cache.get(key) or params_cache.setdefault(
                    key, plugin.to_params(plugin.validate_config(step.plugin_config)))
            except pydantic.ValidationError as exc:
                for err in exc.errors():
                    field = ".".join(str(p) for p in err["loc"]) or "plugin_config"
                    problems.append(
                        f"{where}: plugin_config.{field} = "
                        f"{err.get('input')!r} is invalid for plugin `{step.plugin}`: "
                        f"{err['msg']}")

        templates: dict[str, Template] = {}
        names_in: dict[str, tuple[str, ...]] = {}  # per field, including rejected templates
        sources = {"prompt": step.prompt}
        if step.system_prompt is not None:
            sources["system_prompt"] = step.system_prompt
        for i, message in enumerate(step.messages):
            sources[f"messages[{i}].content"] = message.content
        for field, source in sources.items():
            try:
                templates[field] = parse_template(source)
                names_in[field] = templates[field].names
            except TemplateProblem as exc:
                problems.append(f"{where}: {field}: {exc}")
                names_in[field] = exc.names

        deps: set[str] = set()
        for dep in step.depends_on:
            if dep in known:
                deps.add(dep)
            else:
                problems.append(f"{where}: depends_on names `{dep}`, which is not a step"
                                f"{_suggest(dep, known)}")
        for field, names in names_in.items():
            for name in names:
                if name in step.input:
                    continue
                if name in known:
                    deps.add(name)
                elif declared is None:
                    required.setdefault(name)
                elif name not in declared:
                    problems.append(
                        f"{where}: {field} references `{{{name}}}`, which is neither a "
                        f"declared input nor a step{_suggest(name, known | declared)}")
        # A duplicate handle (already reported) must not hide a cycle through its twin.
        deps_of[step.handle] = deps_of.get(step.handle, frozenset()) | frozenset(deps)
        if plugin is not None and params is not None and "prompt" in templates \
                and len(templates) == len(sources):
            compiled[step.handle] = CompiledStep(
                spec=step, plugin=plugin, params=params,
                system=templates.get("system_prompt"),
                history=tuple((m.role, templates[f"messages[{i}].content"])
                              for i, m in enumerate(step.messages)),
                prompt=templates["prompt"], deps=frozenset(deps),
                literals={k: str(v) for k, v in step.input.items()})

    for cycle in _find_cycles(deps_of, list(dict.fromkeys(handles))):
        if len(cycle) == 2:
            problems.append(f"step `{cycle[0]}` depends on itself; a step cannot use its "
                            "own output")
        else:
            problems.append("dependency cycle " + " → ".join(f"`{h}`" for h in cycle)
                            + "; remove one of these references")

    output_handle = spec.output or handles[-1]
    if spec.output is not None and spec.output not in known:
        problems.append(f"chain output names `{spec.output}`, which is not a step"
                        f"{_suggest(spec.output, known)}")

    if problems:
        raise ChainDefinitionError.from_problems(f"chain `{spec.handle}` is invalid", problems)

    dependents: dict[str, list[str]] = {h: [] for h in compiled}
    for handle, step_ in compiled.items():
        for dep in step_.deps:
            dependents[dep].append(handle)
    defaults = {d.name: d.default for d in spec.inputs or () if d.default is not None}
    required_inputs = tuple(sorted(declared - defaults.keys())) if declared is not None \
        else tuple(required)
    return CompiledChain(spec=spec, steps=compiled,
                         dependents={h: tuple(v) for h, v in dependents.items()},
                         required_inputs=required_inputs, defaults=defaults,
                         output_handle=output_handle)
