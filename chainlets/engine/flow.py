"""Flow controllers: how a map, a choice, a loop and a loop's body step (seen outside) run.

Each runs in its step's task and returns the step's outcome, like a model call. Maps and loops
add their items and iterations to the run as steps of their own (`critic[3]`, `chef-a[1]`)
through the execution's `add_step`, so each has its record, attempts, timings and usage, and
its state changes go through the execution's one place; the controller hears of each end
synchronously (`on_finish`), so it starts the next item in the same turn of the loop.
"""

import asyncio
import functools
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Protocol

from chainlets.engine.failures import Failure
from chainlets.engine.models import ErrorKind, Generation, RunOptions, RunState, StepRecord, Usage
from chainlets.language.compiler import CompiledStep
from chainlets.language.conditions import evaluate
from chainlets.language.flow import ChoiceFlow, ItemFlow, LoopFlow, MapFlow, MemberFlow

__all__ = ["FlowHost", "Outcome", "map_items", "run_flow"]

# A flow step's outcome, and the status message of a step that succeeded (why, how many).
Outcome = tuple[Generation | Failure, str | None]
OnFinish = Callable[[StepRecord], None]


class FlowHost(Protocol):
    """What a controller needs of the run it is part of (`scheduler._Execution`)."""

    @property
    def options(self) -> RunOptions: ...

    @property
    def records(self) -> Mapping[str, StepRecord]: ...

    def add_step(self, step: CompiledStep, on_finish: OnFinish | None = None) -> None: ...

    def skip_step(self, handle: str, reason: str) -> None: ...

    def tolerate(self, handles: Iterable[str]) -> None: ...

    @property
    def over(self) -> bool: ...

    async def await_items(self, handle: str, done: "asyncio.Future[None]") -> None: ...


def _text(item: object) -> str:
    return item if isinstance(item, str) else json.dumps(item, ensure_ascii=False)


def map_items(flow: MapFlow, text: str) -> list[str]:
    """The items of a map's list, as template text; ValueError says why there are none."""
    if flow.split == "lines":
        return [line.strip() for line in text.splitlines() if line.strip()]
    try:
        items = json.loads(text)
    except json.JSONDecodeError as exc:
        shown = text if len(text) <= 60 else text[:59] + "…"
        raise ValueError(f"`{flow.over}` is not a JSON array ({exc.msg}): {json.dumps(shown)}; "
                         "make it one, or map over its lines with `\"split\": \"lines\"`"
                         ) from exc
    if not isinstance(items, list):
        raise ValueError(f"`{flow.over}` is JSON but not an array (it is a "
                         f"{type(items).__name__}); make it a list")
    return [_text(item) for item in items]


def _usage(records: list[StepRecord]) -> Usage | None:
    usages = [r.usage for r in records if r.usage is not None]
    if not usages:
        return None
    return Usage(prompt_tokens=sum(u.prompt_tokens for u in usages),
                 completion_tokens=sum(u.completion_tokens for u in usages),
                 total_tokens=sum(u.total_tokens for u in usages))


def _named(step: CompiledStep, handle: str, values: Mapping[str, str],
           flow: ItemFlow | None = None) -> CompiledStep:
    """`step` as a step of its own named `handle`, its values all given (it waits for nothing);
    with `flow`, a map's item that runs its sub-chain. A map's item keeps the map's `retry`
    and `timeout_s`; its `catch` is the whole map's."""
    spec = step.spec.model_copy(update={"handle": handle, "map": None, "catch": None}
                                if step.spec.map is not None else {"handle": handle})
    return replace(step, spec=spec, flow=flow, deps=frozenset(), literals=values)


def _item_is_json(step: CompiledStep, flow: MapFlow) -> bool:
    """Whether a map's items answer JSON that met an `output_schema` (the step's own, or its
    item sub-chain's output step's): the map's output holds them as JSON values, so that
    `{map[0].field}` reads into them."""
    if flow.item_flow is None:
        return step.structured is not None
    return any(body.handle == flow.item_flow.output and body.structured is not None
               for body in flow.item_flow.body)


async def _map(host: FlowHost, step: CompiledStep, flow: MapFlow,
               values: Mapping[str, str]) -> Outcome:
    try:
        items = map_items(flow, values[flow.over])
    except ValueError as exc:
        return Failure(ErrorKind.MODEL, f"map: {exc}"), None
    count = len(items)
    limit = host.options.map_concurrency.get(step.handle, flow.max_concurrency) or count
    results: list[StepRecord | None] = [None] * count
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    started = 0
    base = {**values, **step.literals}

    def launch() -> None:
        nonlocal started
        index = started
        started += 1
        handle = f"{step.handle}[{index}]"
        host.add_step(_named(step, handle, {**base, flow.item: items[index]}, flow.item_flow),
                      lambda record: ended(index, record))
        if flow.item_flow is not None and handle in host.records:
            _relist(host, handle, flow.item_flow)

    def ended(index: int, record: StepRecord) -> None:
        results[index] = record
        if done.done() or host.over:
            return  # the run is ending: start nothing more
        if started < count:
            launch()
        elif all(r is not None for r in results):
            done.set_result(None)

    for _ in range(min(limit, count)):
        launch()
    if count:
        await host.await_items(step.handle, done)
    records = [r for r in results if r is not None]
    failed = [r for r in records if r.state != RunState.SUCCEEDED]
    decode = json.loads if _item_is_json(step, flow) else None  # embedded as JSON, not text
    outputs = [None if r.state != RunState.SUCCEEDED
               else r.output if decode is None or r.output is None else decode(r.output)
               for r in records]
    if failed and not flow.tolerance.allows(len(failed), count):
        first = failed[0]
        return Failure(first.error_kind or ErrorKind.MODEL,
                       f"{len(failed)} of {count} items failed ({flow.tolerance.describe(count)});"
                       f" `{first.handle}`: {first.statusMessage}"), None
    tolerated = [r.handle for r in failed]
    if failed and flow.item_flow is not None:  # and the failed steps of those items
        inside = tuple(f"{handle}." for handle in tolerated)
        tolerated += [h for h, r in host.records.items()
                      if h.startswith(inside) and r.state == RunState.FAILED]
    host.tolerate(tolerated)
    message = f"{len(failed)} of {count} items failed, tolerated " \
              f"({flow.tolerance.describe(count)})" if failed else None
    return Generation(text=json.dumps(outputs, ensure_ascii=False), usage=_usage(records)), \
        message


def _relist(host: FlowHost, item: str, flow: ItemFlow) -> None:
    """An item an earlier run finished is kept whole: its steps, kept too, are listed again."""
    if host.records[item].state != RunState.SUCCEEDED:
        return
    for body in flow.body:
        handle = f"{item}.{body.handle}"
        if handle in host.records:
            host.add_step(_named(body, handle, {}))


async def _choice(host: FlowHost, step: CompiledStep, flow: ChoiceFlow,
                  values: Mapping[str, str]) -> Outcome:
    taken: int | None = None
    reasons = []
    for index, (condition, _) in enumerate(flow.branches):
        verdict = evaluate(condition, values)
        reasons.append(verdict.reason)
        if verdict.holds:
            taken = index
            break
    label = "otherwise" if taken is None else f"branch {taken + 1}"
    why = reasons[-1] if taken is not None else "no branch held: " + "; ".join(reasons)
    chosen = flow.otherwise if taken is None else flow.branches[taken][1]
    for targets in [*(t for _, t in flow.branches), flow.otherwise]:
        if targets is not chosen:
            for target in targets:
                host.skip_step(target, f"not run: choice `{step.handle}` took {label} ({why})")
    return Generation(text=chosen[0] if chosen else "none"), f"took {label}: {why}"


async def _block(host: FlowHost, owner: str, flow: LoopFlow | ItemFlow,
                 values: Mapping[str, str], name: Callable[[str], str], what: str,
                 records: list[StepRecord]) -> dict[str, str] | Failure:
    """One pass over a loop's body or a map item's steps, each added as `name(handle)` once
    the steps it reads succeeded; their outputs by handle, or the first failure."""
    outputs: dict[str, str] = {}
    waiting = list(flow.body)
    running = 0
    failure: StepRecord | None = None
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def launch_ready() -> None:
        nonlocal running
        for body in [s for s in waiting if flow.body_deps[s.handle] <= outputs.keys()]:
            waiting.remove(body)
            running += 1
            given = {**values, **{d: outputs[d] for d in flow.body_deps[body.handle]},
                     **body.literals}
            host.add_step(_named(body, name(body.handle), given),
                          functools.partial(ended, body.handle))

    def ended(handle: str, record: StepRecord) -> None:
        nonlocal running, failure
        running -= 1
        records.append(record)
        if record.state == RunState.SUCCEEDED:
            outputs[handle] = record.output or ""
            if failure is None and not done.done() and not host.over:
                launch_ready()
        else:
            failure = failure or record
        if running == 0 and not done.done():
            done.set_result(None)

    launch_ready()
    await host.await_items(owner, done)
    if failure is None:
        return outputs
    for body in waiting:  # recorded skipped, behind the failed step
        host.add_step(replace(_named(body, name(body.handle), {}),
                              deps=frozenset({failure.handle})))
    return Failure(failure.error_kind or ErrorKind.MODEL,
                   f"{what}step `{failure.handle}` failed: {failure.statusMessage}")


async def _item(host: FlowHost, step: CompiledStep, flow: ItemFlow,
                values: Mapping[str, str]) -> Outcome:
    """One item of a map over a sub-chain: its steps `item[i].step`; its output the map's
    `output` step's."""
    records: list[StepRecord] = []
    outputs = await _block(host, step.handle, flow, values, f"{step.handle}.{{}}".format, "",
                           records)
    if isinstance(outputs, Failure):
        return outputs, None
    return Generation(text=outputs[flow.output], usage=_usage(records)), None


async def _loop(host: FlowHost, step: CompiledStep, flow: LoopFlow,
                values: Mapping[str, str]) -> Outcome:
    iterations: list[dict[str, str]] = []
    records: list[StepRecord] = []
    reason = "no `until`"
    for number in range(flow.max_iterations):
        given = {**values, step.handle: json.dumps(iterations, ensure_ascii=False)}
        outputs = await _block(host, step.handle, flow, given, f"{{}}[{number}]".format,
                               f"iteration {number}: ", records)
        if isinstance(outputs, Failure):
            return outputs, None
        iterations.append(outputs)
        if flow.until is not None:
            verdict = evaluate(flow.until, {**values, **outputs})
            reason = verdict.reason
            if verdict.holds:
                return Generation(text=json.dumps(iterations, ensure_ascii=False),
                                  usage=_usage(records)), \
                    f"`until` held after {number + 1} iteration(s): {reason}"
    if flow.until is not None and flow.on_limit == "fail":
        return Failure(ErrorKind.MODEL, f"`until` did not hold within max_iterations = "
                                        f"{flow.max_iterations}: {reason}"), None
    return Generation(text=json.dumps(iterations, ensure_ascii=False), usage=_usage(records)), \
        f"stopped at max_iterations = {flow.max_iterations} ({reason})"


async def _member(host: FlowHost, step: CompiledStep, flow: MemberFlow,
                  values: Mapping[str, str]) -> Outcome:
    iterations = json.loads(values[flow.loop])
    records = [host.records[f"{step.handle}[{i}]"] for i in range(len(iterations))]
    return Generation(text=iterations[-1][step.handle], usage=_usage(records)), \
        f"the last of {len(iterations)} iteration(s) of loop `{flow.loop}`"


async def run_flow(host: FlowHost, step: CompiledStep, values: Mapping[str, str]) -> Outcome:
    """Run a flow step (one whose `flow` is set) to its outcome."""
    flow = step.flow
    if isinstance(flow, MapFlow):
        return await _map(host, step, flow, values)
    if isinstance(flow, ChoiceFlow):
        return await _choice(host, step, flow, values)
    if isinstance(flow, LoopFlow):
        return await _loop(host, step, flow, values)
    if isinstance(flow, ItemFlow):
        return await _item(host, step, flow, values)
    assert isinstance(flow, MemberFlow)
    return await _member(host, step, flow, values)
