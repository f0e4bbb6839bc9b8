"""The README's examples do what it says they do: its outputs are what the commands print."""

import json
import re
from pathlib import Path
from typing import Any

import pytest

from chainlets.engine.models import GenerationRequest
from chainlets.errors import TransientGenerationError
from chainlets.generators.mock_model import MockModel, MockScript
from chainlets.language.spec import ChatMessage
from tests.test_cli import JOKE, REPO, clean_env, invoke  # noqa: F401  # clean_env: autouse

README = (REPO / "README.md").read_text(encoding="utf-8")
_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT[\d:.]+Z$")


def block_after(marker: str, lang: str) -> str:
    """The first ```lang code block after `marker` in the README."""
    start = README.index(f"```{lang}\n", README.index(marker)) + len(lang) + 4
    return README[start:README.index("\n```", start)]


def without_timestamps(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: without_timestamps(v) for k, v in data.items()}
    if isinstance(data, list):
        return [without_timestamps(v) for v in data]
    return "<time>" if isinstance(data, str) and _TIMESTAMP.match(data) else data


def request(step: str, prompt: str) -> GenerationRequest:
    return GenerationRequest(step=step, plugin="gpt-3",
                             messages=[ChatMessage(role="user", content=prompt)])


async def test_the_mock_script_example_fails_tell_joke_twice_then_judge_says_yes() -> None:
    script = MockScript.model_validate_json(block_after("Script it with", "json"))
    assert script.latency_ms == 50
    model = MockModel(script.model_copy(update={"latency_ms": 0}))
    for _ in range(2):
        with pytest.raises(TransientGenerationError):
            await model.generate(request("tell-joke", "Tell me a joke about food"))
    told = await model.generate(request("tell-joke", "Tell me a joke about food"))
    assert told.text.startswith("[mock] tell-joke")
    judged = await model.generate(request("judge-joke", "A joke\n\n Is it funny? YES/NO:"))
    assert judged.text == "YES"


def test_the_result_example_is_what_the_command_prints() -> None:
    shown = json.loads(block_after("Steamship's result shape, extended", "json"))
    result = invoke("run", JOKE, "-i", "topic=food", "--llm", "mock", "--json")
    assert result.exit_code == 0, result.stderr
    assert without_timestamps(shown) == without_timestamps(json.loads(result.stdout))


def test_the_exit_2_example_is_what_the_command_prints() -> None:
    command, _, shown = block_after("so that scripts never parse stderr", "sh").partition("\n")
    assert command == f"$ chainrunner run {JOKE.relative_to(REPO)} --json"
    result = invoke("run", JOKE, "--json")
    assert result.exit_code == 2
    assert json.loads(shown) == json.loads(result.stdout)


def test_the_readme_names_every_option_of_run() -> None:
    for option in ("--input", "--inputs-file", "--llm", "--mock-script", "--max-concurrency",
                   "--max-attempts", "--json", "CHAINRUNNER_MOCK_LATENCY_MS", "--version"):
        assert f"`{option}" in README or f"{option} " in README, option


def test_the_demo_runs_the_soundtrack_with_a_visible_mock_latency() -> None:
    makefile = (Path(REPO) / "Makefile").read_text(encoding="utf-8")
    demo = makefile[makefile.index("\ndemo:"):]
    demo = demo[:demo.index("\n\n")]
    assert "CHAINRUNNER_MOCK_LATENCY_MS=$(DEMO_LATENCY_MS)" in demo
    assert "chains/specs/soundtrack.json --llm mock" in demo
    assert re.search(r"^DEMO_LATENCY_MS \?= [1-9]\d{2,}$", makefile, re.M)


async def test_the_structured_output_example_runs_and_its_messages_are_the_code_s() -> None:
    from chainlets.engine.models import ErrorKind, RunOptions, RunState
    from chainlets.engine.scheduler import run_chain
    from chainlets.errors import ChainDefinitionError
    from chainlets.language.compiler import compile_chain
    from mocks.fake_generator import FakeGenerator

    chain = json.loads(block_after("### Structured output and path reads", "json"))
    compiled = compile_chain(chain)
    assert compiled.steps["extract"].structured is not None
    prose = " ".join(README[README.index("### Structured output and path reads"):].split())

    fake = FakeGenerator(replies={"extract": '{"name": "Ada"}', "note": "hi"})
    result = await run_chain(compiled, {"text": "Ada, 36"}, {"openai": fake},
                             RunOptions(initial_backoff_s=0))
    failed = result.step("extract")
    assert failed.error_kind == ErrorKind.SCHEMA and result.state == RunState.FAILED
    assert f"`{failed.statusMessage}`" in prose

    chain["steps"][1]["prompt"] = "Write to {extract.nmae}"
    with pytest.raises(ChainDefinitionError) as excinfo:
        compile_chain(chain)
    assert f"`{excinfo.value.problems[0]}`" in prose
    assert "`CHAINRUNNER_MAX_REPAIRS` (default 10)" in prose
