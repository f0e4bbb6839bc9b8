"""Engine overhead against a hand-written asyncio floor, and peak memory of a 10,000-step chain.

Run: `python -m benchmarks.engine` (exit 1 when a target is missed). Every figure comes from one
process and one event loop: each shape runs through the hand-written floor and through
`run_chain`, interleaved, and the table shows the median of the repetitions.

The floor is hand-written asyncio driving the same generator fake: one task per step awaiting
its dependencies, then one `run_remote` with a GenerationRequest, so the ratio is the engine's
own cost: scheduling, templating, records, the retry policy. The table also shows the bare
floor, whose steps only sleep (no request, no reply model), for reference. The floors create
every task up front, before the first step starts; the engine creates a step's task when the
step starts.
`diamond-skew` puts Y1…Y10 in sequence (a 100 ms branch beside the 200 ms X), the reading under
which peers.md §4 finds a level-by-level scheduler at 1.44x; root and join take 10 ms each.
"""

import argparse
import asyncio
import gc
import os
import resource
import statistics
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from chainlets.engine.models import Generation, GenerationRequest, RunOptions, RunState
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.spec import ChainSpec, StepSpec

__all__ = ["SHAPES", "EngineRun", "GatedGenerator", "MemoryRow", "Row", "Shape",
           "SleepingGenerator", "deep", "diamond_skew", "measure", "measure_memory", "render",
           "run_engine", "run_floor", "soundtrack", "wide"]

_MB = 1024 * 1024


@dataclass(frozen=True)
class Shape:
    """A chain shape: each step's dependencies (in definition order) and model latency."""

    name: str
    deps: Mapping[str, tuple[str, ...]]
    latency_s: Mapping[str, float]
    target: float  # allowed engine / floor ratio

    def spec(self) -> ChainSpec:
        """The shape as a chain of `mock` steps whose prompts interpolate their dependencies."""
        return ChainSpec(handle=self.name, inputs=[], steps=[
            StepSpec(handle=handle, plugin="mock",
                     prompt=" ".join(f"{{{d}}}" for d in deps) or f"start {self.name}")
            for handle, deps in self.deps.items()])


def soundtrack(latency_s: float = 0.05) -> Shape:
    """LLMFlows' flow: title → song ∥ characters → lyrics → five critics (9 calls)."""
    deps: dict[str, tuple[str, ...]] = {
        "movie-title": (), "song-title": ("movie-title",), "main-characters": ("movie-title",),
        "song-lyrics": ("song-title", "main-characters"),
        **{f"song-review-{i}": ("song-lyrics",) for i in range(5)}}
    return Shape("soundtrack", deps, dict.fromkeys(deps, latency_s), 1.02)


def wide(width: int = 500, latency_s: float = 0.02) -> Shape:
    """1 → `width` in parallel → 1."""
    fan = tuple(f"w{i}" for i in range(width))
    deps = {"root": (), **dict.fromkeys(fan, ("root",)), "join": fan}
    return Shape("wide", deps, dict.fromkeys(deps, latency_s), 1.05)


def deep(length: int = 200, latency_s: float = 0.001) -> Shape:
    """`length` steps in sequence."""
    deps = {f"d{i}": (f"d{i - 1}",) if i else () for i in range(length)}
    return Shape("deep", deps, dict.fromkeys(deps, latency_s), 1.05)


def diamond_skew(x_s: float = 0.2, y_s: float = 0.01, ys: int = 10) -> Shape:
    """root → X ∥ Y1 → … → Y`ys` → join; root and join take `y_s`."""
    chain = [f"y{i}" for i in range(1, ys + 1)]
    deps: dict[str, tuple[str, ...]] = {"root": (), "x": ("root",)}
    deps.update({y: (chain[i - 1] if i else "root",) for i, y in enumerate(chain)})
    deps["join"] = ("x", chain[-1])
    latency = {**dict.fromkeys(deps, y_s), "x": x_s}
    return Shape("diamond-skew", deps, latency, 1.02)


SHAPES: tuple[Callable[[], Shape], ...] = (soundtrack, wide, deep, diamond_skew)


class SleepingGenerator:
    """Answers each step after its fixed latency and counts the calls it gets per step."""

    def __init__(self, latency_s: Mapping[str, float]) -> None:
        self.latency_s = latency_s
        self.calls: Counter[str] = Counter()

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.calls[request.step] += 1
        await asyncio.sleep(self.latency_s[request.step])
        return Generation(text="ok")


_: type[GeneratorProtocol] = SleepingGenerator


class GatedGenerator(SleepingGenerator):
    """Holds calls to the `gated` steps until all of them have arrived, so that they are all
    in flight at once whatever the machine's speed (for peak memory)."""

    def __init__(self, latency_s: Mapping[str, float], gated: Collection[str]) -> None:
        super().__init__(latency_s)
        self._gated = frozenset(gated)
        self._arrived = 0
        self._all_arrived = asyncio.Event()

    async def run_remote(self, request: GenerationRequest) -> Generation:
        if request.step in self._gated:
            self._arrived += 1
            if self._arrived == len(self._gated):
                self._all_arrived.set()
            await self._all_arrived.wait()
        return await super().run_remote(request)


async def run_floor(shape: Shape, generator: SleepingGenerator | None = None) -> float:
    """Seconds for the floor: one task per step awaiting its dependencies, then its model call.

    With `generator`, each step calls it as the engine does, with a GenerationRequest whose
    prompt joins its dependencies' outputs: what hand-written asyncio code driving the same
    generator chainlet would do. Without, each step only sleeps its latency (the bare floor).
    """
    async def call(handle: str, deps: list["asyncio.Task[str]"]) -> str:
        outputs = [await dep for dep in deps]
        if generator is None:
            await asyncio.sleep(shape.latency_s[handle])
            return "ok"
        request = GenerationRequest.model_validate({
            "step": handle, "plugin": "mock",
            "messages": [{"role": "user", "content": " ".join(outputs) or "start"}]})
        return (await generator.run_remote(request)).text

    started = time.perf_counter()
    tasks: dict[str, asyncio.Task[str]] = {}
    for handle, deps in shape.deps.items():
        tasks[handle] = asyncio.create_task(call(handle, [tasks[d] for d in deps]))
    await asyncio.gather(*tasks.values())
    return time.perf_counter() - started


@dataclass(frozen=True)
class EngineRun:
    seconds: float
    calls: Counter[str]
    succeeded: bool

    def exact(self, shape: Shape) -> bool:
        """The chain succeeded and the generator got exactly one call per step."""
        return (self.succeeded and self.calls.keys() == shape.deps.keys()
                and set(self.calls.values()) == {1})


# The floor calls the fake with no cap on calls in flight, so the engine runs without its
# per-backend cap (default 64) too: with it, wide would run in waves and the memory shape, which
# waits for every fan-out call to be in flight, would never finish.
_UNCAPPED = RunOptions(llm="mock", max_backend_calls=10_000)


async def run_engine(shape: Shape, chain: CompiledChain | None = None,
                     generator: SleepingGenerator | None = None) -> EngineRun:
    """Seconds for `run_chain` on the compiled shape (compiling is not timed)."""
    chain = chain or compile_chain(shape.spec())
    generator = generator or SleepingGenerator(shape.latency_s)
    started = time.perf_counter()
    result = await run_chain(chain, {}, {"mock": generator}, _UNCAPPED)
    seconds = time.perf_counter() - started
    return EngineRun(seconds, generator.calls, result.state == RunState.SUCCEEDED)


@dataclass(frozen=True)
class Row:
    shape: Shape
    floor_s: float  # medians; the floor calls the same generator fake
    bare_s: float  # the floor that only sleeps (no requests, no replies)
    engine_s: float
    shown: EngineRun  # the first run that was not exact, else the last
    exact: bool  # every engine run succeeded with exactly one call per step

    @property
    def ratio(self) -> float:
        return self.engine_s / self.floor_s

    @property
    def bare_ratio(self) -> float:
        return self.engine_s / self.bare_s

    @property
    def passed(self) -> bool:
        return self.exact and self.ratio <= self.shape.target


async def measure(shape: Shape, repeat: int) -> Row:
    """Median floor, bare-floor and engine times, interleaved, rotating which goes first."""
    chain = compile_chain(shape.spec())
    # Warm-up: first-call costs (pydantic caches, code paths) untimed.
    await run_floor(shape, SleepingGenerator(shape.latency_s))
    await run_floor(shape)
    await run_engine(shape, chain)
    floors: list[float] = []
    bares: list[float] = []
    runs: list[EngineRun] = []
    sides = ("floor", "bare", "engine")
    for i in range(repeat):
        for side in sides[i % 3:] + sides[:i % 3]:
            gc.collect()  # one side's garbage is not collected on the other's clock
            if side == "floor":
                floors.append(await run_floor(shape, SleepingGenerator(shape.latency_s)))
            elif side == "bare":
                bares.append(await run_floor(shape))
            else:
                runs.append(await run_engine(shape, chain))
    inexact = [run for run in runs if not run.exact(shape)]
    return Row(shape, statistics.median(floors), statistics.median(bares),
               statistics.median(r.seconds for r in runs),
               shown=inexact[0] if inexact else runs[-1], exact=not inexact)


@dataclass(frozen=True)
class MemoryRow:
    steps: int
    compile_and_run_mb: float  # tracemalloc peak above having the definition in hand
    run_mb: float  # tracemalloc peak above having the compiled chain in hand
    rss_mb: float  # growth of the process's RSS high-water mark, compile and run
    exact: bool
    target_mb: float = 50.0

    @property
    def passed(self) -> bool:
        return self.exact and self.compile_and_run_mb <= self.target_mb


def _max_rss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # Linux reports KiB


async def measure_memory(width: int = 9_998) -> MemoryRow:
    """Peak memory of a 1 → `width` → 1 chain with every fan-out call in flight at once.

    Run it before anything else big: the RSS figure is growth of the process's high-water mark.
    """
    shape = wide(width, latency_s=0.0)
    spec = shape.spec()
    fan_out = [handle for handle, deps in shape.deps.items() if deps == ("root",)]
    gc.collect()
    rss_before = _max_rss_bytes()
    untraced = await run_engine(shape, compile_chain(spec),
                                GatedGenerator(shape.latency_s, fan_out))
    rss_mb = (_max_rss_bytes() - rss_before) / _MB
    del untraced
    gc.collect()
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        chain = compile_chain(spec)
        compile_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        compiled = tracemalloc.get_traced_memory()[0]
        run = await run_engine(shape, chain, GatedGenerator(shape.latency_s, fan_out))
        run_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return MemoryRow(len(shape.deps), (max(compile_peak, run_peak) - baseline) / _MB,
                     (run_peak - compiled) / _MB, rss_mb, run.exact(shape))


def render(rows: Sequence[Row], memory: MemoryRow, repeat: int) -> str:
    header = (f"{'shape':<13} {'floor ms':>9} {'engine ms':>10} {'ratio':>7} "
              f"{'calls/steps':>12} {'target':>7}  result   {'bare ms':>8} {'vs bare':>8}")
    lines = [f"engine overhead: median of {repeat} interleaved runs each, compiling untimed "
             f"(Python {sys.version.split()[0]}, {sys.platform}, {os.cpu_count()} CPUs);",
             "floor: hand-written asyncio calling the same generator fake; bare: steps only sleep",
             "", header, "-" * len(header)]
    for row in rows:
        calls = f"{sum(row.shown.calls.values())}/{len(row.shape.deps)}" + \
            ("" if row.exact else "!")
        lines.append(f"{row.shape.name:<13} {row.floor_s * 1e3:>9.1f} {row.engine_s * 1e3:>10.1f} "
                     f"{row.ratio:>6.3f}x {calls:>12} {row.shape.target:>6.2f}x  "
                     f"{'pass' if row.passed else 'FAIL':<6} {row.bare_s * 1e3:>8.1f} "
                     f"{row.bare_ratio:>7.3f}x")
    lines += ["", f"peak memory, wide 1 -> {memory.steps - 2:,} -> 1 ({memory.steps:,} steps, "
                  f"all fan-out calls in flight at once), above baseline:",
              f"  compile + run  {memory.compile_and_run_mb:6.1f} MB tracemalloc peak "
              f"(target <= {memory.target_mb:.0f} MB)  {'pass' if memory.passed else 'FAIL'}",
              f"  run only       {memory.run_mb:6.1f} MB tracemalloc peak (chain compiled "
              "beforehand)",
              f"  compile + run  {memory.rss_mb:6.1f} MB RSS high-water growth"]
    if not all(row.exact for row in rows) or not memory.exact:
        lines.append("! a run failed or made other than exactly one model call per step")
    return "\n".join(lines)


async def main(repeat: int) -> bool:
    memory = await measure_memory()
    rows = [await measure(make(), repeat) for make in SHAPES]
    print(render(rows, memory, repeat))
    return memory.passed and all(row.passed for row in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.engine", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=15, help="runs per shape and side (>= 5)")
    args = parser.parse_args()
    if args.repeat < 5:
        parser.error("--repeat must be at least 5")
    sys.exit(0 if asyncio.run(main(args.repeat)) else 1)
