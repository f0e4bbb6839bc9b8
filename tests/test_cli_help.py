"""What a newcomer reads first: `--help` with exit codes and examples, `--version`, env names."""

from importlib.metadata import version

from chainlets.generators import mock_model
from chainrunner import cli_help
from tests.test_cli import invoke, one_line


def test_help_lists_the_exit_codes_and_examples() -> None:
    result = invoke("--help")
    assert result.exit_code == 0
    text = result.stdout
    for line in ("0  the chain succeeded", "1  the chain ran and a step failed",
                 "2  invalid chain, missing inputs or bad usage; nothing was called"):
        assert line in text
    assert '{"error": "...", "kind": "invalid_chain|invalid_inputs|usage", "problems": [...]}' \
        in text
    assert "chainrunner run chains/specs/joke.json --input topic=food" in text
    for command in ("run", "validate", "graph", "schema", "serve"):
        assert f"\n  {command} " in text


def test_run_help_documents_every_option_and_variable() -> None:
    text = one_line(invoke("run", "--help").stdout)
    for option in ("--input", "--inputs-file", "--llm", "--mock-script", "--max-concurrency",
                   "--max-attempts", "--json"):
        assert option in text
    for variable in ("CHAINRUNNER_LLM", "OPENAI_API_KEY", "OPENAI_BASE_URL",
                     "CHAINRUNNER_OPENAI_MODEL", "CHAINRUNNER_MOCK_SCRIPT",
                     "CHAINRUNNER_MOCK_LATENCY_MS"):
        assert variable in text


def test_the_help_names_the_variables_the_mock_model_reads() -> None:
    assert cli_help.MOCK_SCRIPT_ENV == mock_model.SCRIPT_ENV
    assert cli_help.MOCK_LATENCY_ENV == mock_model.LATENCY_ENV


def test_version_names_chainrunner_and_truss() -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    assert result.stdout.startswith(f"chainrunner {version('chainrunner')} "
                                    f"(truss {version('truss')}, Python 3.")


def test_serve_is_listed_and_runs_its_own_help() -> None:
    result = invoke("serve", "--help")
    assert result.exit_code == 0
    assert "Serve CHAIN_FILE locally" in result.stdout
