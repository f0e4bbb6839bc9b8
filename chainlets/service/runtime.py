"""The service inside a runner process: the store, the worker, the outbox dispatcher and the
retention timer, started once, lazily, from the first request or readiness probe."""

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import BaseModel

from chainlets.errors import RequestError
from chainlets.language.plugins import PluginRegistry
from chainlets.service.models import parse_operation
from chainlets.service.operations import Operations
from chainlets.service.outbox import Dispatcher
from chainlets.service.policy import DeliveryPolicy
from chainlets.service.settings import ServiceLimits, env_number
from chainlets.service.tokens import TOKEN_SECRET_ENV, TaskTokens
from chainlets.service.webhooks import SECRET_ENV, WebhookSender, WebhookSigner
from chainlets.service.worker import Execute, Worker, WorkerSettings
from chainlets.store import Store, StoreSettings, open_store

__all__ = ["PURGE_EVERY_ENV", "Runtime", "ServiceConfig"]

log = logging.getLogger(__name__)

PURGE_EVERY_ENV = "CHAINRUNNER_PURGE_INTERVAL_S"
POLL_ENV = "CHAINRUNNER_WORKER_POLL_S"
MAX_RUNNING_ENV = "CHAINRUNNER_MAX_RUNNING"


@dataclass(frozen=True)
class ServiceConfig:
    """Everything the service reads from its environment (and truss secrets)."""

    store: StoreSettings
    limits: ServiceLimits
    delivery: DeliveryPolicy
    webhook_secret: str | None
    worker: WorkerSettings
    purge_every_s: float = 3600.0
    secrets: Mapping[str, str] = field(default_factory=dict)
    task_token_secret: str | None = None  # else task tokens derive from the webhook secret

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ,
                 secrets: Mapping[str, str] | None = None) -> "ServiceConfig":
        """Settings from `environ`; a truss secret of the same name, lower-cased
        (`chainrunner_database_url`, `chainrunner_webhook_secret`), wins where set."""
        merged = dict(environ)
        for name in ("CHAINRUNNER_DATABASE_URL", SECRET_ENV, TOKEN_SECRET_ENV):
            value = (secrets or {}).get(name.lower())
            if value:
                merged[name] = value
        store = StoreSettings.from_env(merged)
        return cls(
            store=store, limits=ServiceLimits.from_env(merged),
            delivery=DeliveryPolicy.from_env(merged),
            webhook_secret=merged.get(SECRET_ENV, "").strip() or None,
            worker=WorkerSettings(
                poll_s=env_number(merged, POLL_ENV, 1.0, minimum=0.01),
                max_running=int(env_number(merged, MAX_RUNNING_ENV, 10_000, minimum=1,
                                           integer=True)),
                heartbeat_s=store.lease_s / 3),
            purge_every_s=env_number(merged, PURGE_EVERY_ENV, 3600.0, minimum=1.0),
            task_token_secret=merged.get(TOKEN_SECRET_ENV, "").strip() or None)

    def task_tokens(self) -> TaskTokens | None:
        """What approval steps' task tokens are derived with (None: no secret is set)."""
        return TaskTokens.from_env({TOKEN_SECRET_ENV: self.task_token_secret or "",
                                    SECRET_ENV: self.webhook_secret or ""})


class Runtime:
    """One per runner process: `ensure_started` is idempotent and safe to call from every
    request and probe; everything runs on the server's event loop. `clock` tells the
    retention timer the time (give it the store's, when the store has an injected one)."""

    def __init__(self, config: ServiceConfig, execute: Execute, plugins: PluginRegistry, *,
                 store: Store | None = None, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self.config, self.execute, self.plugins = config, execute, plugins
        self._clock = clock
        self._given_store, self._http = store, http
        self._started: asyncio.Task[Operations] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.dispatcher: Dispatcher | None = None
        self.worker: Worker | None = None
        self.store: Store | None = None

    async def ensure_started(self) -> Operations:
        """The operations, once the store is open (migrated) and the worker and outbox run."""
        if self._started is None or (self._started.done() and self._started.exception()):
            self._started = asyncio.get_running_loop().create_task(self._start())
        return await asyncio.shield(self._started)

    async def _start(self) -> Operations:
        tokens = self.config.task_tokens()  # a malformed secret fails here, naming it
        store = self._given_store or await open_store(self.config.store)
        self.store = store
        worker = Worker(store, self.execute, lambda chain_id: operations.load_chain(chain_id),
                        settings=self.config.worker, tokens=tokens)
        self.worker = worker
        if self.config.webhook_secret is not None:
            signer = WebhookSigner(self.config.webhook_secret, source=SECRET_ENV)
            http = self._http or httpx.AsyncClient(limits=httpx.Limits(
                max_connections=max(100, self.config.delivery.max_in_flight)))
            self.dispatcher = Dispatcher(store, WebhookSender(http, signer, self.config.delivery),
                                         worker.owner, tokens=tokens)
        wake = self.dispatcher.wake if self.dispatcher is not None else _nothing
        worker.wake_outbox = wake
        operations = Operations(store, worker, self.plugins, self.config.limits,
                                wake_outbox=wake, tokens=tokens)
        worker.ensure_polling()
        if self.dispatcher is not None:
            self.dispatcher.ensure_running()
        self._tasks.append(asyncio.get_running_loop().create_task(self._purge_every()))
        return operations

    async def handle(self, body: Mapping[str, object]) -> BaseModel | None:
        """Parse and answer an operation (None: the body names no `op`)."""
        request = parse_operation(body, self.config.limits)
        if request is None:
            return None
        if request.op == "run_chain" and getattr(request, "callback_url", None) \
                and self.config.webhook_secret is None:
            raise RequestError(
                f"callback_url: callbacks are signed, and this server has no {SECRET_ENV} "
                "(a truss secret when deployed): omit callback_url, or have it set")
        operations = await self.ensure_started()
        return await operations.handle(request)

    async def _purge_every(self) -> None:
        while True:
            await asyncio.sleep(self.config.purge_every_s)
            if self.store is None:
                continue
            try:
                cutoff = self._clock() - timedelta(seconds=self.config.store.retention_s)
                counts = await self.store.purge(cutoff)
                if counts.invocations:
                    log.info("retention: purged %s invocations", counts.invocations)
            except Exception as exc:  # the next round tries again
                log.warning("retention: purge failed: %s", exc)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)  # a purge stops first
        if self.worker is not None:
            await self.worker.close()
        if self.dispatcher is not None:
            await self.dispatcher.close()
        if self.store is not None:
            with contextlib.suppress(Exception):
                await self.store.close()


def _nothing() -> None:
    pass
