"""Loopback fakes for end-to-end tests, served from one background event loop: an
OpenAI-compatible backend that notices a caller hanging up, and callback receivers."""

import asyncio
import json
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from aiohttp import web
from standardwebhooks import Webhook

__all__ = ["FakeBackend", "Loopback", "Receiver"]

T = TypeVar("T")
SLOW = "slow"  # a prompt containing it is answered only after `FakeBackend.slow_s`


@dataclass
class FakeBackend:
    """POST /v1/chat/completions like OpenAI; records each prompt, and the prompts whose caller
    disconnected before the answer (a cancelled model call)."""

    slow_s: float = 8.0
    prompts: list[str] = field(default_factory=list)
    disconnected: list[str] = field(default_factory=list)

    async def completions(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.prompts.append(prompt)
        if SLOW in prompt:
            for _ in range(int(self.slow_s / 0.02)):
                transport = request.transport
                if transport is None or transport.is_closing():
                    self.disconnected.append(prompt)
                    return web.Response(status=499)
                await asyncio.sleep(0.02)
        return web.json_response({
            "id": f"chatcmpl-{len(self.prompts)}", "object": "chat.completion",
            "created": 1_700_000_000, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                         "message": {"role": "assistant", "content": f"re: {prompt}"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})


@dataclass
class Receiver:
    """A callback receiver: answers 500 to its first `failures` requests, then verifies each
    body's signature with the `standardwebhooks` library and keeps it."""

    secret: str
    failures: int = 0
    attempts: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    bad_signatures: int = 0

    async def hook(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.failures:
            return web.Response(status=500)
        body = await request.text()
        try:
            Webhook(self.secret).verify(body, dict(request.headers))
        except Exception:
            self.bad_signatures += 1
            return web.Response(status=400)
        self.bodies.append(json.loads(body))
        return web.Response(status=204)

    def for_invocation(self, invocation_id: str) -> list[dict[str, Any]]:
        return [b for b in self.bodies if b["invocation_id"] == invocation_id]


class Loopback:
    """A background event loop serving aiohttp apps on 127.0.0.1; `stop` ends them all."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="e2e-fakes")
        self._thread.start()
        self._runners: list[web.AppRunner] = []

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(30)

    def serve(self, routes: dict[str, Callable[[web.Request], Any]], port: int = 0) -> int:
        """Serve `routes` (POST path → handler) and return the port."""
        async def start() -> int:
            app = web.Application()
            for path, handler in routes.items():
                app.router.add_post(path, handler)
            runner = web.AppRunner(app)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", port)
            await site.start()
            self._runners.append(runner)
            server = site._server
            assert isinstance(server, asyncio.Server)
            bound: int = server.sockets[0].getsockname()[1]
            return bound

        return self.call(start())

    def stop(self) -> None:
        async def cleanup() -> None:
            for runner in self._runners:
                await runner.cleanup()

        self.call(cleanup())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        # An unclosed loop's self-pipe is reported when garbage collected, as a warning that
        # pytest turns into the failure of whichever later test happens to be running.
        self.loop.close()
