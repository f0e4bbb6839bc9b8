"""JSON text read strictly: UTF-8 only, unique keys, nesting within the parser's reach.

Python's `json` keeps the last of duplicate keys silently (`{"handle": "a", "handle": "b"}`
is a chain named `b`), raises UnicodeDecodeError on bytes that are not UTF-8 and
RecursionError on deep nesting. Every one of those is the author's mistake, reported here as
one message naming the file (or body), what is wrong and where.
"""

import json
import sys
from collections.abc import Callable
from typing import Any, TypeVar

from chainlets.language.messages import listing

__all__ = ["DuplicateKeyError", "decode_json", "duplicate_key_message", "line_column", "text_of",
           "unique_keys"]

E = TypeVar("E", bound=Exception)


class DuplicateKeyError(ValueError):
    """Raised while parsing, for a JSON object that names a key twice."""

    def __init__(self, key: str, keys: list[str]) -> None:
        super().__init__(key)
        self.key = key
        self.keys = keys


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKeyError(key, list(dict.fromkeys(k for k, _ in pairs)))
        result[key] = value
    return result


def duplicate_key_message(name: str, exc: DuplicateKeyError) -> str:
    return (f"{name}: key `{exc.key}` appears more than once in the JSON object with keys "
            f"{listing(exc.keys, limit=5)}; a key may appear once: keep the one you mean")


def line_column(data: bytes, position: int) -> tuple[int, int]:
    """1-based line and column of byte `position` of `data`."""
    line = data.count(b"\n", 0, position) + 1
    return line, position - (data.rfind(b"\n", 0, position) + 1) + 1


def text_of(data: bytes | str, name: str, error: Callable[[str], E]) -> str:
    """`data` as text: bytes must be UTF-8, else `error(message)` names the first bad byte."""
    if isinstance(data, str):
        return data
    try:
        # A byte-order mark is tolerated: some editors write one.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line, column = line_column(data, exc.start)
        raise error(f"{name} is not UTF-8 text: byte 0x{data[exc.start]:02x} at line {line}, "
                    f"column {column} is not valid UTF-8; save it as UTF-8") from None


def decode_json(data: bytes | str, name: str, error: Callable[[str], E]) -> Any:
    """The JSON value in `data` (bytes must be UTF-8), or `error(message)` naming `name`
    (e.g. "chain.json", "the request body") and the problem: not UTF-8, not JSON, a key twice
    in one object, or nested deeper than the parser goes."""
    text = text_of(data, name, error)
    try:
        return json.loads(text, object_pairs_hook=unique_keys)
    except DuplicateKeyError as exc:
        raise error(duplicate_key_message(name, exc)) from None
    except json.JSONDecodeError as exc:
        raise error(f"{name} is not valid JSON: {exc.msg} at line {exc.lineno}, column "
                    f"{exc.colno}") from None
    except RecursionError:
        raise error(f"{name} is nested deeper than the JSON parser goes (Python's recursion "
                    f"limit, {sys.getrecursionlimit():,} levels); flatten it") from None
