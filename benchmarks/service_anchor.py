"""The DBOS Transact anchor of the service benchmark, run in the benchmark's own environment:
`.chainrunner/bench-dbos`, a venv made with `pip install dbos` the first time (never the
project's environment), running benchmarks/dbos_anchor.py as a subprocess on the same kind of
database. Where it cannot be installed or run, the reason is returned instead of a rate."""

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

__all__ = ["VENV", "dbos_python", "dbos_rate", "sqlite_url"]

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".chainrunner" / "bench-dbos"
SCRIPT = Path(__file__).with_name("dbos_anchor.py")
_INSTALL_TIMEOUT_S = 600
_RUN_TIMEOUT_S = 600


def _bin(venv: Path) -> Path:
    return venv / ("Scripts" if os.name == "nt" else "bin") / "python"


def dbos_python(venv: Path = VENV) -> Path | str:
    """The venv's python with `dbos` importable (made on first use), or why there is none."""
    python = _bin(venv)
    if python.exists() and _has_dbos(python):
        return python
    try:
        if not python.exists():
            subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True,
                           capture_output=True, timeout=_INSTALL_TIMEOUT_S)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "dbos"], check=True,
                       capture_output=True, text=True, timeout=_INSTALL_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        return f"`pip install dbos` into {venv} failed: {last[0]}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not make the venv {venv}: {exc}"
    return python if _has_dbos(python) else f"`dbos` does not import in {venv}"


def _has_dbos(python: Path) -> bool:
    return subprocess.run([str(python), "-c", "import dbos"], capture_output=True,
                          timeout=120).returncode == 0


def sqlite_url(path: Path) -> str:
    """A SQLite file for DBOS in WAL mode, as the service's own store runs (a fair anchor: the
    issue's 106/s figure was DBOS on SQLite in WAL mode)."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA journal_mode=WAL")
    return f"sqlite:///{path}"


def dbos_rate(url: str, invocations: int, concurrency: int) -> float | str:
    """DBOS's 3-step workflows/s on the system database `url`, or why it was not measured."""
    python = dbos_python()
    if isinstance(python, str):
        return python
    try:
        done = subprocess.run(
            [str(python), str(SCRIPT), "--url", url, "--invocations", str(invocations),
             "--concurrency", str(concurrency)],
            capture_output=True, text=True, timeout=_RUN_TIMEOUT_S, cwd=SCRIPT.parent)
    except subprocess.TimeoutExpired:
        return f"the DBOS anchor ran past {_RUN_TIMEOUT_S} s"
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return f"the DBOS anchor failed (exit {done.returncode}): {tail}"
    rate: float = json.loads(lines[-1])["rate"]
    return rate
