"""Task tokens are derived from a server secret: the database (rows, outbox, the SQLite file
itself) holds none, so a leaked database resumes nothing; status and the callback still show the
token; rotation keeps old tokens showable; without a secret, approval chains are refused."""

import asyncio
from pathlib import Path

import httpx
import pytest

from benchmarks.runner_process import executor
from chainlets.engine.models import RunState
from chainlets.errors import ConfigurationError, NotFoundError, RequestError
from chainlets.language.plugins import DEFAULT_PLUGINS
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.runtime import Runtime, ServiceConfig
from chainlets.service.settings import ServiceLimits
from chainlets.service.tokens import TOKEN_SECRET_ENV, TaskTokens, hash_token
from chainlets.service.webhooks import SECRET_ENV, decode_secret, generate_secret
from chainlets.service.worker import WorkerSettings
from chainlets.store import MemoryStore, StoreSettings, open_store
from mocks.fake_generator import FakeGenerator
from tests.service.test_approval import CHAIN, waiting
from tests.service.test_operations import FAST, SECRET, Harness, Receiver


def _config(webhook_secret: str | None, token_secret: str | None = None) -> ServiceConfig:
    return ServiceConfig(
        store=StoreSettings(), limits=ServiceLimits(),
        delivery=DeliveryPolicy(first_retry_s=0.01, jitter=0, max_delay_s=0.02),
        webhook_secret=webhook_secret, task_token_secret=token_secret,
        worker=WorkerSettings(poll_s=0.02, write_delay_s=0.01, heartbeat_s=0.1))


def _every_byte(folder: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(folder.iterdir()))


async def test_the_database_file_holds_no_token_yet_status_and_the_callback_show_it(
        tmp_path: Path) -> None:
    database = tmp_path / "leak.db"
    store = await open_store(StoreSettings(url=f"sqlite:///{database}", lease_s=0.3))
    receiver = Receiver()
    fake = FakeGenerator(default=lambda r: f"<{r.step}>")
    runtime = Runtime(_config(SECRET), executor(fake), DEFAULT_PLUGINS, store=store,
                      http=httpx.AsyncClient(transport=httpx.MockTransport(receiver)))
    harness = Harness(runtime, store, fake, receiver, None)  # type: ignore[arg-type]
    try:
        ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST,
                               callback_url="https://hooks.example/cr")
        [pending] = (await waiting(harness, ref.invocation_id)).approvals
        token = pending.task_token
        [sent] = [b for b in await harness.delivered(3) if b["type"] == "step.waiting"]
        assert sent["task_token"] == token and "task_token_seal" not in sent
        events = await harness.op("events", invocation_id=ref.invocation_id)
        assert [e.task_token for e in events.events if e.type == "step.waiting"] == [token]
        stored = await asyncio.to_thread(_every_byte, tmp_path)  # the file and its WAL
        assert token.encode() not in stored  # neither the step row nor the outbox row
        assert hash_token(token).encode() in stored  # what resume looks it up by
        other = TaskTokens([decode_secret(generate_secret(), "test")])
        invocation = await store.get_invocation(ref.invocation_id)
        [approve] = [s for s in invocation.steps if s.handle == "approve"]
        assert approve.approval is not None and approve.approval.seal is not None
        with pytest.raises(ConfigurationError, match="a secret no longer set"):
            other.reveal(ref.invocation_id, "approve", approve.approval.seal)
        resumed = await harness.op("resume", task_token=token, output="greenlight")
        assert resumed.state == RunState.SUCCEEDED
    finally:
        await runtime.close()


async def test_a_token_of_the_right_hash_but_another_seal_is_not_found(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    await waiting(harness, ref.invocation_id)
    forged = "x" * 43  # its hash is planted where the real one was: the derivation refuses it
    [approve] = [s for s in harness.store._steps[ref.invocation_id].values()
                 if s["handle"] == "approve"]
    harness.store._tokens[hash_token(forged)] = harness.store._tokens.pop(approve["token_hash"])
    approve["token_hash"] = hash_token(forged)
    with pytest.raises(NotFoundError, match="task_token: no step waits on this token"):
        await harness.op("resume", task_token=forged, output="greenlight")


def test_rotation_shows_old_tokens_and_a_removed_secret_is_named() -> None:
    old, new = generate_secret(), generate_secret()
    before = TaskTokens.from_env({SECRET_ENV: old})
    assert before is not None
    token, seal = before.mint("inv_1", "approve")
    rotated = TaskTokens.from_env({TOKEN_SECRET_ENV: f"{new} {old}", SECRET_ENV: "ignored"})
    assert rotated is not None
    assert rotated.reveal("inv_1", "approve", seal) == token
    assert rotated.matches(token, "inv_1", "approve", seal)
    assert not rotated.matches(token[:-1] + ("A" if token[-1] != "A" else "B"), "inv_1",
                               "approve", seal)
    assert rotated.mint("inv_1", "approve")[1].split(".")[0] != seal.split(".")[0]
    gone = TaskTokens.from_env({TOKEN_SECRET_ENV: new})
    assert gone is not None
    with pytest.raises(ConfigurationError, match=f"list that secret again after the current "
                                                 f"one in {TOKEN_SECRET_ENV}"):
        gone.reveal("inv_1", "approve", seal)
    assert TaskTokens.from_env({}) is None
    with pytest.raises(ConfigurationError, match=TOKEN_SECRET_ENV):
        TaskTokens.from_env({TOKEN_SECRET_ENV: "not-a-secret"})


def test_the_token_secret_comes_from_the_environment_or_a_truss_secret() -> None:
    secret = generate_secret()
    assert ServiceConfig.from_env({TOKEN_SECRET_ENV: secret}).task_token_secret == secret
    config = ServiceConfig.from_env({}, secrets={TOKEN_SECRET_ENV.lower(): secret})
    assert config.task_token_secret == secret and config.task_tokens() is not None
    assert ServiceConfig.from_env({}).task_tokens() is None


async def test_without_a_secret_an_approval_chain_is_refused_naming_both_variables() -> None:
    fake = FakeGenerator(default=lambda r: f"<{r.step}>")
    runtime = Runtime(_config(None), executor(fake), DEFAULT_PLUGINS, store=MemoryStore())
    try:
        with pytest.raises(RequestError, match=f"step `approve` waits for approval, and human "
                                               f"approval needs a secret .* set "
                                               f"{TOKEN_SECRET_ENV} or {SECRET_ENV}"):
            await runtime.handle({"op": "run_chain", "chain": CHAIN,
                                  "inputs": {"topic": "tea"}})
        plain = {"handle": "plain", "steps": [CHAIN["steps"][0]], "inputs": CHAIN["inputs"]}
        ref = await runtime.handle({"op": "run_chain", "chain": plain,
                                    "inputs": {"topic": "tea"}, "options": FAST})
        assert ref is not None  # chains without approval steps need no secret
    finally:
        await runtime.close()


async def test_a_replica_without_the_secret_names_it_instead_of_hiding_the_approval(
        harness: Harness) -> None:
    ref = await harness.op("run_chain", chain=CHAIN, inputs={"topic": "tea"}, options=FAST)
    await waiting(harness, ref.invocation_id)
    fake = FakeGenerator(default=lambda r: f"<{r.step}>")
    bare = Runtime(_config(None), executor(fake), DEFAULT_PLUGINS, store=harness.store)
    try:
        with pytest.raises(ConfigurationError, match=f"step `approve`: its task token is derived "
                                                     f"from {TOKEN_SECRET_ENV} or {SECRET_ENV}"):
            await bare.handle({"op": "run_status", "invocation_id": ref.invocation_id})
    finally:
        await bare.close()
