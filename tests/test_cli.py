"""The `chainrunner` command line: exit codes, the JSON result, validation, graph and schema."""

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner, Result

from chainlets.generators.mock_model import LATENCY_ENV, SCRIPT_ENV
from chainrunner.cli import main
from chainrunner.extensions import RUNNER_ENV

REPO = Path(__file__).resolve().parent.parent
JOKE = REPO / "chains" / "specs" / "joke.json"
SOUNDTRACK = REPO / "chains" / "specs" / "soundtrack.json"

STEP_KEYS = {"handle", "state", "statusMessage", "output", "attempts", "started_at",
             "finished_at", "usage", "error_kind", "backend", "model", "capabilities",
             "caught"}
# Every variable that picks a backend or scripts the mock; each test starts without them.
_ENV = ("CHAINRUNNER_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL", SCRIPT_ENV, LATENCY_ENV,
        RUNNER_ENV)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        # setenv first so that monkeypatch also undoes what `run --mock-script` writes to
        # os.environ during a test (delenv alone records nothing for an absent variable).
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)


def invoke(*args: str | Path, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], input=stdin, catch_exceptions=False)


def run_joke(*args: str | Path) -> Result:
    return invoke("run", JOKE, "--input", "topic=cats", "--llm", "mock", *args)


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def mock_step(handle: str, prompt: str, **extra: Any) -> dict[str, Any]:
    return {"handle": handle, "prompt": prompt, "plugin": "mock", **extra}


def one_line(text: str) -> str:
    """Rich wraps stderr at the console width; compare messages with whitespace collapsed."""
    return " ".join(text.split())


# --- run: success and the JSON result ----------------------------------------------------------


def test_run_exits_0_and_prints_the_output_of_the_last_step() -> None:
    result = run_joke()
    assert result.exit_code == 0, result.stderr
    assert "output (judge-joke):" in result.stdout
    assert "[mock] judge-joke" in result.stdout


def test_run_json_prints_exactly_one_document_in_steamships_shape() -> None:
    result = run_joke("--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert {"input", "output", "state", "statusMessage", "steps"} <= doc.keys()
    assert doc["input"] == {"topic": "cats"}
    assert doc["state"] == "succeeded"
    assert doc["statusMessage"] is None
    assert [s["handle"] for s in doc["steps"]] == ["tell-joke", "judge-joke"]
    for step in doc["steps"]:
        assert step.keys() == STEP_KEYS
        assert step["state"] == "succeeded"
        assert len(step["attempts"]) == 1
        assert step["usage"]["total_tokens"] > 0
    assert doc["output"] == doc["steps"][-1]["output"]


def test_mock_outputs_are_marked_and_within_the_specs_max_words() -> None:
    doc = json.loads(run_joke("--json").stdout)
    for step in doc["steps"]:
        assert step["output"].startswith("[mock]")
        assert len(step["output"].split()) <= 10  # joke.json: max_words 10


@pytest.fixture(scope="module", autouse=True)
def console_script(request: pytest.FixtureRequest) -> Iterator["subprocess.Popen[str] | None"]:
    """`chainrunner run --json` as a real process, started when this module's first test runs.

    Starting Python and importing truss takes seconds; started early, that overlaps the
    in-process tests. Nothing starts when the e2e test is not selected.
    """
    selected = any(item.path == request.path and item.get_closest_marker("e2e")
                   for item in request.session.items)
    script = shutil.which("chainrunner", path=str(Path(sys.executable).parent))
    if not selected or script is None:
        yield None
        return
    env = {k: v for k, v in os.environ.items() if k not in _ENV}
    proc = subprocess.Popen([script, "run", str(JOKE), "--input", "topic=cats", "--llm", "mock",
                             "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env, cwd=REPO)
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.mark.e2e
def test_installed_console_script_prints_one_json_document(
        console_script: "subprocess.Popen[str] | None") -> None:
    assert console_script is not None, "the chainrunner console script is not in this venv"
    stdout, stderr = console_script.communicate(timeout=120)
    assert console_script.returncode == 0, stderr
    doc = json.loads(stdout)
    assert doc["state"] == "succeeded"
    assert doc["output"].startswith("[mock] judge-joke")


# --- run: failures, retries and scripted replies -----------------------------------------------


def test_run_exits_1_when_a_step_fails_and_still_prints_the_result(tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"step": "judge-joke", "error": "fatal"}]})
    result = run_joke("--json", "--mock-script", script)
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert doc["state"] == "failed"
    assert doc["output"] is None
    assert "judge-joke" in doc["statusMessage"]
    tell, judge = doc["steps"]
    assert tell["state"] == "succeeded"
    assert judge["state"] == "failed"
    assert len(judge["attempts"]) == 1, "a fatal error is not retried"
    assert "scripted failure" in judge["statusMessage"]


def test_run_without_json_prints_the_failure_on_stdout(tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"step": "judge-joke", "error": "fatal"}]})
    result = run_joke("--mock-script", script)
    assert result.exit_code == 1
    assert "failed: step `judge-joke` failed" in one_line(result.stdout)


def test_transient_failures_are_retried_and_the_attempts_recorded(tmp_path: Path) -> None:
    # The only test that waits out the real backoff (0.5 s, then 1 s, plus jitter).
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"step": "tell-joke", "error": "transient", "times": 2}]})
    result = run_joke("--json", "--mock-script", script, "--max-attempts", "3")
    assert result.exit_code == 0, result.stdout
    tell = json.loads(result.stdout)["steps"][0]
    assert tell["state"] == "succeeded"
    assert [a["number"] for a in tell["attempts"]] == [1, 2, 3]
    assert ["transient" in (a["error"] or "") for a in tell["attempts"]] == [True, True, False]


def test_scripted_reply_makes_the_judge_say_yes(tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"match": "Is it funny", "reply": "YES"}]})
    result = run_joke("--json", "--mock-script", script)
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["output"] == "YES"
    assert doc["steps"][0]["output"].startswith("[mock] tell-joke")


def test_a_mock_script_does_not_leak_into_the_next_run_in_the_same_process(
        tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"step": "judge-joke", "error": "fatal"}]})
    assert run_joke("--json", "--mock-script", script).exit_code == 1
    assert run_joke("--json").exit_code == 0


# --- run: inputs --------------------------------------------------------------------------------


def test_inputs_file_supplies_the_inputs(tmp_path: Path) -> None:
    inputs = write_json(tmp_path / "inputs.json", {"topic": "penguins"})
    result = invoke("run", JOKE, "--inputs-file", inputs, "--llm", "mock", "--json")
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["input"] == {"topic": "penguins"}
    assert doc["steps"][0]["output"].endswith("Tell me a joke about penguins")


def test_input_option_overrides_the_inputs_file(tmp_path: Path) -> None:
    inputs = write_json(tmp_path / "inputs.json", {"topic": "penguins"})
    result = invoke("run", JOKE, "--inputs-file", inputs, "--input", "topic=otters",
                    "--llm", "mock", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["input"] == {"topic": "otters"}


def test_scalar_values_in_the_inputs_file_become_strings(tmp_path: Path) -> None:
    inputs = write_json(tmp_path / "inputs.json", {"topic": 42})
    result = invoke("run", JOKE, "--inputs-file", inputs, "--llm", "mock", "--json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["input"] == {"topic": "42"}


def test_missing_inputs_exit_2_listing_every_missing_name(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "chain.json", {"handle": "m", "steps": [
        mock_step("a", "{x} {y}"), mock_step("b", "{a} {z}")]})
    result = invoke("run", spec, "--input", "y=1", "--llm", "mock")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "missing input `x` (used by step `a`): pass it with --input x=VALUE" \
        in one_line(result.stderr)
    assert "missing input `z` (used by step `b`): pass it with --input z=VALUE" \
        in one_line(result.stderr)
    assert "`y`" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--input", "novalue"), "`novalue` is not KEY=VALUE (text) or KEY:=JSON"),
        (("--input", "=value"), "`=value` is not KEY=VALUE (text) or KEY:=JSON"),
        (("--input", ":=[1]"), "`:=[1]` is not KEY=VALUE (text) or KEY:=JSON"),
        (("--llm", "gpt-9"), "'gpt-9' is not one of 'mock', 'openai'"),
        (("--max-attempts", "0"), "--max-attempts"),
        (("--mock-script", "no-such-script.json"), "does not exist"),
    ],
    ids=["input-without-equals", "input-without-key", "json-input-without-key", "unknown-llm",
         "zero-attempts",
         "missing-mock-script"],
)
def test_bad_usage_exits_2_before_running(args: tuple[str, ...], message: str) -> None:
    result = invoke("run", JOKE, "--input", "topic=cats", *args)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in one_line(result.stderr)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "must hold a JSON object of input names to values"),
        ('{"topic": null}', "input `topic` is null; leave it out (its default applies), or "
                            "give a value"),
        ("{not json", "Expecting property name"),
    ],
    ids=["not-an-object", "null-value", "bad-syntax"],
)
def test_bad_inputs_file_exits_2(tmp_path: Path, content: str, message: str) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(content, encoding="utf-8")
    result = invoke("run", JOKE, "--inputs-file", inputs, "--llm", "mock")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in one_line(result.stderr)


MAP_CHAIN = {"handle": "m", "steps": [
    {"handle": "greet", "plugin": "mock", "plugin_config": {"max_words": 20},
     "map": {"over": "people", "item": "who"}, "prompt": "Hello {who} of {team}"}]}


def test_json_inputs_from_the_command_line_and_the_inputs_file(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "map.json", MAP_CHAIN)
    inputs = write_json(tmp_path / "inputs.json", {"people": ["Ann"], "team": {"n": 1}})
    from_file = invoke("run", spec, "--inputs-file", inputs, "--llm", "mock", "--json")
    assert from_file.exit_code == 0, from_file.stderr
    assert json.loads(from_file.stdout)["input"] == {"people": ["Ann"], "team": {"n": 1}}
    given = invoke("run", spec, "--inputs-file", inputs, "--input", 'people:=["Bo", "Cy"]',
                   "--input", "team=red", "--llm", "mock", "--json")
    assert given.exit_code == 0, given.stderr
    doc = json.loads(given.stdout)
    assert doc["input"] == {"people": ["Bo", "Cy"], "team": "red"}
    assert json.loads(doc["output"]) == ["[mock] greet[0] re: Hello Bo of red",
                                         "[mock] greet[1] re: Hello Cy of red"]
    text = invoke("run", spec, "--input", "people=[1]", "--input", "team:=7", "--llm", "mock",
                  "--json")  # `=`: text, mapped over as the JSON it holds; `:=` a number
    assert json.loads(text.stdout)["input"] == {"people": "[1]", "team": 7}


@pytest.mark.e2e
def test_json_inputs_through_the_installed_command(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "map.json", MAP_CHAIN)
    env = {k: v for k, v in os.environ.items() if k not in _ENV}
    done = subprocess.run([sys.executable, "-m", "chainrunner.cli", "run", str(spec), "--input",
                           'people:=["Ann", {"name": "Bob"}]', "--input", "team=red", "--llm",
                           "mock", "--json"], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["input"] == {"people": ["Ann", {"name": "Bob"}], "team": "red"}
    assert json.loads(doc["output"])[1] == '[mock] greet[1] re: Hello {"name": "Bob"} of red'
    bad = subprocess.run([sys.executable, "-m", "chainrunner.cli", "run", str(spec), "--input",
                          "people:=[Ann", "--json"], capture_output=True, text=True, env=env,
                         cwd=REPO, timeout=120, check=False)
    assert bad.returncode == 2
    assert "input `people` is not valid JSON" in json.loads(bad.stdout)["error"]


@pytest.mark.parametrize(
    ("pair", "message"),
    [("people:=[Ann]", "--input: input `people` is not valid JSON: Expecting value at line 1, "
                       "column 2; after `people:=` write a JSON value (quote it for the shell: "
                       "--input 'people:=[\"Ann\", \"Bob\"]'), or pass text with "
                       "`people=…`"),
     ("people:=", "input `people` is not valid JSON: Expecting value at line 1, column 1"),
     ('people:={"a": 1, "a": 2}', "input `people`: key `a` appears more than once"),
     ("people:=null", "input `people` is JSON null; leave the input out instead")],
    ids=["not-json", "empty", "repeated-key", "null"])
def test_a_bad_json_input_exits_2_naming_it_and_the_fix(tmp_path: Path, pair: str,
                                                        message: str) -> None:
    spec = write_json(tmp_path / "map.json", MAP_CHAIN)
    result = invoke("run", spec, "--input", pair, "--input", "team=red", "--llm", "mock")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert message in one_line(result.stderr)
    as_json = invoke("run", spec, "--input", pair, "--input", "team=red", "--llm", "mock",
                     "--json")
    assert as_json.exit_code == 2
    assert json.loads(as_json.stdout)["kind"] == "usage"


def test_invalid_mock_script_exits_2_naming_the_file(tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json", {"rules": [{"stepp": "judge-joke"}]})
    result = run_joke("--mock-script", script)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"mock script {script} is invalid" in one_line(result.stderr)


# --- run: backend selection ---------------------------------------------------------------------


def test_backend_defaults_to_mock_and_says_so_on_stderr() -> None:
    result = invoke("run", JOKE, "--input", "topic=cats", "--json")
    assert result.exit_code == 0, result.stderr
    assert "OPENAI_API_KEY is not set: using the offline mock backend" in one_line(result.stderr)
    assert json.loads(result.stdout)["output"].startswith("[mock]")


@pytest.mark.parametrize("via_env", [False, True], ids=["llm-option", "CHAINRUNNER_LLM"])
def test_an_explicit_backend_is_not_announced(monkeypatch: pytest.MonkeyPatch,
                                              via_env: bool) -> None:
    args: list[str | Path] = ["run", JOKE, "--input", "topic=cats", "--json"]
    if via_env:
        monkeypatch.setenv("CHAINRUNNER_LLM", "mock")
    else:
        args += ["--llm", "mock"]
    result = invoke(*args)
    assert result.exit_code == 0, result.stderr
    assert "backend" not in result.stderr
    assert json.loads(result.stdout)["output"].startswith("[mock]")


# --- invalid chains (run and validate) ----------------------------------------------------------

INVALID_CHAINS = [
    pytest.param({"handle": "c", "steps": [
        {"handle": "a", "prompt": "x", "plugin": "gpt-4"}]},
        ["step `a`: unknown plugin `gpt-4`; use one of `gpt-3`, `human-approval`, `mock`, `openai` "
         "(did you mean `gpt-3`?)"], id="unknown-plugin"),
    pytest.param({"handle": "c", "steps": [mock_step("a", "{b}"), mock_step("b", "{a}")]},
                 ["dependency cycle `a` → `b` → `a`; remove one of these references"],
                 id="cycle"),
    pytest.param({"handle": "c", "steps": [mock_step("a", "x"), mock_step("a", "y")]},
                 ["step `a`: duplicate handle `a`; handles must be unique, rename one of them"],
                 id="duplicate-handle"),
    pytest.param({"handle": "c", "steps": [
        {"handle": "a", "prompt": "{b}", "plugin": "gpt-4"},
        mock_step("b", "{a}"), mock_step("c", "x"), mock_step("c", "y")]},
        ["step `c`: duplicate handle `c`",
         "step `a`: unknown plugin `gpt-4`",
         "dependency cycle `a` → `b` → `a`",
         "(3 problems)"], id="all-at-once"),
    pytest.param('{"handle": "c", "steps": [',
                 ["is not valid JSON: Expecting value at line 1, column 27"],
                 id="bad-json-syntax"),
    pytest.param({"handle": "c", "steps": [{"handle": "a", "prompt": "x"}], "extra": 1},
                 ["step `a`: field `plugin` is required; add it",
                  "chain: unknown field `extra`; remove it or correct its spelling"],
                 id="schema-errors"),
    pytest.param({"handle": "c", "extra": 1, "steps": [
        {"handle": "a", "promt": "x", "plugin": "gpt-3"},
        {"handle": "b", "prompt": "{a} {nope_ref}", "plugin": "mock", "depends_on": "a"},
        {"handle": "d", "prompt": 'As JSON: {"urgent": true}', "plugin": "openai",
         "plugin_config": {"temperature": 3}, "messages": [{"role": "bot", "content": "hi"}]},
        7]},
        ["chain.json: chain `c` is invalid (8 problems)",
         "chain: unknown field `extra`",
         "step `a`: unknown field `promt` (did you mean `prompt`?)",
         'step `a`: plugin `gpt-3` requires `plugin_config.max_words`; add `"plugin_config": '
         '{"max_words": 50}`',
         'step `b`: `depends_on` = "a" is invalid: Input should be a valid list',
         'step `d`: prompt: `{"urgent": true}` is not a placeholder; for literal braces write '
         '`{{"urgent": true}}`',
         "step `d`: `messages[0].role` = \"bot\" is invalid",
         "step `d`: plugin_config.temperature = 3 is invalid for plugin `openai`",
         "steps[3] must be a JSON object, not 7"], id="schema-and-semantic-at-once"),
]


def _write_spec(tmp_path: Path, spec: dict[str, Any] | str) -> Path:
    path = tmp_path / "chain.json"
    path.write_text(spec if isinstance(spec, str) else json.dumps(spec), encoding="utf-8")
    return path


@pytest.mark.parametrize(("spec", "messages"), INVALID_CHAINS)
def test_run_of_an_invalid_chain_exits_2_with_every_problem_on_stderr(
        tmp_path: Path, spec: dict[str, Any] | str, messages: list[str]) -> None:
    result = invoke("run", _write_spec(tmp_path, spec), "--llm", "mock")
    assert result.exit_code == 2
    assert result.stdout == ""
    for message in messages:
        assert message in one_line(result.stderr)


@pytest.mark.parametrize(("spec", "messages"), INVALID_CHAINS)
def test_validate_exits_2_with_every_problem(tmp_path: Path, spec: dict[str, Any] | str,
                                            messages: list[str]) -> None:
    result = invoke("validate", _write_spec(tmp_path, spec))
    assert result.exit_code == 2
    for message in messages:
        assert message in one_line(result.stderr)


@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_a_nonexistent_spec_file_exits_2(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.json"
    result = invoke(command, missing)
    assert result.exit_code == 2
    assert f"cannot read chain file {missing}: No such file or directory" \
        in one_line(result.stderr)


@pytest.mark.parametrize(
    ("spec", "message"),
    [(JOKE, "chain `single-prompt` is valid: 2 steps, required inputs: topic (used by step "
            "`tell-joke`)"),
     (SOUNDTRACK, "chain `soundtrack` is valid: 9 steps, required inputs: none")],
    ids=["joke", "soundtrack"],
)
def test_validate_exits_0_for_a_valid_chain(spec: Path, message: str) -> None:
    result = invoke("validate", spec)
    assert result.exit_code == 0
    assert result.stdout == f"{spec}: {message}\n"


def test_validate_reports_each_of_several_files_and_exits_2_if_any_is_invalid(
        tmp_path: Path) -> None:
    bad = write_json(tmp_path / "bad.json", {"handle": "c", "steps": [mock_step("a", "{a}")]})
    result = invoke("validate", JOKE, bad, SOUNDTRACK)
    assert result.exit_code == 2
    assert result.stdout.splitlines() == [
        f"{JOKE}: chain `single-prompt` is valid: 2 steps, required inputs: topic (used by step "
        "`tell-joke`)",
        f"{SOUNDTRACK}: chain `soundtrack` is valid: 9 steps, required inputs: none"]
    assert one_line(result.stderr) == (
        f"error: {bad}: chain `c` is invalid (1 problem): - step `a` depends on itself; a step "
        "cannot use its own output")


def test_validate_reads_a_chain_from_stdin() -> None:
    result = invoke("validate", "-", stdin=JOKE.read_text(encoding="utf-8"))
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("<stdin>: chain `single-prompt` is valid: 2 steps")
    result = invoke("validate", "-", stdin='{"handle": "c", "steps": []}')
    assert result.exit_code == 2
    assert one_line(result.stderr) == ("error: <stdin>: chain `c` is invalid (1 problem): - "
                                       "chain: `steps` is empty; add at least one step")
    result = invoke("validate", "-", stdin="{")
    assert "<stdin> is not valid JSON" in one_line(result.stderr)


def test_run_and_graph_read_a_chain_from_stdin() -> None:
    text = JOKE.read_text(encoding="utf-8")
    result = invoke("run", "-", "--input", "topic=cats", "--llm", "mock", "--json", stdin=text)
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["state"] == "succeeded"
    assert invoke("graph", "-", stdin=text).stdout.startswith("flowchart TD\n")


def test_validate_names_the_step_of_each_required_input_and_a_likely_typo(
        tmp_path: Path) -> None:
    spec = write_json(tmp_path / "chain.json", {"handle": "c", "steps": [
        mock_step("tell-joke", "{topic}"), mock_step("judge", "{tell_joke} {topic}")]})
    result = invoke("validate", spec)
    assert result.exit_code == 0
    assert result.stdout == (
        f"{spec}: chain `c` is valid: 2 steps, required inputs: topic (used by steps "
        "`tell-joke`, `judge`); tell_joke (used by step `judge`; did you mean step "
        "`tell-joke`?)\n")


def test_validate_without_a_file_is_a_usage_error() -> None:
    result = invoke("validate")
    assert result.exit_code == 2
    assert "Missing argument 'SPEC_FILES...'" in result.stderr


# --- graph --------------------------------------------------------------------------------------


def _mermaid_edges(text: str) -> set[tuple[str, str]]:
    """Edges of a Mermaid flowchart as (label, label), labels being the first label line."""
    labels = {m["id"]: m["label"].split("<br/>")[0]
              for m in re.finditer(r'^\s+(?P<id>\w+)\[/?"(?P<label>[^"]*)"/?\]$', text, re.M)}
    return {(labels[a], labels[b]) for a, b in re.findall(r"^\s+(\w+) --> (\w+)$", text, re.M)}


def test_graph_prints_a_mermaid_flowchart_with_every_dependency() -> None:
    result = invoke("graph", SOUNDTRACK)
    assert result.exit_code == 0
    assert result.stdout.startswith("flowchart TD\n")
    reviews = {("song-lyrics", f"song-review-{i}") for i in range(5)}
    assert _mermaid_edges(result.stdout) == {
        ("topic", "movie-title"),
        ("movie-title", "song-title"),
        ("movie-title", "main-characters"),
        ("song-title", "song-lyrics"),
        ("main-characters", "song-lyrics"),
        *reviews,
    }


def test_graph_of_an_invalid_chain_exits_2(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "chain.json",
                      {"handle": "c", "steps": [mock_step("a", "{a}")]})
    result = invoke("graph", spec)
    assert result.exit_code == 2
    assert "step `a` depends on itself" in one_line(result.stderr)


# --- schema -------------------------------------------------------------------------------------


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def test_schema_prints_the_chain_languages_json_schema() -> None:
    result = invoke("schema")
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert {"handle", "steps"} <= set(schema["required"])
    assert {"handle", "steps", "callback_url", "inputs", "output"} <= schema["properties"].keys()
    step = _resolve(schema, schema["properties"]["steps"]["items"])
    assert {"handle", "prompt", "plugin", "plugin_config", "input"} <= step["properties"].keys()
    assert step["additionalProperties"] is False


@pytest.mark.parametrize("spec", [JOKE, SOUNDTRACK], ids=["joke", "soundtrack"])
def test_shipped_specs_conform_to_the_printed_schema(spec: Path) -> None:
    schema = json.loads(invoke("schema").stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(spec.read_text(encoding="utf-8")), schema,
                        cls=jsonschema.Draft202012Validator)


@pytest.mark.parametrize("bad", [
    {"handle": "c", "steps": [{"handle": "a", "prompt": "x", "plugin": "mock", "promt": "y"}]},
    {"handle": "c", "steps": [{"handle": "a", "plugin": "mock"}]},
    {"handle": "c", "steps": []},
], ids=["typo-field", "missing-prompt", "no-steps"])
def test_the_printed_schema_rejects_what_validation_rejects(bad: dict[str, Any]) -> None:
    schema = json.loads(invoke("schema").stdout)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema, cls=jsonschema.Draft202012Validator)
