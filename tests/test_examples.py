"""Code-first chains in chains/ and the JSON runner, wired by truss's run_local with fakes."""

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import truss_chains as chains

from chainlets.engine.models import (
    ChainInputs,
    GenerationRequest,
    InvocationResult,
    RunOptions,
    RunState,
)
from chainlets.language.spec import load_chain
from chainlets.runner import ChainRunner
from chains.hello import HelloAll
from chains.poems import PoemGenerator
from chains.soundtrack import (
    CRITIC_SYSTEM_PROMPT,
    Critic,
    Lyrics,
    MainCharacters,
    MovieTitle,
    SongTitle,
    Soundtrack,
    SoundtrackFlow,
)
from mocks.fake_generator import FakeGenerator
from mocks.fake_phi import FakePhiLLM

REPO = Path(__file__).resolve().parent.parent
LATENCY_S = 0.02  # long enough for concurrent calls to be in flight together

HELLO_OUTPUT = "Hello, Marius\nHello, Sid\nHello, Bola"
POEMS = ["Here's a poem about bird", "Here's a poem about plane", "Here's a poem about superman"]
SOUNDTRACK_STEPS = ["movie-title", "song-title", "main-characters", "song-lyrics",
                    *(f"song-review-{i}" for i in range(5))]


def user_prompt(request: GenerationRequest) -> str:
    return request.messages[-1].content


# --- hello and poems ----------------------------------------------------------------------------


async def test_hello_greets_every_name_in_order() -> None:
    with chains.run_local():
        hello = HelloAll()
        assert await hello.run_remote(["Marius", "Sid", "Bola"]) == HELLO_OUTPUT


async def test_poem_generator_asks_the_injected_llm_for_one_poem_per_word() -> None:
    phi = FakePhiLLM()
    with chains.run_local():
        poems = PoemGenerator(phi_llm=phi)
        assert await poems.run_remote(["bird", "plane", "superman"]) == POEMS
    assert phi.prompts == [f"Write a short poem about {w}" for w in ("bird", "plane", "superman")]


# --- the code-first soundtrack flow -------------------------------------------------------------


class SoundtrackFakes:
    """One fake per step chainlet; song title and characters share one to observe overlap."""

    def __init__(self) -> None:
        self.title = FakeGenerator(default="Best Friends", latency_s=LATENCY_S)
        self.middle = FakeGenerator(replies={"song-title": "Side by Side",
                                             "main-characters": "Ann and Bob"},
                                    latency_s=LATENCY_S)
        self.lyrics = FakeGenerator(default="la la friends", latency_s=LATENCY_S)
        self.critic = FakeGenerator(default=lambda r: f"review of {r.step}", latency_s=LATENCY_S)

    @property
    def requests(self) -> list[GenerationRequest]:
        return [r for f in (self.title, self.middle, self.lyrics, self.critic)
                for r in f.requests]

    def prompt(self, step: str) -> str:
        (request,) = (r for r in self.requests if r.step == step)
        return user_prompt(request)


@pytest.fixture
def fakes() -> SoundtrackFakes:
    return SoundtrackFakes()


async def run_soundtrack(fakes: SoundtrackFakes, topic: str = "friendship") -> Soundtrack:
    with chains.run_local():
        flow = SoundtrackFlow(title=MovieTitle(llm=fakes.title),
                              song=SongTitle(llm=fakes.middle),
                              characters=MainCharacters(llm=fakes.middle),
                              lyrics=Lyrics(llm=fakes.lyrics),
                              critic=Critic(llm=fakes.critic))
        return await flow.run_remote(topic)


async def test_soundtrack_returns_every_steps_output(fakes: SoundtrackFakes) -> None:
    result = await run_soundtrack(fakes)
    assert result.model_dump() == {
        "topic": "friendship",
        "movie_title": "Best Friends",
        "song_title": "Side by Side",
        "main_characters": "Ann and Bob",
        "song_lyrics": "la la friends",
        "reviews": [f"review of song-review-{i}" for i in range(5)],
    }


async def test_soundtrack_passes_each_output_to_the_steps_that_need_it(
        fakes: SoundtrackFakes) -> None:
    await run_soundtrack(fakes, topic="dragons")
    assert "dragons" in fakes.prompt("movie-title")
    assert "Best Friends" in fakes.prompt("song-title")
    assert "Best Friends" in fakes.prompt("main-characters")
    lyrics = fakes.prompt("song-lyrics")
    assert "Side by Side" in lyrics
    assert "Ann and Bob" in lyrics
    assert len(fakes.critic.requests) == 5
    for request in fakes.critic.requests:
        assert [m.role for m in request.messages] == ["system", "user"]
        assert request.messages[0].content == CRITIC_SYSTEM_PROMPT
        assert "la la friends" in user_prompt(request)


async def test_soundtrack_makes_exactly_nine_calls_one_per_step(fakes: SoundtrackFakes) -> None:
    await run_soundtrack(fakes)
    assert sorted(r.step for r in fakes.requests) == sorted(SOUNDTRACK_STEPS)


async def test_soundtrack_runs_independent_steps_concurrently(fakes: SoundtrackFakes) -> None:
    await run_soundtrack(fakes)
    assert fakes.middle.max_in_flight == 2, "song title and characters did not overlap"
    assert fakes.critic.max_in_flight == 5, "the five critics did not run together"


# --- the JSON runner on the shipped soundtrack spec ---------------------------------------------


async def test_runner_executes_the_soundtrack_spec_once_per_step_in_parallel() -> None:
    fake = FakeGenerator(default=lambda r: f"out of {r.step}", latency_s=LATENCY_S)
    spec = load_chain(REPO / "chains" / "specs" / "soundtrack.json")
    with chains.run_local():
        runner = ChainRunner(openai=fake, mock=fake)
        answer = await runner.run_remote(spec, ChainInputs({}), RunOptions(llm="mock"))
    result = answer.root
    assert isinstance(result, InvocationResult)
    assert result.state == RunState.SUCCEEDED
    assert result.input == {"topic": "friendship"}
    assert result.output == "out of song-lyrics"
    assert {s: fake.calls(s) for s in SOUNDTRACK_STEPS} == dict.fromkeys(SOUNDTRACK_STEPS, 1)
    assert len(fake.requests) == 9
    assert fake.max_in_flight >= 5
    assert all(s.state == RunState.SUCCEEDED for s in result.steps)


# --- `python -m chains.<name>` ------------------------------------------------------------------

EXAMPLES = ["hello", "poems", "soundtrack"]


@pytest.fixture(scope="module", autouse=True)
def example_processes(
        request: pytest.FixtureRequest) -> Iterator[dict[str, "subprocess.Popen[str]"]]:
    """The example scripts, all started when this module's first test runs.

    Each spends seconds starting Python and importing truss; started together and early, that
    overlaps the in-process tests instead of adding to them. Nothing starts when no e2e test
    of this module is selected.
    """
    selected = any(item.path == request.path and item.get_closest_marker("e2e")
                   for item in request.session.items)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAINRUNNER_")}
    procs = {name: subprocess.Popen([sys.executable, "-m", f"chains.{name}"], cwd=REPO, env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for name in EXAMPLES} if selected else {}
    yield procs
    for proc in procs.values():
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def _check_hello(stdout: str) -> None:
    assert stdout == HELLO_OUTPUT + "\n"


def _check_poems(stdout: str) -> None:
    assert stdout == f"{POEMS}\n"


def _check_soundtrack(stdout: str) -> None:
    doc = json.loads(stdout)
    assert doc["topic"] == "friendship"
    assert len(doc["reviews"]) == 5
    generated = [doc[k] for k in ("movie_title", "song_title", "main_characters", "song_lyrics")]
    assert all(text.startswith("[mock]") for text in generated + doc["reviews"])


@pytest.mark.e2e
@pytest.mark.parametrize("name", EXAMPLES, ids=EXAMPLES)
def test_example_script_runs_and_prints_its_result(
        example_processes: dict[str, "subprocess.Popen[str]"], name: str) -> None:
    stdout, stderr = example_processes[name].communicate(timeout=120)
    assert example_processes[name].returncode == 0, stderr
    {"hello": _check_hello, "poems": _check_poems, "soundtrack": _check_soundtrack}[name](stdout)
