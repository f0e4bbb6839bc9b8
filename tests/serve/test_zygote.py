"""The zygote client against a fake zygote on the other end of its control socket."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from chainrunner.serve.errors import ServeError
from chainrunner.serve.zygote import Zygote


@dataclass
class FakeZygote:
    """The zygote's end of the control socket, driven by the test."""

    end: socket.socket

    def send(self, event: dict[str, Any]) -> None:
        self.end.send(json.dumps(event).encode())

    async def receive(self) -> dict[str, Any]:
        data, fds, _, _ = await asyncio.to_thread(socket.recv_fds, self.end, 1 << 16, 4)
        for fd in fds:
            socket.close(fd)
        message: dict[str, Any] = json.loads(data)
        return message


@pytest.fixture
def idle_process() -> Iterator["subprocess.Popen[bytes]"]:
    """Stands in for the zygote process: silent until closed."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"],
                               stdout=subprocess.PIPE)
    yield process
    process.kill()
    process.wait()


@pytest.fixture
async def connected(
        idle_process: "subprocess.Popen[bytes]") -> AsyncIterator[tuple[Zygote, FakeZygote]]:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ours.setblocking(False)
    zygote, fake = Zygote(idle_process, ours), FakeZygote(theirs)
    fake.send({"op": "ready"})
    await zygote.connect(lambda name, line: None)
    yield zygote, fake
    await zygote.close(grace=0)
    theirs.close()


async def _spawn(zygote: Zygote) -> "asyncio.Task[tuple[int, asyncio.Future[int]]]":
    read_fd, write_fd = socket.socketpair()
    task = asyncio.create_task(zygote.spawn({"name": "Chainlet"}, write_fd.fileno()))
    await asyncio.sleep(0.01)  # the request is sent
    read_fd.close()
    write_fd.close()
    return task


async def test_a_spawn_cancelled_before_its_reply_kills_the_forked_chainlet(
        connected: tuple[Zygote, FakeZygote]) -> None:
    zygote, fake = connected
    running = await _spawn(zygote)
    assert (await fake.receive())["op"] == "spawn"
    fake.send({"op": "spawned", "id": 0, "pid": 101})
    _, exited = await running

    cancelled = await _spawn(zygote)
    request = await fake.receive()
    cancelled.cancel()  # as stop() does to a restart in progress
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    fake.send({"op": "spawned", "id": request["id"], "pid": 102})

    assert await fake.receive() == {"op": "signal", "pid": 102, "signal": int(signal.SIGKILL)}
    fake.send({"op": "exited", "pid": 102, "returncode": -signal.SIGKILL})
    # The reader survived the late reply: exits of other chainlets still arrive.
    fake.send({"op": "exited", "pid": 101, "returncode": 0})
    assert await asyncio.wait_for(exited, 5) == 0
    assert not zygote.lost.is_set()


async def test_an_event_the_client_cannot_read_marks_the_zygote_lost(
        connected: tuple[Zygote, FakeZygote]) -> None:
    zygote, fake = connected
    running = await _spawn(zygote)
    await fake.receive()
    fake.send({"op": "spawned", "id": 0, "pid": 101})
    _, exited = await running
    fake.end.send(b"{not json")
    await asyncio.wait_for(zygote.lost.wait(), 5)
    assert await asyncio.wait_for(exited, 5) == -signal.SIGKILL  # no stop waits forever
    assert isinstance(zygote.failure, ServeError)
    assert "serve lost track of the zygote process" in str(zygote.failure)
