"""Control-flow benchmarks: a 1,000-item map against hand-written asyncio, the cost of a choice,
of a loop iteration and of a repair (structured output), and validating a 1,000-step chain with
every kind of step.

Run: `python -m benchmarks.flow` (exit 1 when a target is missed). The map's floor is
hand-written asyncio in the same process: a semaphore of `max_concurrency` over one task per
item, each calling the same fake generator with a GenerationRequest (20 waves of 20 ms).
"""

import argparse
import asyncio
import statistics
import sys
import time
from collections import Counter
from typing import Any

from chainlets.engine.models import Generation, GenerationRequest, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import JsonValue

__all__ = ["main"]

ITEMS, CONCURRENCY, LATENCY_S = 1000, 50, 0.02
MAP_TARGET, VALIDATE_TARGET_S = 1.05, 0.1


class Fake:
    """Answers after a fixed latency, counting calls; a judge step says `{"done": true}` on
    its `stop_at`-th call."""

    def __init__(self, latency_s: float, stop_at: int = 0) -> None:
        self.latency_s, self.stop_at = latency_s, stop_at
        self.calls: Counter[str] = Counter()

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.calls[request.step] += 1
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        done = sum(self.calls.values()) >= self.stop_at
        return Generation(text='{"done": true}' if done else '{"done": false}')


def _step(handle: str, prompt: str, **more: Any) -> dict[str, Any]:
    return {"handle": handle, "plugin": "mock", "prompt": prompt, **more}


async def map_floor(fake: Fake, items: list[str]) -> float:
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int, item: str) -> str:
        async with gate:
            request = GenerationRequest.model_validate({
                "step": f"m[{index}]", "plugin": "mock",
                "messages": [{"role": "user", "content": f"about {item}"}]})
            return (await fake.run_remote(request)).text

    started = time.perf_counter()
    await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    return time.perf_counter() - started


async def map_engine(fake: Fake, items: list[str]) -> float:
    chain = compile_chain({"handle": "m", "steps": [_step(
        "m", "about {item}", map={"over": "items", "max_concurrency": CONCURRENCY})]})
    given: list[JsonValue] = list(items)
    started = time.perf_counter()
    result = await run_chain(chain, {"items": given}, {"mock": fake})
    elapsed = time.perf_counter() - started
    assert result.state == RunState.SUCCEEDED, result.statusMessage
    return elapsed


async def per_decision_us(kind: str, count: int = 300) -> float:
    """Microseconds a choice (or a loop iteration) adds over the plain steps it wraps."""
    if kind == "choice":
        steps = []
        for i in range(count):
            prev = f"s{i - 1}" if i else None
            steps.append(_step(f"s{i}", f"{{{prev}}}" if prev else "go"))
            steps.append({"handle": f"c{i}", "choice": {"branches": [
                {"when": {"value": f"s{i}", "path": "done", "equals": False},
                 "then": [f"y{i}"]}], "otherwise": [f"n{i}"]}})
            steps.append(_step(f"y{i}", "y"))
            steps.append(_step(f"n{i}", "n"))
        flow = {"handle": "choices", "steps": steps}
        plain = {"handle": "plain", "steps": [
            _step(f"s{i}", f"{{s{i - 1}}}" if i else "go") for i in range(count)]
            + [_step(f"y{i}", "y") for i in range(count)]}
        stop = 10**9
    else:
        flow = {"handle": "loop", "steps": [{"handle": "l", "loop": {
            "max_iterations": count, "until": {"value": "j", "path": "done", "equals": True},
            "steps": [_step("j", "{l}")]}}]}
        plain = {"handle": "plain", "steps": [
            _step(f"s{i}", f"{{s{i - 1}}}" if i else "go") for i in range(count)]}
        stop = count
    flow_chain, plain_chain = compile_chain(flow), compile_chain(plain)
    times: dict[str, list[float]] = {"flow": [], "plain": []}
    for _ in range(5):
        for name, chain in (("flow", flow_chain), ("plain", plain_chain)):
            started = time.perf_counter()
            await run_chain(chain, {}, {"mock": Fake(0, stop)}, RunOptions())
            times[name].append(time.perf_counter() - started)
    extra = statistics.median(times["flow"]) - statistics.median(times["plain"])
    return extra / count * 1e6


class RepairFake:
    """Answers each step's first call with text that is not JSON, every later one with JSON
    meeting SCHEMA: a step with an output schema makes exactly one repair."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.calls[request.step] += 1
        return Generation(text='{"done": true}' if self.calls[request.step] > 1 else "nope")


SCHEMA = {"type": "object", "properties": {"done": {"type": "boolean"}}, "required": ["done"]}


async def repair_us(count: int = 300) -> tuple[float, float]:
    """(microseconds a repair adds over the model call it makes, microseconds of a plain step's
    call through the engine): `count` steps in sequence, each repaired once (2 calls), against
    2 x `count` plain steps in sequence (the same calls)."""
    repaired = {"handle": "repaired", "steps": [
        _step(f"s{i}", f"{{s{i - 1}}}" if i else "go", output_schema=SCHEMA)
        for i in range(count)]}
    plain = {"handle": "plain", "steps": [
        _step(f"s{i}", f"{{s{i - 1}}}" if i else "go") for i in range(2 * count)]}
    chains = {"repaired": compile_chain(repaired), "plain": compile_chain(plain)}
    times: dict[str, list[float]] = {"repaired": [], "plain": []}
    for _ in range(5):
        for name, chain in chains.items():
            fake = RepairFake()
            started = time.perf_counter()
            result = await run_chain(chain, {}, {"mock": fake}, RunOptions())
            times[name].append(time.perf_counter() - started)
            assert result.state == RunState.SUCCEEDED, result.statusMessage
            assert sum(fake.calls.values()) == 2 * count
    flow, base = statistics.median(times["repaired"]), statistics.median(times["plain"])
    return (flow - base) / count * 1e6, base / (2 * count) * 1e6


def validation_s(total: int = 1000) -> float:
    steps: list[dict[str, Any]] = []
    while len(steps) + 8 <= total:
        i = len(steps)
        steps += [
            _step(f"p{i}", "{topic}", system_prompt="You are terse."),
            _step(f"m{i}", "{x} of {p" + str(i) + "}", map={"over": f"p{i}", "item": "x"}),
            {"handle": f"c{i}", "choice": {"branches": [{"when": {"any": [
                {"value": f"p{i}", "matches": "^yes"}, {"value": f"m{i}", "path": "[0]",
                                                        "gt": 3}]}, "then": [f"y{i}"]}],
                "otherwise": [f"n{i}"]}},
            _step(f"y{i}", "{m" + str(i) + "}"), _step(f"n{i}", "no"),
            {"handle": f"l{i}", "loop": {"max_iterations": 3, "until": {
                "value": f"j{i}", "equals": "done"}, "steps": [
                _step(f"a{i}", "{l" + str(i) + "} {y" + str(i) + "}", output_schema=SCHEMA),
                _step(f"j{i}", "{a" + str(i) + ".done}")]}}]
    data = {"handle": "big", "inputs": [{"name": "topic"}], "steps": steps}
    times = []
    for _ in range(7):
        started = time.perf_counter()
        compile_chain(data)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


async def _main(repeat: int) -> bool:
    items = [f"item {i}" for i in range(ITEMS)]
    floors, engines, calls = [], [], 0
    for _ in range(repeat):
        floors.append(await map_floor(Fake(LATENCY_S), items))
        fake = Fake(LATENCY_S)
        engines.append(await map_engine(fake, items))
        calls = sum(fake.calls.values())
    floor, engine = statistics.median(floors), statistics.median(engines)
    ratio = engine / floor
    ok_map = ratio <= MAP_TARGET and calls == ITEMS
    print(f"map {ITEMS} items, max_concurrency {CONCURRENCY}, {LATENCY_S * 1000:.0f} ms: "
          f"floor {floor * 1000:.1f} ms, engine {engine * 1000:.1f} ms, {ratio:.3f}x "
          f"(target <= {MAP_TARGET}x) {'OK' if ok_map else 'MISSED'}; {calls} calls")
    for kind in ("choice", "loop"):
        print(f"{kind}: {await per_decision_us(kind):.0f} us per decision over the plain "
              "steps it wraps")
    per_repair, per_call = await repair_us()
    print(f"repair: {per_repair:.0f} us per repair (parse, validate, re-prompt) over the call it "
          f"makes; a plain step's call costs {per_call:.0f} us in the engine (0-latency fake)")
    validate = validation_s()
    ok_validate = validate <= VALIDATE_TARGET_S
    print(f"validate a 1,000-step chain with every kind of step: {validate * 1000:.1f} ms "
          f"(target <= {VALIDATE_TARGET_S * 1000:.0f} ms) {'OK' if ok_validate else 'MISSED'}")
    return ok_map and ok_validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    sys.exit(0 if asyncio.run(_main(args.repeat)) else 1)


if __name__ == "__main__":
    main()
