"""`chainrunner serve` under a fault: its entrypoint SIGKILLed once during a burst of requests.

Part of `python -m benchmarks.serve` (`--kill-only` runs only this). 1,000 requests, 50 at a
time, go through the gateway, each a chain of three sequential model calls (50 ms mock model);
once a set number have been answered, the entrypoint process is SIGKILLed. A request that had
not reached it (connection refused, or routed while it restarts) is held by the gateway until
the restarted entrypoint answers, so only those in flight inside it may fail: at most the
concurrency. Reports how many failed, and why.
"""

import asyncio
import json
import os
import re
import signal
import statistics
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp

__all__ = ["KillRun", "failure_reason", "kill_payload", "measure_kill"]

ENTRYPOINT = "ChainRunner"


def kill_payload() -> dict[str, Any]:
    """Three model calls, each waiting for the one before: a request spends ~150 ms inside
    the entrypoint, so 50 are in flight there at any time."""
    return {"chain": {"handle": "faults", "steps": [
        {"handle": f"s{i}", "plugin": "gpt-3", "plugin_config": {"max_words": 3},
         "prompt": f"{{s{i - 1}}} next" if i else "start"} for i in range(3)]},
        "inputs": {}, "options": {"llm": "mock", "max_attempts": 1}}


def failure_reason(status: int, body: Any) -> str | None:
    """None for a request that succeeded; else its status and error, numbers (pids, ports)
    left out so that like failures count together."""
    if status == 200 and isinstance(body, dict) and body.get("state") == "succeeded":
        return None
    error = body.get("error") or body.get("statusMessage") if isinstance(body, dict) else body
    return f"{status} {re.sub(r'[0-9]+', 'N', str(error))[:160]}"


@dataclass(frozen=True)
class KillRun:
    requests: int
    concurrency: int
    killed_after: int  # answered requests when the entrypoint was killed
    failed: int
    reasons: Counter[str]
    wall_s: float
    p50_s: float
    slowest_s: float  # the requests held while it restarted are the slowest


def _entrypoint_pid(url: str) -> int:
    with urllib.request.urlopen(f"{url}/ready", timeout=10) as ready:
        return int(json.load(ready)["chainlets"][ENTRYPOINT]["pid"])


async def measure_kill(url: str, requests: int = 1000, concurrency: int = 50,
                       kill_after: int = 200) -> KillRun:
    """`requests` through the gateway at `url`, `concurrency` at a time; SIGKILL the
    entrypoint (a process this benchmark's serve started) after `kill_after` answers."""
    pid = _entrypoint_pid(url)
    payload = kill_payload()
    gate = asyncio.Semaphore(concurrency)
    answered = 0

    async def one(http: aiohttp.ClientSession) -> tuple[str | None, float]:
        nonlocal answered
        async with gate:
            started = time.perf_counter()
            try:
                async with http.post(url + "/run_remote", json=payload) as response:
                    reason = failure_reason(response.status,
                                            await response.json(content_type=None))
            except aiohttp.ClientError as exc:
                reason = f"client error {type(exc).__name__}"
            took = time.perf_counter() - started
        answered += 1
        if answered == kill_after:
            os.kill(pid, signal.SIGKILL)
        return reason, took

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        started = time.perf_counter()
        results = await asyncio.gather(*(one(http) for _ in range(requests)))
        wall = time.perf_counter() - started
    reasons = Counter(reason for reason, _ in results if reason is not None)
    times = [took for _, took in results]
    return KillRun(requests, concurrency, kill_after, sum(reasons.values()), reasons, wall,
                   statistics.median(times), max(times))


def report(run: KillRun) -> list[str]:
    lines = [f"{run.requests} requests at concurrency {run.concurrency}, entrypoint SIGKILLed "
             f"after {run.killed_after} answers: {run.failed} failed (target <= "
             f"{run.concurrency}, those in flight inside it); wall {run.wall_s:.2f} s, "
             f"p50 {run.p50_s * 1000:.0f} ms, slowest {run.slowest_s:.2f} s (held while it "
             "restarted)"]
    lines += [f"  {count} x {reason}" for reason, count in run.reasons.most_common()]
    return lines
