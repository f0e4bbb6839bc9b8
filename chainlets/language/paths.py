"""Paths into JSON: dict keys and list indexes only, read by our code, never Python attributes.

One syntax for conditions (`"path": "scores[0].value"`) and templates (`{judge.scores[0].value}`):
`.key` or a bare first `key` (letters, digits, `_`, `-`), `[0]` (a list index), `["any key"]`
(a JSON string, for keys with other characters). A path is walked over the value parsed as JSON
(`json.loads`: dicts, lists, strings, numbers, booleans, null): a step is a `dict` lookup or a
`list` index, so `{x.__class__}` looks for a key named `__class__` and finds none.
"""

import json
import re
from typing import Any

__all__ = ["PathProblem", "PathStep", "format_path", "parse_path", "walk"]

PathStep = str | int
_STEP = re.compile(r'\.?([A-Za-z0-9_-]+)|\[(\d+)\]|\["((?:[^"\\]|\\.)*)"\]')
_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


class PathProblem(Exception):
    """A path that is not dict keys and list indexes only."""


def parse_path(path: str) -> tuple[PathStep, ...]:
    """`scores[0].value` → ("scores", 0, "value"); PathProblem for anything else."""
    steps: list[PathStep] = []
    at = 0
    while at < len(path):
        found = _STEP.match(path, at)
        if found is None or (found.group(0).startswith(".") and not steps):
            raise PathProblem(f"path `{path}` is not keys and list indexes (like "
                              f"`scores[0].value`) at character {at + 1}")
        key, index, quoted = found.groups()
        if quoted is not None:
            try:
                key = json.loads(f'"{quoted}"')
            except json.JSONDecodeError as exc:
                raise PathProblem(f"path `{path}`: `[\"{quoted}\"]` is not a JSON string "
                                  f"({exc.msg})") from None
        steps.append(int(index) if index is not None else key)
        at = found.end()
    return tuple(steps)


def format_path(steps: tuple[PathStep, ...]) -> str:
    """The path written back: `scores[0].value`, `["a key"]`."""
    out: list[str] = []
    for step in steps:
        if isinstance(step, int):
            out.append(f"[{step}]")
        elif _KEY.match(step):
            out.append(f".{step}" if out else step)
        else:
            out.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(out)


def walk(value: Any, steps: tuple[PathStep, ...]) -> tuple[Any, int]:
    """The value at `steps` in parsed JSON `value`, and how many steps were taken: fewer than
    all when the path leads nowhere (a missing key, an index past the end, a step into a
    string or number)."""
    for taken, step in enumerate(steps):
        in_list = isinstance(step, int) and isinstance(value, list) and step < len(value)
        if in_list or (isinstance(step, str) and isinstance(value, dict) and step in value):
            value = value[step]
        else:
            return None, taken
    return value, len(steps)
