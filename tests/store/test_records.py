"""Chains, invocations and step records, on every backend."""

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest

from chainlets.engine.code_models import ToolCallRecord
from chainlets.engine.models import (
    AttemptRecord,
    CaughtError,
    ErrorKind,
    RunState,
    StepRecord,
    Usage,
)
from chainlets.errors import (
    ConflictError,
    LeaseLostError,
    NotFoundError,
    PayloadTooLargeError,
    RequestError,
)
from chainlets.language.capabilities import Capability, Served
from chainlets.store import NewEvent, NewInvocation, RerunOf, State, Store
from chainlets.store.rows import step_values
from chainlets.store.sql_steps import STEP_COLUMNS
from tests.store.conftest import FakeClock, make_store
from tests.store.helpers import CHAIN, STEPS, URL, at, chain, finished, start, step


async def test_a_chain_is_stored_once_by_content(store: Store) -> None:
    first = await store.create_chain(CHAIN)
    again = await store.create_chain(dict(reversed(list(CHAIN.items()))))
    edited = await store.create_chain(chain(1))
    assert again.chain_id == first.chain_id
    assert edited.chain_id != first.chain_id
    got = await store.get_chain(first.chain_id)
    assert (got.handle, got.chain) == ("joke", CHAIN)


async def test_chains_page_newest_first(store: Store, clock: FakeClock) -> None:
    ids = []
    for n in range(5):
        ids.append((await store.create_chain(chain(n))).chain_id)
        clock.advance(1)
    seen, cursor = [], None
    for _ in range(3):
        page = await store.list_chains(limit=2, cursor=cursor)
        seen += [c.chain_id for c in page.items]
        cursor = page.next_cursor
    assert seen == ids[::-1]
    assert cursor is None


async def test_pages_break_ties_on_equal_timestamps(store: Store) -> None:
    ids = {(await store.create_chain(chain(n))).chain_id for n in range(5)}
    first = await store.list_chains(limit=3)
    assert first.next_cursor is not None
    second = await store.list_chains(limit=3, cursor=first.next_cursor)
    assert {c.chain_id for c in first.items + second.items} == ids
    assert second.next_cursor is None


async def test_a_deleted_chain_is_gone_until_stored_again(store: Store) -> None:
    chain_id = (await store.create_chain(CHAIN)).chain_id
    await store.delete_chain(chain_id)
    with pytest.raises(NotFoundError, match=f"chain `{chain_id}` not found"):
        await store.get_chain(chain_id)
    assert (await store.list_chains()).items == []
    with pytest.raises(NotFoundError):
        await store.delete_chain(chain_id)
    assert (await store.create_chain(CHAIN)).chain_id == chain_id
    assert (await store.get_chain(chain_id)).chain == CHAIN


@pytest.mark.parametrize(("limit", "cursor", "message"), [
    (0, None, "limit: 0 is out of range; use 1 to 500"),
    (501, None, "limit: 501 is out of range"),
    (10, "not-a-cursor", "cursor: 'not-a-cursor' is not a cursor this service returned"),
], ids=["zero", "too-many", "garbage-cursor"])
async def test_bad_page_arguments_are_named(store: Store, limit: int, cursor: str | None,
                                            message: str) -> None:
    with pytest.raises(RequestError, match=message):
        await store.list_invocations(limit=limit, cursor=cursor)


async def test_every_step_is_listed_waiting_from_the_start(store: Store) -> None:
    invocation_id, lease = await start(store)
    invocation = await store.get_invocation(invocation_id)
    assert invocation.state == State.RUNNING
    assert [(s.handle, s.position, s.state) for s in invocation.steps] == [
        ("tell", 0, State.WAITING), ("judge", 1, State.WAITING)]
    assert lease is not None and (lease.owner, lease.attempt) == ("A", 1)


async def test_a_step_is_visible_once_recorded_and_new_steps_go_last(store: Store) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("tell", RunState.RUNNING))
    await store.record_step(lease, step("tell"))
    await store.record_step(lease, step("added-at-run-time", RunState.RUNNING))
    invocation = await store.get_invocation(invocation_id)
    tell = invocation.steps[0]
    assert (tell.state, tell.output, tell.usage and tell.usage.total_tokens) == (
        State.SUCCEEDED, "out-tell", 7)
    assert tell.attempts[0].finished_at == at(1_800_000_001.0)
    assert [(s.handle, s.position) for s in invocation.steps] == [
        ("tell", 0), ("judge", 1), ("added-at-run-time", 2)]


async def test_a_step_record_keeps_every_field_through_the_store(store: Store) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    failed_try = AttemptRecord(number=1, started_at=at(1.0), finished_at=at(2.0),
                               error="StepTimeoutError: no answer", error_kind=ErrorKind.TIMEOUT)
    record = replace(step("tell"), attempts=[failed_try], backend="mock", model="fake",
                     capabilities={Capability.JSON_MODE: Served.NATIVE},
                     caught=CaughtError(error="StepTimeoutError: no answer",
                                        error_kind=ErrorKind.TIMEOUT, step="judge"))
    await store.record_step(lease, record)
    await store.record_step(lease, step("judge", RunState.FAILED, message="boom"))
    tell, judge = (await store.get_invocation(invocation_id)).steps
    assert (tell.attempts, tell.backend, tell.model, tell.capabilities, tell.caught) == (
        record.attempts, "mock", "fake", record.capabilities, record.caught)
    assert (judge.error_kind, judge.caught, judge.backend) == (None, None, None)
    failed = replace(step("judge", RunState.FAILED, message="x"), error_kind=ErrorKind.MODEL)
    await store.record_step(lease, failed)
    assert (await store.get_invocation(invocation_id)).steps[1].error_kind is ErrorKind.MODEL


async def test_the_same_idempotency_key_and_request_is_the_same_invocation(
        store: Store) -> None:
    first, _ = await start(store, key="k1", request_hash="h1")
    stored = await store.create_chain(CHAIN)
    again = await store.create_invocation(NewInvocation(
        chain_id=stored.chain_id, input={"topic": "food"}, steps=STEPS, idempotency_key="k1",
        request_hash="h1"), owner="B")
    assert (again.invocation.invocation_id, again.created, again.lease) == (first, False, None)
    with pytest.raises(ConflictError, match="idempotency_key `k1` was already used for a "
                                            f"different request \\(invocation `{first}`\\)"):
        await store.create_invocation(NewInvocation(
            chain_id=stored.chain_id, steps=STEPS, idempotency_key="k1", request_hash="h2"))
    assert len((await store.list_invocations()).items) == 1


async def test_racing_requests_with_one_idempotency_key_make_one_invocation(
        backend: str, clock: FakeClock) -> None:
    """Six requests with the same key on separate connection pools (replicas) at once."""
    stores = [await make_store(backend, clock) for _ in range(3)]
    if backend == "memory":
        stores = [stores[0]] * 3
    try:
        chain_id = (await stores[0].create_chain(CHAIN)).chain_id
        new = NewInvocation(chain_id=chain_id, steps=STEPS, idempotency_key="k",
                            request_hash="h")
        answers = await asyncio.gather(*(stores[n % 3].create_invocation(new, owner=f"r{n}")
                                         for n in range(6)))
        assert len({a.invocation.invocation_id for a in answers}) == 1
        assert sum(a.created for a in answers) == 1
        assert [a.lease is not None for a in answers] == [a.created for a in answers]
    finally:
        for opened in {id(s): s for s in stores}.values():
            await opened.close()


async def test_an_idempotency_key_needs_a_request_hash(store: Store) -> None:
    stored = await store.create_chain(CHAIN)
    with pytest.raises(RequestError, match="request_hash: required"):
        await store.create_invocation(NewInvocation(chain_id=stored.chain_id,
                                                    idempotency_key="k"))


async def test_an_invocation_of_an_unknown_chain_is_refused(store: Store) -> None:
    with pytest.raises(NotFoundError, match="chain `chn_nope` not found"):
        await store.create_invocation(NewInvocation(chain_id="chn_nope"))
    with pytest.raises(NotFoundError, match="invocation `inv_nope` not found"):
        await store.get_invocation("inv_nope")


async def test_invocations_filter_by_chain_state_and_time(store: Store,
                                                          clock: FakeClock) -> None:
    other = (await store.create_chain(chain(1))).chain_id
    first, lease = await start(store)
    clock.advance(10)
    second, _ = await start(store, owner=None)
    await store.create_invocation(NewInvocation(chain_id=other))
    assert lease is not None
    await store.update_invocation(lease, state=State.SUCCEEDED, output="done")

    async def ids(**kwargs: object) -> list[str]:
        page = await store.list_invocations(**kwargs)  # type: ignore[arg-type]
        return [i.invocation_id for i in page.items]

    chain_id = (await store.get_invocation(first)).chain_id
    assert await ids(chain_id=chain_id) == [second, first]
    assert await ids(state=State.SUCCEEDED) == [first]
    assert await ids(chain_id=chain_id, since=at(clock.now)) == [second]
    everything = await store.list_invocations(limit=2)
    rest = await store.list_invocations(limit=2, cursor=everything.next_cursor)
    assert len(everything.items) + len(rest.items) == 3 and rest.next_cursor is None


async def test_a_finished_invocation_ends_its_lease(store: Store) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.update_invocation(lease, state=State.FAILED, status_message="step `x` failed")
    invocation = await store.get_invocation(invocation_id)
    assert (invocation.state, invocation.statusMessage) == (State.FAILED, "step `x` failed")
    assert invocation.finished_at is not None
    with pytest.raises(LeaseLostError):
        await store.heartbeat(lease)
    with pytest.raises(RequestError, match="through `suspend`"):
        await store.update_invocation(lease, state=State.WAITING)


async def test_an_invocation_ends_with_its_last_steps_in_one_transaction(store: Store) -> None:
    invocation_id, lease = await start(store, callback_url=URL)
    assert lease is not None
    await store.record_step(lease, step("tell"), events=[finished("tell")])
    end = NewEvent(type="chain.finished", data={"state": "succeeded"})
    await store.update_invocation(lease, state=State.SUCCEEDED, output="out-judge",
                                  steps=[step("judge"), step("late", RunState.FAILED)],
                                  events=[finished("judge"), end])
    invocation = await store.get_invocation(invocation_id)
    assert invocation.state == State.SUCCEEDED
    assert [(s.handle, s.state, s.output) for s in invocation.steps] == [
        ("tell", State.SUCCEEDED, "out-tell"), ("judge", State.SUCCEEDED, "out-judge"),
        ("late", State.FAILED, "out-late")]
    assert [(e.seq, e.type, e.step) for e in await store.list_events(invocation_id)] == [
        (1, "step.finished", "tell"), (2, "step.finished", "judge"),
        (3, "chain.finished", None)]
    # Fenced like every write under a lease: the lease ended, nothing more is written.
    with pytest.raises(LeaseLostError):
        await store.update_invocation(lease, state=State.FAILED, steps=[step("tell", output="x")])
    assert (await store.get_invocation(invocation_id)).steps[0].output == "out-tell"


async def test_a_rerun_copies_the_committed_outputs_it_reuses(store: Store) -> None:
    source, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("tell"))
    await store.record_step(lease, step("judge", RunState.FAILED, message="boom"))
    chain_id = (await store.get_invocation(source)).chain_id
    rerun = await store.create_invocation(NewInvocation(
        chain_id=chain_id, steps=STEPS, rerun_of=RerunOf(invocation_id=source,
                                                         from_step="judge"),
        reuse=["tell"]), owner="A")
    got = await store.get_invocation(rerun.invocation.invocation_id)
    assert got.rerun_of == RerunOf(invocation_id=source, from_step="judge")
    assert [(s.handle, s.state, s.output) for s in got.steps] == [
        ("tell", State.SUCCEEDED, "out-tell"), ("judge", State.WAITING, None)]
    with pytest.raises(RequestError, match=f"reuse: step `judge` of invocation "
                                                  f"`{source}` did not succeed"):
        await store.create_invocation(NewInvocation(
            chain_id=chain_id, steps=STEPS, reuse=["tell", "judge"],
            rerun_of=RerunOf(invocation_id=source, from_step="judge")))
    with pytest.raises(NotFoundError, match="invocation `inv_gone`"):
        await store.create_invocation(NewInvocation(
            chain_id=chain_id, steps=STEPS,
            rerun_of=RerunOf(invocation_id="inv_gone", from_step="judge")))


async def test_payloads_over_their_limit_are_refused_naming_it(store: Store) -> None:
    with pytest.raises(PayloadTooLargeError, match=r"the input is 2,\d{3} bytes, over the "
                                                   r"limit of 2,000 bytes set by "
                                                   "CHAINRUNNER_MAX_INPUT_BYTES"):
        await start(store, inputs={"topic": "x" * 2_000})
    with pytest.raises(PayloadTooLargeError, match="CHAINRUNNER_MAX_CHAIN_BYTES"):
        await store.create_chain({**CHAIN, "description": "x" * 4_000})
    invocation_id, lease = await start(store)
    assert lease is not None
    with pytest.raises(PayloadTooLargeError, match="step `tell`: the output is 1,001 bytes, "
                                                   "over the limit of 1,000 bytes set by "
                                                   "CHAINRUNNER_MAX_STEP_OUTPUT_BYTES"):
        await store.record_step(lease, step("tell", output="é" * 500 + "x"))
    assert (await store.get_invocation(invocation_id)).steps[0].state == State.WAITING


async def test_a_queued_step_is_stored_queued_and_ends_with_a_cancel(store: Store) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("tell", RunState.RUNNING))
    await store.record_step(lease, step("judge", RunState.QUEUED))
    assert [s.state for s in (await store.get_invocation(invocation_id)).steps] == [
        State.RUNNING, State.QUEUED]
    cancelled = await store.cancel_invocation(invocation_id, message="cancelled by the caller")
    assert [s.state for s in cancelled.steps] == [State.CANCELLED, State.CANCELLED]


async def test_cancel_ends_the_invocation_and_its_unfinished_steps(store: Store) -> None:
    invocation_id, lease = await start(store)
    assert lease is not None
    await store.record_step(lease, step("tell"))
    await store.record_step(lease, step("judge", RunState.RUNNING))
    cancelled = await store.cancel_invocation(invocation_id, message="cancelled by the caller")
    assert cancelled.state == State.CANCELLED
    assert [(s.handle, s.state) for s in cancelled.steps] == [
        ("tell", State.SUCCEEDED), ("judge", State.CANCELLED)]
    with pytest.raises(LeaseLostError, match=f"invocation `{invocation_id}`: the lease of `A` "
                                             r"\(attempt 1\) is lost"):
        await store.record_step(lease, step("judge"))
    with pytest.raises(ConflictError, match="already ended `cancelled`"):
        await store.cancel_invocation(invocation_id, message="again")
    with pytest.raises(NotFoundError):
        await store.cancel_invocation("inv_nope", message="x")
    assert timedelta(0) <= cancelled.updated_at - cancelled.created_at


def _full_records() -> list[StepRecord]:
    """Records with every field the engine sets, a failure's kinds and capabilities included."""
    attempt = AttemptRecord(number=1, started_at=at(1_800_000_000.0),
                            finished_at=at(1_800_000_001.5), error="TimeoutError: slow",
                            error_kind=ErrorKind.TIMEOUT)
    ok = AttemptRecord(number=2, started_at=at(1_800_000_002.0),
                       finished_at=at(1_800_000_003.25), round=1, tool_calls=[
                           ToolCallRecord(id="c0", name="pick", arguments="{}", output="1")])
    return [
        StepRecord(handle="tell", state=RunState.SUCCEEDED, output="a joke",
                   attempts=[attempt, ok], started_at=at(1_800_000_000.0),
                   finished_at=at(1_800_000_003.25),
                   usage=Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7),
                   backend="openai", model="gpt-4o-mini-2024",
                   capabilities={Capability.SYSTEM_PROMPT: Served.BEST_EFFORT,
                                 Capability.JSON_MODE: Served.NATIVE,
                                 Capability.STREAMING: Served.UNSERVED}),
        StepRecord(handle="judge", state=RunState.FAILED, statusMessage="GenerationError: no",
                   attempts=[AttemptRecord(number=1, started_at=at(1_800_000_004.0),
                                           finished_at=at(1_800_000_005.0),
                                           error="GenerationError: no",
                                           error_kind=ErrorKind.MODEL)],
                   started_at=at(1_800_000_004.0), finished_at=at(1_800_000_005.0),
                   error_kind=ErrorKind.MODEL, backend="mock", model="mock")]


async def test_a_step_record_round_trips_with_every_field(store: Store) -> None:
    from dataclasses import fields

    from chainlets.service.status import step_record

    assert {f.name for f in fields(StepRecord)} == {  # a new field: add it to the records
        "handle", "state", "statusMessage", "output", "attempts", "started_at", "finished_at",
        "usage", "error_kind", "backend", "model", "capabilities", "caught"}
    assert {f.name for f in fields(AttemptRecord)} == {
        "number", "started_at", "finished_at", "error", "error_kind", "round", "tool_calls"}
    invocation_id, lease = await start(store)
    assert lease is not None
    records = _full_records()
    for record in records:
        await store.record_step(lease, record)
    got = await store.get_invocation(invocation_id)
    assert [step_record(s) for s in got.steps] == records
    # A rerun reusing a step copies its whole record, not only its output.
    rerun = await store.create_invocation(NewInvocation(
        chain_id=got.chain_id, steps=STEPS, reuse=["tell"],
        rerun_of=RerunOf(invocation_id=invocation_id, from_step="judge")), owner="A")
    copied = await store.get_invocation(rerun.invocation.invocation_id)
    assert step_record(copied.steps[0]) == records[0]


async def test_a_tool_loops_rounds_survive_the_store(store: Store) -> None:
    """Each attempt's round and tool calls are kept in the step's `attempts` column, so status
    shows a stored invocation's function calling as the engine recorded it."""
    invocation_id, lease = await start(store)
    assert lease is not None
    calls = [ToolCallRecord(id="call_0", name="pick_winner", arguments='{"scores": {"a": 1}}',
                            output='{"name":"a"}'),
             ToolCallRecord(id="call_1", name="nope", arguments="{}", error="no tool")]
    record = replace(step("tell"), attempts=[
        AttemptRecord(number=1, started_at=at(1), finished_at=at(2), round=1, tool_calls=calls),
        AttemptRecord(number=2, started_at=at(3), finished_at=at(4), round=2)])
    await store.record_step(lease, step("tell", RunState.RUNNING))
    await store.record_step(lease, record)
    tell = (await store.get_invocation(invocation_id)).steps[0]
    assert [(a.round, a.tool_calls) for a in tell.attempts] == [(1, calls), (2, None)]


def test_a_step_transition_writes_the_columns_of_postgresqls_one_statement() -> None:
    """Else every step write on PostgreSQL falls back to two statements (sql_base)."""
    assert tuple(step_values(step("tell"), 1.0)) == STEP_COLUMNS
