"""Chainlet processes: forked by the zygote, logged line by line, probed for readiness, stopped."""

import asyncio
import contextlib
import importlib.metadata
import itertools
import json
import os
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import aiohttp

from chainlets.serve.errors import ChainletStartError, ServeError

__all__ = ["BASE_PRELOAD", "ChainletProcess", "LogSink", "Zygote", "describe_exit",
           "requirement_modules"]

_ZYGOTE = Path(__file__).with_name("_zygote.py")
READINESS_PATH = "/v1/models/model"
PREDICT_PATH = "/v1/models/model:predict"
_LOG_TAIL = 40

# What truss's server and truss_chains' runtime import, loaded once in the zygote.
BASE_PRELOAD = (
    "uvicorn", "uvloop", "fastapi", "starlette", "pydantic", "yaml", "aiohttp", "aiofiles",
    "httpx", "prometheus_client", "psutil", "pythonjsonlogger.jsonlogger", "msgpack",
    "opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "truss_chains", "truss_chains.remote_chainlet.stub", "truss_chains.remote_chainlet.utils",
    "truss.templates.shared.dynamic_config_resolver",
    "truss.templates.shared.secrets_resolver", "truss.templates.shared.lazy_data_resolver",
)
# Libraries that start threads (BLAS pools, CUDA) when imported: never in a process that forks.
_NOT_PRELOADED = {"numpy", "torch", "tensorflow", "jax", "scipy", "pandas", "sklearn",
                  "transformers", "accelerate"}

# Called with (chainlet name, log line without newline) for every line a chainlet prints.
LogSink = Callable[[str, str], None]


def requirement_modules(requirement_files: Iterable[Path]) -> list[str]:
    """Top-level modules of the installed distributions pinned in `requirement_files`."""
    by_dist: dict[str, list[str]] = {}
    for module, dists in importlib.metadata.packages_distributions().items():
        for dist in dists:
            by_dist.setdefault(dist.lower().replace("_", "-"), []).append(module)
    modules: set[str] = set()
    for path in requirement_files:
        for line in path.read_text().splitlines():
            name = line.split("#")[0].split("==")[0].split(">")[0].split("<")[0].strip()
            modules.update(by_dist.get(name.lower().replace("_", "-"), []))
    return sorted(m for m in modules - _NOT_PRELOADED if not m.startswith("_"))


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


class Zygote:
    """Client of the fork server (see _zygote.py); the only way serve starts chainlets."""

    def __init__(self, process: asyncio.subprocess.Process, control: socket.socket) -> None:
        self.process = process
        self._control = control
        self._ids = itertools.count()
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._early_exits: dict[int, int] = {}
        self._ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._reader = asyncio.create_task(self._read_events(), name="zygote-events")
        self._log_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, preload: Iterable[str], env: Mapping[str, str],
                    log: LogSink) -> "Zygote":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-P", str(_ZYGOTE), str(theirs.fileno()), str(os.getpid()),
            *preload, pass_fds=(theirs.fileno(),), env=dict(env), start_new_session=True,
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT)
        theirs.close()
        zygote = cls(process, ours)
        assert process.stdout is not None
        zygote._log_task = asyncio.create_task(_pump(process.stdout, "zygote", log, deque()))
        try:
            await zygote._ready
        except BaseException:
            zygote.process.kill()
            await zygote.close()
            raise
        return zygote

    async def preload(self, modules: Iterable[str]) -> None:
        await self._send({"op": "preload", "modules": list(modules)})

    async def spawn(self, spec: Mapping[str, Any],
                    log_fd: int) -> tuple[int, "asyncio.Future[int]"]:
        """Fork a chainlet; returns its pid and a future of its return code."""
        request_id = next(self._ids)
        spawned = self._spawned[request_id] = asyncio.get_running_loop().create_future()
        await self._send({"op": "spawn", "id": request_id, "spec": dict(spec)}, [log_fd])
        pid = await spawned
        exited = self._exits[pid] = asyncio.get_running_loop().create_future()
        if pid in self._early_exits:
            exited.set_result(self._early_exits.pop(pid))
        return pid, exited

    async def signal(self, pid: int, signum: int) -> None:
        await self._send({"op": "signal", "pid": pid, "signal": int(signum)})

    async def close(self, grace: float = 5.0) -> None:
        """Close the control socket: the zygote kills what is left of its chainlets and exits."""
        self._control.close()
        try:
            await asyncio.wait_for(self.process.wait(), grace or None)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        self._reader.cancel()

    async def _send(self, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        while True:
            try:
                socket.send_fds(self._control, [data], fds or [])
                return
            except BlockingIOError:
                await asyncio.sleep(0.005)

    async def _read_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self._control, 1 << 16)
            except OSError:
                data = b""
            if not data:
                error = ServeError("the zygote process that forks chainlets exited")
                if not self._ready.done():
                    self._ready.set_exception(error)
                for spawned in self._spawned.values():
                    if not spawned.done():
                        spawned.set_exception(error)
                for exited in self._exits.values():
                    if not exited.done():
                        exited.set_result(-signal.SIGKILL)  # PR_SET_PDEATHSIG killed it
                return
            event = json.loads(data)
            if event["op"] == "ready":
                self._ready.set_result(None)
            elif event["op"] == "spawned":
                self._spawned.pop(event["id"]).set_result(event["pid"])
            elif event["op"] == "error":
                self._spawned.pop(event["id"]).set_exception(ServeError(event["message"]))
            elif event["op"] == "exited":
                pid: int = event["pid"]
                if pid not in self._exits:  # exited before spawn() registered it
                    self._early_exits[pid] = event["returncode"]
                elif not self._exits[pid].done():
                    self._exits.pop(pid).set_result(event["returncode"])


async def _pump(stream: asyncio.StreamReader, name: str, log: LogSink, tail: deque[str]) -> None:
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        tail.append(text)
        log(name, text)


class ChainletProcess:
    """One running chainlet: its pid, port, log tail and exit."""

    def __init__(self, name: str, port: int, pid: int, exited: "asyncio.Future[int]",
                 zygote: Zygote, log_task: "asyncio.Task[None]", tail: deque[str]) -> None:
        self.name, self.port, self.pid = name, port, pid
        self.exited = exited
        self.started_at = time.monotonic()
        self._zygote = zygote
        self._log_task = log_task
        self.tail = tail

    @classmethod
    async def start(cls, zygote: Zygote, name: str, port: int, spec: Mapping[str, Any],
                    log: LogSink) -> "ChainletProcess":
        read_fd, write_fd = os.pipe()
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                     os.fdopen(read_fd, "rb", 0))
        tail: deque[str] = deque(maxlen=_LOG_TAIL)
        log_task = asyncio.create_task(_pump(reader, name, log, tail), name=f"log:{name}")
        try:
            pid, exited = await zygote.spawn({**spec, "port": port}, write_fd)
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
        """SIGTERM (uvicorn finishes requests in flight), SIGKILL after `grace` seconds."""
        if not self.exited.done():
            await self._zygote.signal(self.pid, signal.SIGTERM if grace > 0 else signal.SIGKILL)
            try:
                await asyncio.wait_for(asyncio.shield(self.exited), grace or None)
            except TimeoutError:
                await self._zygote.signal(self.pid, signal.SIGKILL)
        code = await self.wait()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self._log_task), 1)
        return code

    def _failure(self, what: str) -> str:
        tail = "\n".join(f"  | {line}" for line in self.tail) or "  | (no output)"
        return (f"chainlet `{self.name}` (pid {self.pid}, port {self.port}) {what}; the end of "
                f"its log:\n{tail}")
