"""`chainrunner serve` under load: hop overhead, fan-out throughput, memory, startup.

Run: `python -m benchmarks.serve` (exit 1 when a target is missed). It serves the runner chain
(chains/runner.py: ChainRunner → MockGenerator, OpenAIGenerator, CodeRunner) with the mock
backend, through the same `python -m chainrunner.serve` a user runs, and measures over loopback:

- startup to ready: four chainlets, build reused (the first start builds if needed);
- per-hop overhead entrypoint → generator: each model call of a sequential chain, as timed by
  the engine inside the entrypoint (its attempt records), with a 0 ms mock model, so all of it
  is transport: serialization, HTTP, truss's server, the stub client;
- 200 concurrent soundtrack invocations (chains/specs/soundtrack.json, 9 calls each, 1,800
  model calls at 50 ms), against two floors measured in the same run: the critical path (four
  dependent calls: 0.2 s) and the transport floor, the time the same processes take to answer
  the same number of trivial requests (200 through the gateway to the entrypoint and 1,800 to
  the generator, each a body truss rejects at once: routing, parsing and logging, no model);
- memory of every process serve runs (RSS, and PSS/USS: chainlets share the zygote's pages);
- --watch: from saving an edit of a four-chainlet chain to serve reporting the new processes
  ready and routed;
- the entrypoint SIGKILLed once during 1,000 requests at concurrency 50: how many fail
  (benchmarks/serve_faults.py).
"""

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks import serve_faults
from benchmarks.harness import ServeProcess

__all__ = ["HopStats", "Phase", "direct_latency", "main", "measure_hops", "measure_memory",
           "measure_watch", "percentile", "run_soundtracks", "sequential_chain",
           "transport_floor"]

REPO = Path(__file__).resolve().parents[1]
RUNNER = REPO / "chains" / "runner.py"
SOUNDTRACK = json.loads((REPO / "chains" / "specs" / "soundtrack.json").read_text())
MOCK = {"llm": "mock", "max_attempts": 1}
PREDICT = "/v1/models/model:predict"
CRITICAL_PATH_S = 0.2  # four dependent 50 ms calls
TARGET_HOP_P50_MS = 2.0
TARGET_FLOOR_RATIO = 1.5
TARGET_STARTUP_S = 5.0
TARGET_RELOAD_S = 3.0
_MB = 1024 * 1024
_JSON = {"Content-Type": "application/json"}
# One model call as the entrypoint sends it (the generator's run_remote argument).
_GENERATION_REQUEST = json.dumps({"request": {
    "step": "s0", "plugin": "gpt-3", "messages": [{"role": "user", "content": "start"}],
    "params": {"max_words": 3}}}).encode()


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def sequential_chain(steps: int) -> dict[str, Any]:
    """`steps` model calls, each waiting for the one before (so calls never overlap)."""
    return {"handle": "hops", "steps": [
        {"handle": f"s{i}", "plugin": "gpt-3", "plugin_config": {"max_words": 3},
         "prompt": f"{{s{i - 1}}} next" if i else "start"} for i in range(steps)]}


@dataclass(frozen=True)
class HopStats:
    samples: int
    p50_ms: float
    p99_ms: float


async def _invoke(http: aiohttp.ClientSession, url: str, payload: object) -> tuple[int, Any]:
    async with http.post(url + "/run_remote", json=payload) as response:
        return response.status, await response.json(content_type=None)


async def measure_hops(url: str, steps: int = 50, invocations: int = 40) -> HopStats:
    """Durations of the entrypoint's calls to the generator, one call in flight at a time."""
    durations = []
    payload = {"chain": sequential_chain(steps), "inputs": {}, "options": MOCK}
    async with aiohttp.ClientSession() as http:
        for _ in range(invocations):
            status, result = await _invoke(http, url, payload)
            if status != 200 or result["state"] != "succeeded":
                raise RuntimeError(f"hop chain failed: {status} {result}")
            for step in result["steps"]:
                attempt = step["attempts"][0]
                took = datetime.fromisoformat(attempt["finished_at"]) - datetime.fromisoformat(
                    attempt["started_at"])
                durations.append(took.total_seconds() * 1000)
    return HopStats(len(durations), percentile(durations, 50), percentile(durations, 99))


@dataclass(frozen=True)
class Phase:
    """One burst of requests: its wall time, how many failed, and the CPU time serve's
    processes (gateway, chainlets) spent on it."""

    wall_s: float
    failed: int
    cpu_s: float


def _cpu_s(pids: Sequence[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


async def direct_latency(url: str, body: bytes | None, count: int = 1000) -> HopStats:
    """Round trips from this process's lean aiohttp client straight to a chainlet, one at a
    time: POST `body` to predict, or GET readiness when `body` is None."""
    durations = []
    async with aiohttp.ClientSession() as http:
        for _ in range(count + 100):
            started = time.perf_counter()
            if body is None:
                async with http.get(url + "/v1/models/model") as response:
                    await response.read()
            else:
                async with http.post(url + PREDICT, data=body, headers=_JSON) as response:
                    await response.read()
            durations.append((time.perf_counter() - started) * 1000)
    durations = durations[100:]  # the first ones warm the connection and code paths
    return HopStats(len(durations), percentile(durations, 50), percentile(durations, 99))


async def _timed(requests: Sequence[Callable[[], Awaitable[bool]]],
                 pids: Sequence[int]) -> Phase:
    """All `requests` at once."""
    cpu = _cpu_s(pids)
    started = time.perf_counter()
    results = await asyncio.gather(*(request() for request in requests))
    wall = time.perf_counter() - started
    return Phase(wall, results.count(False), _cpu_s(pids) - cpu)


async def run_soundtracks(http: aiohttp.ClientSession, url: str, invocations: int,
                          pids: Sequence[int] = ()) -> Phase:
    payload = {"chain": SOUNDTRACK, "inputs": {"topic": "friendship"}, "options": MOCK}

    async def one() -> bool:
        status, result = await _invoke(http, url, payload)
        return status == 200 and result["state"] == "succeeded"

    return await _timed([one] * invocations, pids)


async def transport_floor(http: aiohttp.ClientSession, url: str, generator_url: str,
                          invocations: int, calls_each: int, pids: Sequence[int] = ()) -> Phase:
    """The same number of requests to the same processes, each rejected at once by truss."""
    async def trivial(target: str) -> bool:
        async with http.post(target, data=b"{}", headers=_JSON) as response:
            await response.read()
            return response.status == 400

    async def through_gateway() -> bool:
        return await trivial(url + "/run_remote")

    async def to_generator() -> bool:
        return await trivial(generator_url + PREDICT)

    requests = [through_gateway] * invocations + [to_generator] * (invocations * calls_each)
    return await _timed(requests, pids)


def measure_memory(server: ServeProcess) -> list[tuple[str, float, float, float]]:
    """(process, RSS, PSS, USS) in MB for serve, its zygote and each chainlet."""
    chainlets = {p.pid: p.name() for p in psutil.Process(server.process.pid).children(True)}
    rows = []
    for pid, name in sorted(chainlets.items(), key=lambda item: item[1]):
        info = psutil.Process(pid).memory_full_info()
        label = name if name != "python" else "zygote/builder"
        rows.append((label, info.rss / _MB, info.pss / _MB, info.uss / _MB))
    info = psutil.Process(server.process.pid).memory_full_info()
    rows.append(("serve (gateway)", info.rss / _MB, info.pss / _MB, info.uss / _MB))
    return rows


def _chainlet_url(server: ServeProcess, name: str) -> str:
    with urllib.request.urlopen(f"{server.url}/ready", timeout=10) as ready:
        return f"http://127.0.0.1:{json.load(ready)['chainlets'][name]['port']}"


async def _load(server: ServeProcess, invocations: int,
                repeat: int) -> tuple[list[Phase], list[Phase]]:
    generator = _chainlet_url(server, "MockGenerator")
    pids = [server.process.pid, *server.descendants()]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        # One full-size round of each first: connection pools, code paths, allocators.
        await run_soundtracks(http, server.url, invocations)
        await transport_floor(http, server.url, generator, invocations, 9)
        loads, floors = [], []
        for _ in range(repeat):
            loads.append(await run_soundtracks(http, server.url, invocations, pids))
            floors.append(await transport_floor(http, server.url, generator, invocations, 9,
                                                pids))
            if floors[-1].failed:
                raise RuntimeError(f"{floors[-1].failed} trivial requests were not answered 400")
    return loads, floors


async def _soundtracks_only(server: ServeProcess, invocations: int, repeat: int) -> list[Phase]:
    pids = [server.process.pid, *server.descendants()]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await run_soundtracks(http, server.url, invocations)
        return [await run_soundtracks(http, server.url, invocations, pids)
                for _ in range(repeat)]


_WATCHED_RUNNER = """
import truss_chains as chains

from chainlets.runner import ChainRunner


@chains.mark_entrypoint("watched")
class Runner(ChainRunner):
    \"\"\"Revision {revision}.\"\"\"
"""


def measure_watch(saves: int) -> list[float]:
    """Seconds from saving an edit of a four-chainlet chain to serve reporting it reloaded
    (new processes ready, routing switched), in a throwaway project."""
    with tempfile.TemporaryDirectory() as root:
        chain = Path(root, "chains", "watched.py")
        chain.parent.mkdir()
        Path(root, "pyproject.toml").write_text("")
        chain.write_text(_WATCHED_RUNNER.format(revision=0))
        server = ServeProcess.start(chain, "--watch", ready_timeout=300)
        try:
            server.wait_for("watching", 30)
            took = []
            for revision in range(1, saves + 1):
                mark = len(server.lines)
                saved = time.monotonic()
                chain.write_text(_WATCHED_RUNNER.format(revision=revision))
                server.wait_for("reloaded ChainRunner, CodeRunner, MockGenerator, "
                                "OpenAIGenerator", 60, after=mark)
                took.append(time.monotonic() - saved)
                time.sleep(0.5)
        finally:
            server.stop()
    return took


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invocations", type=int, default=200)
    parser.add_argument("--latency-ms", type=float, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--starts", type=int, default=3, help="timed starts (median shown)")
    parser.add_argument("--hop-invocations", type=int, default=40)
    parser.add_argument("--saves", type=int, default=3, help="timed --watch reloads")
    parser.add_argument("--kill-requests", type=int, default=1000,
                        help="requests while the entrypoint is killed (0: skip this measure)")
    parser.add_argument("--kill-concurrency", type=int, default=50)
    parser.add_argument("--kill-only", action="store_true",
                        help="measure only the SIGKILLed entrypoint")
    args = parser.parse_args(argv)
    if args.kill_only:
        return _kill_only(args)
    print(f"serve benchmark: {RUNNER.relative_to(REPO)}, mock backend, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)

    # Startup: the first start builds when the sources changed since the last build.
    ServeProcess.start(RUNNER, ready_timeout=300).stop()
    starts = []
    for _ in range(args.starts):
        server = ServeProcess.start(RUNNER)
        starts.append(server.ready_wall_s or 0.0)
        server.stop()

    hop_server = ServeProcess.start(RUNNER, env={"CHAINRUNNER_MOCK_LATENCY_MS": "0"})
    try:
        hops = asyncio.run(measure_hops(hop_server.url, invocations=args.hop_invocations))
        generator = _chainlet_url(hop_server, "MockGenerator")
        bare = asyncio.run(direct_latency(generator, _GENERATION_REQUEST))
        readiness = asyncio.run(direct_latency(generator, None))
        instant = asyncio.run(_soundtracks_only(hop_server, args.invocations, args.repeat))
    finally:
        hop_server.stop()

    server = ServeProcess.start(RUNNER, env={"CHAINRUNNER_MOCK_LATENCY_MS": str(args.latency_ms)})
    try:
        loads, floors = asyncio.run(_load(server, args.invocations, args.repeat))
        memory = measure_memory(server)
        killed = asyncio.run(serve_faults.measure_kill(
            server.url, args.kill_requests, args.kill_concurrency)) if args.kill_requests else None
    finally:
        server.stop()

    reloads = measure_watch(args.saves) if args.saves else []

    wall = statistics.median(p.wall_s for p in loads)
    floor = statistics.median(p.wall_s for p in floors)
    errors = sum(p.failed for p in [*loads, *instant])
    calls = args.invocations * 9
    missed = []
    print(f"\nstartup to ready, 4 chainlets, build reused: median "
          f"{statistics.median(starts) if starts else float('nan'):.2f} s "
          f"(runs: {', '.join(f'{s:.2f}' for s in starts)}; target <= {TARGET_STARTUP_S} s)")
    if reloads:
        print(f"--watch, save to serving the new code, 3 chainlets: median "
              f"{statistics.median(reloads):.2f} s (runs: "
              f"{', '.join(f'{r:.2f}' for r in reloads)}; target <= {TARGET_RELOAD_S} s)")
    print(f"per hop entrypoint -> MockGenerator (0 ms model, {hops.samples} calls): "
          f"p50 {hops.p50_ms:.2f} ms, p99 {hops.p99_ms:.2f} ms (target p50 <= "
          f"{TARGET_HOP_P50_MS} ms)")
    print(f"  of which truss's server: the same predict straight from a lean client p50 "
          f"{bare.p50_ms:.2f} ms, p99 {bare.p99_ms:.2f} ms; its readiness GET p50 "
          f"{readiness.p50_ms:.2f} ms")
    print(f"{args.invocations} concurrent soundtrack invocations ({calls} model calls at "
          f"{args.latency_ms:.0f} ms), median of {args.repeat}: wall {wall:.2f} s, "
          f"errors {errors}")
    print(f"  vs critical path {CRITICAL_PATH_S:.2f} s: {wall / CRITICAL_PATH_S:.1f}x")
    print(f"  vs transport floor {floor:.2f} s ({args.invocations + calls} trivial requests, "
          f"same processes): {wall / floor:.2f}x (target <= {TARGET_FLOOR_RATIO}x)")
    instant_wall = statistics.median(p.wall_s for p in instant)
    print(f"  the same invocations with a 0 ms model (the hop measurement's processes): "
          f"wall {instant_wall:.2f} s, so {args.latency_ms:.0f} ms model latency adds "
          f"{wall - instant_wall:+.2f} s")
    print("  runs, wall s (CPU s of serve's processes): "
          + ", ".join(f"{a.wall_s:.2f} ({a.cpu_s:.2f}) vs floor {b.wall_s:.2f} ({b.cpu_s:.2f})"
                      for a, b in zip(loads, floors, strict=True)))
    print("memory per process (MB):        RSS     PSS     USS")
    for label, rss, pss, uss in memory:
        print(f"  {label:<26} {rss:7.1f} {pss:7.1f} {uss:7.1f}")
    if killed is not None:
        print("\n".join(serve_faults.report(killed)))
    if killed is not None and killed.failed > killed.concurrency:
        missed.append(f"{killed.failed} failed with the entrypoint killed > "
                      f"{killed.concurrency} in flight")
    if errors:
        missed.append(f"{errors} failed invocations")
    if starts and statistics.median(starts) > TARGET_STARTUP_S:
        missed.append(f"startup {statistics.median(starts):.2f} s > {TARGET_STARTUP_S} s")
    if reloads and statistics.median(reloads) > TARGET_RELOAD_S:
        missed.append(f"reload {statistics.median(reloads):.2f} s > {TARGET_RELOAD_S} s")
    if hops.p50_ms > TARGET_HOP_P50_MS:
        missed.append(f"hop p50 {hops.p50_ms:.2f} ms > {TARGET_HOP_P50_MS} ms")
    if wall / floor > TARGET_FLOOR_RATIO:
        missed.append(f"wall / transport floor {wall / floor:.2f} > {TARGET_FLOOR_RATIO}")
    for miss in missed:
        print(f"MISSED: {miss}")
    return 1 if missed else 0


def _kill_only(args: argparse.Namespace) -> int:
    server = ServeProcess.start(RUNNER, env={"CHAINRUNNER_MOCK_LATENCY_MS": str(args.latency_ms)},
                                ready_timeout=300)
    try:
        killed = asyncio.run(serve_faults.measure_kill(
            server.url, args.kill_requests, args.kill_concurrency))
    finally:
        server.stop()
    print("\n".join(serve_faults.report(killed)))
    return 1 if killed.failed > killed.concurrency else 0


if __name__ == "__main__":
    sys.exit(main())
