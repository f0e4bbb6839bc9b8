"""The `chainrunner` command's help: exit codes, examples, environment variables, `--version`."""

import click

__all__ = ["JSON_HELP", "MAIN_EPILOG", "MOCK_LATENCY_ENV", "MOCK_SCRIPT_ENV", "RUN_EPILOG",
           "print_version"]

# Named here rather than imported from chainlets.generators.mock_model, whose import (pydantic)
# `--help` should not pay for; tests/test_cli_help.py pins them to the mock model's names.
MOCK_SCRIPT_ENV = "CHAINRUNNER_MOCK_SCRIPT"
MOCK_LATENCY_ENV = "CHAINRUNNER_MOCK_LATENCY_MS"

JSON_HELP = ("Print exactly one JSON document on stdout, also when refusing with exit 2 "
             '({"error", "kind", "problems"}).')

# "\b" keeps click from rewrapping the paragraph that follows.
MAIN_EPILOG = f"""\b
Exit codes:
  0  the chain succeeded (validate, graph: the chain is valid)
  1  the chain ran and a step failed; the result is still printed
  2  invalid chain, missing inputs or bad usage; nothing was called.
     With --json, stdout holds one JSON document:
     {{"error": "...", "kind": "invalid_chain|invalid_inputs|usage", "problems": [...]}}

\b
Examples:
  chainrunner run chains/specs/joke.json --input topic=food
  chainrunner run chains/specs/joke.json -i topic=food --llm mock --json
  {MOCK_LATENCY_ENV}=300 chainrunner run chains/specs/soundtrack.json --llm mock
  chainrunner validate chains/specs/joke.json
  chainrunner graph chains/specs/soundtrack.json
  chainrunner schema > chain.schema.json
  chainrunner serve chains/runner.py --port 8000

`chainrunner COMMAND --help` describes each command.
"""

RUN_EPILOG = f"""\b
Environment:
  CHAINRUNNER_LLM              default of --llm
  OPENAI_API_KEY               the openai backend's key; when set, openai is the default
  OPENAI_BASE_URL              any OpenAI-compatible server for the openai backend
  CHAINRUNNER_OPENAI_MODEL     the openai backend's default model (gpt-4o-mini)
  {MOCK_SCRIPT_ENV}      default of --mock-script
  {MOCK_LATENCY_ENV}  the mock's delay before every reply, in ms (default 0;
                               overrides the script's latency_ms)
"""


def print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`--version`: chainrunner's, and truss's, whose version decides what a push deploys."""
    if not value or ctx.resilient_parsing:
        return
    import platform
    from importlib.metadata import version

    click.echo(f"chainrunner {version('chainrunner')} (truss {version('truss')}, "
               f"Python {platform.python_version()})")
    ctx.exit()
