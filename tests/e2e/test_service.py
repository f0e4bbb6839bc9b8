"""The service end to end: `chainrunner serve` of the runner chain on a real database (SQLite
file; PostgreSQL where a server answers), a fake OpenAI-compatible backend and callback
receivers on loopback, and the package's own client. Real processes, real sockets."""

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.harness import ServeProcess
from chainlets.engine.models import RunOptions, RunState
from chainlets.errors import ConflictError, NotFoundError, RequestError
from chainlets.service.webhooks import generate_secret
from chainrunner.client import Client
from tests.e2e.fakes import FakeBackend, Loopback, Receiver
from tests.postgres import fresh_database

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
SECRET = generate_secret()
# The seed's chain shape: each step feeds the next; `openai` steps reach the fake backend.
SEED_CHAIN = {"handle": "seed", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "title", "plugin": "openai", "prompt": "A title about {topic}"},
    {"handle": "song", "plugin": "openai", "prompt": "A song called {title}"},
    {"handle": "review", "plugin": "openai", "prompt": "Review {song}"}]}
SLOW_CHAIN = {"handle": "slow", "inputs": [{"name": "topic"}], "steps": [
    {"handle": "quick", "plugin": "openai", "prompt": "Quick {topic}"},
    {"handle": "long", "plugin": "openai", "prompt": "slow {quick}"},
    {"handle": "after", "plugin": "openai", "prompt": "After {long}"}]}
OPTIONS = RunOptions(llm="openai", initial_backoff_s=0)


@pytest.fixture(scope="module")
def fakes() -> Iterator[tuple[Loopback, FakeBackend, Receiver, int, int]]:
    """The loop, the backend, a receiver failing its first two deliveries, and their ports."""
    loop = Loopback()
    backend, receiver = FakeBackend(), Receiver(SECRET, failures=2)
    backend_port = loop.serve({"/v1/chat/completions": backend.completions})
    hook_port = loop.serve({"/hook": receiver.hook})
    try:
        yield loop, backend, receiver, backend_port, hook_port
    finally:
        loop.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> Iterator[Client]:
    if request.param == "sqlite":
        databases: Iterator[str] = iter(
            [f"sqlite:///{tmp_path_factory.mktemp('db') / 'service.db'}"])
    else:
        databases = fresh_database("chainrunner_e2e")
    url = next(databases)
    backend_port = fakes[3]
    server = ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True, env={
        "CHAINRUNNER_DATABASE_URL": url, "CHAINRUNNER_WEBHOOK_SECRET": SECRET,
        "OPENAI_API_KEY": "sk-e2e-not-a-real-key",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{backend_port}/v1",
        "CHAINRUNNER_WEBHOOK_FIRST_RETRY_S": "0.2", "CHAINRUNNER_WEBHOOK_MAX_DELAY_S": "1",
        "CHAINRUNNER_WEBHOOK_JITTER": "0", "NO_PROXY": "127.0.0.1,localhost"})
    try:
        server.await_ready(240)
        with Client(server.url, timeout=30) as client:
            yield client
    finally:
        server.stop(signal.SIGTERM)
        for _ in databases:  # drops the PostgreSQL database
            pass


def _hook(fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> str:
    return f"http://127.0.0.1:{fakes[4]}/hook"


def _await(condition: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_the_seed_flow_create_run_poll_with_signed_callbacks(
        served: Client, fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> None:
    chain_id = served.create_chain(SEED_CHAIN).chain_id
    ref = served.run_chain(chain_id, inputs={"topic": "tea"}, callback_url=_hook(fakes),
                           options=OPTIONS)
    assert ref.state == RunState.RUNNING
    status = served.wait(ref.invocation_id, timeout_s=60)
    assert status.state == RunState.SUCCEEDED, status.statusMessage
    assert [s.handle for s in status.steps] == ["title", "song", "review"]
    assert status.step("title").output == "re: A title about tea"
    assert status.output == "re: Review re: A song called re: A title about tea"
    receiver = fakes[2]
    _await(lambda: len(receiver.for_invocation(ref.invocation_id)) == 4)
    bodies = receiver.for_invocation(ref.invocation_id)
    assert [(b["type"], b["step"], b["state"]) for b in bodies] == [
        ("step.finished", "title", "succeeded"), ("step.finished", "song", "succeeded"),
        ("step.finished", "review", "succeeded"), ("chain.finished", None, "succeeded")]
    assert bodies[-1]["chain_id"] == chain_id and receiver.bad_signatures == 0
    _await(lambda: all(e.delivery.state == "delivered"
                       for e in served.events(ref.invocation_id).events))


def test_json_inputs_through_the_client_are_stored_and_mapped_over(served: Client) -> None:
    chain = {"handle": "people", "steps": [
        {"handle": "greet", "plugin": "openai", "map": {"over": "people", "item": "who"},
         "prompt": "Hello {who}"}]}
    ref = served.run_chain(chain=chain, inputs={"people": ["Ann", {"name": "Bob"}]},
                           options=OPTIONS)
    status = served.wait(ref.invocation_id, timeout_s=60)
    assert status.state == RunState.SUCCEEDED, status.statusMessage
    assert status.input == {"people": ["Ann", {"name": "Bob"}]}
    assert json.loads(status.output or "") == ["re: Hello Ann", 're: Hello {"name": "Bob"}']
    assert status.step("greet[1]").backend == "openai"


def test_the_same_idempotency_key_returns_the_same_invocation(served: Client) -> None:
    key = f"order-{time.time_ns()}"
    first = served.run_chain(chain=SEED_CHAIN, inputs={"topic": "key"}, idempotency_key=key,
                             options=OPTIONS)
    again = served.run_chain(chain=SEED_CHAIN, inputs={"topic": "key"}, idempotency_key=key,
                             options=OPTIONS)
    assert again.invocation_id == first.invocation_id
    with pytest.raises(ConflictError):
        served.run_chain(chain=SEED_CHAIN, inputs={"topic": "other"}, idempotency_key=key,
                         options=OPTIONS)
    assert served.wait(first.invocation_id, timeout_s=60).state == RunState.SUCCEEDED


def test_unknown_ids_are_404_and_bad_arguments_400(served: Client) -> None:
    with pytest.raises(NotFoundError, match="inv_missing"):
        served.run_status("inv_missing")
    with pytest.raises(RequestError) as refused:
        served.invoke("list_invocations", limit=100_000)
    assert refused.value.problems == [
        "limit: 100000 is more than the largest page, 100 (CHAINRUNNER_MAX_PAGE_SIZE): ask for "
        "at most 100 and follow `next_cursor`"]


def test_cancel_mid_run_cancels_the_model_call(
        served: Client, fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> None:
    backend = fakes[1]
    topic = f"cancel-{time.time_ns()}"
    ref = served.run_chain(chain=SLOW_CHAIN, inputs={"topic": topic}, options=OPTIONS)
    _await(lambda: any(topic in p and "slow" in p for p in backend.prompts))
    assert served.cancel(ref.invocation_id).state == RunState.CANCELLED
    status = served.run_status(ref.invocation_id)
    assert status.state == RunState.CANCELLED
    assert [s.state for s in status.steps] == [RunState.SUCCEEDED, RunState.CANCELLED,
                                               RunState.CANCELLED]
    with pytest.raises(ConflictError):
        served.cancel(ref.invocation_id)
    time.sleep(1)
    assert not any(topic in p and "After" in p for p in backend.prompts)


def test_cancel_reaches_the_backend_through_the_generator_chainlet(
        served: Client, fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> None:
    backend = fakes[1]
    topic = f"hang-up-{time.time_ns()}"
    ref = served.run_chain(chain=SLOW_CHAIN, inputs={"topic": topic}, options=OPTIONS)
    _await(lambda: any(topic in p and "slow" in p for p in backend.prompts))
    served.cancel(ref.invocation_id)
    _await(lambda: any(topic in p for p in backend.disconnected), timeout_s=5)


def test_callbacks_reach_a_receiver_that_was_down_for_a_while(
        served: Client, fakes: tuple[Loopback, FakeBackend, Receiver, int, int]) -> None:
    loop = fakes[0]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    late = Receiver(SECRET)
    ref = served.run_chain(chain=SEED_CHAIN, inputs={"topic": "late"},
                           callback_url=f"http://127.0.0.1:{port}/hook", options=OPTIONS)
    assert served.wait(ref.invocation_id, timeout_s=60).state == RunState.SUCCEEDED
    _await(lambda: served.events(ref.invocation_id).events[0].delivery.attempts >= 2)
    loop.serve({"/hook": late.hook}, port=port)
    _await(lambda: len(late.bodies) == 4)
    assert [b["type"] for b in late.bodies][-1] == "chain.finished"
