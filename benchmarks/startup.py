"""Start-up of the `chainrunner` command: whole-process times of each command, median of runs.

Run: `python -m benchmarks.startup` (exit 1 when a target is missed; `--imports` also lists each
command's heaviest imports, from `python -X importtime`). Every figure is a whole process, as a
user at a shell starts it: the console script next to this Python (else `python -m
chainrunner.cli`), from exec to exit, with the backend variables unset, so that `run` uses the
offline mock with no latency. Commands are interleaved, so a slow moment of a shared machine
spreads over all of them. The interpreter alone (`python -c pass`) is shown for reference.

Targets (issue 7): `--help`, `validate`, `graph` and `schema` ≤ 0.5 s; `run` of a mock chain
≤ 1.5 s. `run` imports truss (`chains.run_local` wires the very chainlets that deploy), which
alone takes most of its budget; the other commands import neither truss, rich nor the openai
SDK.
"""

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CASES", "UNSET_ENV", "Case", "Row", "command_prefix", "heaviest_imports", "main",
           "measure", "render"]

REPO = Path(__file__).resolve().parents[1]
JOKE = REPO / "chains" / "specs" / "joke.json"
SOUNDTRACK = REPO / "chains" / "specs" / "soundtrack.json"
# Variables that would pick another backend, script or slow the mock, or announce a backend.
UNSET_ENV = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "CHAINRUNNER_LLM", "CHAINRUNNER_MOCK_SCRIPT",
          "CHAINRUNNER_MOCK_LATENCY_MS")


@dataclass(frozen=True)
class Case:
    """One command line and its target, in seconds of wall time."""

    label: str
    args: tuple[str, ...]
    target_s: float


CASES = (
    Case("--help", ("--help",), 0.5),
    Case("validate joke.json", ("validate", str(JOKE)), 0.5),
    Case("graph soundtrack.json", ("graph", str(SOUNDTRACK)), 0.5),
    Case("schema", ("schema",), 0.5),
    Case("run joke.json (mock)", ("run", str(JOKE), "--input", "topic=food", "--llm", "mock",
                                  "--json"), 1.5),
)


@dataclass(frozen=True)
class Row:
    """A case's timings over every repetition."""

    case: Case
    times_s: tuple[float, ...]

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def passed(self) -> bool:
        return self.median_s <= self.case.target_s


def command_prefix() -> list[str]:
    """The installed console script beside this interpreter, else `python -m chainrunner.cli`."""
    script = shutil.which("chainrunner", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "chainrunner.cli"]


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in UNSET_ENV}


def _time(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(argv, env=_env(), cwd=REPO, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited with {done.returncode}:\n{done.stderr}")
    return elapsed


def measure(cases: Sequence[Case], repeat: int) -> tuple[list[Row], Row]:
    """Every case `repeat` times, interleaved; also the bare interpreter as a reference row."""
    prefix = command_prefix()
    floor = Case("python -c pass", (), 0.0)
    times: dict[Case, list[float]] = {case: [] for case in (floor, *cases)}
    for _ in range(repeat):
        times[floor].append(_time([sys.executable, "-c", "pass"]))
        for case in cases:
            times[case].append(_time([*prefix, *case.args]))
    rows = [Row(case, tuple(times[case])) for case in cases]
    return rows, Row(floor, tuple(times[floor]))


def _import_times(code: str, *args: str) -> list[tuple[int, str, float]]:
    """(nesting level, module, cumulative seconds) of every import `python -c code` makes, in
    `-X importtime`'s order (a module after the modules it imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *args], env=_env(),
                          cwd=REPO, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          check=False)
    entries = []
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 \
                or not parts[1].strip().isdigit():
            continue
        name = parts[2][1:]
        level = (len(name) - len(name.lstrip(" "))) // 2
        entries.append((level, name.strip(), int(parts[1]) / 1e6))
    return entries


def _ours(module: str) -> bool:
    return module.split(".")[0] in ("chainrunner", "chainlets", "chains")


def heaviest_imports(case: Case, top: int = 8) -> list[tuple[str, float]]:
    """What `case` pays for others' code: the `top` costliest modules our code imports directly
    (or lazily, in a function), by cumulative time; the interpreter's own start-up excluded."""
    bare = {name for _, name, _ in _import_times("pass")}
    entries = _import_times("import sys; from chainrunner.cli import main; sys.exit(main())",
                            *case.args)
    found: list[tuple[str, float]] = []
    parents: list[str] = []
    for level, name, seconds in reversed(entries):  # reversed: each parent before its imports
        del parents[level:]
        parent = parents[-1] if parents else None
        parents.append(name)
        if not _ours(name) and name not in bare and (parent is None or _ours(parent)):
            found.append((name, seconds))
    return sorted(found, key=lambda item: item[1], reverse=True)[:top]


def render(rows: Sequence[Row], floor: Row, repeat: int) -> str:
    header = f"{'command':<24} {'median':>8} {'min':>8} {'max':>8} {'target':>9}  result"
    lines = [f"chainrunner start-up: whole-process wall time, median of {repeat} interleaved runs "
             f"(Python {sys.version.split()[0]}, {sys.platform}, {os.cpu_count()} CPUs)",
             f"command: {' '.join(Path(p).name for p in command_prefix())} ...", "",
             header, "-" * len(header)]
    for row in (floor, *rows):
        target = "" if row is floor else f"<= {row.case.target_s:.1f} s"
        result = "" if row is floor else ("pass" if row.passed else "FAIL")
        lines.append(f"{row.case.label:<24} {row.median_s:>7.2f}s {min(row.times_s):>7.2f}s "
                     f"{max(row.times_s):>7.2f}s {target:>9}  {result}")
    return "\n".join(lines)


def main(repeat: int, imports: bool) -> bool:
    rows, floor = measure(CASES, repeat)
    print(render(rows, floor, repeat))
    if imports:
        for case in CASES:
            heavy = ", ".join(f"{name} {seconds:.2f}s" for name, seconds in
                              heaviest_imports(case))
            print(f"\nheaviest imports of `{case.label}`: {heavy}")
    return all(row.passed for row in rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=9, help="runs per command (>= 3)")
    parser.add_argument("--imports", action="store_true",
                        help="also list each command's heaviest imports (python -X importtime)")
    args = parser.parse_args()
    if args.repeat < 3:
        parser.error("--repeat must be at least 3")
    sys.exit(0 if main(args.repeat, args.imports) else 1)
