"""`chainrunner serve` end to end: real processes, real sockets, loopback only.

Two serves start at once (the runner chain with the mock backend behind an API key, and the
seed's hello chain); each test talks to them over HTTP; the last tests stop them with a signal
and check by pid that every process serve started is gone. Tests that need a chain of their own
(watch, slow starts, failures) write it to a temporary project, never the repository's files.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import psutil
import pytest

from benchmarks.harness import ServeProcess

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
API_KEY = "e2e-secret"
AUTH = {"Authorization": f"Api-Key {API_KEY}"}

ECHO_CHAIN = {
    "handle": "e2e",
    "inputs": [{"name": "topic"}],
    "steps": [{"handle": "answer", "plugin": "gpt-3", "plugin_config": {"max_words": 12},
               "prompt": "ping {topic}"}],
}

GREET_CHAIN = '''
import asyncio

import truss_chains as chains

from chainlets import deploy


class Greeter(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    async def run_remote(self, name: str) -> str:
        return f"Hello, {name}"


@chains.mark_entrypoint
class GreetAll(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    def __init__(self, greeter: Greeter = chains.depends(Greeter)) -> None:
        self._greeter = greeter

    async def run_remote(self, names: list[str]) -> str:
        return ", ".join(await asyncio.gather(*(self._greeter.run_remote(n) for n in names)))
'''

BROKEN_CHAIN = '''
import truss_chains as chains

from chainlets import deploy


class Doomed(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        raise RuntimeError("doomed on purpose")

    async def run_remote(self, text: str) -> str:
        return text


@chains.mark_entrypoint
class Front(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self, doomed: Doomed = chains.depends(Doomed)) -> None:
        self._doomed = doomed

    async def run_remote(self, text: str) -> str:
        return await self._doomed.run_remote(text)
'''


SLOW_START_CHAIN = '''
import time

import truss_chains as chains

from chainlets import deploy


@chains.mark_entrypoint
class Sleepy(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        print("sleepy: loading for two minutes", flush=True)
        time.sleep(120)

    async def run_remote(self, text: str) -> str:
        return text
'''


SLOW_RESTART_CHAIN = '''
import os
import time

import truss_chains as chains

from chainlets import deploy


@chains.mark_entrypoint
class Greet(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image())

    def __init__(self) -> None:
        if os.path.exists(os.environ["E2E_SLOW_START_MARKER"]):
            time.sleep(5)

    async def run_remote(self, name: str) -> str:
        return f"Hello, {name}"
'''


def _project(root: Path, source: str) -> Path:
    """A throwaway project (pyproject.toml marks its root) with one chain file."""
    (root / "chains").mkdir(parents=True)
    (root / "pyproject.toml").write_text("")
    chain = root / "chains" / "chain.py"
    chain.write_text(textwrap.dedent(source))
    return chain


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, ServeProcess]]:
    """The runner chain (API key, scripted mock backend) and the hello chain, started at once."""
    script = tmp_path_factory.mktemp("mock") / "script.json"
    script.write_text(json.dumps({"rules": [{"match": "ping", "reply": "pong"}]}))
    runner = ServeProcess.launch(REPO / "chains" / "runner.py", "--api-key", API_KEY,
                                 env={"CHAINRUNNER_MOCK_SCRIPT": str(script)}, cwd=REPO)
    hello = ServeProcess.launch(REPO / "chains" / "hello.py", cwd=REPO)
    servers = {"runner": runner, "hello": hello}
    try:
        for server in servers.values():
            server.await_ready(180)
        yield servers
    finally:
        for server in servers.values():
            server.stop(signal.SIGKILL)  # a no-op for those the last test stopped


def _post(server: ServeProcess, payload: object, headers: dict[str, str] | None = None,
          content: bytes | None = None) -> httpx.Response:
    if content is not None:
        return httpx.post(f"{server.url}/run_remote", content=content, headers=headers,
                          timeout=30)
    return httpx.post(f"{server.url}/run_remote", json=payload, headers=headers, timeout=30)


def _chainlets(server: ServeProcess) -> dict[str, dict[str, object]]:
    ready = httpx.get(f"{server.url}/ready", timeout=10)
    chainlets: dict[str, dict[str, object]] = ready.json()["chainlets"]
    return chainlets


def _pid(server: ServeProcess, chainlet: str) -> int:
    return int(str(_chainlets(server)[chainlet]["pid"]))


def _zygotes_of(serve_pid: int) -> set[int]:
    """Zygote processes launched by the serve with this pid (its pid is in their arguments)."""
    return {p.pid for p in psutil.process_iter(["cmdline"])
            if "_zygote.py" in " ".join(p.info["cmdline"] or [])
            and str(serve_pid) in (p.info["cmdline"] or [])}


def test_hello_chain_keeps_its_contract(served: dict[str, ServeProcess]) -> None:
    response = _post(served["hello"], {"names": ["Marius", "Sid", "Bola"]})
    assert response.status_code == 200
    assert response.json() == "Hello, Marius\nHello, Sid\nHello, Bola"


def test_runner_chain_runs_on_the_mock_backend(served: dict[str, ServeProcess]) -> None:
    response = _post(served["runner"], {"chain": ECHO_CHAIN, "inputs": {"topic": "serve"},
                                        "options": {"llm": "mock"}}, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["state"] == "succeeded", result
    # The mock's script reached the MockGenerator process through serve's environment.
    assert result["output"] == "pong"


def test_readiness_lists_every_chainlet(served: dict[str, ServeProcess]) -> None:
    ready = httpx.get(f"{served['runner'].url}/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert set(ready.json()["chainlets"]) == {"ChainRunner", "MockGenerator", "OpenAIGenerator"}


@pytest.mark.parametrize("headers", [None, {"Authorization": "Api-Key wrong"},
                                     {"Authorization": f"Bearer {API_KEY}"}],
                         ids=["no-key", "wrong-key", "wrong-scheme"])
def test_a_request_without_the_api_key_is_401(served: dict[str, ServeProcess],
                                              headers: dict[str, str] | None) -> None:
    response = _post(served["runner"], {"chain": ECHO_CHAIN, "inputs": {"topic": "x"}},
                     headers=headers)
    assert response.status_code == 401
    assert "Authorization: Api-Key" in response.json()["error"]


@pytest.mark.parametrize(("content", "detail"), [
    (b"{not json", "Input Parsing Error"),
    (json.dumps({"chain": ECHO_CHAIN}).encode(), "`inputs`: Field required"),
    (json.dumps({"chain": 7, "inputs": {}}).encode(), "`chain`"),
], ids=["not-json", "missing-argument", "wrong-type"])
def test_a_malformed_body_is_4xx_with_truss_error_detail(served: dict[str, ServeProcess],
                                                         content: bytes, detail: str) -> None:
    response = _post(served["runner"], None, headers={**AUTH, "Content-Type": "application/json"},
                     content=content)
    assert 400 <= response.status_code < 500, response.text
    assert detail in response.json()["error"]


def test_a_taken_port_is_a_clear_error(served: dict[str, ServeProcess]) -> None:
    taken = served["hello"].port
    second = subprocess.Popen([sys.executable, "-m", "chainrunner.serve", "chains/hello.py",
                               "--port", str(taken)], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 1
    assert f"port {taken} on 127.0.0.1 is already in use" in stderr
    assert _zygotes_of(second.pid) == set()  # launched first, gone with it


def test_a_killed_dependency_fails_fast_naming_it_then_is_restarted(
        served: dict[str, ServeProcess]) -> None:
    runner = served["runner"]
    mock_pid = _pid(runner, "MockGenerator")
    mark = len(runner.lines)
    psutil.Process(mock_pid).kill()  # a process this test's serve started
    request = {"chain": ECHO_CHAIN, "inputs": {"topic": "x"},
               "options": {"llm": "mock", "max_attempts": 1}}
    started = time.monotonic()
    failed = _post(runner, request, headers=AUTH)
    elapsed = time.monotonic() - started
    assert failed.status_code == 200, failed.text
    assert failed.json()["state"] == "failed"
    assert "Chainlet `MockGenerator`" in failed.json()["statusMessage"]
    assert elapsed < 10, "a request needing a dead chainlet must fail fast, not hang"
    runner.wait_for(f"chainlet `MockGenerator` \\(pid {mock_pid}, port \\d+\\) killed by "
                    "SIGKILL; restarting it", 30, after=mark)
    runner.wait_for("chainlet `MockGenerator` restarted", 60, after=mark)
    assert _pid(runner, "MockGenerator") != mock_pid
    again = _post(runner, request, headers=AUTH)
    assert again.json()["state"] == "succeeded", again.text


def test_a_killed_entrypoint_answers_503_naming_it_then_is_restarted(tmp_path: Path) -> None:
    marker = tmp_path / "slow-restart"
    chain = _project(tmp_path / "project", SLOW_RESTART_CHAIN)
    server = ServeProcess.start(chain, env={"E2E_SLOW_START_MARKER": str(marker)},
                                ready_timeout=180)
    try:
        entry_pid = _pid(server, "Greet")
        mark = len(server.lines)
        marker.write_text("")  # from now on Greet takes 5 s to start: the restart cannot win
        psutil.Process(entry_pid).kill()
        server.wait_for("chainlet `Greet` .* killed by SIGKILL", 30, after=mark)
        failed = _post(server, {"name": "A"})
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"].startswith(
            f"chainlet `Greet` (pid {entry_pid}, port ")
        assert "is not running (killed by SIGKILL)" in failed.json()["error"]
        server.wait_for("chainlet `Greet` restarted", 60, after=mark)
        assert _post(server, {"name": "A"}).json() == "Hello, A"
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_every_process_serve_started(served: dict[str, ServeProcess],
                                                    signum: int) -> None:
    server = served["runner" if signum == signal.SIGINT else "hello"]
    pids = server.descendants()
    assert len(pids) >= 3  # the zygote and the chainlets
    assert server.stop(signum) == 0
    assert "stopped" in server.lines[-1]
    assert ServeProcess.alive(pids | {server.process.pid}) == set()


def test_a_chainlet_that_fails_to_start_stops_serve_and_shows_its_log(tmp_path: Path) -> None:
    chain = _project(tmp_path, BROKEN_CHAIN)
    server = ServeProcess.launch(chain)
    assert server.process.wait(180) == 1
    server.stop()
    assert "chainlet `Doomed`" in server.output
    assert "RuntimeError: doomed on purpose" in server.output  # from its log tail
    assert _zygotes_of(server.process.pid) == set()


def test_ctrl_c_while_a_chainlet_starts_stops_serve_at_once(tmp_path: Path) -> None:
    chain = _project(tmp_path, SLOW_START_CHAIN)
    server = ServeProcess.launch(chain, "--rebuild")
    server.wait_for("sleepy: loading for two minutes", 180)
    pids = server.descendants() | {server.process.pid}
    assert len(pids) >= 3  # serve, the zygote, the chainlet
    started = time.monotonic()
    code = server.stop(signal.SIGINT)
    stopped_in = time.monotonic() - started
    assert code == 0, server.output
    assert stopped_in < 10, f"serve took {stopped_in:.1f}s to stop during startup"
    assert "ready in" not in server.output
    assert ServeProcess.alive(pids) == set()


def test_a_chain_that_exits_at_import_shows_its_message(tmp_path: Path) -> None:
    chain = _project(tmp_path, 'import sys\n\nprint("reading config", flush=True)\n'
                               'sys.exit("config file missing: set FOO")\n')
    server = ServeProcess.launch(chain, "--rebuild")
    assert server.process.wait(180) == 1
    server.stop()
    assert "build | reading config" in server.output  # the builder's output is shown
    assert "SystemExit: config file missing: set FOO" in server.output
    assert _zygotes_of(server.process.pid) == set()


def test_watch_swaps_in_an_edit_and_keeps_serving_through_a_broken_one(tmp_path: Path) -> None:
    slow = GREET_CHAIN.replace(
        '        return f"Hello, {name}"',
        '        if name == "slow":\n            await asyncio.sleep(3)\n'
        '        return f"Hello, {name}"')
    chain = _project(tmp_path, slow)
    server = ServeProcess.start(chain, "--watch", ready_timeout=180)
    try:
        pids = server.descendants()
        assert _post(server, {"names": ["A"]}).json() == "Hello, A"
        server.wait_for("watching", 30)
        # A request in flight when the edit lands finishes on the old processes.
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(_post, server, {"names": ["slow"]})
            time.sleep(0.5)
            mark = len(server.lines)
            saved = time.monotonic()
            chain.write_text(chain.read_text().replace('f"Hello, {name}"', 'f"Howdy, {name}"'))
            server.wait_for("reloaded GreetAll, Greeter in", 60, after=mark)
            reloaded = time.monotonic() - saved
            pids |= server.descendants()
            assert _post(server, {"names": ["A"]}).json() == "Howdy, A"
            assert in_flight.result(30).json() == "Hello, slow"
        print(f"save to serving the new code: {reloaded:.1f}s")
        mark = len(server.lines)
        chain.write_text(chain.read_text() + "\nbroken = (\n")
        server.wait_for("build failed, the previous version keeps serving", 60, after=mark)
        server.wait_for("SyntaxError", 5, after=mark)
        assert _post(server, {"names": ["A"]}).json() == "Howdy, A"
        pids |= server.descendants()
    finally:
        code = server.stop()
    assert code == 0
    assert ServeProcess.alive(pids) == set()
