"""The `chainrunner serve` command. Imports only click up front: the CLI loads it on every run."""

import asyncio
import importlib.util
import itertools
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click
from click.core import ParameterSource

from chainrunner.serve.zygote import Zygote

if TYPE_CHECKING:
    from chainrunner.serve.session import ServeOptions

__all__ = ["serve"]

# Imported by truss's server or by serve itself; the `serve` extra installs them.
_REQUIRED = ("aiohttp", "fastapi", "uvicorn", "uvloop", "watchfiles", "msgpack_numpy",
             "opentelemetry.sdk", "opentelemetry.exporter.otlp.proto.http")
_COLORS = ("cyan", "magenta", "yellow", "blue", "green", "bright_cyan", "bright_magenta")


def _missing_requirements() -> list[str]:
    missing = []
    for name in _REQUIRED:
        try:
            found = importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # a parent package is missing
            found = False
        if not found:
            missing.append(name)
    return missing


class _Printer:
    """Chainlet log lines prefixed by the chainlet's name; serve's own lines by `serve`."""

    def __init__(self) -> None:
        self._colors: dict[str, str] = {}
        self._palette = itertools.cycle(_COLORS)
        self._width = 5

    def log(self, name: str, line: str) -> None:
        if name not in self._colors:
            self._colors[name] = next(self._palette)
            self._width = max(self._width, len(name))
        prefix = click.style(f"{name:>{self._width}} |", fg=self._colors[name])
        click.echo(f"{prefix} {line}")

    def notify(self, message: str) -> None:
        prefix = click.style(f"{'serve':>{self._width}} |", bold=True)
        for line in message.splitlines() or [""]:
            click.echo(f"{prefix} {line}")

    def ready(self, message: str) -> None:
        self.notify(click.style(message, fg="green", bold=True))


def _process_age_s() -> float:
    """Seconds since this process started (Linux: /proc, both counted from boot), so that the
    ready line includes the interpreter's start and the CLI's imports."""
    with open("/proc/self/stat") as stat, open("/proc/uptime") as uptime:
        # Field 22, start time in clock ticks after boot; the name in field 2 may hold spaces.
        start_ticks = int(stat.read().rpartition(")")[2].split()[19])
        since_boot = float(uptime.read().split()[0])
    return max(0.0, since_boot - start_ticks / os.sysconf("SC_CLK_TCK"))


async def _serve(options: "ServeOptions", zygote: Zygote, started: float) -> None:
    from chainrunner.serve.session import Output, serve_chain

    printer = _Printer()
    stop = asyncio.Event()
    signals = itertools.count(1)

    def on_signal() -> None:
        if next(signals) == 1:
            stop.set()
            return
        # A second Ctrl-C: leave now. Every chainlet, the zygote and the builder die with this
        # process (PR_SET_PDEATHSIG), so nothing is orphaned.
        printer.notify("stopping at once")
        os._exit(130)

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    await serve_chain(options, Output(log=printer.log, notify=printer.notify), stop,
                      on_ready=printer.ready, zygote=zygote, started=started)
    printer.notify("stopped")


@click.command()
@click.argument("chain_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Gateway port on 127.0.0.1 (0 picks a free one).")
@click.option("--api-key", envvar="CHAINRUNNER_API_KEY",
              help="Require `Authorization: Api-Key KEY` on /run_remote; every chainlet then "
                   "answers only serve. Prefer $CHAINRUNNER_API_KEY: other users see a flag's "
                   "value in `ps` [default: $CHAINRUNNER_API_KEY, else no key].")
@click.option("--watch", is_flag=True,
              help="On a saved change, rebuild and restart the chainlets whose code changed.")
@click.option("--rebuild", is_flag=True,
              help="Build the trusses anew even if no source changed since the last build.")
@click.option("--grace", type=click.FloatRange(min=0), default=30, show_default=True,
              metavar="SECONDS",
              help="On Ctrl-C or SIGTERM, how long requests in flight may take to finish.")
@click.option("--restart-wait", type=click.FloatRange(min=0), default=10, show_default=True,
              metavar="SECONDS",
              help="How long a request waits for a restarting entrypoint before a 503.")
@click.option("--request-timeout", type=click.FloatRange(min=0, min_open=True), default=660,
              show_default=True, metavar="SECONDS",
              help="How long the gateway waits for the chain's answer before a 504 (a run's "
                   "own deadline_s, default 600, ends it sooner with a result).")
def serve(chain_file: Path, port: int, api_key: str | None, watch: bool, rebuild: bool,
          grace: float, restart_wait: float, request_timeout: float) -> None:
    """Serve CHAIN_FILE locally, one process per chainlet, as deployed.

    Each chainlet runs the truss that `truss chains push` would upload, with truss's own
    server, on loopback; the entrypoint answers `POST http://127.0.0.1:PORT/run_remote`
    (JSON keys: its run_remote arguments). Readiness: `GET /ready`. Ctrl-C or SIGTERM lets
    requests in flight finish (--grace), then stops every process serve started.
    """
    context = click.get_current_context()
    if api_key and context.get_parameter_source("api_key") is ParameterSource.COMMANDLINE:
        click.echo("warning: --api-key on the command line is visible to every user of this "
                   "machine (`ps`); set CHAINRUNNER_API_KEY instead", err=True)
    if not sys.platform.startswith("linux"):
        raise click.ClickException(
            "chainrunner serve runs on Linux: it ties every process it starts to its own life "
            "with prctl(PR_SET_PDEATHSIG) and talks to them over SOCK_SEQPACKET sockets. Use "
            "`chainrunner run` (in-process) here, or a Linux machine or container.")
    missing = _missing_requirements()
    if missing:
        raise click.ClickException(
            f"chainrunner serve needs truss's server packages; missing: {', '.join(missing)}. "
            "Install them with: pip install 'chainrunner[serve]'")
    started = time.monotonic() - _process_age_s()
    # First of all: the zygote's preload is the longest step of a start; it runs while serve
    # imports the rest of itself and checks or builds the chain.
    zygote = Zygote.launch(os.environ)
    try:
        from chainrunner.serve.errors import ServeError
        from chainrunner.serve.session import ServeOptions

        options = ServeOptions(source=chain_file, port=port, api_key=api_key or None,
                               watch=watch, rebuild=rebuild, grace_s=grace,
                               restart_wait_s=restart_wait,
                               request_timeout_s=request_timeout)
        asyncio.run(_serve(options, zygote, started))
    except ServeError as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if zygote.process.poll() is None:  # serve_chain did not get to stop it
            zygote.process.kill()
            zygote.process.wait()


def main() -> None:
    serve(prog_name=f"{Path(sys.executable).name} -m chainrunner.serve")
