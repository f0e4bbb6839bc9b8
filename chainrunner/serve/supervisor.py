"""The supervisor: starts a chain's chainlets, restarts those that die, swaps in new builds."""

import asyncio
import itertools
import json
import socket
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import aiohttp

from chainrunner.serve._launcher import DYNAMIC_CONFIG_DIR
from chainrunner.serve.artifacts import ChainArtifacts, ChainletArtifact
from chainrunner.serve.errors import ChainletStartError, ChainletUnavailableError, ServeError
from chainrunner.serve.member import Member
from chainrunner.serve.processes import PREDICT_PATH, ChainletProcess, Forker
from chainrunner.serve.zygote import LogSink, describe_exit, without_secrets

__all__ = ["Member", "Supervisor", "free_port"]

# truss_chains.private_types.DYNAMIC_CHAINLET_CONFIG_KEY: where a chainlet finds its dependencies.
DYNAMIC_CHAINLET_CONFIG_KEY = "dynamic_chainlet_config"
CHAIN_API_KEY_SECRET = "baseten_chain_api_key"
_MAX_RESTART_DELAY = 10.0

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class Supervisor:
    """Owns every chainlet process of one served chain."""

    def __init__(self, zygote: Forker, http: aiohttp.ClientSession, run_dir: Path,
                 env: Mapping[str, str], token: str, *, log: LogSink,
                 notify: Callable[[str], None], startup_timeout: float = 60.0,
                 require_token: bool = False) -> None:
        """`token` is serve's internal key, truss's `baseten_chain_api_key` secret of every
        chainlet; with `require_token`, each chainlet answers only requests carrying it (and
        `http` must send it: readiness probes)."""
        self._zygote, self._http, self._run_dir = zygote, http, run_dir
        self._env, self._token, self._require_token = dict(env), token, require_token
        self._declared: set[str] = set()  # variables any chainlet takes as a secret
        self._log, self._notify = log, notify
        self._startup_timeout = startup_timeout
        self._generations = itertools.count()
        self._stopping = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._retired: set[Member] = set()
        self._guards: dict[Member, asyncio.Task[None]] = {}  # restarts a member that dies
        self.artifacts: ChainArtifacts | None = None
        self.members: dict[str, Member] = {}
        self._change = asyncio.Event()

    async def start(self, artifacts: ChainArtifacts) -> None:
        """Start every chainlet at once; all are ready when this returns, or none runs."""
        ports = {name: free_port() for name in artifacts.chainlets}
        self.members = await self._launch(artifacts, set(artifacts.chainlets), ports)
        self.artifacts = artifacts

    def changed(self) -> asyncio.Event:
        """Set at the next change of routing: a chainlet exits, restarts, or is swapped."""
        return self._change

    def _routing_changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    def route(self) -> Member:
        """The entrypoint member to send a request to; raises ChainletUnavailableError."""
        assert self.artifacts is not None
        member = self.members[self.artifacts.entrypoint]
        if member.state == "ready" and not member.process.exited.done():
            return member
        raise ChainletUnavailableError(member.unavailable_reason())

    def contexts(self) -> set[Path]:
        """The build contexts that running processes use, those still draining included."""
        return {m.artifact.context_dir for m in [*self.members.values(), *self._retired]}

    def readiness(self) -> tuple[bool, dict[str, dict[str, object]]]:
        status = self.status()
        ready = bool(self.members) and all(
            m.state == "ready" and not m.process.exited.done() for m in self.members.values())
        return ready, status

    def status(self) -> dict[str, dict[str, object]]:
        """Each chainlet's state, pid and port (what GET /ready shows)."""
        return {name: {"state": m.state if not m.process.exited.done() else "exited",
                       "pid": m.process.pid, "port": m.process.port}
                for name, m in self.members.items()}

    async def update(self, new: ChainArtifacts) -> set[str]:
        """Swap in `new`: start changed chainlets (and their callers) on new ports, switch the
        routing, then let the old processes finish their requests and stop them.

        Raises ChainletStartError (and leaves the old version serving) if one fails to start.
        """
        assert self.artifacts is not None
        affected = self.artifacts.to_replace(new)
        if affected:
            ports = {n: free_port() if n in affected else self.members[n].process.port
                     for n in new.chainlets}
            fresh = await self._launch(new, affected, ports)
            retired = [m for n, m in self.members.items()
                       if n in affected or n not in new.chainlets]
            kept = {n: m for n, m in self.members.items() if n not in affected}
            self.members = {**kept, **fresh}
            self._retire(retired)
            self._routing_changed()
        self.artifacts = new
        return affected

    async def stop(self, grace: float = 5.0) -> None:
        """Stop every process: the entrypoint first (its requests finish), then the rest."""
        self._stopping = True
        for member in self.members.values():
            member.state = "stopping"
        self._routing_changed()
        for task in list(self._tasks):
            if not task.get_name().startswith("drain"):
                task.cancel()
        members = [*self.members.values(), *self._retired]
        entry = self.artifacts.entrypoint if self.artifacts else None
        await asyncio.gather(*(m.process.stop(grace) for m in members if m.name == entry))
        await asyncio.gather(*(m.process.stop(grace) for m in members if m.name != entry))
        for task in list(self._tasks):
            task.cancel()

    async def _launch(self, artifacts: ChainArtifacts, names: set[str],
                      ports: Mapping[str, int]) -> dict[str, Member]:
        self._declared |= {secret.upper() for chainlet in artifacts.chainlets.values()
                           for secret in chainlet.secrets}
        # Forking takes milliseconds: let every spawn finish (never lose a pid to a
        # cancellation), then wait for readiness, stopping all at the first failure.
        spawned = await asyncio.gather(
            *(self._spawn(artifacts.chainlets[n], ports[n], ports) for n in names),
            return_exceptions=True)
        processes = [p for p in spawned if isinstance(p, ChainletProcess)]
        try:
            for failure in spawned:
                if isinstance(failure, BaseException):
                    raise failure
            readiness = [asyncio.create_task(p.wait_ready(self._http, self._startup_timeout))
                         for p in processes]
            try:
                for ready in asyncio.as_completed(readiness):
                    await ready
            finally:
                for task in readiness:
                    task.cancel()
        except BaseException:
            await asyncio.gather(*(p.stop(grace=0) for p in processes))
            raise
        members = {p.name: Member(artifacts.chainlets[p.name], p) for p in processes}
        for member in members.values():
            self._guard(member)
        return members

    async def _spawn(self, artifact: ChainletArtifact, port: int,
                     ports: Mapping[str, int]) -> ChainletProcess:
        state_dir = self._run_dir / f"{artifact.display_name}-{next(self._generations)}"
        config_dir = state_dir / DYNAMIC_CONFIG_DIR
        config_dir.mkdir(parents=True)
        services = {dep: {"predict_url": f"http://127.0.0.1:{ports[dep]}{PREDICT_PATH}"}
                    for dep in artifact.dependencies}
        (config_dir / DYNAMIC_CHAINLET_CONFIG_KEY).write_text(json.dumps(services))
        spec = {"name": artifact.display_name, "app_dir": str(artifact.app_dir),
                "packages_dir": str(artifact.packages_dir), "state_dir": str(state_dir),
                "env": self._process_env(artifact),
                "key": self._token if self._require_token else None}
        return await ChainletProcess.start(self._zygote, artifact.display_name, port, spec,
                                           self._log)

    def _process_env(self, artifact: ChainletArtifact) -> dict[str, str]:
        """serve's environment less every credential (so the mock backend's settings pass
        through, keys do not), the chainlet's configured variables, and the secrets it declares
        as truss's TRUSS_SECRET_<name>, from $TRUSS_SECRET_<name> or $<NAME>: a credential
        reaches only the chainlets that declare it, through truss's secrets."""
        env = {**without_secrets(self._env, self._declared), **artifact.env}
        env.setdefault("DISABLE_JSON_LOGGING", "1")
        env[f"TRUSS_SECRET_{CHAIN_API_KEY_SECRET}"] = self._token
        for secret in artifact.secrets:
            value = self._env.get(f"TRUSS_SECRET_{secret}") or self._env.get(secret.upper())
            if value:
                env[f"TRUSS_SECRET_{secret}"] = value
        return env

    def _guard(self, member: Member) -> None:
        task = asyncio.create_task(self._restart_when_dead(member, member.process),
                                   name=f"guard:{member.name}")
        self._tasks.add(task)
        self._guards[member] = task

        def forget(done: "asyncio.Task[None]") -> None:
            self._tasks.discard(done)
            if self._guards.get(member) is done:  # not the guard of its next process
                del self._guards[member]

        task.add_done_callback(forget)

    def _restarting(self, member: Member) -> bool:
        """Still worth restarting: serve is not stopping and no swap retired the member."""
        return not self._stopping and self.members.get(member.name) is member \
            and member.state == "restarting"

    async def _restart_when_dead(self, member: Member, process: ChainletProcess) -> None:
        code = await process.wait()
        if self._stopping or member.process is not process or member.state != "ready" \
                or self.members.get(member.name) is not member:
            return
        member.state = "restarting"
        self._routing_changed()
        self._notify(f"chainlet `{member.name}` (pid {process.pid}, port {process.port}) "
                     f"{describe_exit(code)}; restarting it")
        ports = {n: m.process.port for n, m in self.members.items()}
        delay = 0.0
        while True:
            await asyncio.sleep(delay)
            if not self._restarting(member):
                return
            try:
                fresh = await self._spawn(member.artifact, process.port, ports)
                try:
                    await fresh.wait_ready(self._http, self._startup_timeout)
                except BaseException:  # cancelled by stop() or a swap: never leave it running
                    await fresh.stop(grace=0)
                    raise
            except ChainletStartError as exc:
                delay = min(max(delay * 2, 0.5), _MAX_RESTART_DELAY)
                self._notify(f"restarting `{member.name}` failed (next try in {delay:.1f}s): "
                             f"{exc}")
                continue
            except ServeError as exc:  # the zygote is gone; serve stops (see session)
                self._notify(f"cannot restart `{member.name}`: {exc}")
                return
            if not self._restarting(member):  # stop() or a swap came meanwhile, blind to it
                await fresh.stop(grace=0)
                return
            member.process, member.state = fresh, "ready"
            self._routing_changed()
            self._notify(f"chainlet `{member.name}` restarted (pid {fresh.pid}, "
                         f"port {fresh.port})")
            self._guard(member)
            return

    def _retire(self, retired: Iterable[Member]) -> None:
        retired = list(retired)
        for member in retired:
            member.state = "draining"
            self._retired.add(member)
            guard = self._guards.pop(member, None)
            if guard is not None:  # a retired member is neither restarted nor watched
                guard.cancel()
        task = asyncio.create_task(self._drain(retired), name="drain")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _drain(self, retired: list[Member]) -> None:
        """Requests in flight finish on the old processes; then those stop."""
        await asyncio.gather(*(m.drained() for m in retired))
        entry = [m for m in retired if self.artifacts and m.name == self.artifacts.entrypoint]
        for group in (entry, [m for m in retired if m not in entry]):
            await asyncio.gather(*(m.process.stop() for m in group))
        for member in retired:
            self._retired.discard(member)
