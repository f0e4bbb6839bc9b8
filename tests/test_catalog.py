"""The Step Functions catalog as JSON chains (chains/specs/), run on the mock model with the
scripts in chains/specs/mock/ so that each takes its interesting paths."""

import asyncio
import json
from pathlib import Path

import pytest

from chainlets.engine.approval import ApprovalRequest
from chainlets.engine.models import (
    ErrorKind,
    Generation,
    GenerationRequest,
    InvocationResult,
    RunOptions,
)
from chainlets.engine.models import RunState as S
from chainlets.engine.scheduler import run_chain
from chainlets.generators.mock_model import MockModel, MockScript
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import load_chain

SPECS = Path(__file__).resolve().parent.parent / "chains" / "specs"


class ScriptedMock:
    """The mock generator's model, scripted, behind the generator port."""

    def __init__(self, script: MockScript) -> None:
        self.model = MockModel(script)
        self.requests: list[GenerationRequest] = []

    async def run_remote(self, request: GenerationRequest) -> Generation:
        self.requests.append(request)
        return await self.model.generate(request)

    def request(self, step: str) -> GenerationRequest:
        """The last request of `step` (the one answered, after any retries)."""
        return [r for r in self.requests if r.step == step][-1]


class Producer:
    """A person answering approval steps in turn (the service's gate, at the engine's seam)."""

    def __init__(self, *answers: str) -> None:
        self.answers = list(answers)
        self.asked: list[ApprovalRequest] = []

    async def open(self, request: ApprovalRequest) -> "asyncio.Future[str]":
        self.asked.append(request)
        answer: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        answer.set_result(self.answers.pop(0))
        return answer


async def run(name: str, inputs: dict[str, str] | None = None,
              script: MockScript | None = None, *, mock: ScriptedMock | None = None,
              producer: Producer | None = None, max_attempts: int = 1) -> InvocationResult:
    chain = compile_chain(load_chain(SPECS / f"{name}.json"))
    mock = mock or ScriptedMock(script or MockScript.load(SPECS / "mock" / f"{name}.json"))
    return await run_chain(chain, inputs or {}, {"mock": mock},
                           RunOptions(llm="mock", max_attempts=max_attempts,
                                      initial_backoff_s=0), approvals=producer)


def states(result: InvocationResult) -> dict[str, S]:
    return {r.handle: r.state for r in result.steps}


async def test_story_writer_maps_over_generated_characters_tolerating_one_failure() -> None:
    result = await run("story-writer")
    assert result.state == S.SUCCEEDED
    assert states(result) == {"characters": S.SUCCEEDED, "arc": S.SUCCEEDED, "story": S.SUCCEEDED,
                              "arc[0]": S.SUCCEEDED, "arc[1]": S.FAILED, "arc[2]": S.SUCCEEDED}
    assert json.loads(result.step("arc").output or "") == [
        "Ada learns to leave the light.", None, "Cy guides Bo home."]
    assert result.step("arc").statusMessage == "1 of 3 items failed, tolerated (tolerates 1)"


async def test_meal_planner_debates_until_consensus_then_writes_the_recipe() -> None:
    result = await run("meal-planner")
    assert result.state == S.SUCCEEDED
    got = states(result)
    assert [h for h in got if h.startswith("judge[")] == ["judge[0]", "judge[1]"]
    assert got["recipe"] == S.SUCCEEDED and got["compromise"] == S.SKIPPED
    assert result.step("chef-a").output == "Chilli fried rice with egg"
    assert len(json.loads(result.step("debate").output or "")) == 2
    # The code step read the last round's scores: a tie goes to the first listed.
    winner = result.step("winner")
    assert (winner.backend, winner.model) == ("code", "pick_winner")
    assert json.loads(winner.output or "") == {
        "name": "a", "score": 90.0, "candidate": "Chilli fried rice with egg",
        "scores": {"a": 90.0, "b": 90.0}}
    assert "agree on: Chilli fried rice with egg." in (result.step("recipe").output or "")


async def test_meal_planner_without_consensus_stops_at_its_bound_and_compromises() -> None:
    script = MockScript(rules=[
        {"step": f"judge[{i}]", "reply": json.dumps({"a": 60 + i, "b": 70 + i,
                                                     "consensus": False})} for i in range(4)])
    result = await run("meal-planner", script=script)
    got = states(result)
    assert [h for h in got if h.startswith("judge[")] == [f"judge[{i}]" for i in range(4)]
    assert got["recipe"] == S.SKIPPED and got["compromise"] == S.SUCCEEDED
    assert (result.step("debate").statusMessage or "").startswith(
        "stopped at max_iterations = 4")
    assert json.loads(result.step("winner").output or "")["name"] == "b"
    # The compromise reads the last judge's scores by path: `{judge.a}`, `{judge.b}`.
    assert "Scores: A 63, B 73." in (result.step("compromise").output or "")
    # ... and the code step's pick by path: `{winner.name}`, `{winner.candidate}`.
    assert "chef b's: [mock] chef-b[3]" in (result.step("compromise").output or "")


async def test_meal_planner_unscripted_judges_in_json_meeting_its_schema() -> None:
    result = await run("meal-planner", script=MockScript())
    assert result.state == S.SUCCEEDED
    assert json.loads(result.step("judge").output or "") == {"a": 0, "b": 0,
                                                              "consensus": False}
    assert json.loads(result.step("winner").output or "")["name"] == "a"  # a tie: the first


async def test_json_fixer_repairs_the_card_twice_then_writes_to_the_person() -> None:
    result = await run("json-fixer")
    assert result.state == S.SUCCEEDED
    extract = result.step("extract")
    assert json.loads(extract.output or "") == {"name": "Ada Lovelace", "age": 36,
                                                "email": "ada@example.com"}
    assert [(a.number, a.error_kind) for a in extract.attempts] == [
        (1, ErrorKind.SCHEMA), (2, ErrorKind.SCHEMA), (3, None)]
    assert "is not JSON" in (extract.attempts[0].error or "")
    assert "'email' is a required property" in (extract.attempts[1].error or "")
    assert "to Ada Lovelace (ada@example.com), aged 36," in (result.output or "")


async def test_json_fixer_fails_with_kind_schema_when_the_model_never_complies() -> None:
    result = await run("json-fixer", script=MockScript(rules=[
        {"step": "extract", "reply": '{"name": "Ada"}'}]))
    assert result.state == S.FAILED
    extract = result.step("extract")
    assert extract.error_kind == ErrorKind.SCHEMA and len(extract.attempts) == 3
    assert (extract.statusMessage or "").endswith(
        "after 2 repair(s) (max_repairs=2): at `$`: 'age' is a required property (and 1 more)")
    assert states(result)["note"] == S.SKIPPED


async def test_trip_planner_researches_in_parallel_then_writes_the_itinerary_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_ITINERARY_DIR", str(tmp_path / "out"))
    result = await run("trip-planner", max_attempts=2)
    assert result.state == S.SUCCEEDED, result.statusMessage
    research = [result.step(h) for h in ("hotels", "restaurants", "activities")]
    # Started together, in one turn of the engine; one was retried after a transient failure.
    assert len({r.started_at for r in research}) == 1
    assert [len(r.attempts) for r in research] == [1, 2, 1]
    written = json.loads(result.output or "")
    assert written == {"file": "lisbon.md", "bytes": written["bytes"], "destination": "Lisbon"}
    text = (tmp_path / "out" / "lisbon.md").read_text(encoding="utf-8")
    assert written["bytes"] == len(text.encode())
    assert text.startswith("# Itinerary: Lisbon\n\nSaturday: check in at Casa do Rio")
    assert "## Restaurants\n\nTaberna da Rua" in text and "## Activities\n\nRide tram 28" in text
    assert result.step("itinerary-file").backend == "code"


@pytest.mark.parametrize("destination", ["../../etc/passwd", "/tmp/x", "..", "Zürich/.ssh"],
                         ids=["traversal", "absolute", "dots", "unicode-and-hidden"])
async def test_trip_planner_never_writes_outside_its_directory(
        destination: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "out"
    monkeypatch.setenv("CHAINRUNNER_ITINERARY_DIR", str(folder))
    result = await run("trip-planner", {"destination": destination}, max_attempts=2)
    assert result.state == S.SUCCEEDED, result.statusMessage
    name = json.loads(result.output or "")["file"]
    assert files_under(tmp_path) == [folder / name]
    assert name.endswith(".md") and "/" not in name and not name.startswith(".")


async def test_trip_planner_catches_failed_activity_research_and_still_writes_the_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_ITINERARY_DIR", str(tmp_path / "out"))
    script = MockScript.load(SPECS / "mock" / "trip-planner.json")
    script = MockScript.model_validate(
        {"rules": [{"step": "activities", "error": "fatal"},
                   *script.model_dump(exclude_none=True)["rules"]]})
    mock = ScriptedMock(script)
    result = await run("trip-planner", mock=mock)
    assert result.state == S.SUCCEEDED, result.statusMessage
    activities = result.step("activities")
    assert activities.state == S.SUCCEEDED and activities.caught is not None
    assert activities.caught.error_kind == ErrorKind.MODEL
    assert len(activities.attempts) == 1  # a model error is not one `retry.on` names
    assert activities.output == "No activity suggestions came back; leave the afternoons free."
    assert "Activities: No activity suggestions came back" in \
        mock.request("itinerary").messages[-1].content
    assert (tmp_path / "out" / "lisbon.md").is_file()


def files_under(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()]


async def test_is_it_a_book_takes_either_branch() -> None:
    book = await run("is-it-a-book")
    assert book.state == S.SUCCEEDED and book.output is not None
    assert states(book)["not-a-book"] == S.SKIPPED
    other = await run("is-it-a-book", {"title": "The Eiffel Tower"})
    got = states(other)
    assert got["summary"] == got["advert"] == S.SKIPPED and got["not-a-book"] == S.SUCCEEDED
    assert other.output is None and other.state == S.SUCCEEDED


async def test_blog_post_carries_every_earlier_prompt_and_answer_as_chat_history() -> None:
    mock = ScriptedMock(MockScript.load(SPECS / "mock" / "blog-post.json"))
    result = await run("blog-post", mock=mock, max_attempts=2)
    assert result.state == S.SUCCEEDED
    assert list(states(result).values()) == [S.SUCCEEDED] * 5
    assert len(result.step("themes").attempts) == 2  # a transient failure, retried
    assert result.output == "# First Impressions, Second Thoughts\n\nA post in four paragraphs."
    messages = [(m.role, m.content) for m in mock.request("post").messages]
    assert messages[0] == ("system", "You write thoughtful posts for a literature blog.")
    assert messages[1:] == [
        ("user", "Write a one-paragraph summary of the novel Pride and Prejudice."),
        ("assistant", result.step("summary").output),
        ("user", "Now write one paragraph on the novel's main themes."),
        ("assistant", result.step("themes").output),
        ("user", "Now write one paragraph on its main characters and how they change."),
        ("assistant", result.step("characters").output),
        ("user", "Now write one paragraph on its writing style and its legacy."),
        ("assistant", result.step("style").output),
        ("user", "Now pull these paragraphs together into one blog post about Pride and "
                 "Prejudice, with a title, an introduction and a conclusion.")]
    assert len(mock.request("themes").messages) == 4  # system, summary's turn, its prompt
    assert result.step("post").capabilities == {"system_prompt": "native",
                                                "conversation": "native"}


async def test_movie_pitch_loops_back_on_pass_then_pitches_the_chosen_idea() -> None:
    mock = ScriptedMock(MockScript.load(SPECS / "mock" / "movie-pitch.json"))
    producer = Producer("pass", "idea-2")
    result = await run("movie-pitch", mock=mock, producer=producer)
    assert result.state == S.SUCCEEDED, result.statusMessage
    assert [r.step for r in producer.asked] == ["producer[0]", "producer[1]"]
    assert "idea-2: Two rival AIs fall in love" in producer.asked[0].text
    assert "idea-2: The last librarian on Mars." in producer.asked[1].text
    assert producer.asked[1].choices == ["idea-1", "idea-2", "idea-3", "pass"]
    got = states(result)
    assert [h for h in got if h.startswith("idea-2[")] == ["idea-2[0]", "idea-2[1]"]
    assert result.step("producer").output == "idea-2"
    assert (result.step("pitching").statusMessage or "").startswith(
        "`until` held after 2 iteration(s)")
    assert result.output and result.output.startswith("THE LAST LIBRARIAN")
    pitch = mock.request("one-page-pitch").messages[-1].content
    assert "idea-2: The last librarian on Mars." in pitch and "answered `idea-2`" in pitch
    second_round = mock.request("idea-1[1]").messages[-1].content
    assert '"producer": "pass"' in second_round  # the new ideas know what was passed on
    # three ideas per round, in parallel: each round's three started before any ended
    for number in (0, 1):
        ideas = [result.step(f"idea-{i}[{number}]") for i in (1, 2, 3)]
        assert max(r.started_at for r in ideas if r.started_at) <= \
            min(r.finished_at for r in ideas if r.finished_at)


async def test_movie_pitch_stops_after_three_passes_and_thanks_the_producer() -> None:
    producer = Producer("pass", "pass", "pass")
    result = await run("movie-pitch", producer=producer)
    assert result.state == S.SUCCEEDED
    assert [r.step for r in producer.asked] == ["producer[0]", "producer[1]", "producer[2]"]
    assert (result.step("pitching").statusMessage or "").startswith(
        "stopped at max_iterations = 3")
    assert result.output == "Thank you for your time; we will be back with new ideas."
