"""`chainrunner serve` end to end: real processes, real sockets, loopback only.

Two serves start at once (the runner chain with the mock backend behind an API key, and the
seed's hello chain); each test talks to them over HTTP; the last tests stop them with a signal
and check by pid that every process serve started is gone. Tests that need a chain of their own
(watch, slow starts and requests, failures, secrets; sources.py) write it to a temporary
project, never the repository's files.
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
from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import ChainSpec
from chainlets.runner import ChainRunner
from tests.e2e.sources import (
    BROKEN_CHAIN,
    GREET_CHAIN,
    SECRETS_CHAIN,
    SLOW_CHAIN,
    SLOW_RESTART_CHAIN,
    SLOW_START_CHAIN,
)

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]

REPO = Path(__file__).resolve().parents[2]
API_KEY = "e2e-secret"
AUTH = {"Authorization": f"Api-Key {API_KEY}"}
OPENAI_KEY = "sk-e2e-credential-not-a-real-key"

ECHO_CHAIN = {
    "handle": "e2e",
    "inputs": [{"name": "topic"}],
    "steps": [{"handle": "answer", "plugin": "gpt-3", "plugin_config": {"max_words": 12},
               "prompt": "ping {topic}"}],
}

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
    runner = ServeProcess.launch(REPO / "chains" / "runner.py", cwd=REPO, via_cli=True, env={
        "CHAINRUNNER_MOCK_SCRIPT": str(script), "CHAINRUNNER_API_KEY": API_KEY,
        "OPENAI_API_KEY": OPENAI_KEY})
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
    ready = httpx.get(f"{server.url}/ready", timeout=10, headers=AUTH)
    chainlets: dict[str, dict[str, object]] = ready.json()["chainlets"]
    return chainlets


def _pid(server: ServeProcess, chainlet: str) -> int:
    return int(str(_chainlets(server)[chainlet]["pid"]))


def _port(server: ServeProcess, chainlet: str) -> int:
    return int(str(_chainlets(server)[chainlet]["port"]))


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


def test_runner_takes_json_inputs_over_http(served: dict[str, ServeProcess]) -> None:
    chain = {"handle": "people", "steps": [
        {"handle": "greet", "plugin": "mock", "plugin_config": {"max_words": 20},
         "map": {"over": "people", "item": "who"}, "prompt": "Hello {who} of {team}"}]}
    inputs = {"people": ["Ann", {"name": "Bob"}], "team": {"name": "blue"}}
    response = _post(served["runner"], {"chain": chain, "inputs": inputs,
                                        "options": {"llm": "mock"}}, headers=AUTH)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["state"] == "succeeded", result
    assert result["input"] == inputs
    assert [s["handle"] for s in result["steps"]] == ["greet", "greet[0]", "greet[1]"]


def test_readiness_lists_every_chainlet_and_its_port_only_to_the_key(
        served: dict[str, ServeProcess]) -> None:
    ready = httpx.get(f"{served['runner'].url}/ready", timeout=10)
    assert ready.status_code == 200
    assert ready.json() == {"ready": True, "chainlets": {
        name: {"state": "ready"} for name in ("ChainRunner", "MockGenerator", "OpenAIGenerator",
                                              "CodeRunner")}}
    assert all({"pid", "port"} <= set(chainlet) for chainlet in _chainlets(served["runner"])
               .values())


def test_with_an_api_key_no_chainlet_answers_without_serve_s_internal_key(
        served: dict[str, ServeProcess]) -> None:
    for name, chainlet in _chainlets(served["runner"]).items():
        url = f"http://127.0.0.1:{chainlet['port']}"
        answers = [httpx.post(f"{url}/v1/models/model:predict", json={}, timeout=10),
                   httpx.post(f"{url}/v1/models/model:predict", json={}, headers=AUTH,
                              timeout=10),  # the gateway's key is not the chainlets' key
                   httpx.get(f"{url}/v1/models/model", timeout=10)]
        assert [a.status_code for a in answers] == [401, 401, 401], (name, answers[0].text)
        assert "call the chain through serve's gateway" in answers[0].json()["error"]


def test_no_process_serve_forks_holds_a_credential_of_its_environment(
        served: dict[str, ServeProcess]) -> None:
    pids = served["runner"].descendants()
    assert len(pids) >= 4  # the zygote and three chainlets
    for pid in pids:  # a forked chainlet's first environment is the zygote's
        environ = Path(f"/proc/{pid}/environ").read_bytes()
        assert OPENAI_KEY.encode() not in environ and API_KEY.encode() not in environ


def test_a_request_that_breaks_the_server_never_breaks_the_next_one(
        served: dict[str, ServeProcess]) -> None:
    deep = '{"chain": ' + '{"a":' * 2000 + "1" + "}" * 2000 + ', "inputs": {}}'
    valid = {"chain": ECHO_CHAIN, "inputs": {"topic": "x"}, "options": {"llm": "mock"}}
    with httpx.Client(base_url=served["runner"].url, headers=AUTH, timeout=30) as client:
        for _ in range(10):  # back to back, as another client's request would come
            bad = client.post("/run_remote", content=deep,
                              headers={"Content-Type": "application/json"})
            assert bad.status_code == 400, bad.text
            assert "nested deeper than the server's JSON parser goes" in bad.json()["error"]
            good = client.post("/run_remote", json=valid)
            assert good.status_code == 200, good.text


def _cli_problems(chain: dict[str, object], inputs: dict[str, str]) -> list[str]:
    """The problems `chainrunner run` prints for this chain and these inputs."""
    try:
        compile_chain(ChainSpec.model_validate(chain), ChainRunner.plugins).resolve_inputs(inputs)
    except (ChainDefinitionError, InputsError) as exc:
        return exc.problems
    raise AssertionError("the chain and inputs are valid")


def _step(handle: str, prompt: str, plugin: str = "mock") -> dict[str, object]:
    return {"handle": handle, "prompt": prompt, "plugin": plugin}


@pytest.mark.parametrize(("chain", "error"), [
    ({"handle": "c", "inputs": [{"name": "topic"}], "steps": [_step("a", "{tpoic}")]},
     "chain `c` is invalid (1 problem)"),
    ({"handle": "c", "steps": [_step("a", "x", plugin="gpt-5")]},
     "chain `c` is invalid (1 problem)"),
    ({"handle": "c", "steps": [_step("a", "{b}"), _step("b", "{a}")]},
     "chain `c` is invalid (1 problem)"),
    ({"handle": "c", "inputs": [{"name": "topic"}], "steps": [_step("a", "{topic}")]},
     "chain `c` cannot run with these inputs (1 problem)"),
], ids=["unknown-name", "unknown-plugin", "cycle", "missing-input"])
def test_a_client_error_is_422_with_the_cli_s_problems_and_no_server_path(
        served: dict[str, ServeProcess], chain: dict[str, object], error: str) -> None:
    response = _post(served["runner"], {"chain": chain, "inputs": {}}, headers=AUTH)
    assert response.status_code == 422, response.text
    assert response.json() == {"error": error, "problems": _cli_problems(chain, {})}
    assert str(REPO) not in response.text and "user_stack_trace" not in response.text


def _hostile_bodies() -> list[tuple[bytes, int, str]]:
    """Bodies a careless or hostile client sends: (body, status, text the error holds)."""
    chain = json.dumps(ECHO_CHAIN)
    deep = '{"a":' * 10_000 + "1" + "}" * 10_000

    def with_chain(step: dict[str, object] | None = None, **changes: object) -> bytes:
        steps = [{"handle": "answer", "plugin": "gpt-3", "plugin_config": {"max_words": 12},
                  "prompt": "ping {topic}", **(step or {})}]
        return json.dumps({"chain": {**ECHO_CHAIN, "steps": steps, **changes},
                           "inputs": {"topic": "x"}}).encode()

    return [
        (f'{{"chain": {chain}, "inputs": {{"topic": "a", "topic": "b"}}}}'.encode(), 400,
         "the request body: key `topic` appears more than once in the JSON object"),
        (f'{{"chain": {chain}, "inputs": {{"topic": "café"}}}}'.encode("latin-1"), 400,
         "the request body is not UTF-8 text: byte 0xe9"),
        (f'{{"chain": {deep}, "inputs": {{}}}}'.encode(), 400,
         "nested deeper than the server's JSON parser goes"),
        (with_chain(step={"plugin_config": {"max_words": 1e30}}), 422,
         "1e+30 is over the limit of 50,000 words set by CHAINRUNNER_MAX_WORDS"),
        # The body's `chain` is parsed by truss into a ChainSpec first: its own 400.
        (with_chain(callback_url="ftp://example.com/x"), 400,
         "`chain.callback_url`: not an http(s) URL; write it as https://host/path"),
        (json.dumps({"chain": ECHO_CHAIN, "inputs": {"topic": "x" * 1_000_000}}).encode(),
         422,
         "the prompt with these inputs is 1,000,005 characters, over the limit of 1,000,000 "
         "characters set by CHAINRUNNER_MAX_PROMPT_CHARS"),
        (json.dumps({"chain": ECHO_CHAIN, "inputs": {"topic": "x"}, "options": {
            "initial_backoff_s": 1e9, "max_backoff_s": 1e9}}).encode(), 400,
         "Input should be less than or equal to 60"),
    ]


def test_without_a_backend_option_the_deployment_s_default_answers_and_says_so(
        served: dict[str, ServeProcess]) -> None:
    """Serve was started without CHAINRUNNER_LLM: the deployed default, openai, never the
    mock silently; every record names the backend (no network here: the call fails)."""
    response = _post(served["runner"], {"chain": ECHO_CHAIN, "inputs": {"topic": "x"},
                                        "options": {"max_attempts": 1}}, headers=AUTH)
    assert response.status_code == 200, response.text
    step = response.json()["steps"][0]
    assert step["backend"] == "openai" and step["state"] == "failed", step


def test_hostile_bodies_are_4xx_naming_the_problem(served: dict[str, ServeProcess]) -> None:
    with httpx.Client(base_url=served["runner"].url, timeout=60,
                      headers={**AUTH, "Content-Type": "application/json"}) as client:
        for body, status, text in _hostile_bodies():
            response = client.post("/run_remote", content=body)
            assert response.status_code == status, (text, response.text[:500])
            assert text in response.text, response.text[:500]
            assert "Traceback" not in response.text and str(REPO) not in response.text


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
    # `inputs` is optional since run_remote also answers operations: the chain's own check
    # names the missing input.
    (json.dumps({"chain": ECHO_CHAIN}).encode(), "cannot run with these inputs"),
    (json.dumps({"chain": 7, "inputs": {}}).encode(), "`chain`"),
], ids=["not-json", "missing-argument", "wrong-type"])
def test_a_malformed_body_is_4xx_with_truss_error_detail(served: dict[str, ServeProcess],
                                                         content: bytes, detail: str) -> None:
    response = _post(served["runner"], None, headers={**AUTH, "Content-Type": "application/json"},
                     content=content)
    assert 400 <= response.status_code < 500, response.text
    assert detail in response.json()["error"]


def test_the_ready_line_counts_from_the_start_of_serve_s_process(
        served: dict[str, ServeProcess]) -> None:
    runner = served["runner"]  # `chainrunner serve`, the first awaited: seen when printed
    reported = float(runner.wait_for(r"ready in ([\d.]+)s", 1)[1])
    # The harness launched it `ready_wall_s` before it read the line: the line counts that
    # too (the interpreter's start, the CLI's ~2 s of imports), not only what came after.
    assert runner.ready_wall_s is not None
    assert runner.ready_wall_s - 1.0 <= reported <= runner.ready_wall_s + 0.1


def test_a_taken_port_is_a_clear_error_and_a_key_flag_is_warned_of(
        served: dict[str, ServeProcess]) -> None:
    taken = served["hello"].port
    second = subprocess.Popen([sys.executable, "-m", "chainrunner.serve", "chains/hello.py",
                               "--port", str(taken), "--api-key", "on-the-command-line"],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, stderr = second.communicate(timeout=120)
    assert second.returncode == 1
    assert ("warning: --api-key on the command line is visible to every user of this machine "
            "(`ps`); set CHAINRUNNER_API_KEY instead") in stderr
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


def test_a_killed_entrypoint_holds_requests_until_it_is_back_or_restart_wait_ends(
        tmp_path: Path) -> None:
    marker = tmp_path / "slow-restart"
    chain = _project(tmp_path / "project", SLOW_RESTART_CHAIN)
    server = ServeProcess.start(chain, "--restart-wait", "2",
                                env={"E2E_SLOW_START_MARKER": str(marker)}, ready_timeout=180)
    try:
        entry_pid = _pid(server, "Greet")
        mark = len(server.lines)
        marker.write_text("")  # from now on Greet takes 5 s to start: more than --restart-wait
        psutil.Process(entry_pid).kill()
        server.wait_for("chainlet `Greet` .* killed by SIGKILL", 30, after=mark)
        failed = _post(server, {"name": "A"})
        assert failed.status_code == 503, failed.text
        assert failed.json()["error"] == (
            f"chainlet `Greet` (pid {entry_pid}, port {_port(server, 'Greet')}) is not running "
            "(killed by SIGKILL); chainrunner serve restarts chainlets that exit: retry shortly "
            "(held 2s for it to come back; --restart-wait sets how long)")
        server.wait_for("chainlet `Greet` restarted", 60, after=mark)

        marker.unlink()  # restarts are quick again: a request sent at the kill waits for one
        mark = len(server.lines)
        psutil.Process(_pid(server, "Greet")).kill()
        held = _post(server, {"name": "B"})
        assert (held.status_code, held.json()) == (200, "Hello, B")
        server.wait_for("chainlet `Greet` restarted", 60, after=mark)
    finally:
        assert server.stop() == 0


def _wait_count(server: ServeProcess, text: str, count: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while server.output.count(text) < count:
        assert time.monotonic() < deadline, f"fewer than {count} `{text}` in:\n{server.output}"
        time.sleep(0.05)


def test_sigterm_lets_requests_in_flight_finish_and_refuses_new_ones(tmp_path: Path) -> None:
    server = ServeProcess.start(_project(tmp_path, SLOW_CHAIN), ready_timeout=180)
    pids = server.descendants() | {server.process.pid}
    try:
        with ThreadPoolExecutor(2) as pool:
            in_flight = [pool.submit(_post, server, {"seconds": 3}) for _ in range(2)]
            _wait_count(server, "slow: sleeping 3.0s", 2, 60)
            server.process.send_signal(signal.SIGTERM)
            server.wait_for(r"stopping: no new requests; waiting up to 30s \(--grace\) for "
                            "the 2 in flight", 10)
            refused = _post(server, {"seconds": 0})
            assert (refused.status_code, refused.json()) == (
                503, {"error": "chainrunner serve is stopping: it takes no new requests"})
            assert [(r.status_code, r.json()) for r in (f.result(30) for f in in_flight)] == [
                (200, "slept 3.0s")] * 2
        assert server.process.wait(30) == 0  # stopped of its own accord, once they finished
    finally:
        server.stop(signal.SIGKILL)  # only if a failed assertion left it running
    assert ServeProcess.alive(pids) == set()


def test_a_request_still_running_after_the_grace_is_503_saying_so(tmp_path: Path) -> None:
    server = ServeProcess.start(_project(tmp_path, SLOW_CHAIN), "--grace", "1",
                                ready_timeout=180)
    pids = server.descendants() | {server.process.pid}
    try:
        with ThreadPoolExecutor(1) as pool:
            in_flight = pool.submit(_post, server, {"seconds": 600})
            server.wait_for("slow: sleeping 600.0s", 60)
            server.process.send_signal(signal.SIGTERM)
            cut = in_flight.result(60)
        assert (cut.status_code, cut.json()) == (503, {
            "error": "chainrunner serve stopped while this request was in flight (it was "
                     "still running after --grace 1s)"})
        assert server.process.wait(30) == 0
    finally:
        server.stop(signal.SIGKILL)  # only if a failed assertion left it running
    assert "1 request still in flight after 1s: stopping anyway" in server.output
    assert ServeProcess.alive(pids) == set()


def test_a_credential_reaches_only_the_chainlet_that_declares_it(tmp_path: Path) -> None:
    env = {"E2E_TOKEN": "e2e-credential-token", "OPENAI_API_KEY": "e2e-credential-openai"}
    server = ServeProcess.start(_project(tmp_path, SECRETS_CHAIN), env=env, ready_timeout=180)
    try:
        response = _post(server, {})
        assert response.json() == ["Holder secret=e2e-credential-token",
                                   "Holder TRUSS_SECRET_e2e_token"]  # and nothing in Peer
        for pid in server.descendants():  # the zygote and the chainlets' first environment
            assert b"e2e-credential" not in Path(f"/proc/{pid}/environ").read_bytes()
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
