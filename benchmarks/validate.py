"""Validation time of a 1,000-step chain, from parsed JSON to a compiled chain or every problem.

Run: `python -m benchmarks.validate` (exit 1 when a median misses the target). Each shape is
compiled from raw JSON data, as `chainrunner validate` does: once in a fresh state (the first
call of a process, the one the CLI pays), then `--repeat` more times for the median.
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chainlets.errors import ChainDefinitionError
from chainlets.language.compiler import compile_chain

__all__ = ["SHAPES", "TARGET_S", "Row", "broken", "measure", "unknown_names", "valid"]

TARGET_S = 0.100


def _step(i: int, prompt_key: str = "prompt", extra: str = "") -> dict[str, Any]:
    prompt = f"Use {{s{i - 1}}} and {{topic}}{extra}" if i else "Start with {topic}"
    # `openai`: a chat plugin, so the earlier messages are served (`gpt-3` refuses them).
    return {"handle": f"s{i}", "plugin": "openai", "plugin_config": {"max_tokens": 10},
            prompt_key: prompt, "system_prompt": "Be brief about {topic}.",
            "messages": [{"role": "user", "content": "Hi, {topic}"}],
            "capabilities": {"json_mode": "best-effort"}}


def valid(steps: int = 1_000) -> dict[str, Any]:
    """A chain in sequence, three templates per step, every name declared."""
    return {"handle": "valid", "inputs": [{"name": "topic"}],
            "steps": [_step(i) for i in range(steps)]}


def broken(steps: int = 1_000) -> dict[str, Any]:
    """Every step's prompt misspelt: a schema problem per step, the rest still checked."""
    return {"handle": "broken", "inputs": [{"name": "topic"}],
            "steps": [_step(i, prompt_key="promt") for i in range(steps)]}


def unknown_names(steps: int = 1_000) -> dict[str, Any]:
    """Every step references a different undeclared name: a suggestion search per name."""
    return {"handle": "unknown", "inputs": [{"name": "topic"}],
            "steps": [_step(i, extra=f" {{unknown_{i}}}") for i in range(steps)]}


SHAPES: dict[str, Callable[[int], dict[str, Any]]] = {
    "valid": valid, "broken": broken, "unknown-names": unknown_names}


@dataclass(frozen=True)
class Row:
    name: str
    steps: int
    problems: int
    first_s: float
    median_s: float


def _compile_once(data: dict[str, Any]) -> tuple[float, int]:
    start = time.perf_counter()
    try:
        compile_chain(data)
        problems = 0
    except ChainDefinitionError as exc:
        problems = len(exc.problems)
    return time.perf_counter() - start, problems


def measure(name: str, data: dict[str, Any], repeat: int) -> Row:
    first, problems = _compile_once(data)
    times = [_compile_once(data)[0] for _ in range(repeat)]
    return Row(name=name, steps=len(data["steps"]), problems=problems, first_s=first,
               median_s=statistics.median(times) if times else first)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeat", type=int, default=15)
    args = parser.parse_args()
    print(f"| shape | steps | problems | first call | median of {args.repeat} | target |")
    print("|---|---|---|---|---|---|")
    missed = False
    for name, make in SHAPES.items():
        row = measure(name, make(1_000), args.repeat)
        ok = row.median_s <= TARGET_S
        missed |= not ok
        print(f"| {row.name} | {row.steps:,} | {row.problems:,} | {row.first_s * 1000:.1f} ms | "
              f"{row.median_s * 1000:.1f} ms | ≤ {TARGET_S * 1000:.0f} ms {'✅' if ok else '❌'} |")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
