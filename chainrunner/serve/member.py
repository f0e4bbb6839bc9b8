"""A chainlet in serve's routing table: its current process, state and requests in flight."""

import asyncio
from dataclasses import dataclass, field
from typing import Literal

from chainrunner.serve.artifacts import ChainletArtifact
from chainrunner.serve.processes import ChainletProcess
from chainrunner.serve.zygote import describe_exit

__all__ = ["Member", "MemberState"]

MemberState = Literal["ready", "restarting", "draining", "stopping"]


@dataclass(eq=False)
class Member:
    """A chainlet in the routing table: its current process and the requests it is serving."""

    artifact: ChainletArtifact
    process: ChainletProcess
    state: MemberState = "ready"
    inflight: int = 0
    _idle: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    def __post_init__(self) -> None:
        self._idle.set()

    @property
    def name(self) -> str:
        return self.artifact.display_name

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def pid(self) -> int:
        return self.process.pid

    def enter(self) -> None:
        """A request was sent to this member."""
        self.inflight += 1
        self._idle.clear()

    def leave(self) -> None:
        """A request this member was serving is done."""
        self.inflight -= 1
        if not self.inflight:
            self._idle.set()

    async def drained(self) -> None:
        await self._idle.wait()

    def unavailable_reason(self) -> str:
        """Why this member cannot take a request, naming it."""
        process = self.process
        if self.state == "stopping":
            return (f"chainlet `{self.name}` (pid {process.pid}, port {process.port}) is "
                    "stopping: chainrunner serve is stopping")
        if process.exited.done():
            what = f"is not running ({describe_exit(process.exited.result())})"
        elif self.state == "restarting":
            what = "is restarting"
        else:
            what = "dropped the connection"
        return (f"chainlet `{self.name}` (pid {process.pid}, port {process.port}) {what}; "
                "chainrunner serve restarts chainlets that exit: retry shortly")
