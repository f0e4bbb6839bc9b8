"""Generator chainlets (the seed's "plugins"): each turns chat messages into text."""

__all__ = ["truncate_words"]


def truncate_words(text: str, max_words: int | None) -> str:
    """`text` cut to at most `max_words` whitespace-separated words (unchanged when None)."""
    if max_words is None:
        return text
    words = text.split()
    return text.strip() if len(words) <= max_words else " ".join(words[:max_words])
