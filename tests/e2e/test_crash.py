"""Nothing lost when a runner dies: SIGKILL the entrypoint of `chainrunner serve` mid-chain
(serve restarts it; the new process resumes the invocation from its committed steps), and
SIGKILL a whole replica of two sharing one PostgreSQL database (the other takes its
invocations over). The fake OpenAI backend counts the calls per prompt: a committed step is
never called again. Real processes, real sockets, processes killed by the pids we started."""

import contextlib
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from benchmarks.harness import ServeProcess
from chainlets.engine.models import RunOptions, RunState
from chainlets.service.webhooks import generate_secret
from chainrunner.client import Client
from tests.e2e.fakes import FakeBackend, Loopback, Receiver
from tests.postgres import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
LEASE_S = 2.0  # short, so that a takeover comes soon; the default is 10 s
# Four steps in a row; the third is slow (the fake answers it after `slow_s`), so a kill
# after the second commits lands while the third's call is in flight.
FOUR_STEPS = {"handle": "four", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "one", "plugin": "openai", "prompt": "One {topic}"},
    {"handle": "two", "plugin": "openai", "prompt": "Two {one}"},
    {"handle": "three", "plugin": "openai", "prompt": "slow three {two}"},
    {"handle": "four", "plugin": "openai", "prompt": "Four {three}"}]}
OPTIONS = RunOptions(llm="openai", initial_backoff_s=0)
SECRET = generate_secret()
EVENTS = [("step.finished", h) for h in ("one", "two", "three", "four")] + [
    ("chain.finished", None)]
ENTRYPOINT = "ChainRunner"  # how serve names the entrypoint of chains/runner.py


def _uninterrupted_output(topic: str) -> str:
    """What the chain answers on the fake backend (each answer is `re: ` + the prompt)."""
    return f"re: Four re: slow three re: Two re: One {topic}"


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeBackend, int, Receiver, str]]:
    """The fake OpenAI backend, its port, a callback receiver and its URL."""
    loop, fake, receiver = Loopback(), FakeBackend(slow_s=2.0), Receiver(SECRET)
    port = loop.serve({"/v1/chat/completions": fake.completions})
    hook = f"http://127.0.0.1:{loop.serve({'/hook': receiver.hook})}/hook"
    try:
        yield fake, port, receiver, hook
    finally:
        loop.stop()


def _launch(database_url: str, backend_port: int) -> ServeProcess:
    return ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True, env={
        "CHAINRUNNER_DATABASE_URL": database_url, "CHAINRUNNER_LEASE_S": str(LEASE_S),
        "CHAINRUNNER_WEBHOOK_SECRET": SECRET,
        "CHAINRUNNER_WORKER_POLL_S": "0.2", "OPENAI_API_KEY": "sk-e2e-not-a-real-key",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{backend_port}/v1",
        "NO_PROXY": "127.0.0.1,localhost"})


def _entrypoint_pid(server: ServeProcess) -> int:
    chainlets: dict[str, dict[str, Any]] = httpx.get(f"{server.url}/ready", timeout=10).json()[
        "chainlets"]
    assert ENTRYPOINT in chainlets, sorted(chainlets)
    return int(chainlets[ENTRYPOINT]["pid"])


def _await(condition: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def _committed(client: Client, invocation_id: str, handle: str) -> bool:
    return any(s.handle == handle and s.state == RunState.SUCCEEDED
               for s in client.run_status(invocation_id).steps)


def _calls(fake: FakeBackend, topic: str) -> Counter[str]:
    """How often the backend was asked each step's prompt for `topic` (by the prompt's first
    word: One, Two, slow, Four)."""
    return Counter(p.split()[0] for p in fake.prompts if p.endswith(topic))


def test_a_killed_entrypoint_resumes_from_its_committed_steps(
        tmp_path: Path, backend: tuple[FakeBackend, int, Receiver, str]) -> None:
    fake, port, _, _ = backend
    server = _launch(f"sqlite:///{tmp_path / 'crash.db'}", port)
    try:
        server.await_ready(240)
        with Client(server.url, timeout=30) as client:
            topic = f"crash-{time.time_ns()}"
            ref = client.run_chain(chain=FOUR_STEPS, inputs={"topic": topic}, options=OPTIONS)
            _await(lambda: _committed(client, ref.invocation_id, "two"))
            entry = _entrypoint_pid(server)
            psutil.Process(entry).kill()  # the Runner chainlet this test's serve started
            server.wait_for(rf"chainlet `{ENTRYPOINT}` \(pid {entry}, .*killed by SIGKILL", 30)
            server.wait_for(rf"chainlet `{ENTRYPOINT}` restarted", 120)
            status = client.wait(ref.invocation_id, timeout_s=120)
        assert status.state == RunState.SUCCEEDED, status.statusMessage
        assert status.output == _uninterrupted_output(topic)
        calls = _calls(fake, topic)
        assert calls["One"] == 1 and calls["Two"] == 1  # committed: never called again
        assert calls["slow"] in (1, 2) and calls["Four"] == 1  # in flight at the kill: again
    finally:
        server.stop(signal.SIGTERM)


def _kill_tree(server: ServeProcess) -> None:
    """SIGKILL serve and every process it started (by pid), as a lost machine would die."""
    pids = [server.process.pid, *server.descendants()]
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    server.process.wait(30)
    _await(lambda: not ServeProcess.alive(pids), 30)


def _events(receiver: Receiver, invocation_id: str) -> list[tuple[str, str | None]]:
    return [(b["type"], b["step"]) for b in receiver.for_invocation(invocation_id)]


def test_a_replica_killed_whole_is_taken_over_by_another_on_one_postgresql_database(
        backend: tuple[FakeBackend, int, Receiver, str]) -> None:
    fake, port, receiver, hook = backend
    databases = fresh_database("chainrunner_crash")
    url = next(databases)
    first, second = _launch(url, port), _launch(url, port)
    try:
        first.await_ready(240)
        second.await_ready(240)
        topics = [f"takeover-{i}-{time.time_ns()}" for i in range(6)]
        with Client(first.url, timeout=30) as on_first, \
                Client(second.url, timeout=30) as on_second:
            # Four on the replica about to die; two on the survivor, both alive: each is run
            # by one replica only, and both replicas' outbox dispatchers drain one outbox.
            refs = [on_first.run_chain(chain=FOUR_STEPS, inputs={"topic": t}, options=OPTIONS,
                                       callback_url=hook) for t in topics[:4]]
            refs += [on_second.run_chain(chain=FOUR_STEPS, inputs={"topic": t},
                                         options=OPTIONS, callback_url=hook)
                     for t in topics[4:]]
            _await(lambda: all(_committed(on_second, r.invocation_id, "two") for r in refs))
            _kill_tree(first)
            finals = [on_second.wait(r.invocation_id, timeout_s=120) for r in refs]
            _await(lambda: all(_events(receiver, r.invocation_id)[-1:] == EVENTS[-1:]
                               for r in refs))
        for topic, status in zip(topics, finals, strict=True):
            assert status.state == RunState.SUCCEEDED, status.statusMessage
            assert status.output == _uninterrupted_output(topic)
            calls = _calls(fake, topic)
            assert calls["One"] == 1 and calls["Two"] == 1, calls  # committed by A: not again
            assert calls["Four"] == 1, calls
        for ref in refs[4:]:  # never near the kill: each event delivered exactly once
            assert _events(receiver, ref.invocation_id) == EVENTS
        for ref in refs[:4]:  # one in flight at the kill may come again (at least once)
            assert list(dict.fromkeys(_events(receiver, ref.invocation_id))) == EVENTS
        assert receiver.bad_signatures == 0
    finally:
        for server in (first, second):
            server.stop(signal.SIGTERM)
        for _ in databases:  # drops the database
            pass
