"""Small pure parts of serve: what the zygote preloads, exit descriptions, watched folders."""

import signal
from pathlib import Path

import pytest

from chainlets.serve.watch import watch_roots
from chainlets.serve.zygote import describe_exit, requirement_modules

REPO = Path(__file__).resolve().parents[2]


def test_the_zygote_preloads_installed_requirements_but_no_thread_starting_ones(
        tmp_path: Path) -> None:
    requirements = tmp_path / "pip_requirements.txt"
    requirements.write_text("openai==1.0\ntenacity==9.0\nnumpy==1.26.4\n"
                            "not-installed-anywhere==1.0\ntruss==0.18.35\n")
    modules = requirement_modules([requirements])
    assert {"openai", "tenacity"} <= set(modules)
    assert not {"numpy", "truss", "truss_chains", "truss_train"} & set(modules)


@pytest.mark.parametrize(("code", "text"), [
    (0, "exited with code 0"), (3, "exited with code 3"),
    (-signal.SIGKILL, "killed by SIGKILL"), (-signal.SIGTERM, "killed by SIGTERM"),
], ids=["clean", "error", "sigkill", "sigterm"])
def test_exits_are_described_as_a_user_reads_them(code: int, text: str) -> None:
    assert describe_exit(code) == text


def test_watched_folders_see_through_the_shipped_links() -> None:
    roots = watch_roots([REPO / "chains", REPO / "shipped" / "chainlets"])
    assert REPO / "chainlets" in roots  # where edits happen, not the link to it
    assert REPO / "chains" in roots
