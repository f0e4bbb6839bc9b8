"""Kill at random moments: runner processes (benchmarks/runner_process.py) on one SQLite file are
SIGKILLed one after another at random times while they work through a batch of invocations,
then one is left to finish. Invariants: every invocation ends succeeded; every step's output
and every invocation's output equal an uninterrupted run's; no model call for a step starts
after that step's result was committed (a committed step is never called again)."""

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

from benchmarks.runner_process import answer
from chainlets.engine.models import RunOptions
from chainlets.engine.scheduler import run_chain
from chainlets.language.compiler import compile_chain
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.language.spec import ChainSpec
from chainlets.store import NewInvocation, State, Store, StoreSettings, open_store
from mocks.fake_generator import FakeGenerator

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
# A diamond and a tail: `b` and `c` run in parallel, so kills land mid-branch too.
CHAIN = {"handle": "diamond", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "a", "plugin": "mock", "prompt": "A {topic}"},
    {"handle": "b", "plugin": "mock", "prompt": "B {a}"},
    {"handle": "c", "plugin": "mock", "prompt": "C {a}"},
    {"handle": "d", "plugin": "mock", "prompt": "D {b} {c}"},
    {"handle": "e", "plugin": "mock", "prompt": "E {d}"}]}
OPTIONS = {"initial_backoff_s": 0, "max_backoff_s": 0}
KILLS, PER_KILL = 8, 3  # runners killed; invocations added before each starts
LEASE_S, LATENCY_S = 0.5, 0.3
SEED = int(os.environ.get("CHAINRUNNER_CRASH_SEED", time.time_ns() % 1_000_000))


class Runner:
    """One runner_process, started and killed by this test (by its pid)."""

    def __init__(self, url: str, call_log: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.runner_process", url, str(call_log), str(LEASE_S),
             str(LATENCY_S)], cwd=REPO, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()  # blocks until it serves (or dies)
        assert line.strip() == "ready", f"the runner did not start: {line!r}"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)
        assert self.process.stdout is not None
        self.process.stdout.close()


def _calls(call_log: Path) -> dict[tuple[str, str], list[float]]:
    """When each (step, prompt) call started, from the runners' log."""
    starts: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in call_log.read_text().splitlines():
        _, at, step, prompt = line.split(" ", 3)
        starts[step, prompt].append(float(at))
    return starts


async def _uninterrupted(topic: str) -> dict[str, str]:
    """Each step's output in a run nobody kills, with the runners' generator replies."""
    fake = FakeGenerator(default=lambda r: answer(r.messages[-1].content))
    result = await run_chain(compile_chain(ChainSpec.model_validate(CHAIN), DEFAULT_PLUGINS),
                             {"topic": topic}, {"mock": fake},
                             RunOptions.model_validate(OPTIONS))
    return {s.handle: s.output or "" for s in result.steps} | {"": result.output or ""}


async def _all_final(store: Store, ids: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        states = [(await store.get_invocation(i)).state for i in ids]
        if all(s not in (State.RUNNING, State.WAITING) for s in states):
            return
        assert time.monotonic() < deadline, f"not final after {timeout_s}s: {states}"
        await asyncio.sleep(0.1)


async def test_random_kills_lose_nothing_and_never_repeat_a_committed_step(
        tmp_path: Path) -> None:
    rng = random.Random(SEED)
    url, call_log = f"sqlite:///{tmp_path / 'crash.db'}", tmp_path / "calls.log"
    store = await open_store(StoreSettings(url=url, lease_s=LEASE_S))
    runner: Runner | None = None
    try:
        chain_id = (await store.create_chain(CHAIN)).chain_id
        topics, ids = [], []
        for kill in range(KILLS):
            # New work arrives before each runner starts, so that there is always some to
            # interrupt; the dead runner's invocations wait for their leases to expire.
            for n in range(PER_KILL):
                topics.append(f"<t{kill:02d}.{n}>")
                ids.append((await store.create_invocation(NewInvocation(
                    chain_id=chain_id, input={"topic": topics[-1]},
                    steps=["a", "b", "c", "d", "e"], options=OPTIONS))).invocation.invocation_id)
            runner = Runner(url, call_log)
            await asyncio.sleep(rng.uniform(0, LEASE_S + 3 * LATENCY_S))
            runner.kill()
        runner = Runner(url, call_log)
        await _all_final(store, ids, timeout_s=60)
        runner.kill()
        starts = _calls(call_log)
        rerun = 0
        for topic, invocation_id in zip(topics, ids, strict=True):
            invocation = await store.get_invocation(invocation_id)
            expected = await _uninterrupted(topic)
            where = f"seed {SEED}, invocation {invocation_id} ({topic})"
            assert invocation.state == State.SUCCEEDED, (where, invocation.statusMessage)
            assert invocation.output == expected[""], where
            for step in invocation.steps:
                assert step.state == State.SUCCEEDED and step.output == expected[step.handle], (
                    where, step)
                prompt = {"a": f"A {topic}", "b": f"B {expected['a']}",
                          "c": f"C {expected['a']}",
                          "d": f"D {expected['b']} {expected['c']}",
                          "e": f"E {expected['d']}"}[step.handle]
                called = starts[step.handle, prompt]
                assert called and step.finished_at is not None, (where, step.handle)
                committed = step.finished_at.timestamp()
                assert max(called) <= committed, (
                    f"{where}: step {step.handle} called at {max(called)}, after its result "
                    f"was committed (finished {committed})")
                rerun += len(called) - 1
        print(f"seed {SEED}: {KILLS} kills, {rerun} calls in flight at a kill made again")
        # Work is pending at every kill: that none of eight interrupted a call is (practically)
        # impossible, and would mean this test exercised nothing.
        assert rerun >= 1, f"seed {SEED}: no kill interrupted a model call"
    finally:
        if runner is not None:
            runner.kill()
        await store.close()
