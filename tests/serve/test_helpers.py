"""Small pure parts of serve: what the zygote preloads, exit descriptions, watched folders."""

import signal
from pathlib import Path

import pytest

from chainlets.deploy import SHIP_DIR
from chainrunner.serve.watch import watch_roots
from chainrunner.serve.zygote import describe_exit, preloadable

REPO = Path(__file__).resolve().parents[2]


def test_the_zygote_preloads_no_library_that_starts_threads() -> None:
    assert preloadable(["openai", "numpy", "torch", "tenacity", "_private", "openai"]) == [
        "openai", "tenacity"]


@pytest.mark.parametrize(("code", "text"), [
    (0, "exited with code 0"), (3, "exited with code 3"),
    (-signal.SIGKILL, "killed by SIGKILL"), (-signal.SIGTERM, "killed by SIGTERM"),
], ids=["clean", "error", "sigkill", "sigterm"])
def test_exits_are_described_as_a_user_reads_them(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_watched_folders_see_through_the_ship_link() -> None:
    roots = watch_roots([REPO / "chains", SHIP_DIR])
    assert REPO / "chainlets" in roots  # where edits happen, not the link to it
    assert REPO / "chains" in roots
