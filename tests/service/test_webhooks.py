"""Signed webhook delivery: a real receiver verifies with `standardwebhooks`; every failure a
receiver can produce becomes an Outcome, never an exception."""

import asyncio
import base64
import json
import socket
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiohttp import web
from standardwebhooks import Webhook, WebhookVerificationError

from chainlets.engine.models import RunState
from chainlets.errors import ConfigurationError
from chainlets.service.events import EventType, WebhookEvent
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.webhooks import (
    SECRET_ENV,
    Outcome,
    OutcomeKind,
    WebhookSender,
    WebhookSigner,
    generate_secret,
)

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
EVENT = WebhookEvent(id="evt_0001", type=EventType.STEP_FINISHED, timestamp=T0,
                     invocation_id="inv_1", chain_id="ch_1", step="tell-joke",
                     state=RunState.SUCCEEDED, output="Why did the chef…", error=None)
URL = "https://receiver.example/hooks"


@dataclass
class Receiver:
    """A real HTTP receiver on 127.0.0.1 that answers from a script and records each request."""

    answers: list[tuple[int, dict[str, str]]]
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((dict(request.headers), await request.read()))
        status, headers = self.answers.pop(0) if self.answers else (200, {})
        return web.Response(status=status, headers=headers, text="ok")


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver(answers=[])
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    receiver.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hooks"
    try:
        yield receiver
    finally:
        await runner.cleanup()


async def test_a_real_receiver_verifies_the_signature(receiver: Receiver) -> None:
    async with httpx.AsyncClient() as http:
        outcome = await WebhookSender(http, WebhookSigner(SECRET)).deliver(EVENT, receiver.url)
    assert outcome == Outcome(kind=OutcomeKind.DELIVERED, detail="HTTP 200", status_code=200)
    [(headers, body)] = receiver.seen
    assert Webhook(SECRET).verify(body, headers) == json.loads(EVENT.body())
    assert headers["webhook-id"] == EVENT.id == json.loads(body)["id"]
    assert headers["Content-Type"] == "application/json"
    with pytest.raises(WebhookVerificationError):
        Webhook(generate_secret()).verify(body, headers)


async def test_a_failing_receiver_gets_the_same_id_and_body_on_retry(receiver: Receiver) -> None:
    receiver.answers = [(500, {}), (429, {"Retry-After": "30"}), (204, {})]
    async with httpx.AsyncClient() as http:
        sender = WebhookSender(http, WebhookSigner(SECRET), draw=lambda: 0.5)
        outcomes = [await sender.deliver(EVENT, receiver.url, attempt=n) for n in (1, 2, 3)]
    assert [o.kind for o in outcomes] == [OutcomeKind.RETRY, OutcomeKind.RETRY,
                                          OutcomeKind.DELIVERED]
    assert [o.detail for o in outcomes] == ["HTTP 500", "HTTP 429 (Retry-After: 30 s)",
                                            "HTTP 204"]
    assert len({headers["webhook-id"] for headers, _ in receiver.seen}) == 1
    assert len({body for _, body in receiver.seen}) == 1
    for headers, body in receiver.seen:
        Webhook(SECRET).verify(body, headers)


async def test_a_receiver_that_is_down_is_an_outcome_not_an_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with httpx.AsyncClient() as http:
        outcome = await WebhookSender(http, WebhookSigner(SECRET), draw=lambda: 0.5,
                                      clock=lambda: T0).deliver(
            EVENT, f"http://127.0.0.1:{port}/hooks")
    assert outcome.kind is OutcomeKind.RETRY
    assert outcome.detail.startswith("ConnectError")
    assert outcome.retry_at == T0 + timedelta(seconds=1)


Handler = Callable[[httpx.Request], Coroutine[None, None, httpx.Response]]


async def _deliver(handler: Handler, *, attempt: int = 1, now: datetime = T0,
                   policy: DeliveryPolicy | None = None, url: str = URL) -> Outcome:
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sender = WebhookSender(http, WebhookSigner(SECRET), policy, clock=lambda: now,
                               draw=lambda: 0.5)
        return await sender.deliver(EVENT, url, attempt=attempt)


def _answer(status: int, **headers: str) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, headers=headers)
    return handler


@pytest.mark.parametrize(("handler", "expected"), [
    (_answer(200), Outcome(kind=OutcomeKind.DELIVERED, detail="HTTP 200", status_code=200)),
    (_answer(202), Outcome(kind=OutcomeKind.DELIVERED, detail="HTTP 202", status_code=202)),
    (_answer(500), Outcome(kind=OutcomeKind.RETRY, detail="HTTP 500", status_code=500,
                           retry_at=T0 + timedelta(seconds=1))),
    (_answer(301, location="https://elsewhere.example/"),
     Outcome(kind=OutcomeKind.RETRY, detail="HTTP 301", status_code=301,
             retry_at=T0 + timedelta(seconds=1))),
    (_answer(429, **{"Retry-After": "90"}),
     Outcome(kind=OutcomeKind.RETRY, detail="HTTP 429 (Retry-After: 90 s)", status_code=429,
             retry_at=T0 + timedelta(seconds=90))),
    (_answer(503, **{"Retry-After": "Tue, 01 Dec 2026 09:05:00 GMT"}),
     Outcome(kind=OutcomeKind.RETRY, detail="HTTP 503 (Retry-After: 300 s)", status_code=503,
             retry_at=T0 + timedelta(minutes=5))),
    (_answer(410), Outcome(kind=OutcomeKind.GONE, status_code=410,
                           detail="HTTP 410: the receiver asked for no more deliveries to "
                                  "this URL")),
], ids=["200", "202", "500", "redirect-is-not-followed", "429-retry-after-seconds",
        "503-retry-after-date", "410-gone"])
async def test_each_answer_becomes_its_outcome(handler: Handler, expected: Outcome) -> None:
    assert await _deliver(handler) == expected


async def test_backoff_grows_with_the_attempt_number() -> None:
    outcome = await _deliver(_answer(500), attempt=4)
    assert outcome.retry_at == T0 + timedelta(seconds=8)


async def test_a_transport_timeout_is_retried() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("read timed out", request=request)
    outcome = await _deliver(handler)
    assert (outcome.kind, outcome.detail) == (OutcomeKind.RETRY, "timed out after 10 s")


async def test_a_receiver_that_never_answers_is_cut_off_at_the_attempt_timeout() -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")
    outcome = await _deliver(handler, policy=DeliveryPolicy(attempt_timeout_s=0.05))
    assert (outcome.kind, outcome.detail) == (OutcomeKind.RETRY, "timed out after 0.05 s")


async def test_a_burst_waits_for_a_slot_outside_the_attempt_timeout() -> None:
    in_flight, peak = 0, 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        for _ in range(5):
            await asyncio.sleep(0)
        in_flight -= 1
        return httpx.Response(204)
    policy = DeliveryPolicy(max_in_flight=3)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        sender = WebhookSender(http, WebhookSigner(SECRET), policy)
        outcomes = await asyncio.gather(*(sender.deliver(EVENT, URL) for _ in range(20)))
    assert {o.kind for o in outcomes} == {OutcomeKind.DELIVERED}
    assert peak == 3


async def test_it_gives_up_once_the_period_is_over() -> None:
    outcome = await _deliver(_answer(500), attempt=30, now=T0 + timedelta(hours=23, minutes=30))
    assert outcome == Outcome(
        kind=OutcomeKind.GAVE_UP, status_code=500,
        detail="gave up after 30 attempts within 86400 s (CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S); "
               "the last got HTTP 500")


async def test_a_url_that_can_never_work_gives_up_at_once() -> None:
    async with httpx.AsyncClient() as http:  # httpx rejects the scheme before any connection
        outcome = await WebhookSender(http, WebhookSigner(SECRET)).deliver(
            EVENT, "ftp://receiver.example/hooks")
    assert outcome.kind is OutcomeKind.GAVE_UP
    assert outcome.detail.startswith("cannot send to ftp://receiver.example/hooks")


async def test_headers_carry_the_attempt_time_and_a_verifiable_signature() -> None:
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(204)
    now = datetime.now(UTC)
    await _deliver(handler, now=now)
    [request] = seen
    assert request.headers["webhook-timestamp"] == str(int(now.timestamp()))
    assert request.headers["user-agent"].startswith("chainrunner-webhooks/")
    Webhook(SECRET).verify(request.content, dict(request.headers))


def test_rotating_secrets_sign_with_each() -> None:
    new = generate_secret()
    headers = WebhookSigner(f"{new} {SECRET}").headers(EVENT.id, EVENT.body(), datetime.now(UTC))
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, SECRET):
        Webhook(secret).verify(EVENT.body(), headers)


def test_the_secret_comes_from_the_environment() -> None:
    headers = WebhookSigner.from_env({SECRET_ENV: SECRET}).headers("e", "{}", datetime.now(UTC))
    Webhook(SECRET).verify("{}", headers)


@pytest.mark.parametrize(("environ", "message"), [
    ({}, f"{SECRET_ENV} is not set: callbacks are signed, so set it to a `whsec_…` secret"),
    ({SECRET_ENV: "  "}, f"{SECRET_ENV} is not set"),
    ({SECRET_ENV: "s3cret"}, f"{SECRET_ENV} does not start with `whsec_`; generate one with"),
    ({SECRET_ENV: "whsec_not*base64!"}, f"{SECRET_ENV} is not `whsec_` followed by base64"),
    ({SECRET_ENV: "whsec_c2hvcnQ="},
     f"{SECRET_ENV} holds 5 bytes; Standard Webhooks asks for at least 24"),
    ({SECRET_ENV: f"{SECRET} whsec_x"}, f"secret 2 of {SECRET_ENV} is not `whsec_` followed"),
], ids=["unset", "blank", "no-prefix", "not-base64", "too-short", "second-of-two"])
def test_a_malformed_secret_is_a_clear_error(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        WebhookSigner.from_env(environ)
    assert str(excinfo.value).startswith(message)
    assert "python -c" in str(excinfo.value)
    assert SECRET not in str(excinfo.value)


def test_outcome_round_trips_through_json() -> None:
    outcome = Outcome(kind=OutcomeKind.RETRY, detail="HTTP 500", retry_at=T0, status_code=500)
    assert Outcome.model_validate_json(outcome.model_dump_json()) == outcome
