"""Build artifacts: the image context of every chainlet, built once and reused while unchanged.

Layout under the project's state directory (`<project>/.chainrunner/`)::

    builds/<chain-file-stem>-<hash of its path>/
        manifest.json              the last build that served: chainlets, digests, input dirs
        contexts/<Chainlet>-<digest>/server/   truss's server code + model/ + config.yaml (/app)
        contexts/<Chainlet>-<digest>/packages/ the shipped code (/packages)
        truss/                     HOME and TMPDIR of the builder (truss's own scratch space)
    serve/<port>/lease.json        the contexts a running serve uses (removed when it stops)

Contexts are content-addressed and never rewritten, so a running chainlet's files stay put
while a newer build lands beside them; old ones are pruned only once a build serves, and
never while a live serve's lease names them (chainrunner/serve/leases.py).
"""

import asyncio
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from chainrunner.serve.errors import BuildError
from chainrunner.serve.leases import hold, leased, prune
from chainrunner.serve.zygote import pump_lines, without_serve_secrets

__all__ = ["Builder", "ChainArtifacts", "ChainletArtifact", "fingerprint", "state_dir_for"]

STATE_DIR_NAME = ".chainrunner"
_WORKER = Path(__file__).with_name("_build_worker.py")
_IGNORED_DIRS = {"__pycache__", STATE_DIR_NAME, ".git", ".venv", ".mypy_cache", ".ruff_cache",
                 ".pytest_cache"}
# Generous: a cold build imports truss and the chain's libraries, then copies every context.
_BUILD_TIMEOUT_S = 600.0
_OUTPUT_TAIL = 40  # lines of the builder's output kept for an error message
_KEPT_CONTEXTS = 3  # per chainlet: the serving one, the previous one, one spare


class ChainletArtifact(BaseModel):
    """One chainlet's built image context and what its process needs."""

    model_config = ConfigDict(frozen=True)

    name: str
    display_name: str
    context_dir: Path
    dependencies: tuple[str, ...]
    secrets: tuple[str, ...]
    env: dict[str, str]
    digest: str

    @property
    def app_dir(self) -> Path:
        return self.context_dir / "server"

    @property
    def packages_dir(self) -> Path:
        return self.context_dir / "packages"


class ChainArtifacts(BaseModel):
    """A built chain: its chainlets, dependencies first, entrypoint last."""

    model_config = ConfigDict(frozen=True)

    source: Path
    chain_name: str
    entrypoint: str
    chainlets: dict[str, ChainletArtifact]
    inputs: tuple[Path, ...]
    fingerprint: str
    libraries: tuple[str, ...] = ()  # installed modules the chain imports (zygote preloads)
    host_env: tuple[str, ...] = ()  # variables whose host values generation baked in

    def dependents(self, names: set[str]) -> set[str]:
        """`names` and every chainlet that calls one of them, directly or not."""
        closure = set(names)
        changed = True
        while changed:
            changed = False
            for chainlet in self.chainlets.values():
                if chainlet.display_name not in closure and closure & set(chainlet.dependencies):
                    closure.add(chainlet.display_name)
                    changed = True
        return closure

    def to_replace(self, new: "ChainArtifacts") -> set[str]:
        """Chainlets of `new` that need new processes to go from this build to `new`: those
        whose code changed and every chainlet that calls one (it must learn the new port).
        A changed graph (chainlets, dependencies, entrypoint) replaces all of them."""
        same_graph = self.entrypoint == new.entrypoint and self.chainlets.keys() == \
            new.chainlets.keys() and all(self.chainlets[n].dependencies == c.dependencies
                                         for n, c in new.chainlets.items())
        changed = {n for n, c in new.chainlets.items()
                   if not same_graph or self.chainlets[n].digest != c.digest}
        return new.dependents(changed)


class _Built(BaseModel):
    """What the builder process reports; contexts still in the staging dir."""

    chain_name: str
    entrypoint: str
    chainlets: list[ChainletArtifact]
    inputs: list[Path]
    libraries: list[str]
    host_env: list[str]


class _Reply(BaseModel):
    ok: _Built | None = None
    error: str | None = None


def state_dir_for(source: Path) -> Path:
    """`.chainrunner/` of the project of `source`: the nearest folder with pyproject.toml/.git."""
    for folder in source.resolve().parents:
        if (folder / "pyproject.toml").exists() or (folder / ".git").exists():
            return folder / STATE_DIR_NAME
    return source.resolve().parent / STATE_DIR_NAME


def _files(root: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in _IGNORED_DIRS)
        for name in sorted(files):
            if not name.endswith((".pyc", ".pyo")):
                yield Path(folder, name)


def fingerprint(source: Path, inputs: tuple[Path, ...], host_env: tuple[str, ...] = ()) -> str:
    """Hash of everything a build reads: the interpreter, truss's version (it generates the
    code), the chain file, every input file, and the host variables baked into chainlets."""
    sha = hashlib.sha256(f"{sys.executable}\0{_truss_version()}\0{source.resolve()}\0".encode())
    for name in host_env:
        sha.update(f"env:{name}={os.environ.get(name, '')}\0".encode())
    for root in inputs:
        for path in _files(root):
            with contextlib.suppress(FileNotFoundError):  # deleted mid-walk: hashed as absent
                sha.update(f"{path}\0".encode() + path.read_bytes() + b"\0")
    return sha.hexdigest()


def _truss_version() -> str:
    try:
        return version("truss")
    except PackageNotFoundError:  # serve then fails with its own message, not here
        return ""


class Builder:
    """Builds a chain's artifacts through a builder process, reusing them while unchanged."""

    def __init__(self, source: Path, state_dir: Path | None = None,
                 build_timeout: float = _BUILD_TIMEOUT_S,
                 log: Callable[[str, str], None] | None = None) -> None:
        """`log` gets ("build", line) for every line the builder process prints."""
        self.source = source.resolve()
        self.build_timeout = build_timeout
        self._log = log or (lambda name, line: None)
        self._output: deque[str] = deque(maxlen=_OUTPUT_TAIL)
        self._pump: asyncio.Task[None] | None = None
        self.state_dir = state_dir or state_dir_for(self.source)
        key = hashlib.sha256(str(self.source).encode()).hexdigest()[:8]
        self.root = self.state_dir / "builds" / f"{self.source.stem}-{key}"
        self._worker: asyncio.subprocess.Process | None = None

    def _manifest(self) -> ChainArtifacts | None:
        manifest = self.root / "manifest.json"
        try:
            return ChainArtifacts.model_validate_json(manifest.read_bytes())
        except (FileNotFoundError, ValueError):  # none yet, or from another chainrunner version
            return None

    def cached(self) -> ChainArtifacts | None:
        """The last build, if its inputs have not changed since and its contexts exist."""
        artifacts = self._manifest()
        if artifacts is None:
            return None
        if artifacts.fingerprint != fingerprint(self.source, artifacts.inputs,
                                                artifacts.host_env):
            return None
        if not all(c.app_dir.is_dir() for c in artifacts.chainlets.values()):
            return None
        return artifacts

    async def build(self) -> ChainArtifacts:
        """Generate and lay out every chainlet anew; raises BuildError naming what is wrong."""
        self.root.mkdir(parents=True, exist_ok=True)
        staging = self.root / f"staging-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        try:
            async with self._lock():
                previous = self._manifest()
                hashed_inputs = previous.inputs if previous else (self.source.parent,)
                hashed_env = previous.host_env if previous else ()
                hashed = fingerprint(self.source, hashed_inputs, hashed_env)
                reply = await self._request({"source": str(self.source), "staging": str(staging),
                                             "state_dir": str(self.state_dir)})
                if reply.error is not None:
                    raise BuildError(reply.error)
                assert reply.ok is not None
                artifacts = self._install(reply.ok, hashed, hashed_inputs, hashed_env)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return artifacts

    async def close(self) -> None:
        worker, self._worker = self._worker, None
        pump, self._pump = self._pump, None
        if worker is not None and worker.returncode is None:
            assert worker.stdin is not None
            worker.stdin.close()  # the worker exits at the end of its input
            try:
                await asyncio.wait_for(worker.wait(), 5)
            except TimeoutError:
                worker.kill()
                await worker.wait()
        if pump is not None:
            with contextlib.suppress(TimeoutError):  # its children may hold the pipe a while
                await asyncio.wait_for(asyncio.shield(pump), 1)
            pump.cancel()

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        """Two serves of the same chain build one at a time (they share the contexts).
        Polled, so that waiting neither blocks the event loop nor outlives a cancellation."""
        fd = os.open(self.root / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    await asyncio.sleep(0.1)
            yield
        finally:
            os.close(fd)  # releases the lock

    async def _request(self, request: Mapping[str, str]) -> _Reply:
        worker = await self._ensure_worker()
        assert worker.stdin is not None and worker.stdout is not None
        try:
            worker.stdin.write(json.dumps(request).encode() + b"\n")
            await worker.stdin.drain()
            line = await asyncio.wait_for(worker.stdout.readline(), self.build_timeout)
        except BaseException as exc:
            # Stopped (Ctrl-C) or stuck: a worker busy with this build is of no further use.
            worker.kill()
            await worker.wait()
            self._worker = None
            if isinstance(exc, TimeoutError):
                raise BuildError(
                    f"building `{self.source}` took more than {self.build_timeout:.0f}s, so the "
                    "builder process was stopped: does the chain file (or a module it imports) "
                    "wait for something at import time?") from None
            raise
        if not line:
            await worker.wait()
            self._worker = None
            if self._pump is not None:  # the last lines it printed
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._pump), 1)
            tail = "\n".join(f"  | {text}" for text in self._output) or "  | (no output)"
            raise BuildError(f"the builder process exited with code {worker.returncode} while "
                             f"building `{self.source}`; the end of its output:\n{tail}")
        return _Reply.model_validate_json(line)

    async def _ensure_worker(self) -> asyncio.subprocess.Process:
        if self._worker is not None and self._worker.returncode is None:
            return self._worker
        scratch = self.root / "truss"
        (scratch / "tmp").mkdir(parents=True, exist_ok=True)
        # Truss's scratch space (~/.truss, /tmp/.chains_generated) and the cache of the ruff it
        # runs on generated code all stay inside the state directory.
        env = {**without_serve_secrets(os.environ), "HOME": str(scratch),
               "TMPDIR": str(scratch / "tmp"), "RUFF_CACHE_DIR": str(scratch / "ruff-cache")}
        self._worker = await asyncio.create_subprocess_exec(
            sys.executable, "-P", str(_WORKER), str(os.getpid()), env=env,
            start_new_session=True, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert self._worker.stderr is not None
        self._output.clear()
        # What truss and the chain print while building goes to serve's log, prefixed.
        self._pump = asyncio.create_task(
            pump_lines(self._worker.stderr, "build", self._log, self._output), name="build-log")
        return self._worker

    def _install(self, built: _Built, hashed: str, hashed_inputs: tuple[Path, ...],
                 hashed_env: tuple[str, ...]) -> ChainArtifacts:
        """Move fresh contexts to their content-addressed home (or reuse an identical one)."""
        contexts = self.root / "contexts"
        contexts.mkdir(exist_ok=True)
        chainlets = {}
        for fresh in built.chainlets:
            final = contexts / f"{fresh.display_name}-{fresh.digest}"
            if final.exists():
                os.utime(final)  # recently used: kept by `prune`
            else:
                shutil.move(fresh.context_dir, final)
            chainlets[fresh.display_name] = fresh.model_copy(update={"context_dir": final})
        inputs, host_env = tuple(built.inputs), tuple(built.host_env)
        # Hashed before building, so an edit made during the build triggers the next one; only
        # a first build (or one whose input dirs or host variables changed) hashes afterwards.
        stamp = hashed if (inputs, host_env) == (hashed_inputs, hashed_env) \
            else fingerprint(self.source, inputs, host_env)
        artifacts = ChainArtifacts(
            source=self.source, chain_name=built.chain_name, entrypoint=built.entrypoint,
            chainlets=chainlets, inputs=inputs, fingerprint=stamp,
            libraries=tuple(built.libraries), host_env=host_env)
        return artifacts

    async def commit(self, artifacts: ChainArtifacts, lease: Path,
                     in_use: Iterable[Path]) -> None:
        """`artifacts` serve now (started or swapped in): make it the build that `cached`
        reuses, and prune old contexts that no live serve holds."""
        hold(lease, in_use)
        manifest = self.root / "manifest.json"
        manifest.with_suffix(".tmp").write_text(artifacts.model_dump_json(indent=2))
        manifest.with_suffix(".tmp").replace(manifest)
        # Pruning beside a build could delete a context it is about to reuse; that build's
        # own serve prunes when it commits, so skipping here loses nothing.
        fd = os.open(self.root / "lock", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            serving = {c.context_dir.name for c in artifacts.chainlets.values()}
            prune(self.root / "contexts", serving, leased(self.state_dir / "serve"),
                  _KEPT_CONTEXTS)
        except BlockingIOError:
            pass
        finally:
            os.close(fd)
