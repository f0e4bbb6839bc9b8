"""Small pure parts of serve: what the zygote preloads, exit descriptions, watched folders."""

import signal
from pathlib import Path

import pytest

from chainlets.deploy import SHIP_DIR
from chainrunner.serve.watch import watch_roots
from chainrunner.serve.zygote import describe_exit, looks_secret, preloadable, without_secrets

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


@pytest.mark.parametrize(("name", "secret"), [
    ("OPENAI_API_KEY", True), ("HF_TOKEN", True), ("DB_PASSWORD", True),
    ("AWS_SECRET_ACCESS_KEY", True), ("TRUSS_SECRET_openai_api_key", True),
    ("CHAINRUNNER_API_KEY", True), ("GOOGLE_APPLICATION_CREDENTIALS", True),
    ("TOKENIZERS_PARALLELISM", False), ("KEYBOARD_LAYOUT", False), ("PATH", False),
    ("OPENAI_BASE_URL", False), ("CHAINRUNNER_MOCK_SCRIPT", False),
], ids=lambda value: str(value))
def test_credentials_are_told_by_a_word_of_their_name(name: str, secret: bool) -> None:
    assert looks_secret(name) is secret


def test_the_environment_of_forked_processes_holds_no_credential() -> None:
    env = {"PATH": "/bin", "OPENAI_API_KEY": "sk", "WEATHER_ACCESS": "w", "LANG": "C"}
    assert without_secrets(env, also={"WEATHER_ACCESS"}) == {"PATH": "/bin", "LANG": "C"}
