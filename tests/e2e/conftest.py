"""Fixtures the end-to-end tests share."""

from collections.abc import Iterator

import pytest

from tests.e2e.fakes import FakeBackend, Loopback


@pytest.fixture(scope="module")
def backend() -> Iterator[tuple[FakeBackend, int]]:
    """A fake OpenAI-compatible backend on loopback, and its port (a module's own `backend`
    fixture, with more fakes, replaces it there)."""
    loop, fake = Loopback(), FakeBackend()
    port = loop.serve({"/v1/chat/completions": fake.completions})
    try:
        yield fake, port
    finally:
        loop.stop()
