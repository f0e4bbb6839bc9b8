"""`chainrunner` command line: run, validate, graph and schema for JSON chains.

Exit codes: 0 the chain succeeded (or the check passed), 1 it ran and failed (the result is
still printed), 2 an invalid chain, missing inputs or bad usage (nothing was called; under
`--json`, one JSON error document on stdout: chainrunner/cli_group.py).
"""

import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from chainlets.errors import ChainDefinitionError, InputsError
from chainrunner.cli_group import EXIT_INVALID, CommandGroup, CommandRefused, refused
from chainrunner.cli_help import JSON_HELP, MAIN_EPILOG, MOCK_SCRIPT_ENV, RUN_EPILOG, print_version
from chainrunner.extensions import Extensions, runner_option

# Start-up: `--help`, `validate`, `graph` and `schema` must answer in a fraction of a second, so
# this module imports only click and light modules of our own; the chain language's compiler,
# rich, truss and the openai SDK are imported by the commands that use them
# (`python -m benchmarks.startup` measures it; tests/test_startup.py keeps it so).
if TYPE_CHECKING:
    from rich.console import Console

    from chainlets.engine.models import InvocationResult, RunOptions
    from chainlets.language.compiler import CompiledChain
    from chainlets.language.plugins import PluginRegistry
    from chainrunner.interrupted import Recorder

__all__ = ["main"]

EXIT_FAILED = 1


def _stderr() -> "Console":
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _source(path: Path) -> str:
    return "<stdin>" if str(path) == "-" else str(path)


def _compile(path: Path, plugins: "PluginRegistry") -> "CompiledChain":
    """The chain in `path` (`-`: stdin), every problem reported at once (schema included)."""
    from chainlets.language.compiler import compile_chain
    from chainlets.language.spec import read_chain_json

    return compile_chain(read_chain_json(path), plugins, source=_source(path))


def _compiled_or_exit(path: Path, plugins: "PluginRegistry") -> "CompiledChain":
    try:
        return _compile(path, plugins)
    except ChainDefinitionError as exc:
        raise refused(exc) from exc


def _inputs_file_error(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="--inputs-file")


def _input_json_error(message: str) -> click.BadParameter:
    return click.BadParameter(message, param_hint="--input")


def _input_pair(pair: str) -> tuple[str, Any]:
    """`name=text` (the value as written) or `name:=JSON` (any JSON value, as httpie)."""
    from chainlets.language.jsontext import decode_json

    key, sep, value = pair.partition("=")
    if not sep or not key or key == ":":
        raise click.BadParameter(f"`{pair}` is not KEY=VALUE (text) or KEY:=JSON",
                                 param_hint="--input")
    if not key.endswith(":"):
        return key, value
    name = key[:-1]
    try:
        data = decode_json(value, f"input `{name}`", _input_json_error)
    except click.BadParameter as exc:
        raise click.BadParameter(
            f"{exc.message}; after `{name}:=` write a JSON value (quote it for the shell: "
            f"--input '{name}:=[\"Ann\", \"Bob\"]'), or pass text with `{name}=…`",
            param_hint="--input") from None
    if data is None:
        raise click.BadParameter(f"input `{name}` is JSON null; leave the input out instead "
                                 "(its default applies), or give a value", param_hint="--input")
    return name, data


def _parse_inputs(pairs: tuple[str, ...], inputs_file: Path | None) -> dict[str, Any]:
    """The inputs of `run`: text, or JSON lists and objects (`--inputs-file`, `KEY:=JSON`)."""
    values: dict[str, Any] = {}
    if inputs_file is not None:
        from chainlets.language.jsontext import decode_json

        try:
            raw = inputs_file.read_bytes()
        except OSError as exc:
            raise click.BadParameter(f"cannot read {inputs_file}: {exc.strerror}",
                                     param_hint="--inputs-file") from exc
        data: Any = decode_json(raw, str(inputs_file), _inputs_file_error)
        if not isinstance(data, dict):
            raise click.BadParameter(f"{inputs_file} must hold a JSON object of input names to "
                                     "values", param_hint="--inputs-file")
        for key, value in data.items():
            if value is None:
                raise click.BadParameter(f"{inputs_file}: input `{key}` is null; leave it out "
                                         "(its default applies), or give a value",
                                         param_hint="--inputs-file")
            # Numbers and booleans become their JSON text; lists and objects stay JSON.
            values[key] = json.dumps(value) if isinstance(value, bool | int | float) else value
    for pair in pairs:
        key, value = _input_pair(pair)
        values[key] = value
    return values


def _select_backend(llm: str | None) -> str:
    if llm is not None:
        return llm
    if os.environ.get("OPENAI_API_KEY"):
        _stderr().print("chainrunner: OPENAI_API_KEY is set: using the openai backend "
                        "(--llm mock for the offline mock)")
        return "openai"
    _stderr().print("chainrunner: OPENAI_API_KEY is not set: using the offline mock backend "
                    "(outputs are marked \\[mock]; --llm openai for real calls)")
    return "mock"


async def _run(chain: "CompiledChain", inputs: dict[str, Any], options: "RunOptions",
               show_progress: bool, extensions: Extensions,
               recorder: "Recorder") -> "InvocationResult":
    # Only `run` pays for truss (and the runner's chainlets): the other commands never get here.
    from chainrunner.local import run_compiled
    from chainrunner.progress import Progress

    if not show_progress:
        return await run_compiled(chain, inputs, options, runner=extensions.runner,
                                  observer=recorder)
    with Progress(_stderr(), chain.handle, list(chain.steps)) as progress:
        recorder.then = progress
        return await run_compiled(chain, inputs, options, runner=extensions.runner,
                                  observer=recorder)


@contextlib.contextmanager
def _mock_script(path: Path | None) -> Iterator[None]:
    """Point the mock generator at `path` for one run (it reads its script from the env, as
    it does when deployed), then restore the environment."""
    if path is None:
        yield
        return
    before = os.environ.get(MOCK_SCRIPT_ENV)
    os.environ[MOCK_SCRIPT_ENV] = str(path.resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ[MOCK_SCRIPT_ENV]
        else:
            os.environ[MOCK_SCRIPT_ENV] = before


# `serve`, `db` and `diff` are imported when used: the other commands need none of them.
@click.group(cls=CommandGroup, lazy={"serve": "chainrunner.serve.command:serve",
                                   "db": "chainrunner.db:db", "diff": "chainrunner.diff:diff"},
             epilog=MAIN_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--version", is_flag=True, expose_value=False, is_eager=True,
              callback=print_version, help="Show the versions of chainrunner, truss, Python.")
def main() -> None:
    """chainrunner: run prompt chains eagerly, in parallel, locally or as a Truss Chain."""


@main.command(epilog=RUN_EPILOG)
@click.argument("spec_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--input", "-i", "pairs", multiple=True, metavar="KEY=VALUE|KEY:=JSON",
              help="A chain input: text (KEY=VALUE), or any JSON value such as a list "
                   "(KEY:=JSON); repeat for more.")
@click.option("--inputs-file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON object of inputs (--input values win).")
@click.option("--llm", type=click.Choice(["mock", "openai"]), envvar="CHAINRUNNER_LLM",
              help="Backend for gpt-3/openai steps [env CHAINRUNNER_LLM; default: openai if "
                   "OPENAI_API_KEY is set, else mock].")
@click.option("--mock-script", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Pattern → reply rules for the mock model [env {MOCK_SCRIPT_ENV}].")
@click.option("--max-concurrency", type=click.IntRange(min=1),
              help="At most this many model calls at once.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Attempts per step on transient failures (429/5xx/timeouts).")
@click.option("--step-timeout", type=click.FloatRange(0, 3600, min_open=True), default=120,
              show_default=True, metavar="SECONDS",
              help="Most time one attempt of a step may take; then it is retried.")
@click.option("--deadline", type=click.FloatRange(0, 86_400, min_open=True),
              metavar="SECONDS",
              help="Most time the whole run may take; then its unfinished steps fail "
                   "[default: the chain's own deadline_s, else 600].")
@click.option("--max-backend-calls", type=click.IntRange(1, 10_000), default=64,
              show_default=True, help="At most this many calls in flight to one backend.")
@click.option("--json", "as_json", is_flag=True,
              help="Print exactly one JSON document on stdout: the result, or on exit 2 the "
                   'error ({"error", "kind", "problems"}).')
@runner_option
def run(spec_file: Path, pairs: tuple[str, ...], inputs_file: Path | None, llm: str | None,
        mock_script: Path | None, max_concurrency: int | None, max_attempts: int,
        step_timeout: float, deadline: float | None, max_backend_calls: int, as_json: bool,
        extensions: Extensions) -> None:
    """Run the chain in SPEC_FILE (`-`: stdin) and show every step's progress.

    Then prints every step's state, the wall time against the sum of step times, and the
    chain's output in full (with --json: the result document instead).
    """
    timing = {"step_timeout_s": step_timeout, "deadline_s": deadline,
              "max_backend_calls": max_backend_calls}
    compiled = _compiled_or_exit(spec_file, extensions.plugins)
    inputs = _parse_inputs(pairs, inputs_file)
    try:
        compiled.resolve_inputs(inputs)
    except InputsError as exc:
        raise refused(exc) from exc
    from chainlets.engine.approval import refuse_without_gate

    try:  # `run` has no service to wait in: approval steps are refused before any call
        refuse_without_gate(compiled)
    except ChainDefinitionError as exc:
        raise refused(exc) from exc
    if compiled.spec.callback_url:
        _stderr().print(f"chainrunner: callback_url {compiled.spec.callback_url} is not called by "
                        "`chainrunner run`; the result is printed instead")
    import asyncio

    from chainlets.engine.models import RunOptions, RunState
    from chainrunner.interrupted import EXIT_INTERRUPTED, Recorder, partial_result
    from chainrunner.local import check_backend

    options = RunOptions(llm=_select_backend(llm), max_concurrency=max_concurrency,
                         max_attempts=max_attempts, **timing)
    check_backend(compiled, options)  # before the progress display: nothing is called
    recorder = Recorder()
    interrupted = False
    try:
        with _mock_script(mock_script):
            result = asyncio.run(_run(compiled, inputs, options, show_progress=not as_json
                                      or _stderr().is_terminal, extensions=extensions,
                                      recorder=recorder))
    except ChainDefinitionError as exc:  # e.g. a plugin whose generator this runner lacks
        raise refused(exc) from exc
    except KeyboardInterrupt:  # asyncio.run cancelled the run: its steps recorded that
        result, interrupted = partial_result(compiled, inputs, recorder.records), True
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        _print_result(result, compiled.output_handle)
    if interrupted:
        raise click.exceptions.Exit(EXIT_INTERRUPTED)
    if result.state != RunState.SUCCEEDED:
        raise click.exceptions.Exit(EXIT_FAILED)


def _print_result(result: "InvocationResult", output_handle: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    from chainlets.engine.models import RunState
    from chainrunner.progress import result_table, timing_summary

    console = Console(highlight=False)
    console.print(result_table(result))
    console.print(timing_summary(result), markup=False)
    if result.state == RunState.SUCCEEDED:
        console.print(f"[bold]output[/] ({escape(output_handle)}):")
        click.echo(result.output or "")  # verbatim: neither wrapped nor styled
    else:
        console.print(f"[bold red]failed:[/] {escape(result.statusMessage or '')}")


def _summary(path: Path, chain: "CompiledChain") -> str:
    needs = "; ".join(f"{name} ({chain.input_usage(name)})" for name in chain.required_inputs)
    return (f"{_source(path)}: chain `{chain.handle}` is valid: {len(chain.steps)} steps, "
            f"required inputs: {needs or 'none'}")


def _validated(path: Path, plugins: "PluginRegistry") -> dict[str, Any]:
    """One file's entry in `validate --json`: what a valid chain needs, or every problem."""
    try:
        chain = _compile(path, plugins)
    except ChainDefinitionError as exc:
        error = refused(exc)
        return {"file": _source(path), "valid": False, "error": error.summary,
                "problems": error.problems}
    return {"file": _source(path), "valid": True, "chain": chain.handle,
            "steps": len(chain.steps), "required_inputs": list(chain.required_inputs)}


def _validate_json(spec_files: tuple[Path, ...], plugins: "PluginRegistry") -> None:
    """`validate --json`: `{"valid": true, "files": [...]}`, or exit 2 with one error document
    whose `files` holds every file's entry."""
    files = [_validated(path, plugins) for path in spec_files]
    invalid = [entry for entry in files if not entry["valid"]]
    if not invalid:
        click.echo(json.dumps({"valid": True, "files": files}, indent=2))
        return
    if len(spec_files) == 1:
        error = CommandRefused(invalid[0]["error"], invalid[0]["problems"], "invalid_chain")
    else:  # each problem names its file: a problem's own text names only step and field
        names = ", ".join(entry["file"] for entry in invalid)
        error = CommandRefused(f"{len(invalid)} of {len(files)} chain files are invalid: {names}",
                               [f"{entry['file']}: {problem}" for entry in invalid
                                for problem in entry["problems"]], "invalid_chain")
    error.details = {"files": files}
    raise error


@main.command()
@click.argument("spec_files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@runner_option
def validate(spec_files: tuple[Path, ...], as_json: bool, extensions: Extensions) -> None:
    """Check each SPEC_FILE (`-`: stdin) without running it; list every problem of each."""
    if as_json:
        _validate_json(spec_files, extensions.plugins)
        return
    invalid = False
    for spec_file in spec_files:
        try:
            click.echo(_summary(spec_file, _compile(spec_file, extensions.plugins)))
        except ChainDefinitionError as exc:
            refused(exc).show()
            invalid = True
    if invalid:
        raise click.exceptions.Exit(EXIT_INVALID)


@main.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help=JSON_HELP)
@runner_option
def graph(spec_file: Path, as_json: bool, extensions: Extensions) -> None:
    """Print a Mermaid diagram of SPEC_FILE's dependencies (`-`: stdin)."""
    from chainrunner.mermaid import to_mermaid

    compiled = _compiled_or_exit(spec_file, extensions.plugins)
    if as_json:
        click.echo(json.dumps({"chain": compiled.handle, "mermaid": to_mermaid(compiled)},
                              indent=2))
        return
    click.echo(to_mermaid(compiled), nl=False)


@main.command()
@runner_option
def schema(extensions: Extensions) -> None:
    """Print the JSON Schema of the chain language, with every plugin's config."""
    from chainlets.language.spec import chain_json_schema

    click.echo(json.dumps(chain_json_schema(extensions.plugins), indent=2))


if __name__ == "__main__":
    sys.exit(main())
