"""The gateway in front of a fake entrypoint: auth, pass-through, errors, restarts, draining."""

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from chainrunner.serve.errors import ChainletUnavailableError, PortInUseError
from chainrunner.serve.gateway import STOPPING, Gateway, RoutedMember, Router

KEY = "sesame"
INTERNAL = "internal-key"
TRUSS_ERROR_FRAME = {"filename": "/srv/packages/chainlets/runner.py", "lineno": 60,
                     "name": "run_remote", "line": "raise ChainRequestError.rejecting(exc)"}


@dataclass
class FakeMember:
    url: str
    name: str = "Entry"
    pid: int = 100
    inflight: int = 0
    seen: list[int] = field(default_factory=list)

    def enter(self) -> None:
        self.inflight += 1
        self.seen.append(self.inflight)

    def leave(self) -> None:
        self.inflight -= 1

    def unavailable_reason(self) -> str:
        return f"chainlet `{self.name}` dropped the connection"


@dataclass
class FakeRouter:
    member: FakeMember
    down: str | None = None
    change: asyncio.Event = field(default_factory=asyncio.Event)

    def route(self) -> RoutedMember:
        if self.down is not None:
            raise ChainletUnavailableError(self.down)
        return self.member

    def changed(self) -> asyncio.Event:
        return self.change

    def readiness(self) -> tuple[bool, dict[str, dict[str, object]]]:
        return self.down is None, {"Entry": {"state": "ready" if self.down is None else "x",
                                             "pid": self.member.pid, "port": 1234}}

    def switch(self, member: FakeMember | None = None, down: str | None = None) -> None:
        """The supervisor's view changed: a restart began or ended."""
        self.member, self.down = member or self.member, down
        self.change.set()
        self.change = asyncio.Event()


_: type[Router] = FakeRouter


@dataclass
class Upstream:
    """A fake truss server: its URL, the headers it saw, and a gate slow requests wait at."""

    url: str
    headers: list[dict[str, str]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)  # a request came
    release: asyncio.Event = field(default_factory=asyncio.Event)


def _truss_error(cls: str, module: str | None, message: str) -> dict[str, object]:
    return {"error": {"exception_cls_name": cls, "exception_module_name": module,
                      "exception_message": message, "user_stack_trace": [TRUSS_ERROR_FRAME]}}


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    app = web.Application()
    runner = web.AppRunner(app)
    state = Upstream("")

    async def predict(request: web.Request) -> web.StreamResponse:
        """Echoes, like truss answers errors, waits, or drops the connection, by body."""
        state.headers.append(dict(request.headers))
        state.arrived.set()
        body = await request.read()
        if body == b"{bad":
            return web.json_response({"error": "Input Parsing Error"}, status=400)
        if body == b'"reject"':
            document = {"error": "chain `c` is invalid (2 problems)",
                        "problems": ["step `a`: unknown plugin `x`", "step `b`: …"]}
            return web.json_response(_truss_error("ChainRequestError", "chainlets.http_errors",
                                                  json.dumps(document)), status=422)
        if body == b'"boom"':
            return web.json_response(_truss_error("ValueError", None, "boom"), status=500)
        if body == b'"slow"':
            await state.release.wait()
        if body == b'"drop"':
            assert request.transport is not None
            request.transport.close()  # as a process killed mid-request would
        return web.json_response(f"echo:{body.decode()}")

    app.router.add_post("/v1/models/model:predict", predict)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield state
    await runner.cleanup()


@pytest.fixture
async def gateway(upstream: Upstream) -> AsyncIterator[tuple[Gateway, FakeRouter]]:
    router = FakeRouter(FakeMember(upstream.url))
    gate = Gateway(router, api_key=KEY, internal_key=INTERNAL, restart_wait=5)
    await gate.bind(0)
    yield gate, router
    await gate.close()


def _nowhere() -> str:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


async def _post(gate: Gateway, body: bytes, key: str | None = KEY) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Api-Key {key}"
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{gate.port}/run_remote", data=body, headers=headers) as response:
        return response.status, await response.json()


async def _ready(gate: Gateway, key: str | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Api-Key {key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(
            f"http://127.0.0.1:{gate.port}/ready", headers=headers) as response:
        return response.status, await response.json()


async def test_run_remote_forwards_the_body_with_serve_s_internal_key(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream) -> None:
    gate, router = gateway
    assert await _post(gate, b'{"names": []}') == (200, 'echo:{"names": []}')
    assert router.member.seen == [1] and router.member.inflight == 0
    [headers] = upstream.headers
    assert headers["Authorization"] == f"Api-Key {INTERNAL}"  # never the client's own key


async def test_a_swap_while_the_body_uploads_sends_it_to_the_new_entrypoint(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream) -> None:
    gate, router = gateway
    old, new = router.member, FakeMember(upstream.url, name="New")

    async def slow_body() -> AsyncIterator[bytes]:
        yield b'{"names": '
        await asyncio.sleep(0.2)
        router.member = new  # --watch swapped the entrypoint: the old one may stop now
        yield b"[]}"

    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{gate.port}/run_remote", data=slow_body(),
            headers={"Authorization": f"Api-Key {KEY}"}) as response:
        assert (response.status, await response.json()) == (200, 'echo:{"names": []}')
    assert (old.seen, new.seen) == ([], [1])


@pytest.mark.parametrize("key", [None, "wrong"], ids=["missing", "wrong"])
async def test_without_the_key_it_is_401(gateway: tuple[Gateway, FakeRouter],
                                         key: str | None) -> None:
    status, body = await _post(gateway[0], b"{}", key=key)
    assert status == 401
    assert body == {"error": "missing or wrong API key: send the header "
                             "`Authorization: Api-Key <key>` with the key serve was given"}


async def test_a_truss_error_comes_back_with_its_status(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    assert await _post(gateway[0], b"{bad") == (400, {"error": "Input Parsing Error"})


async def test_a_rejected_chain_is_its_status_with_the_problems_and_no_frames(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    assert await _post(gateway[0], b'"reject"') == (422, {
        "error": "chain `c` is invalid (2 problems)",
        "problems": ["step `a`: unknown plugin `x`", "step `b`: …"]})


async def test_an_entrypoint_error_keeps_its_message_without_the_stack_trace(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    assert await _post(gateway[0], b'"boom"') == (500, {"error": "ValueError: boom"})


async def test_a_request_to_a_restarting_entrypoint_is_held_then_sent(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    router.down = "chainlet `Entry` is restarting"
    held = asyncio.create_task(_post(gate, b'"held"'))
    await asyncio.sleep(0.2)
    assert not held.done()
    router.switch(down=None)
    assert await held == (200, 'echo:"held"')


async def test_a_refused_connection_is_held_until_the_entrypoint_is_back(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream) -> None:
    gate, router = gateway
    router.member = FakeMember(_nowhere(), pid=101)  # died; serve has not seen it yet
    held = asyncio.create_task(_post(gate, b'"held"'))
    await asyncio.sleep(0.2)
    assert not held.done()  # the same dead process is not tried again and again
    router.switch(down="chainlet `Entry` is restarting")
    await asyncio.sleep(0.1)
    router.switch(FakeMember(upstream.url, pid=102), down=None)
    assert await held == (200, 'echo:"held"')


async def test_a_request_held_past_restart_wait_is_503_naming_the_option(
        upstream: Upstream) -> None:
    router = FakeRouter(FakeMember(upstream.url), down="chainlet `Entry` is restarting")
    gate = Gateway(router, restart_wait=0.2)
    await gate.bind(0)
    try:
        assert await _post(gate, b"{}", key=None) == (503, {
            "error": "chainlet `Entry` is restarting (held 0.2s for it to come back; "
                     "--restart-wait sets how long)"})
    finally:
        await gate.close()


async def test_a_connection_lost_in_flight_is_503_naming_the_chainlet(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    status, body = await _post(gate, b'"drop"')
    assert (status, body) == (503, {"error": "chainlet `Entry` dropped the connection (the "
                                             "request was in flight there and may have "
                                             "partly run)"})
    assert router.member.inflight == 0


async def test_draining_refuses_new_requests_and_lets_those_in_flight_finish(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream) -> None:
    gate, _ = gateway
    in_flight = asyncio.create_task(_post(gate, b'"slow"'))
    await upstream.arrived.wait()
    draining = asyncio.create_task(gate.drain(30))
    await asyncio.sleep(0)
    assert await _post(gate, b"{}") == (503, {"error": STOPPING})
    assert (await _ready(gate))[1]["stopping"] is True
    upstream.release.set()
    assert await in_flight == (200, 'echo:"slow"')
    assert await draining == 0


async def test_draining_gives_up_after_the_grace_and_says_so(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream) -> None:
    gate, _ = gateway
    in_flight = asyncio.create_task(_post(gate, b'"slow"'))
    await upstream.arrived.wait()
    assert await gate.drain(0.1) == 1  # serve now stops the entrypoint under it
    upstream.release.set()
    await in_flight


async def test_readiness_shows_pids_and_ports_only_with_the_key(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    assert await _ready(gate) == (200, {"ready": True, "chainlets": {"Entry": {"state": "ready"}}})
    assert await _ready(gate, KEY) == (200, {"ready": True, "chainlets": {
        "Entry": {"state": "ready", "pid": 100, "port": 1234}}})
    router.down = "restarting"
    status, body = await _ready(gate)
    assert (status, body["ready"]) == (503, False)


async def test_a_taken_port_is_named_with_the_fix(gateway: tuple[Gateway, FakeRouter]) -> None:
    taken = gateway[0].port
    with pytest.raises(PortInUseError, match=f"port {taken} on 127.0.0.1 is already in use "
                                             r"\(another `chainrunner serve`\?\): stop that"):
        await Gateway().bind(taken or 0)


@pytest.mark.parametrize(("body", "error"), [
    (b'{"chain": {"handle": "a", "handle": "b"}, "inputs": {}}',
     "the request body: key `handle` appears more than once in the JSON object with keys "
     "`handle`; a key may appear once: keep the one you mean"),
    ('{"inputs": {"topic": "café"}}'.encode("latin-1"),
     "the request body is not UTF-8 text: byte 0xe9 at line 1, column 26 is not valid UTF-8; "
     "save it as UTF-8"),
], ids=["duplicate-key", "not-utf8"])
async def test_a_body_the_entrypoint_would_misread_is_400_from_the_gateway(
        gateway: tuple[Gateway, FakeRouter], upstream: Upstream, body: bytes,
        error: str) -> None:
    assert await _post(gateway[0], body) == (400, {"error": error, "problems": [error]})
    assert upstream.headers == []  # it never reached the entrypoint


async def test_a_large_body_is_checked_off_the_loop_and_forwarded(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    body = json.dumps({"names": ["x" * 100] * 2_000}).encode()
    status, reply = await _post(gateway[0], body)
    assert status == 200 and reply == f"echo:{body.decode()}"
    duplicate = b'{"a": 1, ' + b" " * 100_000 + b'"a": 2}'
    assert (await _post(gateway[0], duplicate))[0] == 400


async def test_a_request_past_the_request_timeout_is_504_saying_so(upstream: Upstream) -> None:
    router = FakeRouter(FakeMember(upstream.url))
    gate = Gateway(router, api_key=KEY, internal_key=INTERNAL, request_timeout=0.2)
    await gate.bind(0)
    try:
        assert await _post(gate, b'"slow"') == (504, {"error": (
            "the chain did not answer within 0.2 s (serve's --request-timeout); a run's "
            "`deadline_s` option ends it sooner, with the steps done so far")})
        assert router.member.inflight == 0
        upstream.release.set()
        assert await _post(gate, b'"fast"') == (200, 'echo:"fast"')
    finally:
        await gate.close()
