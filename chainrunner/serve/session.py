"""One `chainrunner serve` run: build, start the zygote and chainlets, open the gateway, stop."""

import asyncio
import contextlib
import os
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from chainrunner.serve.artifacts import Builder, ChainArtifacts
from chainrunner.serve.errors import ServeError
from chainrunner.serve.gateway import DEFAULT_REQUEST_TIMEOUT_S, Gateway
from chainrunner.serve.leases import hold, remove_stale_runs
from chainrunner.serve.supervisor import Supervisor
from chainrunner.serve.watch import watch_and_reload
from chainrunner.serve.zygote import LogSink, Zygote, preloadable

__all__ = ["Output", "ServeOptions", "serve_chain"]

_PROCESS_GRACE_S = 5.0  # from SIGTERM to SIGKILL, once no request is left


@dataclass(frozen=True)
class ServeOptions:
    source: Path
    port: int = 8000
    api_key: str | None = None
    watch: bool = False
    rebuild: bool = False
    startup_timeout: float = 60.0
    grace_s: float = 30.0  # for requests in flight when serve stops
    restart_wait_s: float = 10.0  # a request waits this long for a restarting entrypoint
    request_timeout_s: float | None = DEFAULT_REQUEST_TIMEOUT_S  # then the gateway answers 504


@dataclass(frozen=True)
class Output:
    """Where serve reports: chainlet log lines, its own notices, the ready line."""

    log: LogSink
    notify: Callable[[str], None]


async def serve_chain(options: ServeOptions, out: Output, stop: asyncio.Event,
                      on_ready: Callable[[str], None] | None = None,
                      zygote: Zygote | None = None, started: float | None = None) -> None:
    """Serve until `stop` is set; every process started is stopped before this returns.

    `zygote`, if given, is one launched earlier by the caller (this takes it over). Raises
    ServeError subclasses (PortInUseError, BuildError, ChainletStartError) when the chain
    cannot be served.
    """
    started = started or time.monotonic()
    env = dict(os.environ)
    # The zygote loads truss's server stack while the chain builds (or the cache is checked).
    zygote = zygote or Zygote.launch(env)
    # Serve's internal key: truss's `baseten_chain_api_key` secret of every chainlet, which
    # their stubs send; with an API key set, every chainlet wants it (_asgi.py).
    token = secrets.token_urlsafe(24)
    internal_auth = {"Authorization": f"Api-Key {token}"}
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(zygote.close)
        gateway = Gateway(api_key=options.api_key, internal_key=token,
                          restart_wait=options.restart_wait_s,
                          request_timeout=options.request_timeout_s)
        port = await gateway.bind(options.port)
        stack.push_async_callback(gateway.close)
        builder = Builder(options.source, log=out.log)
        stack.push_async_callback(builder.close)
        run_dir = builder.state_dir / "serve" / str(port)
        shutil.rmtree(run_dir, ignore_errors=True)
        stack.callback(shutil.rmtree, run_dir, ignore_errors=True)
        lease = run_dir / "lease.json"
        hold(lease, ())  # at once: says this serve is alive to one sweeping below
        remove_stale_runs(run_dir.parent)
        connected = asyncio.create_task(zygote.connect(out.log))
        stack.push_async_callback(_cancel, connected)

        async def start() -> tuple[ChainArtifacts, Supervisor]:
            artifacts = None if options.rebuild else builder.cached()
            if artifacts is None:
                out.notify(f"building {options.source} (truss chains push --dryrun, "
                           "truss image build-context)")
                artifacts = await builder.build()
            hold(lease, (c.context_dir for c in artifacts.chainlets.values()))
            if not options.watch:
                await builder.close()
            await zygote.preload(preloadable(artifacts.libraries))
            await connected
            http = await stack.enter_async_context(aiohttp.ClientSession(headers=internal_auth))
            supervisor = Supervisor(zygote, http, run_dir, env, token, log=out.log,
                                    notify=out.notify, startup_timeout=options.startup_timeout,
                                    require_token=options.api_key is not None)
            # After the gateway drained (below): SIGTERM finds no request left to finish, or
            # the grace is over and those left are not waited for again.
            stack.push_async_callback(lambda: supervisor.stop(
                0 if gateway.inflight else _PROCESS_GRACE_S))
            await supervisor.start(artifacts)
            await builder.commit(artifacts, lease, supervisor.contexts())
            return artifacts, supervisor

        # Ctrl-C during a build or a slow chainlet start stops serve now, not once ready: the
        # start is cancelled (what it started stops with it) and the stack closes the rest.
        starting = asyncio.create_task(start(), name="start")
        stopped = asyncio.create_task(stop.wait())
        await asyncio.wait([starting, stopped], return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if stop.is_set():
            await _cancel(starting)
            if not starting.cancelled():
                starting.result()  # a start that failed meanwhile still says why
            out.notify("stopping")
            return
        artifacts, supervisor = starting.result()
        gateway.router = supervisor
        if on_ready is not None:
            on_ready(f"chain `{artifacts.chain_name}` ready in {time.monotonic() - started:.1f}s:"
                     f" POST http://127.0.0.1:{port}/run_remote ("
                     + ", ".join(f"{n} :{m.process.port}" for n, m in supervisor.members.items())
                     + ")")
        waits: list[asyncio.Task[object]] = [asyncio.create_task(stop.wait()),
                                             asyncio.create_task(zygote.lost.wait())]
        if options.watch:
            watcher = asyncio.create_task(watch_and_reload(builder, supervisor, stop, out.notify,
                                                           lease))
            stack.push_async_callback(_cancel, watcher)
            waits.append(watcher)  # ends only if watching fails
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for task in waits[:2]:
            task.cancel()
        if zygote.lost.is_set():
            raise ServeError(f"{zygote.failure}; its chainlets are gone with it and serve "
                             "stopped: start it again")
        if options.watch and watcher.done() and not stop.is_set():
            raise ServeError(f"--watch stopped working: {watcher.exception()!r}; serve stopped")
        await _drain(gateway, options.grace_s, out.notify)


async def _drain(gateway: Gateway, grace: float, notify: Callable[[str], None]) -> None:
    """Stop taking requests; let those in flight finish, up to `grace` seconds."""
    if not gateway.inflight:
        notify("stopping")
    else:
        notify(f"stopping: no new requests; waiting up to {grace:g}s (--grace) for the "
               f"{gateway.inflight} in flight")
    left = await gateway.drain(grace)
    if left:
        notify(f"{left} request{'s' if left != 1 else ''} still in flight after {grace:g}s: "
               "stopping anyway (they are answered 503)")


async def _cancel(task: "asyncio.Task[Any]") -> None:
    """Cancel `task` if it still runs; a failure it already had was raised where awaited."""
    if task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
