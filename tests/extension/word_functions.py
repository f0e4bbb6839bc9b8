"""A user's functions, as an installed package registers them under the
`chainrunner.functions` entry point group (the tests install a fake distribution)."""

from pydantic import BaseModel

from chainlets.language.functions import Function


class Count(BaseModel):
    words: int
    longest: str


def count_words(text: str, min_length: int = 1) -> Count:
    """Count the words of `text` at least `min_length` long, and name the longest."""
    words = [word for word in text.split() if len(word) >= min_length]
    return Count(words=len(words), longest=max(words, key=len, default=""))


FUNCTIONS = [count_words]
# Registers a name the built-in functions already have: the CLI must refuse it.
CLASHING = Function("pick_winner", count_words)
NOT_A_FUNCTION = 42
