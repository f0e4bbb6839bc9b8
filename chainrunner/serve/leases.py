"""Leases: the build contexts a running serve uses, so that pruning never removes them.

Each serve writes `serve/<port>/lease.json` under the state directory (its pid and the
contexts its processes run) and removes it when it stops; a serve killed outright leaves one
behind, which `remove_stale_runs` clears once its pid is gone.
"""

import os
import shutil
import time
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel

__all__ = ["Lease", "hold", "leased", "prune", "remove_stale_runs"]


class Lease(BaseModel):
    """The contexts a running serve's processes use (`serve/<port>/lease.json`)."""

    pid: int
    contexts: list[Path]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def hold(lease: Path, contexts: Iterable[Path]) -> None:
    """Record in `lease` (one per serve) the contexts its processes run: never pruned while
    this process lives. Serve removes its lease when it stops."""
    lease.parent.mkdir(parents=True, exist_ok=True)
    held = Lease(pid=os.getpid(), contexts=sorted(set(contexts)))
    temporary = lease.with_suffix(".tmp")
    temporary.write_text(held.model_dump_json())
    temporary.replace(lease)  # a pruning serve never reads half a lease


def leased(serve_dir: Path) -> set[Path]:
    """Contexts held by the leases of serves that are still running."""
    held: set[Path] = set()
    for path in serve_dir.glob("*/lease.json"):
        try:
            lease = Lease.model_validate_json(path.read_bytes())
        except (FileNotFoundError, ValueError):  # being removed, or not a lease
            continue
        if _alive(lease.pid):
            held.update(lease.contexts)
    return held


def prune(contexts: Path, keep: set[str], held: set[Path], per_chainlet: int) -> None:
    """Remove all but the `per_chainlet` newest contexts of each chainlet under `contexts`,
    sparing the folders named in `keep` and those `held` by a live serve."""
    keep = keep | {path.name for path in held if path.parent == contexts}
    by_chainlet: dict[str, list[Path]] = {}
    for folder in contexts.iterdir():
        by_chainlet.setdefault(folder.name.rpartition("-")[0], []).append(folder)
    for folders in by_chainlet.values():
        folders.sort(key=lambda f: f.stat().st_mtime, reverse=True)
        for old in folders[per_chainlet:]:
            if old.name not in keep:
                shutil.rmtree(old, ignore_errors=True)


def remove_stale_runs(serve_dir: Path, unleased_after_s: float = 60.0) -> list[Path]:
    """Remove the `serve/<port>/` folders of serves that are gone without cleaning up (killed
    outright): their lease names a dead pid, or they have none and are not brand new."""
    removed = []
    for run_dir in serve_dir.glob("*/"):
        lease = run_dir / "lease.json"
        try:
            stale = not _alive(Lease.model_validate_json(lease.read_bytes()).pid)
        except FileNotFoundError:
            try:
                stale = time.time() - run_dir.stat().st_mtime > unleased_after_s
            except FileNotFoundError:  # its serve just removed it
                continue
        except ValueError:  # not a lease: not ours to judge
            continue
        if stale:
            shutil.rmtree(run_dir, ignore_errors=True)
            removed.append(run_dir)
    return removed
