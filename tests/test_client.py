"""The Python client against a fake service at the transport seam (`httpx.MockTransport`)."""

import json
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from chainlets.engine.models import RunState, StepRecord
from chainlets.errors import (
    ChainDefinitionError,
    ChainrunnerError,
    ConflictError,
    NotFoundError,
    RequestError,
)
from chainlets.language.spec import load_chain
from chainlets.service import models, responses
from chainlets.service.models import parse_operation
from chainlets.service.settings import ServiceLimits
from chainrunner import client as client_module
from chainrunner.client import AsyncClient, Client, ServiceError, WaitTimeoutError

JOKE = load_chain(Path(__file__).parent.parent / "chains" / "specs" / "joke.json")
NOW = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
BASE = "http://127.0.0.1:8000"


def truss_error(status: int, message: str, cls_name: str = "HTTPException") -> httpx.Response:
    """An error as a truss chain entrypoint answers it (the chainlet raised `cls_name`)."""
    prefix = f"{status}: " if cls_name == "HTTPException" else ""
    return httpx.Response(status, json={"error": {
        "exception_cls_name": cls_name, "exception_module_name": "somewhere",
        "exception_message": prefix + message,
        "user_stack_trace": [{"filename": "/srv/app/model.py", "lineno": 1, "name": "f",
                              "line": "x"}]}})


class FakeService:
    """The service's side of the wire: parses each body as the runner does and answers from
    memory; an invocation reads `running` for `polls` status reads, then `succeeded`."""

    def __init__(self, polls: int = 2) -> None:
        self.polls = polls
        self.requests: list[httpx.Request] = []
        self.chains: dict[str, Any] = {}
        self.reads: dict[str, int] = {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        try:
            op = parse_operation(json.loads(request.content), ServiceLimits())
        except RequestError as exc:
            return truss_error(400, str(exc))
        reply = self.answer(op)
        if isinstance(reply, httpx.Response):
            return reply
        return httpx.Response(200, json=json.loads(reply.model_dump_json()))

    def answer(self, op: models.Operation | None) -> Any:
        match op:
            case models.CreateChain(chain=chain):
                self.chains[f"ch_{len(self.chains) + 1}"] = chain
                return responses.ChainCreated(chain_id=f"ch_{len(self.chains)}")
            case models.RunChain(chain_id=chain_id) if chain_id not in (None, *self.chains):
                return truss_error(404, f"chain `{chain_id}` not found; list_chains shows "
                                        f"the stored ones")
            case models.RunChain():
                return responses.InvocationRef(invocation_id="inv_1", state=RunState.RUNNING)
            case models.RunStatus(invocation_id=invocation_id):
                self.reads[invocation_id] = self.reads.get(invocation_id, 0) + 1
                done = self.reads[invocation_id] > self.polls
                state = RunState.SUCCEEDED if done else RunState.RUNNING
                return responses.InvocationStatus(
                    chain="single-prompt", input={"topic": "food"}, state=state,
                    output="YES" if done else None, invocation_id=invocation_id,
                    chain_id="ch_1", created_at=NOW,
                    steps=[StepRecord(handle="tell-joke", state=state)])
            case models.Cancel(invocation_id=invocation_id):
                return truss_error(409, f"invocation `{invocation_id}` already finished "
                                        f"(succeeded); there is nothing to cancel")
            case _:
                return httpx.Response(500, json={"error": "Internal Server Error"})


def _client(handler: Callable[[httpx.Request], httpx.Response], **kwargs: Any) -> Client:
    return Client(BASE, http=httpx.Client(transport=httpx.MockTransport(handler)), **kwargs)


def test_seed_flow_create_run_poll() -> None:
    service = FakeService(polls=2)
    with _client(service, api_key="s3cret") as runner:
        chain_id = runner.create_chain(JOKE).chain_id
        started = runner.run_chain(chain_id, inputs={"topic": "food"},
                                   callback_url="https://example.com/hook")
        assert started == responses.InvocationRef(invocation_id="inv_1", state="running")
        status = runner.wait(started.invocation_id, timeout_s=5, poll_s=0)
    assert (status.state, status.output) == (RunState.SUCCEEDED, "YES")
    assert [json.loads(r.content)["op"] for r in service.requests] == [
        "create_chain", "run_chain", "run_status", "run_status", "run_status"]
    assert {str(r.url) for r in service.requests} == {f"{BASE}/run_remote"}
    assert {r.headers["authorization"] for r in service.requests} == {"Api-Key s3cret"}
    assert json.loads(service.requests[1].content) == {
        "op": "run_chain", "chain_id": "ch_1", "inputs": {"topic": "food"},
        "callback_url": "https://example.com/hook"}


async def test_async_client_runs_the_same_flow() -> None:
    service = FakeService(polls=1)
    http = httpx.AsyncClient(transport=httpx.MockTransport(service))
    async with AsyncClient(BASE + "/", api_key="k", http=http) as runner:
        chain_id = (await runner.create_chain(JOKE.model_dump())).chain_id
        started = await runner.run_chain(chain_id, inputs={"topic": "food"})
        status = await runner.wait(started.invocation_id, timeout_s=5, poll_s=0)
        with pytest.raises(ConflictError, match="already finished"):
            await runner.cancel("inv_1")
    await http.aclose()
    assert status.state is RunState.SUCCEEDED
    assert {str(r.url) for r in service.requests} == {f"{BASE}/run_remote"}


def test_invoke_sends_arguments_as_they_are_and_returns_json() -> None:
    service = FakeService()
    with _client(service) as runner:
        answer = runner.invoke("create_chain", chain=JOKE.model_dump(mode="json"))
    assert answer == {"chain_id": "ch_1"}
    assert "authorization" not in service.requests[0].headers


@pytest.mark.parametrize(("base_url", "scheme", "header"), [
    ("https://chain-abc.api.baseten.co/environments/production", "Api-Key", "Api-Key k"),
    ("https://chain-abc.api.baseten.co/development/run_remote", "Api-Key", "Api-Key k"),
    ("https://proxy.example/chainrunner/", "Bearer", "Bearer k"),
], ids=["baseten", "full-endpoint", "bearer-proxy"])
def test_url_and_auth_header(base_url: str, scheme: str, header: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"chain_id": "c"})
    http = httpx.Client(transport=httpx.MockTransport(handler))
    Client(base_url, api_key="k", auth_scheme=scheme, http=http).create_chain(JOKE)
    assert str(seen[0].url).endswith("/run_remote") and "run_remote/run_remote" not in \
        str(seen[0].url)
    assert seen[0].headers["authorization"] == header


def test_the_chain_goes_as_given() -> None:
    """Unset arguments are left out; a null inside the chain is the user's and stays."""
    service = FakeService()
    chain = JOKE.model_copy(update={"steps": [JOKE.steps[0].model_copy(
        update={"plugin_config": {"max_words": 10, "stop": None}})]})
    with _client(service) as runner:
        runner.create_chain(chain)
    sent = json.loads(service.requests[0].content)
    assert sent["chain"]["steps"][0]["plugin_config"] == {"max_words": 10, "stop": None}
    assert sent == {"op": "create_chain", "chain": json.loads(chain.model_dump_json())}


def test_json_inputs_go_as_json() -> None:
    service = FakeService()
    inputs: dict[str, Any] = {"people": ["Ann", {"name": "Bob", "age": 3}], "flag": True,
                              "topic": "x"}
    with _client(service) as runner:
        runner.run_chain(chain=JOKE, inputs=inputs)
    assert json.loads(service.requests[0].content)["inputs"] == inputs


def test_a_bad_request_is_caught_before_any_round_trip() -> None:
    service = FakeService()
    with _client(service) as runner, pytest.raises(RequestError) as excinfo:
        runner.run_chain("ch_1", chain=JOKE)
    assert excinfo.value.problems == [
        "give exactly one of `chain_id` or `chain` (a stored chain or a chain definition); "
        "got both"]
    assert service.requests == []


def _raised(response: httpx.Response) -> ChainrunnerError:
    with _client(lambda request: response) as runner, \
            pytest.raises(ChainrunnerError) as excinfo:
        runner.run_status("inv_1")
    return excinfo.value


@pytest.mark.parametrize(("response", "cls", "message"), [
    (truss_error(404, "invocation `inv_1` not found"), NotFoundError,
     "invocation `inv_1` not found"),
    (truss_error(409, "invocation `inv_1` already finished"), ConflictError,
     "invocation `inv_1` already finished"),
    (truss_error(500, "chain `c` not found", cls_name="NotFoundError"), NotFoundError,
     "chain `c` not found"),
    (httpx.Response(400, json={"error": "Input Parsing Error"}), RequestError,
     "Input Parsing Error"),
    (httpx.Response(401, json={"error": "missing or wrong API key"}), ServiceError,
     "`run_status` failed with HTTP 401: missing or wrong API key"),
    (httpx.Response(500, json={"error": "Internal Server Error"}), ServiceError,
     "`run_status` failed with HTTP 500: Internal Server Error"),
    (httpx.Response(502, text="<html>Bad Gateway</html>"), ServiceError,
     f"`run_status`: {BASE}/run_remote answered HTTP 502 with something that is not JSON: "
     f"<html>Bad Gateway</html>"),
    (httpx.Response(200, json={"unexpected": True}), ServiceError,
     "`run_status`: the answer is not a InvocationStatus"),
], ids=["404", "409", "named-class", "400-string", "401", "500", "not-json", "wrong-shape"])
def test_errors_are_mapped(response: httpx.Response, cls: type[ChainrunnerError],
                           message: str) -> None:
    error = _raised(response)
    assert type(error) is cls
    assert str(error).startswith(message)
    assert "/srv/app" not in str(error)


def test_a_problem_list_comes_back_as_problems() -> None:
    message = ("chain `c` is invalid (2 problems):\n  - step `a`: prompt references `{x}`\n"
               "  - dependency cycle `a` → `b` → `a`")
    error = _raised(truss_error(400, message, cls_name="ChainDefinitionError"))
    assert isinstance(error, ChainDefinitionError) and isinstance(error, RequestError)
    assert error.problems == ["step `a`: prompt references `{x}`",
                              "dependency cycle `a` → `b` → `a`"]


def test_fastapi_validation_errors_become_problems() -> None:
    error = _raised(httpx.Response(422, json={"detail": [
        {"loc": ["body", "inputs", "topic"], "msg": "Input should be a valid string",
         "type": "string_type"}]}))
    assert isinstance(error, RequestError)
    assert error.problems == ["inputs.topic: Input should be a valid string"]


def test_an_unreachable_service_is_a_service_error() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("Connection refused", request=request)
    with _client(handler) as runner, pytest.raises(ServiceError) as excinfo:
        runner.get_chain("ch_1")
    assert str(excinfo.value) == (f"`get_chain`: cannot reach {BASE}/run_remote: ConnectError: "
                                  f"Connection refused")
    assert excinfo.value.status_code is None


def test_wait_gives_up_at_its_deadline_with_the_last_status() -> None:
    with _client(FakeService(polls=10)) as runner, pytest.raises(WaitTimeoutError) as excinfo:
        runner.wait("inv_1", timeout_s=0, poll_s=0)
    assert str(excinfo.value) == ("invocation `inv_1` is still running after 0 s; wait longer "
                                  "(timeout_s) or cancel it")
    assert excinfo.value.last is not None and excinfo.value.last.state is RunState.RUNNING


@pytest.mark.parametrize("cls", [ServiceError, WaitTimeoutError])
def test_client_errors_take_one_message(cls: type[ChainrunnerError]) -> None:
    assert str(cls("one message")) == "one message"


def test_public_names() -> None:
    assert sorted(client_module.__all__) == [
        "AsyncClient", "ChainDefinitionError", "Client", "ConflictError", "InputsError",
        "NotFoundError", "RequestError", "ServiceError", "WaitTimeoutError"]


def test_every_operation_has_a_typed_helper_on_both_clients() -> None:
    for op in models.OPERATIONS:
        assert callable(getattr(Client, op)) and callable(getattr(AsyncClient, op))


def test_importing_the_client_stays_light() -> None:
    """httpx and pydantic only (httpx itself imports click and rich for its CLI when they are
    installed, so those two are not checked)."""
    code = ("import sys, chainrunner.client; heavy = {'truss', 'truss_chains', 'openai', "
            "'aiohttp', 'fastapi', 'sqlalchemy', 'standardwebhooks'} & set(sys.modules); "
            "print(sorted(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parent.parent)
    assert out.stdout.strip() == "[]"
