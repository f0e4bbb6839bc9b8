"""Rerun from a step: only `from_step` and what follows it call the model; every other step's
committed output is copied, and an edit to a reused step is refused naming it."""

from typing import Any

import pytest

from chainlets.engine.models import RunState
from chainlets.errors import NotFoundError, RequestError
from tests.service.test_operations import CHAIN, FAST, Harness

# title → song → review, plus `art` (independent of title): a rerun from `song` reuses both.
FOUR: dict[str, Any] = {**CHAIN, "steps": [*CHAIN["steps"],
                           {"handle": "art", "plugin": "mock", "prompt": "Cover art for {topic}"}]}


async def test_a_rerun_calls_the_model_only_for_from_step_and_downstream(
        harness: Harness) -> None:
    first = await harness.op("run_chain", chain=FOUR, inputs={"topic": "tea"}, options=FAST)
    source = await harness.final(first.invocation_id)
    harness.fake.requests.clear()
    ref = await harness.op("rerun", invocation_id=first.invocation_id, from_step="song")
    rerun = await harness.final(ref.invocation_id)
    assert rerun.state == RunState.SUCCEEDED and ref.invocation_id != first.invocation_id
    assert sorted(r.step for r in harness.fake.requests) == ["review", "song"]
    assert rerun.rerun_of is not None
    assert (rerun.rerun_of.invocation_id, rerun.rerun_of.from_step) == (
        first.invocation_id, "song")
    assert rerun.step("title").output == source.step("title").output
    assert rerun.step("art").started_at == source.step("art").started_at  # copied, not run


async def test_an_edited_prompt_from_the_rerun_step_on_is_used(harness: Harness) -> None:
    first = await harness.op("run_chain", chain=FOUR, inputs={"topic": "tea"}, options=FAST)
    await harness.final(first.invocation_id)
    harness.fake.requests.clear()
    edited = {**FOUR, "steps": [FOUR["steps"][0],
                                {**FOUR["steps"][1], "prompt": "A ballad called {title}"},
                                *FOUR["steps"][2:]]}
    ref = await harness.op("rerun", invocation_id=first.invocation_id, from_step="song",
                           chain=edited)
    rerun = await harness.final(ref.invocation_id)
    assert rerun.chain_id != (await harness.op("run_status",
                                               invocation_id=first.invocation_id)).chain_id
    [song] = [r for r in harness.fake.requests if r.step == "song"]
    assert song.messages[-1].content == "A ballad called <title>"
    assert harness.fake.calls("title") == 0


async def test_editing_a_reused_step_is_refused_naming_it(harness: Harness) -> None:
    first = await harness.op("run_chain", chain=FOUR, inputs={"topic": "tea"}, options=FAST)
    await harness.final(first.invocation_id)
    edited = {**FOUR, "steps": [{**FOUR["steps"][0], "prompt": "A name for {topic}"},
                                *FOUR["steps"][1:]]}
    with pytest.raises(RequestError, match="step `title` changed, but its output is reused"):
        await harness.op("rerun", invocation_id=first.invocation_id, from_step="song",
                         chain=edited)
    with pytest.raises(RequestError, match=r"`sng` is not a step of chain `seed` \(did you"):
        await harness.op("rerun", invocation_id=first.invocation_id, from_step="sng")
    with pytest.raises(NotFoundError):
        await harness.op("rerun", invocation_id="inv_nope", from_step="song")


async def test_diff_shows_what_changed_step_by_step(harness: Harness) -> None:
    from chainlets.language.spec import ChainSpec
    from chainrunner.diffing import diff_invocations, render

    first = await harness.op("run_chain", chain=FOUR, inputs={"topic": "tea"}, options=FAST)
    before = await harness.final(first.invocation_id)
    harness.fake.replies = {"song": "a new song"}
    edited = {**FOUR, "steps": [FOUR["steps"][0], {**FOUR["steps"][1], "prompt": "Sing {title}"},
                                *FOUR["steps"][2:]]}
    ref = await harness.op("rerun", invocation_id=first.invocation_id, from_step="song",
                           chain=edited)
    after = await harness.final(ref.invocation_id)
    result = diff_invocations(before, ChainSpec.model_validate(FOUR), after,
                              ChainSpec.model_validate(edited))
    assert {s.step: s.changed for s in result.steps} == {
        "title": [], "song": ["prompt", "output"], "review": [], "art": []}
    assert result.rerun_of == first.invocation_id and not result.output_changed
    assert "~ song: prompt, output changed" in render(result)
    assert type(result).model_validate_json(result.model_dump_json()) == result
