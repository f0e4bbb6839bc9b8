"""Ctrl-C during `chainrunner run --json`: the partial result as the one JSON document, exit 130.

A real process and a real SIGINT: asyncio.run turns it into the run's cancellation, which the
engine records on the steps that were running.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.test_cli import REPO, SOUNDTRACK

pytestmark = pytest.mark.e2e


def test_sigint_prints_the_steps_done_and_the_rest_cancelled() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "CHAINRUNNER_LLM")}
    env["CHAINRUNNER_MOCK_LATENCY_MS"] = "700"
    process = subprocess.Popen(
        [sys.executable, "-m", "chainrunner.cli", "run", str(SOUNDTRACK), "-i", "topic=x",
         "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        cwd=REPO)
    try:
        # The backend notice comes just before the run starts; the first steps take 0.7 s.
        assert process.stderr is not None
        assert "offline mock backend" in process.stderr.readline()
        # Interrupted before its last level: the chain takes 4 levels of 0.7 s each.
        with pytest.raises(subprocess.TimeoutExpired):
            process.wait(timeout=1.2)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, err
    document = json.loads(out)  # exactly one JSON document
    states = {step["handle"]: step["state"] for step in document["steps"]}
    assert len(states) == 9 and set(states.values()) <= {"succeeded", "cancelled"}
    assert states["song-review-0"] == "cancelled"  # the last level never ran
    done = sum(state == "succeeded" for state in states.values())
    assert document["state"] == "cancelled"
    assert document["statusMessage"] == (f"interrupted (SIGINT): {done} of 9 steps finished, "
                                         "the rest are cancelled")
    for step in document["steps"]:
        if step["state"] == "cancelled":
            assert step["statusMessage"] == ("cancelled: the run was interrupted (SIGINT) "
                                             "before the step finished")
            assert step["error_kind"] == "cancelled"
    assert "Traceback" not in err
