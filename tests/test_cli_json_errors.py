"""`--json` on exit 2: one JSON error document on stdout, whatever run, validate or graph refuse."""

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from chainlets.errors import ChainDefinitionError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import read_chain_json
from chainrunner.cli import main
from tests.test_cli import (
    INVALID_CHAINS,
    JOKE,
    REPO,
    SOUNDTRACK,
    _write_spec,
    clean_env,  # noqa: F401  # autouse here too: no backend or mock variables leak in
    invoke,
    mock_step,
    write_json,
)

ERROR_KEYS = {"error", "kind", "problems"}


def refusal(result: Result, kind: str, *more_keys: str) -> dict[str, Any]:
    """The one JSON document on stdout of a refused command (exit 2, nothing on stderr)."""
    assert result.exit_code == 2, result.output
    assert result.stderr == ""
    doc = json.loads(result.stdout)  # exactly one document: trailing text would not parse
    assert isinstance(doc, dict) and doc.keys() == ERROR_KEYS | set(more_keys)
    assert doc["kind"] == kind
    assert isinstance(doc["error"], str) and "\n" not in doc["error"]
    assert doc["problems"] and all(isinstance(p, str) for p in doc["problems"])
    return doc


def mentions(doc: dict[str, Any], message: str) -> bool:
    return any(message in text for text in [doc["error"], *doc["problems"]])


def more_keys(command: str) -> tuple[str, ...]:
    """validate's error document also holds every file's entry."""
    return ("files",) if command == "validate" else ()


# --- invalid chains ------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["run", "validate", "graph"])
@pytest.mark.parametrize(("spec", "messages"), INVALID_CHAINS)
def test_an_invalid_chain_is_one_json_document_listing_every_problem(
        tmp_path: Path, command: str, spec: dict[str, Any] | str, messages: list[str]) -> None:
    path = _write_spec(tmp_path, spec)
    doc = refusal(invoke(command, path, "--json"), "invalid_chain", *more_keys(command))
    for message in messages:
        assert mentions(doc, message), message
    with pytest.raises(ChainDefinitionError) as raised:
        compile_chain(read_chain_json(path), source=str(path))
    assert doc["problems"] == raised.value.problems
    assert doc["error"] == str(raised.value).split("\n")[0].rstrip(":")


def test_the_error_is_the_summary_and_the_problems_are_one_each(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, {"handle": "c", "steps": [
        mock_step("a", "{b}"), mock_step("b", "{a}"), mock_step("d", "x"), mock_step("d", "y")]})
    doc = refusal(invoke("graph", spec, "--json"), "invalid_chain")
    assert doc["error"] == f"{spec}: chain `c` is invalid (2 problems)"
    assert doc["problems"] == [
        "step `d`: duplicate handle `d`; handles must be unique, rename one of them",
        "dependency cycle `a` → `b` → `a`; remove one of these references",
    ]


@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_an_unreadable_chain_file_is_a_json_refusal(tmp_path: Path, command: str) -> None:
    missing = tmp_path / "nope.json"
    doc = refusal(invoke(command, missing, "--json"), "invalid_chain", *more_keys(command))
    assert doc["problems"] == [f"cannot read chain file {missing}: No such file or directory"]


@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_a_directory_as_chain_file_is_a_json_usage_refusal(tmp_path: Path, command: str) -> None:
    doc = refusal(invoke(command, tmp_path, "--json"), "usage")
    assert mentions(doc, "is a directory")


def test_an_invalid_mock_script_is_a_json_refusal(tmp_path: Path) -> None:
    script = write_json(tmp_path / "script.json", {"rules": [{"stepp": "judge-joke"}]})
    result = invoke("run", JOKE, "-i", "topic=cats", "--llm", "mock", "--mock-script", script,
                    "--json")
    doc = refusal(result, "invalid_chain")
    assert doc["error"].startswith(f"mock script {script} is invalid")


# --- inputs --------------------------------------------------------------------------------------


def test_missing_inputs_are_one_json_document_naming_each(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "chain.json", {"handle": "m", "steps": [
        mock_step("a", "{x} {y}"), mock_step("b", "{a} {z}")]})
    doc = refusal(invoke("run", spec, "--input", "y=1", "--llm", "mock", "--json"),
                  "invalid_inputs")
    assert doc["error"] == "chain `m` cannot run with these inputs (2 problems)"
    assert doc["problems"] == [
        "missing input `x` (used by step `a`): pass it with --input x=VALUE",
        "missing input `z` (used by step `b`): pass it with --input z=VALUE"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[1, 2]", "must hold a JSON object of input names to values"),
        ('{"topic": null}', "input `topic` is null; leave it out"),
        ("{not json", "Expecting property name"),
    ],
    ids=["not-an-object", "null-value", "bad-syntax"],
)
def test_a_bad_inputs_file_is_a_json_usage_refusal(tmp_path: Path, content: str,
                                                    message: str) -> None:
    inputs = tmp_path / "inputs.json"
    inputs.write_text(content, encoding="utf-8")
    result = invoke("run", JOKE, "--inputs-file", inputs, "--llm", "mock", "--json")
    doc = refusal(result, "usage")
    assert mentions(doc, "--inputs-file") and mentions(doc, message)


def test_an_unreadable_inputs_file_is_a_json_usage_refusal(tmp_path: Path) -> None:
    missing = tmp_path / "inputs.json"
    result = invoke("run", JOKE, "--inputs-file", missing, "--llm", "mock", "--json")
    doc = refusal(result, "usage")
    assert mentions(doc, f"Invalid value for --inputs-file: cannot read {missing}: No such file "
                         "or directory")


# --- click's own usage errors ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run", JOKE, "--input", "novalue"), "Invalid value for --input: `novalue` is not "
                                              "KEY=VALUE"),
        (("run", JOKE, "--llm", "gpt-9"), "'gpt-9' is not one of 'mock', 'openai'"),
        (("run", JOKE, "--max-attempts", "0"), "Invalid value for '--max-attempts'"),
        (("run", JOKE, "--mock-script", "no-such-script.json"), "does not exist"),
        (("run", JOKE, "--no-such-option"), "No such option '--no-such-option'"),
        (("run",), "Missing argument 'SPEC_FILE'"),
        (("validate",), "Missing argument 'SPEC_FILES...'"),
        (("graph", JOKE, "extra.json"), "Got unexpected extra argument (extra.json)"),
        (("validate", JOKE, "--runner", "no_such_module:Runner"),
         "cannot import module `no_such_module`"),
    ],
    ids=["input-without-equals", "unknown-llm", "zero-attempts", "missing-mock-script",
         "unknown-option", "run-without-file", "validate-without-file", "graph-extra-argument",
         "unknown-runner"],
)
def test_bad_usage_is_one_json_document(args: tuple[str | Path, ...], message: str) -> None:
    doc = refusal(invoke(*args, "--json"), "usage")
    assert doc["problems"] == [doc["error"]]
    assert message in doc["error"]


def test_json_after_a_double_dash_is_an_argument_not_the_flag(tmp_path: Path) -> None:
    result = invoke("validate", "--", "--json")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "cannot read chain file --json" in result.stderr


def test_without_json_a_refusal_is_text_on_stderr(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, {"handle": "c", "steps": [mock_step("a", "{a}")]})
    result = invoke("validate", spec)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith(f"error: {spec}: chain `c` is invalid (1 problem):\n"
                                    "  - step `a`")


# --- success under --json, and the real process ---------------------------------------------------


def test_validate_json_describes_each_valid_chain() -> None:
    result = invoke("validate", JOKE, SOUNDTRACK, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"valid": True, "files": [
        {"file": str(JOKE), "valid": True, "chain": "single-prompt", "steps": 2,
         "required_inputs": ["topic"]},
        {"file": str(SOUNDTRACK), "valid": True, "chain": "soundtrack", "steps": 9,
         "required_inputs": []}]}


def test_validate_json_of_several_files_names_each_problems_file(tmp_path: Path) -> None:
    cycle = write_json(tmp_path / "cycle.json", {"handle": "c", "steps": [
        mock_step("a", "{b}"), mock_step("b", "{a}")]})
    missing = tmp_path / "missing.json"
    doc = refusal(invoke("validate", cycle, JOKE, missing, "--json"), "invalid_chain", "files")
    assert doc["error"] == f"2 of 3 chain files are invalid: {cycle}, {missing}"
    assert doc["problems"] == [
        f"{cycle}: dependency cycle `a` → `b` → `a`; remove one of these references",
        f"{missing}: cannot read chain file {missing}: No such file or directory"]
    assert [(entry["file"], entry["valid"]) for entry in doc["files"]] == [
        (str(cycle), False), (str(JOKE), True), (str(missing), False)]
    assert doc["files"][0]["problems"] == [
        "dependency cycle `a` → `b` → `a`; remove one of these references"]
    assert doc["files"][1]["chain"] == "single-prompt"


def test_validate_json_reads_a_chain_from_stdin() -> None:
    result = CliRunner().invoke(main, ["validate", "-", "--json"],
                                input=JOKE.read_text(encoding="utf-8"))
    assert result.exit_code == 0
    assert json.loads(result.stdout)["files"][0]["file"] == "<stdin>"


def test_graph_json_holds_the_mermaid_text() -> None:
    result = invoke("graph", JOKE, "--json")
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert doc["chain"] == "single-prompt"
    assert doc["mermaid"] == invoke("graph", JOKE).stdout


def test_the_installed_command_prints_only_the_json_document(tmp_path: Path) -> None:
    spec = _write_spec(tmp_path, {"handle": "c", "steps": [mock_step("a", "{a}")]})
    done = subprocess.run([sys.executable, "-m", "chainrunner.cli", "validate", str(spec),
                           "--json"], capture_output=True, text=True, cwd=REPO, check=False)
    assert done.returncode == 2
    assert done.stderr == ""
    doc = json.loads(done.stdout)
    assert doc["kind"] == "invalid_chain"
    assert len(doc["problems"]) == 1 and "step `a` depends on itself" in doc["problems"][0]
