"""The outbox dispatcher: delivers callback events from the store's outbox rows, in order per
invocation, at least once; a receiver that fails only delays its own invocation's events."""

import asyncio
import contextlib
import logging

from chainlets.service.events import WebhookEvent
from chainlets.service.tokens import TaskTokens, reveal_event
from chainlets.service.webhooks import OutcomeKind, WebhookSender
from chainlets.store import EventClaim, Store

__all__ = ["Dispatcher"]

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims due events (the store hands out only the earliest undelivered one of each
    invocation), sends each with `sender`, and records the outcome; woken at once when a new
    event is written here (`wake`), else it looks every `poll_s` (events of other replicas,
    retries coming due, events left by a crash)."""

    def __init__(self, store: Store, sender: WebhookSender, owner: str, *, poll_s: float = 0.5,
                 batch: int = 100, tokens: TaskTokens | None = None) -> None:
        self.store, self.sender, self.owner, self.tokens = store, sender, owner, tokens
        self.poll_s, self.batch = poll_s, batch
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()

    def wake(self) -> None:
        self._wake.set()

    def ensure_running(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._loop(),
                                                                name="chainrunner-outbox")

    async def _loop(self) -> None:
        while True:
            self._wake.clear()
            try:
                claimed = await self.dispatch_once()
            except Exception as exc:  # the database may be down for a while: keep trying
                log.warning("outbox: claiming events failed: %s", exc)
                claimed = 0
            if claimed:
                continue  # each delivery frees its invocation's next event: look again
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_s)

    async def dispatch_once(self) -> int:
        """Claim due events and start sending each; returns how many were claimed."""
        claims = await self.store.claim_events(self.owner, limit=self.batch)
        for claim in claims:
            task = asyncio.get_running_loop().create_task(self.send(claim))
            self._sending.add(task)
            task.add_done_callback(self._sent)
        return len(claims)

    def _sent(self, task: asyncio.Task[None]) -> None:
        self._sending.discard(task)
        self._wake.set()  # its invocation's next event may be due now

    async def send(self, claim: EventClaim) -> None:
        """One delivery attempt, its outcome recorded (never raises for the receiver's sake)."""
        event = claim.event
        if event.url is None:
            return
        try:
            body = WebhookEvent.model_validate(reveal_event(event.body(), self.tokens))
            outcome = await self.sender.deliver(body, event.url, attempt=event.attempts + 1,
                                                window_start=event.window_start)
            if outcome.kind is OutcomeKind.DELIVERED:
                await self.store.event_delivered(claim)
            else:
                retry_at = outcome.retry_at if outcome.kind is OutcomeKind.RETRY else None
                await self.store.event_failed(claim, error=outcome.detail, retry_at=retry_at,
                                              disable_url=outcome.kind is OutcomeKind.GONE)
        except Exception as exc:  # left claimed: the claim lapses and it is sent again
            log.warning("outbox: event %s: %s", event.event_id, exc)

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._sending) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
