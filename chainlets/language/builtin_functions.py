"""The built-in functions of code steps: what the Step Functions catalog's Lambdas do.

Here, in the language layer, because validation checks a code step's function by name and
signature, as it checks a plugin's config: the built-in registry must be known wherever a
chain is validated. They are plain Python with no dependency beyond pydantic.
"""

import os
import re
import tempfile
import unicodedata
from pathlib import Path

from pydantic import BaseModel, Field, JsonValue

from chainlets.language.functions import Function, FunctionRegistry

__all__ = ["DEFAULT_FUNCTIONS", "ITINERARY_DIR_ENV", "ItineraryFile", "Winner",
           "itinerary_dir", "pick_winner", "write_itinerary"]

ITINERARY_DIR_ENV = "CHAINRUNNER_ITINERARY_DIR"
DEFAULT_ITINERARY_DIR = ".chainrunner/itineraries"
_MAX_NAME = 80


class ItineraryFile(BaseModel):
    """What `write_itinerary` wrote."""

    file: str = Field(description="The file's name in the itinerary directory "
                                  f"(${ITINERARY_DIR_ENV}).")
    bytes: int = Field(description="Its size in bytes (UTF-8).")
    destination: str


class Winner(BaseModel):
    """What `pick_winner` picked."""

    name: str = Field(description="The winner's key in the scores.")
    score: float
    candidate: str | None = Field(default=None, description="The winner's entry in "
                                                            "`candidates`, when given.")
    scores: dict[str, float] = Field(description="Every candidate's score, as read.")


def itinerary_dir() -> Path:
    """Where itineraries are written: $CHAINRUNNER_ITINERARY_DIR, else .chainrunner/itineraries
    under the working directory; made on first use."""
    return Path(os.environ.get(ITINERARY_DIR_ENV, "").strip() or DEFAULT_ITINERARY_DIR)


def _file_name(destination: str) -> str:
    """A safe file name for `destination`: lower-case ASCII letters, digits and `-` only, so
    no separator, `..` or hidden name can come of it."""
    ascii_text = unicodedata.normalize("NFKD", destination).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")[:_MAX_NAME].strip("-")
    return f"{slug or 'itinerary'}.md"


def write_itinerary(destination: str, itinerary: str,
                    research: dict[str, str] | None = None) -> ItineraryFile:
    """Write a trip's itinerary as a Markdown file named after its destination, with the
    research it was made from, in the itinerary directory (never outside it)."""
    folder = itinerary_dir().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / _file_name(destination)
    if target.resolve().parent != folder:  # a link planted at the name: never follow it
        raise ValueError(f"{target.name} in the itinerary directory is a link to elsewhere; "
                         "remove it")
    parts = [f"# Itinerary: {destination.strip()}", "", itinerary.strip(), ""]
    for title, text in (research or {}).items():
        parts += [f"## {title.strip().capitalize()}", "", text.strip(), ""]
    data = "\n".join(parts).encode()
    # Written whole or not at all: a temporary file in the same folder, renamed over the name
    # (a rename replaces a link, it does not write through it).
    fd, temporary = tempfile.mkstemp(dir=folder, prefix=".itinerary-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return ItineraryFile(file=target.name, bytes=len(data), destination=destination)


def pick_winner(scores: dict[str, JsonValue],
                candidates: dict[str, str] | None = None) -> Winner:
    """The highest-scoring candidate. `scores` maps names to numbers (other fields, such as a
    judge's `"consensus": true`, are ignored); with `candidates`, only their names compete and
    each needs a score. A tie goes to the first listed."""
    numbers = {name: float(value) for name, value in scores.items()
               if isinstance(value, int | float) and not isinstance(value, bool)}
    if candidates is not None:
        unscored = [name for name in candidates if name not in numbers]
        if unscored:
            raise ValueError(f"no numeric score for {', '.join(unscored)} in the scores "
                             f"{sorted(scores)}")
        numbers = {name: numbers[name] for name in candidates}
    if not numbers:
        raise ValueError("the scores hold no numbers; give each candidate one, e.g. "
                         '{"a": 70, "b": 80}')
    name = max(numbers, key=lambda key: numbers[key])
    return Winner(name=name, score=numbers[name], scores=numbers,
                  candidate=None if candidates is None else candidates[name])


DEFAULT_FUNCTIONS = FunctionRegistry([Function.of(write_itinerary), Function.of(pick_winner)])
