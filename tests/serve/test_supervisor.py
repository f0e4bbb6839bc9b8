"""The supervisor against a fake forker whose "chainlets" are readiness routes in this process."""

import asyncio
import itertools
import os
import signal
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from chainrunner.serve.artifacts import ChainArtifacts, ChainletArtifact
from chainrunner.serve.processes import READINESS_PATH, Forker
from chainrunner.serve.supervisor import Supervisor


@dataclass
class FakeChainlet:
    name: str
    runner: web.AppRunner
    exited: "asyncio.Future[int]"
    ready: asyncio.Event


@dataclass
class FakeForker:
    """Each spawn serves readiness on its port once its `ready` event is set."""

    chainlets: dict[int, FakeChainlet] = field(default_factory=dict)
    hold: set[str] = field(default_factory=set)  # names whose next spawns stay unready
    spawned: asyncio.Event = field(default_factory=asyncio.Event)  # set at each spawn
    envs: list[dict[str, str]] = field(default_factory=list)  # each spawn's environment
    specs: dict[str, dict[str, Any]] = field(default_factory=dict)  # the last spawn's, by name
    _pids: "itertools.count[int]" = field(default_factory=lambda: itertools.count(1000))

    async def spawn(self, spec: Mapping[str, Any],
                    log_fd: int) -> tuple[int, "asyncio.Future[int]"]:
        os.close(os.dup(log_fd))  # only checks the pipe was handed over
        self.envs.append(dict(spec["env"]))
        self.specs[spec["name"]] = dict(spec)
        ready = asyncio.Event()
        if spec["name"] not in self.hold:
            ready.set()

        async def readiness(request: web.Request) -> web.Response:
            return web.Response(status=200 if ready.is_set() else 503)

        app = web.Application()
        app.router.add_get(READINESS_PATH, readiness)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", spec["port"]).start()
        pid = next(self._pids)
        exited = asyncio.get_running_loop().create_future()
        self.chainlets[pid] = FakeChainlet(spec["name"], runner, exited, ready)
        self.spawned.set()
        return pid, exited

    async def signal(self, pid: int, signum: int) -> None:
        chainlet = self.chainlets[pid]
        if not chainlet.exited.done():
            await chainlet.runner.cleanup()
            chainlet.exited.set_result(-signum)

    def running(self, name: str) -> list[int]:
        return [pid for pid, c in self.chainlets.items()
                if c.name == name and not c.exited.done()]


_: type[Forker] = FakeForker


def _chainlet(name: str, digest: str, dependencies: tuple[str, ...] = (),
              secrets: tuple[str, ...] = ()) -> ChainletArtifact:
    return ChainletArtifact(name=name, display_name=name, context_dir=Path("/nowhere"),
                            dependencies=dependencies, secrets=secrets, env={}, digest=digest)


def _chain(digest: str, *extra: ChainletArtifact) -> ChainArtifacts:
    entry = _chainlet("Entry", digest, tuple(c.display_name for c in extra))
    return ChainArtifacts(source=Path("/nowhere/chain.py"), chain_name="c", entrypoint="Entry",
                          chainlets={c.display_name: c for c in (*extra, entry)}, inputs=(),
                          fingerprint=digest)


@pytest.fixture
async def supervised(tmp_path: Path) -> AsyncIterator[tuple[Supervisor, FakeForker, list[str]]]:
    forker, notes = FakeForker(), list[str]()
    async with aiohttp.ClientSession() as http:
        env = {"CHAINRUNNER_API_KEY": "serve's own", "CHAINRUNNER_MOCK_SCRIPT": "/s.json"}
        supervisor = Supervisor(forker, http, tmp_path, env, "token", log=lambda n, line: None,
                                notify=notes.append, startup_timeout=10)
        await supervisor.start(_chain("v1"))
        yield supervisor, forker, notes
        await supervisor.stop(grace=0)
        for chainlet in forker.chainlets.values():
            await chainlet.runner.cleanup()


async def test_a_swap_during_a_restart_keeps_the_new_version_and_stops_the_old_one(
        supervised: tuple[Supervisor, FakeForker, list[str]]) -> None:
    supervisor, forker, notes = supervised
    [first] = forker.running("Entry")
    forker.hold.add("Entry")  # the restart will wait for readiness
    forker.spawned.clear()
    await forker.signal(first, signal.SIGKILL)
    await asyncio.wait_for(forker.spawned.wait(), 5)  # the guard began a restart
    [restarting] = forker.running("Entry")

    forker.hold.clear()
    await supervisor.update(_chain("v2"))  # --watch swapped in new code meanwhile
    swapped = supervisor.members["Entry"].process.pid
    assert swapped not in (first, restarting)
    forker.chainlets[restarting].ready.set()
    await asyncio.sleep(0.3)  # a restart still running would now install its process

    assert supervisor.members["Entry"].artifact.digest == "v2"
    assert supervisor.members["Entry"].process.pid == swapped
    assert forker.running("Entry") == [swapped]  # the old-code restart was stopped
    assert not any("restarted" in note for note in notes)


async def test_chainlets_get_serve_s_environment_but_not_its_api_key(
        supervised: tuple[Supervisor, FakeForker, list[str]]) -> None:
    [env] = supervised[1].envs
    assert env["CHAINRUNNER_MOCK_SCRIPT"] == "/s.json"  # the mock backend's settings pass
    assert "CHAINRUNNER_API_KEY" not in env
    assert env["TRUSS_SECRET_baseten_chain_api_key"] == "token"


async def test_a_credential_reaches_only_the_chainlet_that_declares_it(tmp_path: Path) -> None:
    forker = FakeForker()
    env = {"OPENAI_API_KEY": "sk-1", "WEATHER_ACCESS": "w-1", "HF_TOKEN": "hf-1",
           "TRUSS_SECRET_other": "o-1", "CHAINRUNNER_MOCK_SCRIPT": "/s.json",
           "TOKENIZERS_PARALLELISM": "false"}
    chain = _chain("v1", _chainlet("Gen", "v1", secrets=("openai_api_key", "weather_access")))
    async with aiohttp.ClientSession() as http:
        supervisor = Supervisor(forker, http, tmp_path, env, "token", log=lambda n, line: None,
                                notify=lambda note: None, startup_timeout=10)
        await supervisor.start(chain)
        await supervisor.stop(grace=0)
    entry, gen = forker.specs["Entry"]["env"], forker.specs["Gen"]["env"]
    credentials = {"sk-1", "w-1", "hf-1", "o-1"}
    assert credentials.isdisjoint(entry.values())
    assert {name: value for name, value in gen.items() if value in credentials} == {
        "TRUSS_SECRET_openai_api_key": "sk-1", "TRUSS_SECRET_weather_access": "w-1"}
    for chainlet_env in (entry, gen):  # the rest of serve's environment passes
        assert chainlet_env["CHAINRUNNER_MOCK_SCRIPT"] == "/s.json"
        assert chainlet_env["TOKENIZERS_PARALLELISM"] == "false"  # not a credential


@pytest.mark.parametrize(("require", "key"), [(True, "token"), (False, None)],
                         ids=["api-key-set", "no-api-key"])
async def test_chainlets_check_the_internal_key_only_when_serve_has_an_api_key(
        tmp_path: Path, require: bool, key: str | None) -> None:
    forker = FakeForker()
    async with aiohttp.ClientSession() as http:
        supervisor = Supervisor(forker, http, tmp_path, {}, "token", log=lambda n, line: None,
                                notify=lambda note: None, startup_timeout=10,
                                require_token=require)
        await supervisor.start(_chain("v1"))
        await supervisor.stop(grace=0)
    assert forker.specs["Entry"]["key"] == key
