"""Approval and rerun end to end: the movie-pitch chain through `chainrunner serve` on SQLite
with a fake OpenAI backend; the task token still works after serve restarts while waiting;
a `pass` loops back to three new ideas and a second approval;
a rerun calls the backend only for its steps, and `chainrunner diff` shows what changed."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.harness import ServeProcess
from chainlets.engine.models import RunOptions, RunState
from chainlets.service.webhooks import generate_secret
from chainrunner.client import Client, ConflictError, RequestError
from tests.e2e.fakes import FakeBackend

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
MOVIE_PITCH = json.loads((REPO / "chains" / "specs" / "movie-pitch.json").read_text())
OPTIONS = RunOptions(llm="openai", initial_backoff_s=0)
TOKEN_SECRET = generate_secret()  # task tokens derive from it: the same across restarts


def _serve(database: str, backend_port: int) -> ServeProcess:
    server = ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True, env={
        "CHAINRUNNER_DATABASE_URL": database, "OPENAI_API_KEY": "sk-e2e-not-a-real-key",
        "CHAINRUNNER_TASK_TOKEN_SECRET": TOKEN_SECRET,
        "OPENAI_BASE_URL": f"http://127.0.0.1:{backend_port}/v1",
        "NO_PROXY": "127.0.0.1,localhost"})
    server.await_ready(240)
    return server


def _waiting(client: Client, invocation_id: str, step: str) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        status = client.run_status(invocation_id)
        if status.state == RunState.WAITING and [a.step for a in status.approvals] == [step]:
            [pending] = status.approvals
            assert "idea-2: re: " in pending.text
            return pending.task_token
        time.sleep(0.1)
    raise AssertionError(f"{invocation_id} never waited for step `{step}`'s approval")


def test_movie_pitch_waits_survives_a_restart_loops_on_pass_resumes_and_reruns(
        tmp_path: Path, backend: tuple[FakeBackend, int]) -> None:
    fake, port = backend
    database = f"sqlite:///{tmp_path / 'service.db'}"
    server = _serve(database, port)
    try:
        with Client(server.url, timeout=30) as client:
            ref = client.run_chain(chain=MOVIE_PITCH, inputs={"genre": "noir"},
                                   options=OPTIONS)
            token = _waiting(client, ref.invocation_id, "producer[0]")
        assert len(fake.prompts) == 3  # the three ideas, in parallel; no pitch yet
    finally:
        server.stop(signal.SIGTERM)
    server = _serve(database, port)  # the token survives the restart
    try:
        with Client(server.url, timeout=30) as client:
            assert client.run_status(ref.invocation_id).state == RunState.WAITING
            with pytest.raises(RequestError, match="not one of step `producer\\[0\\]`'s choices"):
                client.resume(token, output="idea-9")
            passed = client.resume(token, output="pass")  # loops back: three new ideas
            assert passed.state == RunState.SUCCEEDED
            with pytest.raises(ConflictError):
                client.resume(token, output="idea-1")
            second = _waiting(client, ref.invocation_id, "producer[1]")
            assert len(fake.prompts) == 6
            assert client.resume(second, output="idea-2").state == RunState.SUCCEEDED
            final = client.wait(ref.invocation_id, timeout_s=60)
            assert final.state == RunState.SUCCEEDED, final.statusMessage
            assert "The producer answered `idea-2`" in (final.output or "")
            assert final.step("producer").output == "idea-2"
            assert len(fake.prompts) == 7

            edited = {**MOVIE_PITCH, "steps": [MOVIE_PITCH["steps"][0], {
                **MOVIE_PITCH["steps"][1], "prompt": "Shorter: {producer} of {idea-2}"}]}
            rerun = client.rerun(ref.invocation_id, "one-page-pitch", chain=edited)
            again = client.wait(rerun.invocation_id, timeout_s=60)
            assert again.state == RunState.SUCCEEDED and len(fake.prompts) == 8
            assert again.rerun_of is not None and again.rerun_of.from_step == "one-page-pitch"
            done = subprocess.run(
                [sys.executable, "-m", "chainrunner.cli", "diff", ref.invocation_id,
                 rerun.invocation_id, "--json"], capture_output=True, text=True, check=False,
                cwd=REPO, env={**os.environ, "CHAINRUNNER_URL": server.url}, timeout=60)
            assert done.returncode == 0, done.stderr
            changed = {s["step"]: s["changed"] for s in json.loads(done.stdout)["steps"]}
            assert changed["one-page-pitch"] == ["prompt", "output"]
            assert changed["idea-1"] == changed["producer"] == []
    finally:
        server.stop(signal.SIGTERM)
