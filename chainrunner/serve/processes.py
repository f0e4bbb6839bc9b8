"""Chainlet processes: forked by the zygote, logged line by line, probed for readiness, stopped."""

import asyncio
import contextlib
import os
import signal
import time
from collections import deque
from collections.abc import Mapping
from typing import Any, Protocol

import aiohttp

from chainrunner.serve.errors import ChainletStartError, ChainletStopError
from chainrunner.serve.zygote import LogSink, describe_exit, pump_lines

__all__ = ["PREDICT_PATH", "ChainletProcess", "Forker"]

READINESS_PATH = "/v1/models/model"
PREDICT_PATH = "/v1/models/model:predict"
_LOG_TAIL = 40
# A killed process is reaped at once; longer means the zygote no longer reports exits.
_KILLED_WITHIN_S = 10.0


class Forker(Protocol):
    """What starts and signals chainlet processes (zygote.Zygote)."""

    async def spawn(self, spec: Mapping[str, Any],
                    log_fd: int) -> tuple[int, "asyncio.Future[int]"]: ...

    async def signal(self, pid: int, signum: int) -> None: ...


class ChainletProcess:
    """One running chainlet: its pid, port, log tail and exit."""

    def __init__(self, name: str, port: int, pid: int, exited: "asyncio.Future[int]",
                 zygote: Forker, log_task: "asyncio.Task[None]", tail: deque[str]) -> None:
        self.name, self.port, self.pid = name, port, pid
        self.exited = exited
        self._zygote = zygote
        self._log_task = log_task
        self.tail = tail

    @classmethod
    async def start(cls, zygote: Forker, name: str, port: int, spec: Mapping[str, Any],
                    log: LogSink) -> "ChainletProcess":
        read_fd, write_fd = os.pipe()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(read_fd, "rb", 0))
        tail: deque[str] = deque(maxlen=_LOG_TAIL)
        log_task = asyncio.create_task(pump_lines(reader, name, log, tail), name=f"log:{name}")
        try:
            pid, exited = await zygote.spawn({**spec, "port": port}, write_fd)
        except BaseException:
            log_task.cancel()
            raise
        finally:
            os.close(write_fd)  # the chainlet holds the only write end now: EOF when it exits
        return cls(name, port, pid, exited, zygote, log_task, tail)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def wait(self) -> int:
        """Its return code once it has exited (cancelling the waiter leaves `exited` alone)."""
        return await asyncio.shield(self.exited)

    async def wait_ready(self, http: aiohttp.ClientSession, limit_s: float) -> None:
        """Poll truss's readiness route; raises ChainletStartError with the log tail."""
        deadline = time.monotonic() + limit_s
        while not self.exited.done():
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with http.get(self.url + READINESS_PATH,
                                    timeout=aiohttp.ClientTimeout(total=1)) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                await self.stop(grace=0)
                raise ChainletStartError(self._failure(f"was not ready after {limit_s:.0f}s"))
            await asyncio.wait([self.exited], timeout=0.05)
        with contextlib.suppress(TimeoutError):  # let the last lines of its log arrive
            await asyncio.wait_for(asyncio.shield(self._log_task), 1)
        raise ChainletStartError(self._failure(describe_exit(self.exited.result())
                                               + " while starting"))

    async def stop(self, grace: float = 5.0) -> int:
        """SIGTERM (uvicorn finishes requests in flight), SIGKILL after `grace` seconds (at
        once with 0); raises ChainletStopError if it has not exited soon after SIGKILL."""
        if not self.exited.done() and grace > 0:
            await self._zygote.signal(self.pid, signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self.exited), grace)
        if not self.exited.done():
            await self._zygote.signal(self.pid, signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), _KILLED_WITHIN_S)
            except TimeoutError:
                raise ChainletStopError(
                    f"chainlet `{self.name}` (pid {self.pid}) did not report its exit "
                    f"{_KILLED_WITHIN_S:.0f}s after SIGKILL: the zygote that forked it no "
                    "longer answers; check for the process and kill it by pid") from None
        code = await self.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._log_task), 1)
        return code

    def _failure(self, what: str) -> str:
        tail = "\n".join(f"  | {line}" for line in self.tail) or "  | (no output)"
        return (f"chainlet `{self.name}` (pid {self.pid}, port {self.port}) {what}; the end of "
                f"its log:\n{tail}")
