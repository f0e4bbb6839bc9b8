"""The durability benchmark still runs: one takeover with real runner processes, and a few
invocations parked at a real approval step, on a SQLite file (untimed: the figures come from
`make bench`)."""

from pathlib import Path

import pytest

from benchmarks import durability
from benchmarks.waiting import park

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


async def test_a_killed_replicas_invocation_is_resumed_by_the_other(tmp_path: Path) -> None:
    with durability.database(tmp_path, postgres=False) as url:
        [(after_expiry, after_kill)] = await durability.takeover(
            url, tmp_path, trials=1, lease_s=0.5, poll_s=0.05)
    assert after_kill >= after_expiry  # the lease expires after the kill, never before


async def test_invocations_parked_at_an_approval_hold_no_task_lease_or_gate(
        tmp_path: Path) -> None:
    with durability.database(tmp_path, postgres=False) as url:
        parked = await park(url, 5, postgres=False, warmup=2)
    assert parked.waiting == 7 and parked.rows["invocations"] == 7
    assert parked.rows["steps"] == 21 and parked.rows["events"] == 0  # no callback_url
    assert (parked.running, parked.parked_gates, parked.leases) == (0, 0, 0)
    assert parked.run_tasks == 0 and parked.tasks_after <= parked.tasks_before
