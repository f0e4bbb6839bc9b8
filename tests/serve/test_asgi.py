"""The ASGI layer in front of every chainlet's server, against fake apps and a fake server."""

import json
from collections.abc import MutableMapping
from typing import Any

import pytest

from chainrunner.serve._asgi import ChainletApp

Message = MutableMapping[str, Any]


class FakeServer:
    """Drives one ASGI call as uvicorn would and records what the app sent."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    async def receive(self) -> Message:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    async def call(self, app: ChainletApp, kind: str = "http",
                   authorization: bytes | None = None) -> None:
        headers = [(b"content-type", b"application/json")]
        if authorization is not None:
            headers.append((b"authorization", authorization))
        await app({"type": kind, "path": "/v1/models/model:predict", "headers": headers},
                  self.receive, self.send)

    @property
    def status(self) -> int:
        return int(self.sent[0]["status"])


async def _answers(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'"ok"'})


async def _answers_500_then_raises(scope: Message, receive: Any, send: Any) -> None:
    """What Starlette's ServerErrorMiddleware does with an error no handler took."""
    await send({"type": "http.response.start", "status": 500, "headers": []})
    await send({"type": "http.response.body", "body": b'{"error": "Unhandled exception"}'})
    raise RecursionError("maximum recursion depth exceeded")


async def _raises_mid_stream(scope: Message, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"part", "more_body": True})
    raise RuntimeError("the stream broke")


@pytest.mark.parametrize("authorization", [None, b"Api-Key wrong", b"Bearer inside"],
                         ids=["none", "wrong", "other-scheme"])
async def test_with_a_key_a_request_without_it_is_401(authorization: bytes | None) -> None:
    server = FakeServer()
    await server.call(ChainletApp(_answers, "inside"), authorization=authorization)
    assert server.status == 401
    assert "call the chain through serve's gateway" in json.loads(server.sent[1]["body"])["error"]


async def test_with_the_key_the_request_reaches_the_app() -> None:
    server = FakeServer()
    await server.call(ChainletApp(_answers, "inside"), authorization=b"Api-Key inside")
    assert (server.status, server.sent[1]["body"]) == (200, b'"ok"')


async def test_without_a_key_every_request_reaches_the_app() -> None:
    server = FakeServer()
    await server.call(ChainletApp(_answers, None))
    assert server.status == 200


async def test_a_websocket_without_the_key_is_closed_before_it_is_accepted() -> None:
    server = FakeServer()
    await server.call(ChainletApp(_answers, "inside"), kind="websocket")
    assert server.sent == [{"type": "websocket.close", "code": 1008}]


async def test_an_error_after_a_complete_answer_ends_there() -> None:
    server = FakeServer()
    await server.call(ChainletApp(_answers_500_then_raises, None))  # uvicorn sees no error
    assert server.status == 500


async def test_an_error_before_the_answer_is_complete_reaches_the_server() -> None:
    server = FakeServer()
    with pytest.raises(RuntimeError, match="the stream broke"):
        await server.call(ChainletApp(_raises_mid_stream, None))
