"""The gateway in front of a fake entrypoint: auth, pass-through, unavailable chainlets."""

import asyncio
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from chainrunner.serve.errors import ChainletUnavailableError, PortInUseError
from chainrunner.serve.gateway import Gateway, RoutedMember

KEY = "sesame"


@dataclass
class FakeMember:
    url: str
    name: str = "Entry"
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

    def route(self) -> RoutedMember:
        if self.down is not None:
            raise ChainletUnavailableError(self.down)
        return self.member

    def readiness(self) -> tuple[bool, dict[str, object]]:
        return self.down is None, {"Entry": {"state": "ready" if self.down is None else "x"}}


async def _predict(request: web.Request) -> web.Response:
    """Echoes like truss: 400 with an error detail for a body it cannot parse."""
    body = await request.read()
    if body == b"{bad":
        return web.json_response({"error": "Input Parsing Error"}, status=400)
    return web.json_response(f"echo:{body.decode()}")


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_post("/v1/models/model:predict", _predict)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


@pytest.fixture
async def gateway(upstream: str) -> AsyncIterator[tuple[Gateway, FakeRouter]]:
    router = FakeRouter(FakeMember(upstream))
    gate = Gateway(router, api_key=KEY)
    await gate.bind(0)
    yield gate, router
    await gate.close()


async def _post(gate: Gateway, body: bytes, key: str | None = KEY) -> tuple[int, object]:
    headers = {"Content-Type": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Api-Key {key}"
    async with aiohttp.ClientSession() as http, http.post(
            f"http://127.0.0.1:{gate.port}/run_remote", data=body, headers=headers) as response:
        return response.status, await response.json()


async def test_run_remote_forwards_the_body_and_answers_the_entrypoint_reply(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    assert await _post(gate, b'{"names": []}') == (200, 'echo:{"names": []}')
    assert router.member.seen == [1] and router.member.inflight == 0


async def test_a_swap_while_the_body_uploads_sends_it_to_the_new_entrypoint(
        gateway: tuple[Gateway, FakeRouter], upstream: str) -> None:
    gate, router = gateway
    old, new = router.member, FakeMember(upstream, name="New")

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


async def test_a_dead_entrypoint_is_503_naming_it(gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    router.down = "chainlet `Entry` is not running (killed by SIGKILL)"
    assert await _post(gate, b"{}") == (503, {"error": router.down})


async def test_a_connection_lost_to_the_entrypoint_is_503_naming_it(
        gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        router.member.url = f"http://127.0.0.1:{probe.getsockname()[1]}"
    status, body = await _post(gate, b"{}")
    assert (status, body) == (503, {"error": "chainlet `Entry` dropped the connection"})
    assert router.member.inflight == 0


async def test_readiness_reflects_the_router(gateway: tuple[Gateway, FakeRouter]) -> None:
    gate, router = gateway
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{gate.port}/ready") as response:
            assert response.status == 200
        router.down = "restarting"
        async with http.get(f"http://127.0.0.1:{gate.port}/ready") as response:
            assert response.status == 503
            assert (await response.json())["ready"] is False


async def test_a_taken_port_is_named_with_the_fix(gateway: tuple[Gateway, FakeRouter]) -> None:
    taken = gateway[0].port
    with pytest.raises(PortInUseError, match=f"port {taken} on 127.0.0.1 is already in use "
                                             r"\(another `chainrunner serve`\?\): stop that"):
        await Gateway().bind(taken or 0)
