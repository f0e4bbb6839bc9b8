"""`chainrunner db upgrade` and `chainrunner db prune` (the `db` click group)."""

import asyncio
from pathlib import Path

import pytest
from click.testing import CliRunner

from chainlets.store import NewInvocation, State, StoreSettings, open_store
from chainrunner.db import db
from tests.store.helpers import CHAIN


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.delenv("CHAINRUNNER_DATABASE_URL", raising=False)
    monkeypatch.delenv("CHAINRUNNER_RETENTION_DAYS", raising=False)
    return CliRunner()


def test_upgrade_migrates_once(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    first = runner.invoke(db, ["upgrade", "--url", url])
    assert (first.exit_code, first.output) == (0, f"sqlite+pysqlite:///{tmp_path}/db.sqlite: "
                                                  "upgraded from empty to revision 0003 "
                                                  "(head)\n")
    again = runner.invoke(db, ["upgrade", "--url", url])
    assert again.output.endswith(": already at revision 0003 (head)\n")


def test_upgrade_takes_the_url_from_the_environment(runner: CliRunner, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_DATABASE_URL", f"sqlite:///{tmp_path / 'env.db'}")
    assert runner.invoke(db, ["upgrade"]).exit_code == 0
    assert (tmp_path / "env.db").is_file()


async def _finished_invocation(url: str) -> None:
    store = await open_store(StoreSettings(url=url))
    try:
        chain_id = (await store.create_chain(CHAIN)).chain_id
        created = await store.create_invocation(NewInvocation(chain_id=chain_id,
                                                              steps=["tell"]), owner="A")
        assert created.lease is not None
        await store.update_invocation(created.lease, state=State.SUCCEEDED, output="ok")
        await store.create_invocation(NewInvocation(chain_id=chain_id))  # still running
    finally:
        await store.close()


def test_prune_deletes_finished_invocations_past_the_age(runner: CliRunner,
                                                         tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    asyncio.run(_finished_invocation(url))
    kept = runner.invoke(db, ["prune", "--url", url])  # default age: 7 days
    assert kept.exit_code == 0 and ": pruned 0 invocations" in kept.output
    pruned = runner.invoke(db, ["prune", "--url", url, "--older-than-days", "0"])
    assert pruned.exit_code == 0
    assert ": pruned 1 invocations (1 steps, 0 events) finished over 0:00:00 ago, and 0 " \
           "deleted chains" in pruned.output


@pytest.mark.parametrize(("args", "code", "message"), [
    (["upgrade", "--url", "mysql://u@h/d"], 2,
     "error: CHAINRUNNER_DATABASE_URL: mysql://u@h/d: `mysql` databases are not supported"),
    (["prune", "--url", "postgresql://postgres@127.0.0.1:1/none"], 1,
     "error: the database refused or could not be reached: "),
], ids=["bad-url", "unreachable"])
def test_errors_are_one_line_without_a_traceback(runner: CliRunner, args: list[str],
                                                 code: int, message: str) -> None:
    result = runner.invoke(db, args)
    assert result.exit_code == code
    assert result.output.startswith(message)
    assert "Traceback" not in result.output
