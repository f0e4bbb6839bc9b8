"""`chainrunner` command line: run, validate, graph and schema for JSON chains.

Exit codes: 0 the chain succeeded (or the check passed), 1 it ran and failed (the result is
still printed), 2 an invalid chain, missing inputs or bad usage (nothing was called).
"""

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import truss_chains as chains
from rich.console import Console
from rich.markup import escape

from chainlets.engine.models import InvocationResult, RunOptions, RunState
from chainlets.errors import ChainDefinitionError, InputsError
from chainlets.generators.mock_model import SCRIPT_ENV
from chainlets.generators.openai_chat import OPENAI_KEY_SECRET
from chainlets.language.compiler import CompiledChain, compile_chain
from chainlets.language.plugins import PluginRegistry
from chainlets.language.spec import chain_json_schema, read_chain_json
from chainrunner.extensions import Extensions, runner_option
from chainrunner.mermaid import to_mermaid
from chainrunner.progress import Progress, result_table
from chainrunner.serve.command import serve

__all__ = ["main"]

EXIT_FAILED = 1
EXIT_INVALID = 2


def _stderr() -> Console:
    return Console(stderr=True, highlight=False)


def _fail(message: str) -> "click.exceptions.Exit":
    _stderr().print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return click.exceptions.Exit(EXIT_INVALID)


def _compile(path: Path, plugins: PluginRegistry) -> CompiledChain:
    """The chain in `path` (`-`: stdin), every problem reported at once (schema included)."""
    source = "<stdin>" if str(path) == "-" else str(path)
    return compile_chain(read_chain_json(path), plugins, source=source)


def _compiled_or_exit(path: Path, plugins: PluginRegistry) -> CompiledChain:
    try:
        return _compile(path, plugins)
    except ChainDefinitionError as exc:
        raise _fail(str(exc)) from exc


def _parse_inputs(pairs: tuple[str, ...], inputs_file: Path | None) -> dict[str, str]:
    values: dict[str, str] = {}
    if inputs_file is not None:
        try:
            data: Any = json.loads(inputs_file.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise click.BadParameter(f"{inputs_file}: {exc}", param_hint="--inputs-file") \
                from exc
        if not isinstance(data, dict):
            raise click.BadParameter(f"{inputs_file} must hold a JSON object of input names to "
                                     "values", param_hint="--inputs-file")
        for key, value in data.items():
            if isinstance(value, dict | list) or value is None:
                raise click.BadParameter(f"{inputs_file}: input `{key}` must be a string, number "
                                         f"or boolean, not {json.dumps(value)}",
                                         param_hint="--inputs-file")
            values[key] = value if isinstance(value, str) else json.dumps(value)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"`{pair}` is not KEY=VALUE", param_hint="--input")
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


async def _run(chain: CompiledChain, inputs: dict[str, str], options: RunOptions,
               show_progress: bool, extensions: Extensions) -> InvocationResult:
    from chainlets.runner import ChainRunner

    secrets = {OPENAI_KEY_SECRET: os.environ.get("OPENAI_API_KEY", "")}
    # The same chainlet classes that get deployed, wired in-process by truss's run_local.
    with chains.run_local(secrets=secrets):
        runner = (extensions.runner or ChainRunner)()
        if not show_progress:
            return await runner.execute(chain, inputs, options)
        with Progress(_stderr(), chain.handle, list(chain.steps)) as progress:
            return await runner.execute(chain, inputs, options, observer=progress)


@contextlib.contextmanager
def _mock_script(path: Path | None) -> Iterator[None]:
    """Point the mock generator at `path` for one run (it reads its script from the env, as
    it does when deployed), then restore the environment."""
    if path is None:
        yield
        return
    before = os.environ.get(SCRIPT_ENV)
    os.environ[SCRIPT_ENV] = str(path.resolve())
    try:
        yield
    finally:
        if before is None:
            del os.environ[SCRIPT_ENV]
        else:
            os.environ[SCRIPT_ENV] = before


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """chainrunner: run prompt chains eagerly, in parallel, locally or as a Truss Chain."""


@main.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@click.option("--input", "-i", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A chain input; repeat for more.")
@click.option("--inputs-file", type=click.Path(dir_okay=False, path_type=Path),
              help="JSON object of inputs (--input values win).")
@click.option("--llm", type=click.Choice(["mock", "openai"]), envvar="CHAINRUNNER_LLM",
              help="Backend for gpt-3/openai steps [env CHAINRUNNER_LLM; default: openai if "
                   "OPENAI_API_KEY is set, else mock].")
@click.option("--mock-script", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help=f"Pattern → reply rules for the mock model [env {SCRIPT_ENV}].")
@click.option("--max-concurrency", type=click.IntRange(min=1),
              help="At most this many model calls at once.")
@click.option("--max-attempts", type=click.IntRange(1, 20), default=3, show_default=True,
              help="Attempts per step on transient failures (429/5xx/timeouts).")
@click.option("--json", "as_json", is_flag=True,
              help="Print exactly one JSON document (the result) on stdout.")
@runner_option
def run(spec_file: Path, pairs: tuple[str, ...], inputs_file: Path | None, llm: str | None,
        mock_script: Path | None, max_concurrency: int | None, max_attempts: int,
        as_json: bool, extensions: Extensions) -> None:
    """Run the chain in SPEC_FILE (`-`: stdin) and show every step's progress."""
    compiled = _compiled_or_exit(spec_file, extensions.plugins)
    inputs = _parse_inputs(pairs, inputs_file)
    try:
        compiled.resolve_inputs(inputs)
    except InputsError as exc:
        raise _fail(str(exc)) from exc
    if compiled.spec.callback_url:
        _stderr().print(f"chainrunner: callback_url {compiled.spec.callback_url} is not called by "
                        "`chainrunner run`; the result is printed instead")
    options = RunOptions(llm=_select_backend(llm), max_concurrency=max_concurrency,
                         max_attempts=max_attempts)
    try:
        with _mock_script(mock_script):
            result = asyncio.run(_run(compiled, inputs, options, show_progress=not as_json
                                      or _stderr().is_terminal, extensions=extensions))
    except ChainDefinitionError as exc:  # e.g. a plugin whose generator this runner lacks
        raise _fail(str(exc)) from exc
    if as_json:
        click.echo(result.model_dump_json(indent=2))
    else:
        console = Console(highlight=False)
        console.print(result_table(result))
        if result.state == RunState.SUCCEEDED:
            console.print(f"[bold]output[/] ({compiled.output_handle}):")
            console.print(result.output or "", markup=False)
        else:
            console.print(f"[bold red]failed:[/] {escape(result.statusMessage or '')}")
    if result.state != RunState.SUCCEEDED:
        raise click.exceptions.Exit(EXIT_FAILED)


def _summary(path: Path, chain: CompiledChain) -> str:
    needs = "; ".join(f"{name} ({chain.input_usage(name)})" for name in chain.required_inputs)
    source = "<stdin>" if str(path) == "-" else str(path)
    return (f"{source}: chain `{chain.handle}` is valid: {len(chain.steps)} steps, "
            f"required inputs: {needs or 'none'}")


@main.command()
@click.argument("spec_files", nargs=-1, required=True,
                type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@runner_option
def validate(spec_files: tuple[Path, ...], extensions: Extensions) -> None:
    """Check each SPEC_FILE (`-`: stdin) without running it; list every problem of each."""
    invalid = False
    for spec_file in spec_files:
        try:
            click.echo(_summary(spec_file, _compile(spec_file, extensions.plugins)))
        except ChainDefinitionError as exc:
            _stderr().print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)
            invalid = True
    if invalid:
        raise click.exceptions.Exit(EXIT_INVALID)


@main.command()
@click.argument("spec_file", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path))
@runner_option
def graph(spec_file: Path, extensions: Extensions) -> None:
    """Print a Mermaid diagram of SPEC_FILE's dependencies (`-`: stdin)."""
    compiled = _compiled_or_exit(spec_file, extensions.plugins)
    click.echo(to_mermaid(compiled), nl=False)


@main.command()
@runner_option
def schema(extensions: Extensions) -> None:
    """Print the JSON Schema of the chain language, with every plugin's config."""
    click.echo(json.dumps(chain_json_schema(extensions.plugins), indent=2))


main.add_command(serve)

if __name__ == "__main__":
    sys.exit(main())
