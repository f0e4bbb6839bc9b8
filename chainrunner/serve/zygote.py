"""Client of the zygote, the fork server of chainlet processes (see _zygote.py).

Standard library only, so that `chainrunner serve` can launch the zygote before importing
anything heavy: its preload, the longest step of a start, overlaps serve's own imports.
"""

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from chainrunner.serve.errors import ServeError

__all__ = ["LogSink", "Zygote", "describe_exit", "looks_secret", "preloadable", "pump_lines",
           "without_secrets", "without_serve_secrets"]

_ZYGOTE = Path(__file__).with_name("_zygote.py")
# Libraries that start threads (BLAS pools, CUDA) when imported: never in a process that forks.
_NOT_PRELOADED = {"numpy", "torch", "tensorflow", "jax", "scipy", "pandas", "sklearn",
                  "transformers", "accelerate"}

# serve's own secrets: the gateway checks the key; no chainlet or chain code may read it.
_SERVE_SECRETS = ("CHAINRUNNER_API_KEY",)
# Words that make a variable a credential (`OPENAI_API_KEY`, `HF_TOKEN`, `DB_PASSWORD`): no
# process serve forks sees one unless a chainlet declares it as a secret (then only that one).
_SECRET_WORDS = frozenset({"KEY", "APIKEY", "TOKEN", "SECRET", "SECRETS", "PASSWORD", "PASSWD",
                           "CREDENTIAL", "CREDENTIALS"})

# Called with (chainlet name, log line without newline) for every line a chainlet prints.
LogSink = Callable[[str, str], None]


def preloadable(modules: Iterable[str]) -> list[str]:
    """Those of `modules` safe to import in a process that forks (no thread-starting ones)."""
    return sorted(m for m in set(modules) - _NOT_PRELOADED if not m.startswith("_"))


def without_serve_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """`env` for the builder, which runs the chain's code as `truss chains push` does: serve's
    own secrets left out."""
    return {name: value for name, value in env.items() if name not in _SERVE_SECRETS}


def looks_secret(name: str) -> bool:
    """Whether variable `name` holds a credential: serve's key, or one of _SECRET_WORDS as a
    word of the name (`OPENAI_API_KEY`, not `TOKENIZERS_PARALLELISM`)."""
    return name in _SERVE_SECRETS or not _SECRET_WORDS.isdisjoint(name.upper().split("_"))


def without_secrets(env: Mapping[str, str], also: Iterable[str] = ()) -> dict[str, str]:
    """`env` for the zygote and the chainlets: no credential (see `looks_secret`), nor any of
    the variables named in `also` (those chainlets declare as secrets)."""
    dropped = set(also)
    return {name: value for name, value in env.items()
            if name not in dropped and not looks_secret(name)}


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-returncode).name}"
        return f"killed by signal {-returncode}"
    return f"exited with code {returncode}"


async def pump_lines(stream: asyncio.StreamReader, name: str, log: LogSink,
                     tail: deque[str]) -> None:
    """Hand every line of `stream` to `log`, keeping the last ones in `tail`."""
    while line := await stream.readline():
        text = line.decode(errors="replace").rstrip("\n")
        tail.append(text)
        log(name, text)


class Zygote:
    """The zygote process and its control socket: the only way serve starts chainlets."""

    def __init__(self, process: "subprocess.Popen[bytes]", control: socket.socket) -> None:
        """Use `launch`; from a running event loop, `connect` before anything else."""
        self.process = process
        self._control = control
        self._ids = itertools.count()
        self._spawned: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._early_exits: dict[int, int] = {}
        self._orphans: set[int] = set()  # forked for a cancelled spawn(), killed at once
        self._ready: asyncio.Future[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = False
        # Set if the zygote dies while serving: no chainlet can start or restart any more.
        self.lost = asyncio.Event()
        self.failure: ServeError | None = None  # why, once lost

    @classmethod
    def launch(cls, env: Mapping[str, str]) -> "Zygote":
        """Start the zygote; it loads truss's server stack while the caller goes on."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        process = subprocess.Popen(
            [sys.executable, "-P", str(_ZYGOTE), str(theirs.fileno()), str(os.getpid())],
            # Its environment is every chainlet's first one too (/proc/PID/environ of a forked
            # process): no credential may be in it.
            pass_fds=(theirs.fileno(),), env=without_secrets(env), start_new_session=True,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        theirs.close()
        ours.setblocking(False)
        return cls(process, ours)

    async def connect(self, log: LogSink) -> None:
        """Wait for the zygote to be ready; from now on its output goes to `log`."""
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._tasks.append(asyncio.create_task(self._read_events(), name="zygote-events"))
        assert self.process.stdout is not None
        output = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(output),
                                     self.process.stdout)
        self._tasks.append(asyncio.create_task(pump_lines(output, "zygote", log, deque())))
        try:
            await self._ready
        except BaseException:
            await self.close(grace=0)
            raise

    async def preload(self, modules: Iterable[str]) -> None:
        """Have the zygote import these too (before it forks the next chainlet)."""
        await self._send({"op": "preload", "modules": list(modules)})

    async def spawn(self, spec: Mapping[str, Any],
                    log_fd: int) -> tuple[int, "asyncio.Future[int]"]:
        """Fork a chainlet; returns its pid and a future of its return code."""
        request_id = next(self._ids)
        spawned = self._spawned[request_id] = asyncio.get_running_loop().create_future()
        try:
            await self._send({"op": "spawn", "id": request_id, "spec": dict(spec)}, [log_fd])
        except BaseException:  # not sent: no reply will come
            self._spawned.pop(request_id, None)
            raise
        try:
            # Shielded: a caller cancelled now (stop during a restart) must not lose the pid
            # the zygote is about to report, or that chainlet would run on unseen.
            pid = await asyncio.shield(spawned)
        except asyncio.CancelledError:
            spawned.add_done_callback(self._kill_orphan)
            raise
        exited = self._exits[pid] = asyncio.get_running_loop().create_future()
        if pid in self._early_exits:
            exited.set_result(self._early_exits.pop(pid))
        return pid, exited

    async def signal(self, pid: int, signum: int) -> None:
        """Signal a chainlet; the zygote only ever signals processes it started."""
        await self._send({"op": "signal", "pid": pid, "signal": int(signum)})

    async def close(self, grace: float = 5.0) -> None:
        """Close the control socket: the zygote kills what is left of its chainlets and exits.
        With `grace` 0, or past it, the zygote is killed (its chainlets die with it)."""
        self._closing = True
        self._control.close()
        if not grace:
            self.process.kill()
        try:
            await asyncio.wait_for(asyncio.to_thread(self.process.wait), grace or None)
        except TimeoutError:
            self.process.kill()
            await asyncio.to_thread(self.process.wait)
        for task in self._tasks:
            task.cancel()

    async def _send(self, message: Mapping[str, Any], fds: list[int] | None = None) -> None:
        data = json.dumps(message).encode()
        while True:
            try:
                socket.send_fds(self._control, [data], fds or [])
                return
            except BlockingIOError:
                await asyncio.sleep(0.005)
            except OSError as exc:
                raise ServeError(f"the zygote process that forks chainlets is gone "
                                 f"({exc.strerror}); restart serve") from exc

    async def _read_events(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self._control, 1 << 16)
            except OSError:
                data = b""
            if not data:
                self._lose(ServeError("the zygote process that forks chainlets exited"))
                return
            try:
                self._handle(json.loads(data))
            except Exception as exc:  # a reader that died quietly would leave stops hanging
                self._lose(ServeError(f"serve lost track of the zygote process that forks "
                                      f"chainlets (bad event {data[:200]!r}: {exc!r}); "
                                      "restart serve"))
                return

    def _handle(self, event: Mapping[str, Any]) -> None:
        if event["op"] == "ready":
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(None)
        elif event["op"] in ("spawned", "error"):
            spawned = self._spawned.pop(event["id"], None)
            if spawned is None or spawned.done():
                return
            if event["op"] == "spawned":
                spawned.set_result(event["pid"])
            else:
                spawned.set_exception(ServeError(event["message"]))
        elif event["op"] == "exited":
            pid: int = event["pid"]
            if pid in self._orphans:
                self._orphans.discard(pid)
            elif pid not in self._exits:  # exited before spawn() registered it
                self._early_exits[pid] = event["returncode"]
            else:
                exited = self._exits.pop(pid)
                if not exited.done():
                    exited.set_result(event["returncode"])

    def _kill_orphan(self, spawned: "asyncio.Future[int]") -> None:
        """A chainlet forked for a caller that was cancelled meanwhile: nobody will stop it."""
        if spawned.cancelled() or spawned.exception() is not None:
            return
        pid = spawned.result()
        self._orphans.add(pid)
        self._early_exits.pop(pid, None)
        # Through `_send`, which waits out a full socket buffer rather than dropping the kill.
        self._tasks.append(asyncio.create_task(self._kill(pid), name=f"kill-orphan-{pid}"))

    async def _kill(self, pid: int) -> None:
        with contextlib.suppress(ServeError):  # the zygote is gone, and its chainlets with it
            await self.signal(pid, signal.SIGKILL)

    def _lose(self, error: ServeError) -> None:
        self.failure = error
        self._fail(error)
        if not self._closing:
            self.lost.set()

    def _fail(self, error: ServeError) -> None:
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(error)
        for spawned in self._spawned.values():
            if not spawned.done():
                spawned.set_exception(error)
        for exited in self._exits.values():
            if not exited.done():
                exited.set_result(-signal.SIGKILL)  # PR_SET_PDEATHSIG killed it
