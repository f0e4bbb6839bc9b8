"""Service wire models: every one survives JSON, and bad requests are named field by field."""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pydantic
import pytest
from pydantic import BaseModel

from chainlets.engine.models import RunOptions, RunState, StepRecord
from chainlets.errors import ConfigurationError, RequestError
from chainlets.language.spec import load_chain
from chainlets.service import models
from chainlets.service.events import (
    DeliveryState,
    DeliveryStatus,
    EventRecord,
    EventSummary,
    EventType,
    WebhookEvent,
)
from chainlets.service.models import OPERATIONS, Operation, parse_operation
from chainlets.service.responses import (
    ChainCreated,
    ChainDeleted,
    ChainPage,
    ChainSummary,
    EventPage,
    InvocationPage,
    InvocationRef,
    InvocationStatus,
    InvocationSummary,
    PendingApproval,
    Redelivered,
    RerunOf,
    Resumed,
    StoredChain,
)
from chainlets.service.settings import ServiceLimits

JOKE = load_chain(Path(__file__).parents[2] / "chains" / "specs" / "joke.json")
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
LIMITS = ServiceLimits()

REQUESTS: list[BaseModel] = [
    models.CreateChain(chain=JOKE),
    models.GetChain(chain_id="ch_1"),
    models.ListChains(limit=10, cursor="c2"),
    models.DeleteChain(chain_id="ch_1"),
    models.RunChain(chain_id="ch_1", inputs={"topic": "food"},
                    callback_url="https://example.com/hook", idempotency_key="k-1",
                    options=RunOptions(llm="openai", max_attempts=2)),
    models.RunChain(chain=JOKE),
    models.RunStatus(invocation_id="inv_1"),
    models.Cancel(invocation_id="inv_1"),
    models.ListInvocations(chain_id="ch_1", state=RunState.FAILED, since=NOW, limit=5,
                           cursor="c"),
    models.Events(invocation_id="inv_1", limit=3),
    models.Redeliver(invocation_id="inv_1", event_id="evt_1"),
    models.Resume(task_token="tok", output="greenlight"),
    models.Resume(task_token="tok", error="rejected by reviewer"),
    models.Rerun(invocation_id="inv_1", from_step="judge-joke", chain=JOKE),
]

FINISHED = WebhookEvent(id="evt_1", type=EventType.STEP_FINISHED, timestamp=NOW,
                        invocation_id="inv_1", chain_id="ch_1", step="tell-joke",
                        state=RunState.SUCCEEDED, output="a joke", error=None)
WAITING = WebhookEvent(id="evt_2", type=EventType.STEP_WAITING, timestamp=NOW,
                       invocation_id="inv_1", chain_id=None, step="pick", state=RunState.WAITING,
                       output=None, error=None, task_token="tok", text="Pick one:\n1. …",
                       choices=["greenlight", "pass"])
CHAIN_DONE = WebhookEvent(id="evt_3", type=EventType.CHAIN_FINISHED, timestamp=NOW,
                          invocation_id="inv_1", chain_id="ch_1", step=None,
                          state=RunState.FAILED, output=None, error="step `a` failed: x")
DELIVERY = DeliveryStatus(state=DeliveryState.RETRYING, attempts=2, last_attempt_at=NOW,
                          next_attempt_at=NOW, detail="HTTP 500")

RESPONSES: list[BaseModel] = [
    ChainCreated(chain_id="ch_1"),
    StoredChain(chain_id="ch_1", chain=JOKE, created_at=NOW),
    ChainPage(chains=[ChainSummary(chain_id="ch_1", handle="single-prompt", created_at=NOW)],
              next_cursor="c2"),
    ChainDeleted(chain_id="ch_1"),
    InvocationRef(invocation_id="inv_1", state=RunState.RUNNING),
    InvocationStatus(
        chain="single-prompt", input={"topic": "food"}, state=RunState.RUNNING,
        steps=[StepRecord(handle="tell-joke", state=RunState.SUCCEEDED, output="a joke"),
               StepRecord(handle="judge-joke")],
        invocation_id="inv_2", chain_id="ch_1", created_at=NOW, started_at=NOW,
        rerun_of=RerunOf(invocation_id="inv_1", from_step="judge-joke"),
        callback_url="https://example.com/hook",
        approvals=[PendingApproval(step="pick", task_token="tok", text="Pick one",
                                   choices=["a"], expires_at=NOW)],
        events=[EventSummary(id="evt_1", type=EventType.STEP_FINISHED, step="tell-joke",
                             delivery=DELIVERY)]),
    InvocationPage(invocations=[InvocationSummary(invocation_id="inv_1", chain="c",
                                                  state=RunState.SUCCEEDED, created_at=NOW,
                                                  finished_at=NOW)], next_cursor=None),
    EventPage(events=[EventRecord(**FINISHED.model_dump(), delivery=DELIVERY)]),
    Redelivered(invocation_id="inv_1", event_ids=["evt_1"]),
    Resumed(invocation_id="inv_1", step="pick", state=RunState.SUCCEEDED),
    FINISHED, WAITING, CHAIN_DONE, DELIVERY,
    ServiceLimits(max_page_size=50, default_page_size=10),
]


@pytest.mark.parametrize("model", REQUESTS + RESPONSES,
                         ids=lambda m: f"{type(m).__name__}-{id(m) % 1000}")
def test_json_round_trip(model: BaseModel) -> None:
    data = model.model_dump_json()
    assert type(model).model_validate_json(data) == model
    assert type(model).model_validate(json.loads(data)) == model


@pytest.mark.parametrize("request_model", REQUESTS, ids=lambda m: type(m).__name__)
def test_each_request_parses_back_as_its_operation(request_model: BaseModel) -> None:
    body = json.loads(request_model.model_dump_json())
    assert parse_operation(body, LIMITS) == request_model
    assert pydantic.TypeAdapter(Operation).validate_json(request_model.model_dump_json()) \
        == request_model


def test_every_operation_of_both_issues_is_in_the_union() -> None:
    assert set(OPERATIONS) == {
        "create_chain", "get_chain", "list_chains", "delete_chain", "run_chain", "run_status",
        "cancel", "list_invocations", "events", "redeliver", "resume", "rerun"}
    assert {type(m).model_fields["op"].default for m in REQUESTS} == set(OPERATIONS)


@pytest.mark.parametrize("body", [
    {"chain": JOKE.model_dump(), "inputs": {"topic": "food"}},
    {"op": None, "chain": JOKE.model_dump(), "inputs": {}},
], ids=["no-op", "null-op"])
def test_a_body_without_op_is_not_an_operation(body: dict[str, Any]) -> None:
    assert parse_operation(body, LIMITS) is None


def test_null_arguments_count_as_absent() -> None:
    """A truss entrypoint passes every argument it declares, unset ones as null."""
    body = {"op": "run_status", "invocation_id": "inv_1", "chain": None, "cursor": None}
    assert parse_operation(body, LIMITS) == models.RunStatus(invocation_id="inv_1")


def _problems(body: dict[str, Any], limits: ServiceLimits | None = LIMITS) -> list[str]:
    with pytest.raises(RequestError) as excinfo:
        parse_operation(body, limits)
    return excinfo.value.problems


BAD_REQUESTS: list[tuple[dict[str, Any], list[str]]] = [
    ({"op": "run_chian", "chain_id": "c"},
     ["op: unknown operation 'run_chian' (did you mean `run_chain`?); expected one of "
      "create_chain, get_chain, list_chains, delete_chain, run_chain, run_status, cancel, "
      "list_invocations, events, redeliver, resume, rerun"]),
    ({"op": "run_chain", "inputs": {}},
     ["give exactly one of `chain_id` or `chain` (a stored chain or a chain definition); "
      "got neither"]),
    ({"op": "run_chain", "chain_id": "c", "chain": JOKE.model_dump()},
     ["give exactly one of `chain_id` or `chain` (a stored chain or a chain definition); "
      "got both"]),
    ({"op": "run_chain", "chain_id": "c", "callback_url": "ftp://example.com/x"},
     ["callback_url: 'ftp://example.com/x' is not an http or https URL; give one such as "
      "https://example.com/hooks/chainrunner"]),
    ({"op": "run_chain", "chain_id": "c", "callback_url": "not a url"},
     ["callback_url: 'not a url' is not an http or https URL; give one such as "
      "https://example.com/hooks/chainrunner"]),
    ({"op": "run_chain", "chain_id": "c", "inputs": ["topic"], "callbak_url": "x"},
     ["inputs: Input should be a valid dictionary",
      "`callbak_url` is not an argument of `run_chain`; it takes `chain_id`, `chain`, "
      "`inputs`, `callback_url`, `idempotency_key`, `options`"]),
    ({"op": "run_chain", "chain_id": "c", "options": {"llm": "gpt"}},
     ["options.llm: Input should be 'mock' or 'openai'"]),
    ({"op": "create_chain", "chain": {"handle": "c", "steps": [
        {"handle": "a", "prompt": "x", "plugin": "gpt-3", "promt": "y"},
        {"handle": "b", "prompt": 3, "plugin": "mock"}]}},
     ["chain.steps[`a`].promt: unknown field (remove it, or check its spelling)",
      "chain.steps[`b`].prompt: Input should be a valid string"]),
    ({"op": "get_chain"}, ["chain_id: required (add it)"]),
    ({"op": "get_chain", "chain_id": ""},
     ["chain_id: String should have at least 1 character"]),
    ({"op": "resume", "task_token": "t", "output": "a", "error": "b"},
     ["give exactly one of `output` or `error` (completes the step, or fails it); got both"]),
    ({"op": "list_invocations", "state": "done", "since": "2026-12-01T09:00:00"},
     ["state: Input should be 'waiting', 'queued', 'running', 'succeeded', 'failed', "
      "'skipped' or 'cancelled'",
      "since: Input should have timezone info (add a UTC offset, e.g. 2026-12-01T09:00:00Z)"]),
    ({"op": "list_chains", "limit": 0}, ["limit: Input should be greater than or equal to 1"]),
]


@pytest.mark.parametrize(("body", "problems"), BAD_REQUESTS,
                         ids=[f"{b['op']}-{i}" for i, (b, _) in enumerate(BAD_REQUESTS)])
def test_bad_requests_name_each_field(body: dict[str, Any], problems: list[str]) -> None:
    assert _problems(body) == problems


def test_the_error_message_lists_every_problem() -> None:
    with pytest.raises(RequestError, match=r"^`get_chain` request is invalid \(1 problem\):\n"
                                           r"  - chain_id: required \(add it\)$"):
        parse_operation({"op": "get_chain"}, LIMITS)


def test_limits_are_configurable_and_named_in_their_errors() -> None:
    limits = ServiceLimits(max_page_size=50, default_page_size=10,
                           max_idempotency_key_chars=8, max_callback_url_chars=30)
    assert _problems({"op": "events", "invocation_id": "i", "limit": 51}, limits) == [
        "limit: 51 is more than the largest page, 50 (CHAINRUNNER_MAX_PAGE_SIZE): ask for at "
        "most 50 and follow `next_cursor`"]
    assert _problems({"op": "run_chain", "chain_id": "c", "idempotency_key": "123456789",
                      "callback_url": "https://example.com/" + "x" * 20}, limits) == [
        "callback_url: 40 characters is longer than the limit, 30 "
        "(CHAINRUNNER_MAX_CALLBACK_URL_CHARS)",
        "idempotency_key: 9 characters is longer than the limit, 8 "
        "(CHAINRUNNER_MAX_IDEMPOTENCY_KEY_CHARS): use a shorter key, such as a hash"]
    assert parse_operation({"op": "list_chains", "limit": 50}, limits) \
        == models.ListChains(limit=50)


def test_without_limits_only_the_fixed_rules_apply() -> None:
    """A client does not know the server's limits; it leaves them to the server."""
    assert parse_operation({"op": "list_chains", "limit": 10_000}, None) \
        == models.ListChains(limit=10_000)


def test_limits_come_from_the_environment() -> None:
    limits = ServiceLimits.from_env({"CHAINRUNNER_MAX_PAGE_SIZE": "500",
                                     "CHAINRUNNER_DEFAULT_PAGE_SIZE": "50",
                                     "CHAINRUNNER_MAX_IDEMPOTENCY_KEY_CHARS": "64",
                                     "CHAINRUNNER_MAX_CALLBACK_URL_CHARS": ""})
    assert limits == ServiceLimits(max_page_size=500, default_page_size=50,
                                   max_idempotency_key_chars=64)
    assert ServiceLimits.from_env({"CHAINRUNNER_MAX_PAGE_SIZE": "5"}).default_page_size == 5


@pytest.mark.parametrize(("environ", "message"), [
    ({"CHAINRUNNER_MAX_PAGE_SIZE": "lots"},
     "CHAINRUNNER_MAX_PAGE_SIZE='lots' is not a whole number ≥ 1: set it to one, or unset it "
     "for the default (100)"),
    ({"CHAINRUNNER_MAX_PAGE_SIZE": "0"},
     "CHAINRUNNER_MAX_PAGE_SIZE='0' is not a whole number ≥ 1: set it to one, or unset it for "
     "the default (100)"),
    ({"CHAINRUNNER_MAX_PAGE_SIZE": "10", "CHAINRUNNER_DEFAULT_PAGE_SIZE": "20"},
     "the default page size (20, CHAINRUNNER_DEFAULT_PAGE_SIZE) exceeds the maximum (10, "
     "CHAINRUNNER_MAX_PAGE_SIZE): lower the first or raise the second"),
], ids=["not-a-number", "zero", "default-above-max"])
def test_a_bad_limit_setting_is_named(environ: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError) as excinfo:
        ServiceLimits.from_env(environ)
    assert str(excinfo.value) == message


@pytest.mark.parametrize(("fields", "message"), [
    ({"type": "chain.finished", "step": "a"}, "a `chain.finished` event names no step"),
    ({"type": "step.finished", "step": None}, "a `step.finished` event has no `step`"),
    ({"type": "step.waiting", "step": "a"}, "a `step.waiting` event needs `task_token` and"),
    ({"type": "step.finished", "step": "a", "task_token": "t"},
     "only a `step.waiting` event has `task_token`"),
], ids=["chain-with-step", "step-without-step", "waiting-without-token", "token-elsewhere"])
def test_an_event_body_fits_its_type(fields: dict[str, Any], message: str) -> None:
    base = FINISHED.model_dump() | fields
    with pytest.raises(pydantic.ValidationError, match=message):
        WebhookEvent.model_validate(base)


def test_event_body_has_the_documented_fields() -> None:
    assert list(json.loads(FINISHED.body())) == [
        "id", "type", "timestamp", "invocation_id", "chain_id", "step", "state", "output",
        "error", "task_token", "text", "choices"]
    assert json.loads(CHAIN_DONE.body())["timestamp"] == "2026-12-01T09:30:00Z"


def test_status_keeps_the_steamship_shape() -> None:
    status = json.loads(RESPONSES[5].model_dump_json())
    assert {"input", "output", "state", "statusMessage", "steps"} <= set(status)
    assert status["steps"][1] == {"handle": "judge-joke", "state": "waiting",
                                  "statusMessage": None, "output": None, "attempts": [],
                                  "started_at": None, "finished_at": None, "usage": None,
                                  "error_kind": None, "backend": None, "model": None,
                                  "capabilities": None, "caught": None}
    assert status["rerun_of"] == {"invocation_id": "inv_1", "from_step": "judge-joke"}
    assert status["events"][0]["delivery"]["state"] == "retrying"
