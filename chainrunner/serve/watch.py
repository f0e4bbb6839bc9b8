"""`serve --watch`: rebuild on a saved change, swap in the chainlets whose code changed."""

import asyncio
import os
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from watchfiles import DefaultFilter, awatch

from chainrunner.serve.artifacts import STATE_DIR_NAME, Builder, ChainArtifacts
from chainrunner.serve.errors import BuildError, ChainletStartError
from chainrunner.serve.leases import hold
from chainrunner.serve.supervisor import Supervisor

__all__ = ["watch_and_reload", "watch_roots"]

_FILTER = DefaultFilter(ignore_dirs=(*DefaultFilter.ignore_dirs, STATE_DIR_NAME, ".ruff_cache"))


def watch_roots(inputs: Iterable[Path]) -> list[Path]:
    """The folders a build reads, with the targets of links in them resolved (inotify sees
    through no links): for our layout, `chains/` and `chainlets/`, which the ship folder of
    `chainlets.deploy` links to."""
    roots: set[Path] = set()
    for root in inputs:
        roots.add(root.resolve())
        for folder, dirs, files in os.walk(root):
            for name in (*dirs, *files):
                link = Path(folder, name)
                if link.is_symlink():
                    target = link.resolve()
                    roots.add(target if target.is_dir() else target.parent)
    return sorted(roots)


def _names(changes: Iterable[tuple[object, str]]) -> str:
    files = sorted({Path(path).name for _, path in changes})
    return ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")


async def watch_and_reload(builder: Builder, supervisor: Supervisor, stop: asyncio.Event,
                           notify: Callable[[str], None], lease: Path) -> None:
    """Until `stop` is set: on each batch of saved changes, rebuild and swap.

    An edit that does not build (syntax error, truss validation error) or whose chainlets do
    not start is reported, and the version already serving keeps serving.
    """
    assert supervisor.artifacts is not None
    roots = watch_roots(supervisor.artifacts.inputs)
    while not stop.is_set():
        watching = False
        # Empty batches every 200 ms: the first one says the watches are in place.
        async for changes in awatch(*roots, watch_filter=_FILTER, stop_event=stop, step=50,
                                    rust_timeout=200, yield_on_timeout=True):
            started = time.monotonic()
            if not changes:
                if watching:
                    continue
                watching = True
                notify(f"watching {', '.join(str(r) for r in roots)} for changes")
                if builder.cached() is not None:
                    continue
                notify("sources changed while serve started; rebuilding")  # before the watches
            else:
                notify(f"changed: {_names(changes)}; rebuilding")
            artifacts = await _reload(builder, supervisor, notify, started, lease)
            if artifacts is not None:
                wanted = watch_roots(artifacts.inputs)
                if wanted != roots:
                    roots = wanted
                    break


async def _reload(builder: Builder, supervisor: Supervisor, notify: Callable[[str], None],
                  started: float, lease: Path) -> ChainArtifacts | None:
    try:
        artifacts = await builder.build()
    except BuildError as exc:
        notify(f"build failed, the previous version keeps serving:\n{exc}")
        return None
    built = time.monotonic()
    hold(lease, supervisor.contexts() | {c.context_dir
                                                 for c in artifacts.chainlets.values()})
    try:
        swapped = await supervisor.update(artifacts)
    except ChainletStartError as exc:
        notify(f"the new version did not start, the previous version keeps serving:\n{exc}")
        hold(lease, supervisor.contexts())
        return None
    await builder.commit(artifacts, lease, supervisor.contexts())
    if not swapped:
        notify("no chainlet's code changed")
    else:
        notify(f"reloaded {', '.join(sorted(swapped))} in {time.monotonic() - started:.1f}s "
               f"(build {built - started:.1f}s, start {time.monotonic() - built:.1f}s)")
    return artifacts
