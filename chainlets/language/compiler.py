"""Validation ("compile"): every problem in a chain, found in one round before any model call.

The passes run in order over whatever parsed (`draft.py`, then `passes.py`): the schema, names,
plugins, templates, references, cycles and the output. Each later pass checks the parts the
earlier ones could read, so schema and semantic problems are reported together.
"""

import functools
import json
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from chainlets.errors import (
    ChainDefinitionError,
    InputsError,
    PayloadTooLargeError,
    StepDataError,
)
from chainlets.language.capabilities import Capability, Served
from chainlets.language.code import CompiledCode
from chainlets.language.draft import ChainDraft, StepDraft, read_draft
from chainlets.language.flow import (
    ChoiceFlow,
    ItemFlow,
    LoopFlow,
    MapFlow,
    MemberFlow,
    parse_tolerance,
)
from chainlets.language.functions import Function
from chainlets.language.limits import MAX_PROMPT_CHARS, MAX_TOOL_ROUNDS, prompt_problem
from chainlets.language.messages import Problems, Suggestions, invalid, listing, suggest
from chainlets.language.passes import PASSES, Analysis
from chainlets.language.plugins import (
    CODE,
    DEFAULT_PLUGINS,
    ModelParams,
    Plugin,
    PluginRegistry,
)
from chainlets.language.routing import check_capabilities
from chainlets.language.spec import ChainSpec, JsonValue, StepSpec
from chainlets.language.structured import StructuredOutput
from chainlets.language.templating import Template

__all__ = ["CODE_PLUGIN", "CONTROL", "CompiledChain", "CompiledStep", "Flow", "compile_chain",
           "input_text"]

Flow = MapFlow | ChoiceFlow | LoopFlow | MemberFlow | ItemFlow

# The plugin of steps that make no model call of their own (choices, loops, a loop's body step
# as seen outside it): the engine runs their flow instead.
CONTROL = Plugin("control", ModelParams, lambda config: ModelParams(), generator="",
                 description="A choice or loop step: no model call of its own.")
# The plugin of code steps: the engine calls their function through the code runner.
CODE_PLUGIN = Plugin(CODE, ModelParams, lambda config: ModelParams(), generator=CODE,
                     capabilities={}, description="A code step: calls a registered function.")
_NO_PROMPT = Template(parts=())


# One read-only empty mapping shared by every step without literals or capabilities: an empty
# dict of its own each cost 64 B, 1.3 MB of the 10,000-step benchmark's peak.
_NONE: Mapping[Any, Any] = MappingProxyType({})


@dataclass(frozen=True)
class CompiledStep:
    """A validated step: parsed templates, resolved dependencies, translated parameters, and
    the plugin routing picked with the level each requested capability is served at."""

    spec: StepSpec
    plugin: Plugin  # the one that serves it: with a list of plugins, the first able to
    params: ModelParams
    system: Template | None
    history: tuple[tuple[str, Template], ...]
    prompt: Template
    deps: frozenset[str]  # step handles that must finish first
    literals: Mapping[str, str]  # the step's own `input`, stringified
    served: Mapping[Capability, Served] = field(default_factory=dict)
    flow: Flow | None = None  # how a map, choice, loop (or a loop's body step) runs
    structured: StructuredOutput | None = None  # its output_schema: replies checked, repaired
    code: CompiledCode | None = None  # a code step's function and arguments
    tools: tuple[Function, ...] = ()  # the functions the model may call
    max_tool_rounds: int = 0

    @property
    def calls(self) -> bool:
        """Whether running the step calls its plugin's generator (a map of its own prompt:
        once per item)."""
        flow = self.flow
        return flow is None or (isinstance(flow, MapFlow) and flow.item_flow is None)

    @property
    def handle(self) -> str:
        return self.spec.handle

    @property
    def templates(self) -> tuple[Template, ...]:
        """Every template sent: the system prompt, earlier messages, the prompt."""
        system = () if self.system is None else (self.system,)
        return (*system, *(template for _, template in self.history), self.prompt)

    def prompt_chars(self, values: Mapping[str, str]) -> int:
        """The prompt's length (its messages together) with `values`; values still unknown,
        such as other steps' outputs, count as empty."""
        return sum(template.length(values) for template in self.templates)

    def render_messages(self, values: Mapping[str, str]) -> list[dict[str, str]]:
        """The chat messages, rendered: system prompt, earlier messages, then the prompt.

        As served: a system prompt served best-effort is concatenated before the prompt (a
        completion model has no system role); one or the history `ignored` is left out. Raises
        PayloadTooLargeError when they are longer than CHAINRUNNER_MAX_PROMPT_CHARS together:
        the step fails before its call.
        """
        try:
            prompt = self.prompt.render(values)
            if self.system is None and not self.history:  # the common case, kept short
                self._check_size(len(prompt))
                return [{"role": "user", "content": prompt}]
            return self._chat(prompt, values)
        except StepDataError as exc:  # a path read found nothing: named with the step
            raise StepDataError(f"step `{self.handle}`: {exc}") from None

    def _chat(self, prompt: str, values: Mapping[str, str]) -> list[dict[str, str]]:
        served = self.served
        system = None if self.system is None \
            or served.get(Capability.SYSTEM_PROMPT) is Served.IGNORED \
            else self.system.render(values)
        if system is not None and served.get(Capability.SYSTEM_PROMPT) is Served.BEST_EFFORT:
            prompt, system = f"{system}\n\n{prompt}", None
        history = () if served.get(Capability.CONVERSATION) is Served.IGNORED else self.history
        messages = [] if system is None else [{"role": "system", "content": system}]
        messages.extend({"role": role, "content": t.render(values)} for role, t in history)
        messages.append({"role": "user", "content": prompt})
        self._check_size(sum(len(message["content"]) for message in messages))
        return messages

    def _check_size(self, chars: int) -> None:
        problem = prompt_problem(f"step `{self.handle}`", chars, "the rendered prompt")
        if problem is not None:
            raise PayloadTooLargeError(problem)


@dataclass(frozen=True)
class CompiledChain:
    """A chain that passed validation and is ready to run."""

    spec: ChainSpec
    steps: Mapping[str, CompiledStep]  # in definition order
    dependents: Mapping[str, tuple[str, ...]]
    required_inputs: tuple[str, ...]
    defaults: Mapping[str, JsonValue]
    output_handle: str
    # Chain input → the steps whose templates use it, for messages that name them.
    input_users: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # Catch step → the step it catches (policies.py): it runs only when that one fails.
    catch_steps: Mapping[str, str] = field(default_factory=dict)

    @property
    def handle(self) -> str:
        return self.spec.handle

    def input_usage(self, name: str) -> str:
        """"used by step `a`", and for an undeclared name that looks like a step handle, the
        likely typo: "did you mean step `tell-joke`?"."""
        users = self.input_users.get(name, ())
        text = f"used by step{'s' if len(users) > 1 else ''} {listing(users, limit=3)}" \
            if users else "used by no step"
        close = self._like_step.closest(name) if self.spec.inputs is None else None
        return f"{text}; did you mean step `{close}`?" if close else text

    @functools.cached_property
    def catching(self) -> bool:
        """Whether any step (loop bodies included) has a `catch`: the engine then settles
        failures through its catch policies."""
        return any(step.spec.catch is not None
                   for step in (*self.steps.values(), *self.model_calls()))

    @functools.cached_property
    def _like_step(self) -> Suggestions:
        return Suggestions(self.steps)

    def model_calls(self) -> Iterator[CompiledStep]:
        """Every step that calls a generator, loop bodies included."""
        for step in self.steps.values():
            if step.calls:
                yield step
            elif isinstance(step.flow, LoopFlow):
                yield from step.flow.body
            elif isinstance(step.flow, MapFlow) and step.flow.item_flow is not None:
                yield from step.flow.item_flow.body

    def resolve_inputs(self, given: Mapping[str, JsonValue]) -> dict[str, JsonValue]:
        """The run's inputs with defaults filled in; InputsError lists every missing name."""
        values = {**self.defaults, **given}
        problems = [f"missing input `{name}` ({self.input_usage(name)}): pass it with "
                    f"--input {name}=VALUE"
                    for name in self.required_inputs if name not in values]
        if self.spec.inputs is not None:
            declared = {d.name for d in self.spec.inputs}
            for name in given:
                if name not in declared:
                    problems.append(f"unknown input `{name}`: this chain declares "
                                    f"{_declared(sorted(declared))}{suggest(name, declared)}")
        if not problems:  # with every input known, a prompt too long already is refused now
            texts = {name: input_text(value) for name, value in values.items()}
            # The limit read once, not once a step: the environment lookup was ~1 µs a step
            # on the run's start (0.7% of the 500-wide benchmark's time).
            most = MAX_PROMPT_CHARS.value()
            problems = [problem for step in self.steps.values()
                        if (problem := prompt_problem(
                            f"step `{step.handle}`", step.prompt_chars(texts),
                            _AT_LEAST if step.deps else _RENDERED, most))]
        if problems:
            raise InputsError.from_problems(f"chain `{self.handle}` cannot run with these inputs",
                                            problems)
        return values


_RENDERED = "the prompt with these inputs"
_AT_LEAST = "the prompt with these inputs, before the outputs it interpolates,"


def _declared(names: list[str]) -> str:
    return listing(names) if names else "no inputs"


def compile_chain(chain: ChainSpec | Any, plugins: PluginRegistry = DEFAULT_PLUGINS, *,
                  source: str | None = None) -> CompiledChain:
    """Validate a chain against `plugins`; raise ChainDefinitionError naming every problem.

    `chain` is a ChainSpec or the raw JSON data of one: raw data has its schema problems
    reported together with everything the later passes find in the parts that parsed.
    `source` (e.g. a file name) starts the error's first line.
    """
    problems = Problems()
    analysis = Analysis(plugins=plugins)
    try:
        draft = ChainDraft.of(chain) if isinstance(chain, ChainSpec) \
            else read_draft(chain, problems)
        for check in (*PASSES, check_capabilities):
            check(draft, analysis, problems)
    except RecursionError:  # data built in code: a file or body is refused when parsed
        raise ChainDefinitionError(
            f"{invalid(source, None)}: it is nested deeper than Python's recursion limit "
            f"({sys.getrecursionlimit():,} levels); flatten it") from None
    if problems or draft.spec is None:
        raise ChainDefinitionError.from_problems(invalid(source, draft.handle),
                                                 problems.messages())
    return _assemble(draft.spec, draft, analysis)


def _compiled(draft: StepDraft, analysis: Analysis, deps: frozenset[str] | None = None,
              flow: Flow | None = None) -> CompiledStep:
    """`draft` as every pass accepted it; a prompt step's flow is its map, if it has one."""
    step, facts = draft.spec, analysis.steps[draft.index]
    if step.map is not None:
        flow = MapFlow(over=step.map.over, split=step.map.split, item=step.map.item,
                       max_concurrency=step.map.max_concurrency,
                       tolerance=parse_tolerance(step.map.tolerate),
                       item_flow=flow if isinstance(flow, ItemFlow) else None)
    templates = facts.templates
    calls = flow is None or (isinstance(flow, MapFlow) and flow.item_flow is None)
    functions = analysis.plugins.functions
    code = None
    if step.code is not None:
        function = functions.get(step.code.function)
        assert function is not None  # check_code found it
        code = CompiledCode(function, step.code.args,
                            {k: t for k, t in templates.items() if k.startswith("code.args")})
    assert not calls or code is not None \
        or (facts.plugin is not None and facts.params is not None)
    tools = tuple(f for name in step.tools if (f := functions.get(name)) is not None)
    return CompiledStep(
        code=code, tools=tools,
        max_tool_rounds=min(step.max_tool_rounds, MAX_TOOL_ROUNDS.value()) if tools else 0,
        spec=step, plugin=CODE_PLUGIN if code is not None else facts.plugin or CONTROL,
        params=facts.params or ModelParams(),
        system=templates.get("system_prompt"),
        history=tuple((m.role, templates[f"messages[{i}].content"])
                      for i, m in enumerate(step.messages)),
        prompt=templates.get("prompt", _NO_PROMPT), deps=facts.deps if deps is None else deps,
        literals={k: str(v) for k, v in step.input.items()} or _NONE,
        served=dict(facts.served) or _NONE, flow=flow, structured=facts.structured)


def _assemble(spec: ChainSpec, draft: ChainDraft, analysis: Analysis) -> CompiledChain:
    """The runnable chain from a spec every pass accepted."""
    compiled: dict[str, CompiledStep] = {}
    for step in draft.steps:
        spec_ = step.spec
        if step.loop is not None:
            continue
        if spec_.choice is not None:
            choice = ChoiceFlow(branches=tuple((b.when, tuple(b.then))
                                               for b in spec_.choice.branches),
                                otherwise=tuple(spec_.choice.otherwise))
            compiled[spec_.handle] = _compiled(step, analysis, flow=choice)
        elif spec_.map is not None and spec_.map.steps is not None:
            body = [s for s in draft.steps if s.loop == spec_.handle]
            body_deps = {s.spec.handle: analysis.steps[s.index].body_deps for s in body}
            item = ItemFlow(body=_in_order([_compiled(s, analysis, deps=frozenset())
                                            for s in body], body_deps),
                            body_deps=body_deps,
                            output=spec_.map.output or spec_.map.steps[-1].handle)
            compiled[spec_.handle] = _compiled(step, analysis, flow=item)
        elif spec_.loop is not None:
            body = [s for s in draft.steps if s.loop == spec_.handle]
            body_deps = {s.spec.handle: analysis.steps[s.index].body_deps for s in body}
            assert spec_.loop.max_iterations is not None  # a pass requires it
            loop = LoopFlow(body=_in_order([_compiled(s, analysis, deps=frozenset())
                                            for s in body], body_deps),
                            body_deps=body_deps, until=spec_.loop.until,
                            max_iterations=spec_.loop.max_iterations,
                            on_limit=spec_.loop.on_limit)
            compiled[spec_.handle] = _compiled(step, analysis, flow=loop)
            for member in body:
                compiled[member.spec.handle] = _compiled(
                    member, analysis, deps=frozenset({spec_.handle}),
                    flow=MemberFlow(loop=spec_.handle))
        else:
            compiled[spec_.handle] = _compiled(step, analysis)
    dependents: dict[str, list[str]] = {h: [] for h in compiled}
    for handle, step_ in compiled.items():
        for dep in step_.deps:
            dependents[dep].append(handle)
    defaults = {d.name: d.default for d in spec.inputs or () if d.default is not None}
    required_inputs = tuple(sorted({d.name for d in spec.inputs} - defaults.keys())) \
        if spec.inputs is not None else tuple(analysis.input_users)
    return CompiledChain(spec=spec, steps=compiled,
                         dependents={h: tuple(v) for h, v in dependents.items()},
                         required_inputs=required_inputs, defaults=defaults,
                         output_handle=spec.output or spec.steps[-1].handle,
                         input_users={k: tuple(v) for k, v in analysis.input_users.items()},
                         catch_steps=dict(analysis.catchers))


def _in_order(body: list[CompiledStep],
              deps: Mapping[str, frozenset[str]]) -> tuple[CompiledStep, ...]:
    """`body` ordered so that each step comes after the steps it reads (the body is acyclic)."""
    placed: dict[str, CompiledStep] = {}
    while len(placed) < len(body):
        for step in body:
            if step.handle not in placed and deps[step.handle] <= placed.keys():
                placed[step.handle] = step
    return tuple(placed.values())


def input_text(value: JsonValue) -> str:
    """An input's value as templates show it: text as is, any other JSON as JSON."""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
