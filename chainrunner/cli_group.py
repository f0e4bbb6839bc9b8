"""The `chainrunner` command group: refusals (exit 2) in JSON under `--json`, lazy subcommands.

A command refuses a request by raising CommandRefused: a message on stderr, or under `--json`
one document on stdout. Under `--json` every refusal (an invalid chain, missing inputs, a bad
option, an unreadable file, click's own usage errors) is printed on stdout as one document::

    {"error": "chain `c` is invalid (2 problems)", "kind": "invalid_chain",
     "problems": ["step `a`: …", "dependency cycle …"]}

so that a script reads stdout alone, whatever the exit code. Imports only click and the error
tree: every command loads it.
"""

import importlib
import json
from collections.abc import Sequence
from typing import IO, Any, Literal, NoReturn

import click

from chainlets.errors import ChainDefinitionError, ConfigurationError, InputsError

__all__ = ["EXIT_INVALID", "CommandGroup", "CommandRefused", "refused"]

EXIT_INVALID = 2
Kind = Literal["invalid_chain", "invalid_inputs", "usage"]
_JSON_FLAG = "--json"
_META_KEY = "chainrunner.json_errors"


class CommandRefused(click.ClickException):
    """Raised for an invalid chain, missing inputs or bad usage; nothing was called (exit 2)."""

    exit_code = EXIT_INVALID

    def __init__(self, message: str, problems: Sequence[str] = (), kind: Kind = "usage") -> None:
        super().__init__(message)
        self.problems = list(problems) or [message]
        self.kind = kind
        self.as_json = False
        # More keys of the JSON document, for a command with more to say (validate: per file).
        self.details: dict[str, Any] = {}

    @property
    def summary(self) -> str:
        """The message's first line: the problems follow it in the text form."""
        first, _, rest = self.message.partition("\n")
        return first.rstrip(":") if rest else first

    def document(self) -> dict[str, Any]:
        return {"error": self.summary, "kind": self.kind, "problems": self.problems,
                **self.details}

    def show(self, file: IO[Any] | None = None) -> None:
        if self.as_json:
            click.echo(json.dumps(self.document(), indent=2, ensure_ascii=False), file=file)
        else:
            click.echo(f"{click.style('error:', fg='red', bold=True)} {self.message}",
                       file=file, err=file is None)


def refused(exc: ChainDefinitionError | InputsError) -> CommandRefused:
    """The CLI's refusal for a domain error, with the error's every problem."""
    kind: Kind = "invalid_inputs" if isinstance(exc, InputsError) else "invalid_chain"
    return CommandRefused(str(exc), exc.problems, kind)


def _raise_as_json(exc: click.ClickException) -> NoReturn:
    if isinstance(exc, CommandRefused):
        exc.as_json = True
        raise exc
    if exc.exit_code != EXIT_INVALID:  # not a refusal (none of run, validate, graph raise one)
        raise exc
    # click's own usage errors: a bad option value, a missing argument, an unknown option.
    converted = CommandRefused(exc.format_message(), kind="usage")
    converted.as_json = True
    raise converted from exc


def _wants_json(args: Sequence[str]) -> bool:
    """`--json` among the raw arguments (before a `--`), seen before click parses them, so that
    errors in the parse itself are answered in JSON too."""
    for arg in args:
        if arg == "--":
            return False
        if arg == _JSON_FLAG:
            return True
    return False


class CommandGroup(click.Group):
    """A group whose subcommands answer refusals in JSON when `--json` is on the command line,
    and whose `lazy` subcommands (name → `module:attribute`) are imported only when used."""

    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy[cmd_name]} is not a click command")
        return command

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        json_errors = _wants_json(args)
        try:
            ctx = super().make_context(info_name, args, parent, **extra)
        except click.ClickException as exc:
            if not json_errors:
                raise
            _raise_as_json(exc)
        ctx.meta[_META_KEY] = json_errors
        return ctx

    def invoke(self, ctx: click.Context) -> Any:
        try:
            try:
                return super().invoke(ctx)
            except ConfigurationError as exc:  # a malformed setting: nothing was called
                raise CommandRefused(str(exc), kind="usage") from exc
        except click.ClickException as exc:
            if not ctx.meta.get(_META_KEY):
                raise
            _raise_as_json(exc)
