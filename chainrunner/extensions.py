"""The user's own plugins, functions and runner on the command line: `--runner MODULE:CLASS`
and the `chainrunner.plugins` and `chainrunner.functions` entry point groups.

Without `--runner`, nothing here imports `chainlets.runner` (and through it truss_chains), so
`validate`, `graph` and `schema` stay quick.
"""

import importlib
import os
import sys
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, TypeVar

import click

from chainlets.errors import ChainrunnerError

# The chain language's models (pydantic) are imported when a command resolves its plugins, not
# when the CLI defines its options: `chainrunner --help` needs none of them.
if TYPE_CHECKING:
    from chainlets.language.plugins import Plugin, PluginRegistry
    from chainlets.runner import ChainRunner

__all__ = [
    "ENTRY_POINT_GROUP",
    "FUNCTION_ENTRY_POINT_GROUP",
    "RUNNER_ENV",
    "ExtensionError",
    "Extensions",
    "load_runner",
    "plugins_for",
    "runner_option",
]

ENTRY_POINT_GROUP = "chainrunner.plugins"
# Kept here as well as in chainlets.language.functions: `--help` imports no pydantic.
FUNCTION_ENTRY_POINT_GROUP = "chainrunner.functions"
RUNNER_ENV = "CHAINRUNNER_RUNNER"

F = TypeVar("F", bound=Callable[..., Any])


class ExtensionError(ChainrunnerError):
    """Raised when `--runner` or a `chainrunner.plugins` entry point cannot be used."""


class _FunctionsError(ExtensionError):
    """An installed `chainrunner.functions` entry point cannot be used."""


@dataclass(frozen=True)
class Extensions:
    """What a command validates against and runs with."""

    runner: "type[ChainRunner] | None"  # None: the built-in ChainRunner
    plugins: "PluginRegistry"


def _raised(what: str, exc: BaseException) -> ExtensionError:
    """An error for an exception the user's code raised, with where it was raised: the
    user needs the line, not our traceback."""
    frames = traceback.extract_tb(exc.__traceback__)
    at = f" ({frames[-1].filename}, line {frames[-1].lineno})" if frames else ""
    return ExtensionError(f"{what} raised {type(exc).__name__}: {exc}{at}")


def load_runner(reference: str) -> "type[ChainRunner]":
    """The ChainRunner subclass that `module:Class` names, imported like `python -m` would
    (the current directory first on the path)."""
    module_name, sep, attribute = reference.partition(":")
    if not (sep and module_name and attribute):
        raise ExtensionError(f"`{reference}` is not MODULE:CLASS, e.g. my_chains.runner:MyRunner")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        found: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is None or not (module_name == exc.name
                                    or module_name.startswith(f"{exc.name}.")):
            raise _raised(f"importing module `{module_name}`", exc) from exc
        raise ExtensionError(f"cannot import module `{module_name}`: no module named "
                             f"`{exc.name}` (run from the directory that holds it, or add that "
                             "directory to PYTHONPATH)") from exc
    except Exception as exc:  # the user's module failed: say where, without our traceback
        raise _raised(f"importing module `{module_name}`", exc) from exc
    for part in attribute.split("."):
        if not hasattr(found, part):
            raise ExtensionError(f"module `{module_name}` has no attribute `{attribute}`")
        found = getattr(found, part)
    from chainlets.runner import ChainRunner  # only when a runner is named: it imports truss

    if isinstance(found, type) and issubclass(found, ChainRunner):
        return found
    what = f"the class `{found.__name__}`" if isinstance(found, type) \
        else f"a {type(found).__name__}"
    raise ExtensionError(f"`{reference}` is {what}, not a subclass of "
                         "chainlets.runner.ChainRunner")


def _entry_point_plugins(entry_point: EntryPoint) -> "list[Plugin]":
    from chainlets.language.plugins import Plugin

    package = f" of package `{entry_point.dist.name}`" if entry_point.dist else ""
    where = f"entry point `{entry_point.name} = {entry_point.value}`{package}"
    try:
        loaded = entry_point.load()
    except Exception as exc:  # the plugin's package failed: say which, without our traceback
        raise _raised(f"loading {where}", exc) from exc
    items: Iterable[Any] = [loaded] if isinstance(loaded, Plugin) else \
        loaded if isinstance(loaded, Iterable) else [loaded]
    plugins = list(items)
    for item in plugins:
        if not isinstance(item, Plugin):
            raise ExtensionError(f"{where} must be a Plugin or a list of Plugins, not "
                                 f"{type(item).__name__}")
    return plugins


def plugins_for(runner: "type[ChainRunner] | None") -> "PluginRegistry":
    """The runner's plugins (the built-in ones without a runner) plus every installed
    `chainrunner.plugins` entry point's, and its functions plus every installed
    `chainrunner.functions` entry point's; a name may be registered once only."""
    from chainlets.errors import ConfigurationError
    from chainlets.language.functions import with_installed
    from chainlets.language.plugins import DEFAULT_PLUGINS, Plugin, PluginRegistry

    plugins = runner.plugins if runner is not None else DEFAULT_PLUGINS
    added: dict[str, tuple[Plugin, str]] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        for plugin in _entry_point_plugins(entry_point):
            same = plugins.get(plugin.name)
            if same is not None and same != plugin:
                raise ExtensionError(f"entry point `{entry_point.name}` registers plugin "
                                     f"`{plugin.name}`, which the runner already has; rename it")
            if plugin.name in added and added[plugin.name][0] != plugin:
                raise ExtensionError(f"entry points `{added[plugin.name][1]}` and "
                                     f"`{entry_point.name}` both register plugin `{plugin.name}`")
            if same is None:
                added.setdefault(plugin.name, (plugin, entry_point.name))
    plugins = plugins.with_plugins(*(plugin for plugin, _ in added.values())) if added \
        else plugins
    try:
        functions = with_installed(plugins.functions)
    except ConfigurationError as exc:
        raise _FunctionsError(str(exc)) from exc
    return plugins if functions is plugins.functions else PluginRegistry(plugins, functions)


def _resolve(ctx: click.Context, param: click.Parameter, value: str | None) -> Extensions:
    try:
        runner = load_runner(value) if value else None
    except ExtensionError as exc:
        raise click.BadParameter(str(exc), ctx=ctx, param=param) from exc
    try:
        return Extensions(runner=runner, plugins=plugins_for(runner))
    except ExtensionError as exc:
        group = f"functions ({FUNCTION_ENTRY_POINT_GROUP})" if isinstance(exc, _FunctionsError) \
            else f"plugins ({ENTRY_POINT_GROUP})"
        raise click.BadParameter(str(exc), ctx=ctx, param_hint=f"installed {group}") from exc


def runner_option(command: F) -> F:
    """`--runner MODULE:CLASS` (env CHAINRUNNER_RUNNER); the command receives `extensions`."""
    return click.option(
        "--runner", "extensions", metavar="MODULE:CLASS", envvar=RUNNER_ENV, callback=_resolve,
        help="A ChainRunner subclass of yours, whose plugins and generators are used "
             f"[env {RUNNER_ENV}]. Plugins and functions of installed packages (entry point "
             f"groups {ENTRY_POINT_GROUP}, {FUNCTION_ENTRY_POINT_GROUP}) are always added."
    )(command)
