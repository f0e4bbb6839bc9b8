"""The service through `chainrunner serve` (the runner chain as a real truss server process on a
SQLite file, a signed-callback receiver on loopback): `run_chain` latency one call at a time,
then `submitted` invocations sent at once, each followed to its final state and its
`chain.finished` callback."""

import asyncio
import signal
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.harness import ServeProcess
from benchmarks.service_inprocess import CHAIN
from chainlets.engine.models import RunState
from chainlets.service.webhooks import generate_secret
from chainrunner.client import AsyncClient
from tests.e2e.fakes import Loopback, Receiver

__all__ = ["Submission", "through_serve"]

REPO = Path(__file__).resolve().parents[1]
_FINAL = {RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED}


@dataclass(frozen=True)
class Submission:
    latency_p50_ms: float  # run_chain, one call at a time
    latency_p99_ms: float
    submitted: int  # sent at once
    accepted: int  # answered with an invocation id
    errors: int  # submissions refused or failed, and invocations not ending `succeeded`
    lost: int  # accepted but unknown to run_status, or not final by the deadline
    final: int
    callbacks: int  # accepted invocations whose `chain.finished` callback arrived
    bad_signatures: int
    drain_s: float  # from the first submission to the last callback


async def _measure(url: str, hook: str, receiver: Receiver, latency_calls: int,
                   submitted: int, deadline_s: float) -> Submission:
    async with AsyncClient(url, timeout=120) as client:
        chain_id = (await client.create_chain(CHAIN)).chain_id
        samples = []
        for _ in range(latency_calls):
            started = time.perf_counter()
            await client.run_chain(chain_id, callback_url=hook)
            samples.append((time.perf_counter() - started) * 1000)
        receiver.bodies.clear()
        started = time.perf_counter()
        refs = await asyncio.gather(*(client.run_chain(chain_id, callback_url=hook)
                                      for _ in range(submitted)), return_exceptions=True)
        ids = [r.invocation_id for r in refs if not isinstance(r, BaseException)]
        states: dict[str, RunState | None] = dict.fromkeys(ids)
        deadline = time.monotonic() + deadline_s
        while time.monotonic() < deadline:
            open_ = [i for i, s in states.items() if s not in _FINAL]
            for start in range(0, len(open_), 50):
                batch = open_[start:start + 50]
                answers = await asyncio.gather(*(client.run_status(i) for i in batch),
                                               return_exceptions=True)
                for invocation_id, answer in zip(batch, answers, strict=True):
                    if not isinstance(answer, BaseException):
                        states[invocation_id] = answer.state
            called = {b["invocation_id"] for b in receiver.bodies
                      if b["type"] == "chain.finished"}
            if all(s in _FINAL for s in states.values()) and called >= set(ids):
                break
            await asyncio.sleep(0.25)
        drain_s = time.perf_counter() - started
    final = sum(1 for s in states.values() if s in _FINAL)
    return Submission(
        latency_p50_ms=statistics.median(samples),
        latency_p99_ms=statistics.quantiles(samples, n=100)[98] if len(samples) > 1
        else samples[0],
        submitted=submitted, accepted=len(ids),
        errors=(submitted - len(ids)) + sum(1 for s in states.values()
                                            if s in _FINAL and s != RunState.SUCCEEDED),
        lost=len(ids) - final, final=final,
        callbacks=len({b["invocation_id"] for b in receiver.bodies
                       if b["type"] == "chain.finished"} & set(ids)),
        bad_signatures=receiver.bad_signatures, drain_s=drain_s)


def through_serve(folder: Path, *, latency_calls: int, submitted: int,
                  deadline_s: float = 300.0) -> Submission:
    """Start serve on a SQLite file in `folder`, measure, stop everything started here."""
    secret = generate_secret()
    loop, receiver = Loopback(), Receiver(secret)
    try:
        hook = f"http://127.0.0.1:{loop.serve({'/hook': receiver.hook})}/hook"
        server = ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True,
                                     env={"CHAINRUNNER_DATABASE_URL":
                                          f"sqlite:///{folder / 'serve.db'}",
                                          "CHAINRUNNER_WEBHOOK_SECRET": secret,
                                          "CHAINRUNNER_MOCK_LATENCY_MS": "0",
                                          "NO_PROXY": "127.0.0.1,localhost"})
        try:
            server.await_ready(240)
            return asyncio.run(_measure(server.url, hook, receiver, latency_calls, submitted,
                                        deadline_s))
        finally:
            server.stop(signal.SIGTERM)
    finally:
        loop.stop()
