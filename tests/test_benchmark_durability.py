"""The durability benchmark still runs: one takeover and a few waiting invocations on a SQLite
file, with real runner processes (untimed: the figures come from `make bench`)."""

from pathlib import Path

import pytest

from benchmarks import durability

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_killed_replicas_invocation_is_resumed_by_the_other(tmp_path: Path) -> None:
    with durability.database(tmp_path, postgres=False) as url:
        [(after_expiry, after_kill)] = await durability.takeover(
            url, tmp_path, trials=1, lease_s=0.5, poll_s=0.05)
    assert after_kill >= after_expiry  # the lease expires after the kill, never before


async def test_waiting_invocations_are_counted_and_none_is_claimed(tmp_path: Path) -> None:
    with durability.database(tmp_path, postgres=False) as url:
        cost = await durability.waiting_cost(url, 5, postgres=False)
    assert cost["waiting"] == 5 and cost["rows_invocations"] == 5
    assert cost["rows_steps"] == 15 and cost["rss_waiting_mib"] > 0
