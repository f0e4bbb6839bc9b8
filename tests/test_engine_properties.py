"""The engine's guarantees on generated chains: random graphs, failures, latencies, limits.

Each example is a chain whose steps interpolate some earlier steps, a set of steps that fail,
a latency per step, an optional concurrency limit and an optional observer; every run must
call each step at most once, only after all its dependencies succeeded and with their outputs,
skip exactly the steps behind a failure, queue a step only while every slot is taken, and
leave no step task behind.
"""

import asyncio
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from chainlets.engine.models import (
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
    StepRecord,
)
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import run_chain
from chainlets.errors import GenerationError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import parse_chain


@dataclass(frozen=True)
class Case:
    deps: list[list[int]]  # step i interpolates steps deps[i], all < i
    failing: frozenset[int]
    latency_ms: list[int]
    max_concurrency: int | None
    observed: bool

    def handle(self, i: int) -> str:
        return f"s-{i}"


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(min_value=1, max_value=12))
    deps = [sorted(draw(st.sets(st.integers(0, i - 1), max_size=min(i, 4)))) if i else []
            for i in range(n)]
    return Case(deps=deps,
                failing=frozenset(draw(st.sets(st.integers(0, n - 1), max_size=2))),
                latency_ms=draw(st.lists(st.sampled_from([0, 0, 1, 3]), min_size=n, max_size=n)),
                max_concurrency=draw(st.none() | st.integers(1, 3)),
                observed=draw(st.booleans()))


@dataclass
class ScriptedGenerator:
    """Replies with the step's handle in capitals after its latency; raises for failing steps."""

    case: Case
    requests: list[GenerationRequest] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            index = int(request.step.removeprefix("s-"))
            await asyncio.sleep(self.case.latency_ms[index] / 1000)
            if index in self.case.failing:
                raise GenerationError(f"{request.step} broke")
            return Generation(text=request.step.upper())
        finally:
            self.in_flight -= 1


_: type[GeneratorProtocol] = ScriptedGenerator


@dataclass
class Observed:
    """Each record the observer got, with how many steps were running just after it."""

    records: list[tuple[StepRecord, int]] = field(default_factory=list)
    states: dict[str, RunState] = field(default_factory=dict)

    def __call__(self, record: StepRecord) -> None:
        self.states[record.handle] = record.state
        running = sum(state == RunState.RUNNING for state in self.states.values())
        self.records.append((record, running))


async def _run(case: Case) -> tuple[InvocationResult, ScriptedGenerator, Observed]:
    spec = parse_chain({"handle": "generated", "steps": [
        {"handle": case.handle(i), "plugin": "mock",
         "prompt": "".join(f"{{{case.handle(d)}}}" for d in deps) or "start"}
        for i, deps in enumerate(case.deps)]})
    generator = ScriptedGenerator(case)
    seen = Observed()
    result = await run_chain(compile_chain(spec), {}, {"mock": generator},
                             RunOptions(max_concurrency=case.max_concurrency),
                             observer=seen if case.observed else None)
    assert [t for t in asyncio.all_tasks() if t.get_name().startswith("step:")] == []
    return result, generator, seen


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_generated_chains_keep_the_engines_guarantees(case: Case) -> None:
    result, generator, seen = asyncio.run(_run(case))
    records = {r.handle: r for r in result.steps}
    called = [r.step for r in generator.requests]
    assert len(called) == len(set(called))  # each step at most once

    expected: dict[str, RunState] = {}
    for i, deps in enumerate(case.deps):
        handle = case.handle(i)
        blocked = [case.handle(d) for d in deps
                   if expected[case.handle(d)] != RunState.SUCCEEDED]
        if blocked:
            expected[handle] = RunState.SKIPPED
            cause = records[handle].statusMessage or ""
            assert any(f"depends on `{b}`" in cause for b in blocked), cause
            assert handle not in called
            continue
        expected[handle] = RunState.FAILED if i in case.failing else RunState.SUCCEEDED
        request = next(r for r in generator.requests if r.step == handle)
        assert request.messages[-1].content == \
            ("".join(case.handle(d).upper() for d in deps) or "start")
        started = records[handle].started_at
        assert started is not None
        for d in deps:
            finished = records[case.handle(d)].finished_at
            assert finished is not None and finished <= started
    assert {h: r.state for h, r in records.items()} == expected

    failed = [h for h, s in expected.items() if s == RunState.FAILED]
    assert result.state == (RunState.FAILED if failed else RunState.SUCCEEDED)
    if failed:
        assert result.statusMessage is not None
        assert any(result.statusMessage.startswith(f"step `{h}` failed") for h in failed)
    else:
        assert result.output == case.handle(len(case.deps) - 1).upper()
    if case.max_concurrency is not None:
        assert generator.max_in_flight <= case.max_concurrency
    if case.observed:  # every step's transitions, in order, ending in its final record
        queues = case.max_concurrency is not None
        for handle, final in records.items():
            mine = [r for r, _running in seen.records if r.handle == handle]
            states = [r.state for r in mine]
            assert states in ([RunState.SKIPPED], [RunState.RUNNING, final.state],
                              *([[RunState.QUEUED, RunState.RUNNING, final.state]] * queues)), \
                states
            assert mine[-1] is final
        for record, running in seen.records:  # a step waits for a slot only while none is free
            if record.state == RunState.QUEUED:
                assert running == case.max_concurrency
            assert running <= (case.max_concurrency or len(case.deps))
