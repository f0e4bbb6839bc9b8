"""Human approval across two `chainrunner serve` replicas on one PostgreSQL database: an
invocation started on A waits for approval and is resumed through B; another waits while A's
whole process tree is SIGKILLed, its token still resumes it through B, and B finishes it
without calling any committed step again. The fake OpenAI backend counts the calls."""

import contextlib
import json
import signal
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from benchmarks.harness import ServeProcess
from chainlets.engine.models import RunOptions, RunState
from chainlets.service.webhooks import generate_secret
from chainrunner.client import Client, ConflictError
from tests.e2e.fakes import FakeBackend
from tests.postgres import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
MOVIE_PITCH = json.loads((REPO / "chains" / "specs" / "movie-pitch.json").read_text())
OPTIONS = RunOptions(llm="openai", initial_backoff_s=0, deadline_s=3600)
TOKEN_SECRET = generate_secret()  # every replica derives task tokens from the same secret


def _launch(database_url: str, backend_port: int) -> ServeProcess:
    return ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True, env={
        "CHAINRUNNER_DATABASE_URL": database_url, "CHAINRUNNER_LEASE_S": "2",
        "CHAINRUNNER_WORKER_POLL_S": "0.2", "CHAINRUNNER_TASK_TOKEN_SECRET": TOKEN_SECRET,
        "OPENAI_API_KEY": "sk-e2e-not-a-real-key",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{backend_port}/v1",
        "NO_PROXY": "127.0.0.1,localhost"})


def _token(client: Client, invocation_id: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.run_status(invocation_id)
        if status.state == RunState.WAITING:
            [pending] = status.approvals
            assert pending.step == "producer[0]"  # the loop's first round
            return pending.task_token
        time.sleep(0.1)
    raise AssertionError(f"{invocation_id} never waited for its approval")


def _calls(fake: FakeBackend, genre: str) -> Counter[str]:
    """How often the backend was asked for an idea and for the pitch, for `genre`."""
    return Counter("idea" if p.startswith("You are a screenwriter") else "pitch"
                   for p in fake.prompts if genre in p)


def _kill_tree(server: ServeProcess) -> None:
    """SIGKILL serve and every process it started (by pid), as a lost machine would die."""
    pids = [server.process.pid, *server.descendants()]
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(pid).kill()
    server.process.wait(30)
    deadline = time.monotonic() + 30
    while ServeProcess.alive(pids):
        assert time.monotonic() < deadline, "killed processes still alive"
        time.sleep(0.05)


def test_an_approval_started_on_one_replica_resumes_through_the_other_even_after_a_kill(
        backend: tuple[FakeBackend, int]) -> None:
    fake, port = backend
    databases = fresh_database("chainrunner_approval")
    url = next(databases)
    first, second = _launch(url, port), _launch(url, port)
    try:
        first.await_ready(240)
        second.await_ready(240)
        genres = [f"noir-{time.time_ns()}", f"western-{time.time_ns()}"]
        with Client(first.url, timeout=30) as on_a, Client(second.url, timeout=30) as on_b:
            # 1. Started on A, answered through B: whichever replica holds it goes on.
            ref = on_a.run_chain(chain=MOVIE_PITCH, inputs={"genre": genres[0]},
                                 options=OPTIONS)
            token = _token(on_a, ref.invocation_id)
            assert on_b.resume(token, output="idea-2").state == RunState.SUCCEEDED
            with pytest.raises(ConflictError):
                on_a.resume(token, output="idea-1")  # single use, whichever replica asks
            final = on_b.wait(ref.invocation_id, timeout_s=60)
            assert final.state == RunState.SUCCEEDED, final.statusMessage
            assert "The producer answered `idea-2`" in (final.output or "")

            # 2. Waiting when A dies whole: the token still resumes it, through B.
            killed = on_a.run_chain(chain=MOVIE_PITCH, inputs={"genre": genres[1]},
                                    options=OPTIONS)
            token = _token(on_a, killed.invocation_id)
            before = on_a.run_status(killed.invocation_id)
            _kill_tree(first)
            assert on_b.resume(token, output="idea-3").state == RunState.SUCCEEDED
            after = on_b.wait(killed.invocation_id, timeout_s=60)
        assert after.state == RunState.SUCCEEDED, after.statusMessage
        assert "The producer answered `idea-3`" in (after.output or "")
        for handle in ("idea-1[0]", "idea-2[0]", "idea-3[0]"):  # committed on A: not again
            assert after.step(handle).output == before.step(handle).output
        for genre in genres:
            assert _calls(fake, genre) == {"idea": 3, "pitch": 1}
    finally:
        for server in (first, second):
            server.stop(signal.SIGTERM)
        for _ in databases:  # drops the database
            pass
