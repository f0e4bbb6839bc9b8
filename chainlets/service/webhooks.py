"""Signed webhook delivery per Standard Webhooks: one attempt per call, never raising into the
caller; the outcome says whether it was delivered, when to retry, or why to stop."""

import asyncio
import base64
import binascii
import enum
import os
import random
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

import httpx
from pydantic import AwareDatetime, BaseModel, ConfigDict
from standardwebhooks import Webhook

from chainlets.errors import ConfigurationError
from chainlets.service.events import WebhookEvent
from chainlets.service.policy import DeliveryPolicy, parse_retry_after

__all__ = ["MIN_SECRET_BYTES", "SECRET_ENV", "Outcome", "OutcomeKind", "WebhookSender",
           "WebhookSigner", "decode_secret", "generate_secret"]

SECRET_ENV = "CHAINRUNNER_WEBHOOK_SECRET"
MIN_SECRET_BYTES = 24
_PREFIX = "whsec_"
_GENERATE = ("python -c \"import chainlets.service.webhooks as w; print(w.generate_secret())\"")
USER_AGENT = "chainrunner-webhooks/1"


def generate_secret() -> str:
    """A fresh `whsec_…` secret of 32 random bytes."""
    return _PREFIX + base64.b64encode(os.urandom(32)).decode()


def decode_secret(secret: str, where: str) -> bytes:
    """The key bytes of a `whsec_…` secret; ConfigurationError naming `where` otherwise."""
    fix = f"; generate one with: {_GENERATE}"
    if not secret.startswith(_PREFIX):
        raise ConfigurationError(f"{where} does not start with `{_PREFIX}`{fix}")
    encoded = secret[len(_PREFIX):]
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error:
        raise ConfigurationError(f"{where} is not `{_PREFIX}` followed by base64{fix}") from None
    if len(key) < MIN_SECRET_BYTES:
        raise ConfigurationError(f"{where} holds {len(key)} bytes; Standard Webhooks asks for at "
                                 f"least {MIN_SECRET_BYTES}{fix}")
    return key


class WebhookSigner:
    """Signs a body with each of one or more `whsec_…` secrets (more than one while rotating:
    receivers accept any matching signature)."""

    def __init__(self, secrets: str, source: str = "the webhook secret") -> None:
        words = secrets.split()
        if not words:
            raise ConfigurationError(f"{source} is empty; set it to a `{_PREFIX}…` secret; "
                                     f"generate one with: {_GENERATE}")
        # The message names the secret by position, never by value.
        self._keys = [Webhook(decode_secret(word, source if len(words) == 1
                                             else f"secret {i} of {source}"))
                      for i, word in enumerate(words, start=1)]

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "WebhookSigner":
        """The signer for $CHAINRUNNER_WEBHOOK_SECRET (space-separated secrets rotate)."""
        if not environ.get(SECRET_ENV, "").strip():
            raise ConfigurationError(
                f"{SECRET_ENV} is not set: callbacks are signed, so set it to a `{_PREFIX}…` "
                f"secret (a truss secret when deployed); generate one with: {_GENERATE}")
        return cls(environ[SECRET_ENV], source=SECRET_ENV)

    def headers(self, event_id: str, body: str, at: datetime) -> dict[str, str]:
        """The three Standard Webhooks headers for sending `body` at `at`."""
        at = at.astimezone(UTC)  # the library reads the timestamp's fields as UTC
        signatures = " ".join(key.sign(event_id, at, body) for key in self._keys)
        return {"webhook-id": event_id, "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signatures}


class OutcomeKind(enum.StrEnum):
    """What became of one delivery attempt."""

    DELIVERED = "delivered"
    """The receiver answered 2xx."""
    RETRY = "retry"
    """It failed; try again at `retry_at`."""
    GAVE_UP = "gave_up"
    """It failed and the retry period is over (or the URL can never work)."""
    GONE = "gone"
    """The receiver answered 410: send nothing more to this URL."""


class Outcome(BaseModel):
    """One attempt's result, for the outbox to record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: OutcomeKind
    detail: str
    retry_at: AwareDatetime | None = None
    status_code: int | None = None


def _utc_now() -> datetime:
    return datetime.now(UTC)


class WebhookSender:
    """Sends events to callback URLs with an injected `httpx.AsyncClient`, clock and jitter.

    At most `policy.max_in_flight` attempts run at once; give the client at least as many
    connections (httpx's default is 100).
    """

    def __init__(self, http: httpx.AsyncClient, signer: WebhookSigner,
                 policy: DeliveryPolicy | None = None, *,
                 clock: Callable[[], datetime] = _utc_now,
                 draw: Callable[[], float] = random.random) -> None:
        self._http = http
        self._signer = signer
        self.policy = policy or DeliveryPolicy()
        self._clock = clock
        self._draw = draw
        # Bounds attempts in flight, so a burst waits here, outside the attempt's timeout and
        # before its signature's timestamp, not in the HTTP client's pool (whose wait would
        # count against the timeout, and grows quadratically with the queue in httpcore).
        self._slots = asyncio.Semaphore(self.policy.max_in_flight)

    async def deliver(self, event: WebhookEvent, url: str, *, attempt: int = 1,
                      window_start: datetime | None = None) -> Outcome:
        """Make attempt number `attempt` (from 1) to send `event` to `url`.

        Retries are scheduled within `policy.give_up_after_s` of `window_start` (default: the
        event's timestamp). A receiver that is down, slow or failing yields an Outcome, never
        an exception; cancelling the caller still cancels the attempt.
        """
        async with self._slots:
            return await self._attempt(event, url, attempt, window_start)

    async def _attempt(self, event: WebhookEvent, url: str, attempt: int,
                       window_start: datetime | None) -> Outcome:
        body = event.body()
        headers = {"content-type": "application/json", "user-agent": USER_AGENT,
                   **self._signer.headers(event.id, body, self._clock())}
        timeout = self.policy.attempt_timeout_s
        retry_after: float | None = None
        status: int | None = None
        try:
            # httpx's timeout bounds each read; this bounds the whole attempt (a receiver
            # trickling bytes). The body is never read: only the status line matters.
            async with asyncio.timeout(timeout), self._http.stream(
                    "POST", url, content=body.encode(), headers=headers,
                    timeout=timeout) as response:
                status = response.status_code
                if 200 <= status < 300:
                    return Outcome(kind=OutcomeKind.DELIVERED, detail=f"HTTP {status}",
                                   status_code=status)
                if status == 410:
                    return Outcome(kind=OutcomeKind.GONE, status_code=status,
                                   detail="HTTP 410: the receiver asked for no more "
                                          "deliveries to this URL")
                detail = f"HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"),
                                                self._clock())
        except (TimeoutError, httpx.TimeoutException):
            detail = f"timed out after {timeout:g} s"
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            return Outcome(kind=OutcomeKind.GAVE_UP, detail=f"cannot send to {url}: {exc}")
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return self._after_failure(event, detail, status, attempt, window_start, retry_after)

    def _after_failure(self, event: WebhookEvent, detail: str, status: int | None,
                       attempt: int, window_start: datetime | None,
                       retry_after: float | None) -> Outcome:
        start = window_start or event.timestamp
        retry_at = self.policy.next_attempt_at(failures=attempt, window_start=start,
                                               now=self._clock(), draw=self._draw(),
                                               retry_after_s=retry_after)
        if retry_at is None:
            period = f"{self.policy.give_up_after_s:g} s (CHAINRUNNER_WEBHOOK_GIVE_UP_AFTER_S)"
            return Outcome(kind=OutcomeKind.GAVE_UP, status_code=status,
                           detail=f"gave up after {attempt} attempt{'s' * (attempt != 1)} "
                                  f"within {period}; the last got {detail}")
        if retry_after is not None:
            detail += f" (Retry-After: {retry_after:g} s)"
        return Outcome(kind=OutcomeKind.RETRY, detail=detail, retry_at=retry_at,
                       status_code=status)
