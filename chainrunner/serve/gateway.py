"""The gateway: Baseten's `POST /run_remote` contract in front of the entrypoint chainlet.

`POST /run_remote` takes a JSON object whose keys are the entrypoint's `run_remote` argument
names and answers with its return value; an error comes back with the entrypoint's status as
`{"error": message}` (`"problems": [...]` too for an invalid chain or inputs), no stack
frames (replies.py). A JSON body that is not UTF-8 or repeats a key in an object is answered
400 by the gateway itself, naming the problem (truss's parser would keep the last of duplicate
keys). `GET /ready` answers 200 once every chainlet is ready (503 before), with
each chainlet's state, and its pid and port only to a caller with the API key. With an API
key set, `/run_remote` wants `Authorization: Api-Key <key>` (401 otherwise), as a deployed
chain does; the gateway calls the entrypoint with serve's internal key.

While the entrypoint restarts (it refuses connections, or is not ready yet), a request is
held up to `restart_wait` seconds, then sent to the new process: a request that never reached
the entrypoint does not fail because it died. One the entrypoint was serving when it died
cannot be replayed safely: it is answered 503. A request the entrypoint has not answered after
`request_timeout` seconds is answered 504. `drain` (serve stopping) refuses new requests
and waits for those in flight.
"""

import asyncio
import contextlib
import errno
import hmac
import json
from typing import Protocol

import aiohttp
from aiohttp import web

from chainlets.errors import RequestError
from chainlets.language.jsontext import (
    DuplicateKeyError,
    duplicate_key_message,
    text_of,
    unique_keys,
)
from chainrunner.serve.errors import ChainletUnavailableError, PortInUseError
from chainrunner.serve.processes import PREDICT_PATH
from chainrunner.serve.replies import error_reply

__all__ = ["DEFAULT_REQUEST_TIMEOUT_S", "STOPPING", "Gateway", "Router"]

_FORWARDED_HEADERS = ("Content-Type", "X-Baseten-Request-Id")
_BINARY = "application/octet-stream"
_PARSE_INLINE_BYTES = 64 * 1024
_BODY = "the request body"
# Longer than a run's default deadline (RunOptions.deadline_s, 600 s): a run ends by its own
# deadline, with its result, before the gateway gives up on it.
DEFAULT_REQUEST_TIMEOUT_S = 660.0
STOPPING = "chainrunner serve is stopping: it takes no new requests"


class RoutedMember(Protocol):
    """What the gateway needs of a routed chainlet (supervisor.Member)."""

    @property
    def name(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def pid(self) -> int: ...
    def enter(self) -> None: ...
    def leave(self) -> None: ...
    def unavailable_reason(self) -> str: ...


class Router(Protocol):
    """What the gateway needs of the supervisor."""

    def route(self) -> RoutedMember:
        """The entrypoint to call; raises ChainletUnavailableError naming a dead chainlet."""
        ...

    def changed(self) -> asyncio.Event:
        """Set at the next change of routing (a chainlet exits, restarts or is swapped)."""
        ...

    def readiness(self) -> tuple[bool, dict[str, dict[str, object]]]: ...


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


def _json_problem(request: web.Request, body: bytes) -> str | None:
    """Why a JSON body is refused (400) before it reaches the entrypoint, whose parser would
    keep the last of duplicate keys: not UTF-8, or a key twice in one object. A body that is
    not JSON or nests too deep goes on: the entrypoint answers 400 for it."""
    if request.content_type == _BINARY:  # truss's msgpack form
        return None
    try:
        json.loads(text_of(body, _BODY, RequestError), object_pairs_hook=unique_keys)
    except RequestError as exc:
        return str(exc)
    except DuplicateKeyError as exc:
        return duplicate_key_message(_BODY, exc)
    except (ValueError, RecursionError):
        return None
    return None


async def _checked(request: web.Request, body: bytes) -> str | None:
    if len(body) < _PARSE_INLINE_BYTES:
        return _json_problem(request, body)
    # A large body is parsed off the loop, so that it stalls no other request.
    return await asyncio.to_thread(_json_problem, request, body)


class Gateway:
    """An aiohttp server on 127.0.0.1 that forwards `/run_remote` to the current entrypoint."""

    def __init__(self, router: Router | None = None, api_key: str | None = None, *,
                 internal_key: str | None = None, restart_wait: float = 10.0,
                 request_timeout: float | None = DEFAULT_REQUEST_TIMEOUT_S) -> None:
        self.router = router
        self._api_key = api_key
        self._upstream_auth = {"Authorization": f"Api-Key {internal_key}"} if internal_key \
            else {}
        self._restart_wait = restart_wait
        self._request_timeout = request_timeout
        self._http: aiohttp.ClientSession | None = None
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._grace: float | None = None  # set once draining: serve is stopping

    async def bind(self, port: int) -> int:
        """Listen on 127.0.0.1:`port` (0: any free port); returns the port."""
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/run_remote", self._run_remote)
        app.router.add_get("/ready", self._ready)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    f"port {port} on 127.0.0.1 is already in use (another `chainrunner serve`?):"
                    f" stop that process or choose another port with --port (0 picks a free "
                    f"one)") from exc
            raise
        self.port = int(self._runner.addresses[0][1])
        self._http = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=None), auto_decompress=False)
        return self.port

    @property
    def inflight(self) -> int:
        """Requests the gateway is serving now."""
        return self._inflight

    async def drain(self, grace: float) -> int:
        """Refuse new requests (503); wait up to `grace` seconds for those in flight to finish.
        Returns how many are still in flight."""
        self._grace = grace
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), grace)
        return self._inflight

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._http is not None:
            await self._http.close()

    def _authorized(self, request: web.Request) -> bool:
        if self._api_key is None:
            return True
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        return scheme == "Api-Key" and hmac.compare_digest(key.strip().encode(),
                                                           self._api_key.encode())

    async def _ready(self, request: web.Request) -> web.Response:
        if self.router is None or self._grace is not None:
            return web.json_response({"ready": False, "stopping": self._grace is not None,
                                      "chainlets": {}}, status=503)
        ready, chainlets = self.router.readiness()
        if not self._authorized(request):  # pids and ports are for serve's own user
            chainlets = {name: {"state": c["state"]} for name, c in chainlets.items()}
        return web.json_response({"ready": ready, "chainlets": chainlets},
                                 status=200 if ready else 503)

    async def _run_remote(self, request: web.Request) -> web.StreamResponse:
        if not self._authorized(request):
            return _error(401, "missing or wrong API key: send the header "
                               "`Authorization: Api-Key <key>` with the key serve was given")
        if self._grace is not None:
            return _error(503, STOPPING)
        if self.router is None or self._http is None:
            return _error(503, "the chain is still starting; retry shortly")
        self._inflight += 1
        self._idle.clear()
        try:
            body = await request.read()
            problem = await _checked(request, body)
            if problem is not None:
                return web.json_response({"error": problem, "problems": [problem]}, status=400)
            return await self._forward(request, body, self.router, self._http)
        finally:
            self._inflight -= 1
            if not self._inflight:
                self._idle.set()

    async def _forward(self, request: web.Request, body: bytes, router: Router,
                       http: aiohttp.ClientSession) -> web.StreamResponse:
        headers = {h: request.headers[h] for h in _FORWARDED_HEADERS if h in request.headers}
        headers.setdefault("Content-Type", "application/json")
        headers.update(self._upstream_auth)
        deadline = asyncio.get_running_loop().time() + self._restart_wait
        refused_by: int | None = None  # the pid of an entrypoint that refused the connection
        while True:
            changed = router.changed()  # taken before looking, so no change goes unseen
            try:
                member = router.route()
            except ChainletUnavailableError as exc:
                if await self._held(changed, deadline):
                    continue
                return _error(503, self._unavailable(str(exc)))
            if member.pid == refused_by:  # it died; serve has not seen its exit yet
                if await self._held(changed, deadline):
                    continue
                return _error(503, self._unavailable(member.unavailable_reason()))
            # Route and enter with no await in between: a --watch swap retires the old
            # entrypoint once its in-flight count drops to 0, so a request routed to it must
            # count at once.
            member.enter()
            try:
                async with http.post(member.url + PREDICT_PATH, data=body, headers=headers,
                                     timeout=aiohttp.ClientTimeout(
                                         total=self._request_timeout)) as upstream:
                    if upstream.content_length is None:
                        return await self._stream(request, upstream)
                    reply = await upstream.read()
                    if upstream.status >= 400:
                        reply = error_reply(reply) or reply
                    return web.Response(body=reply, status=upstream.status,
                                        content_type=upstream.content_type)
            except aiohttp.ClientConnectorError:  # nothing was sent: safe to send again
                refused_by = member.pid
            except TimeoutError:  # aiohttp's own timeouts derive from it
                return _error(504, f"the chain did not answer within {self._request_timeout:g}"
                                   " s (serve's --request-timeout); a run's `deadline_s` option "
                                   "ends it sooner, with the steps done so far")
            except aiohttp.ClientConnectionError:
                if self._grace is not None:
                    return _error(503, f"chainrunner serve stopped while this request was in "
                                       f"flight (it was still running after --grace "
                                       f"{self._grace:g}s)")
                return _error(503, f"{member.unavailable_reason()} (the request was in "
                                   "flight there and may have partly run)")
            finally:
                member.leave()

    async def _held(self, changed: asyncio.Event, deadline: float) -> bool:
        """Wait for the routing to change, until `deadline`; False if it did not (or serve is
        stopping)."""
        left = deadline - asyncio.get_running_loop().time()
        if left <= 0 or self._grace is not None:
            return False
        try:
            await asyncio.wait_for(changed.wait(), left)
        except TimeoutError:
            return False
        return self._grace is None

    def _unavailable(self, reason: str) -> str:
        if self._grace is not None:
            return STOPPING
        return (f"{reason} (held {self._restart_wait:g}s for it to come back; "
                "--restart-wait sets how long)")

    @staticmethod
    async def _stream(request: web.Request,
                      upstream: aiohttp.ClientResponse) -> web.StreamResponse:
        """A streaming `run_remote` (an async iterator): pass chunks on as they come."""
        response = web.StreamResponse(status=upstream.status)
        response.content_type = upstream.content_type
        await response.prepare(request)
        async for chunk in upstream.content.iter_any():
            await response.write(chunk)
        await response.write_eof()
        return response
