"""The service benchmark still runs: each part at tiny scale on the in-memory store, the DBOS
anchor's failure paths, and the serve part through a real `chainrunner serve` (untimed)."""

from pathlib import Path

import pytest

from benchmarks import service as bench
from benchmarks import service_anchor
from benchmarks.service_inprocess import durability, throughput
from benchmarks.service_serve import through_serve
from chainlets.store import MemoryStore


async def test_throughput_and_durability_run_to_the_end_on_the_memory_store() -> None:
    assert await throughput(MemoryStore(), invocations=5, concurrency=2) > 0
    cost = await durability(MemoryStore(), runs=1, latency_s=0)
    assert (cost.steps, cost.critical_steps) == (9, 4)
    assert cost.memory_s > 0 and cost.store_s > 0


def test_the_tables_name_a_skipped_anchor_and_a_missing_server() -> None:
    lines = bench._render_rates([("memory", 10.0, None), ("sqlite", 50.0, 10.0),
                                 ("postgresql", None, "no PostgreSQL server at x")], 4)
    text = "\n".join(lines)
    assert "| sqlite | 50 | 10 | 5.0x |" in text
    assert "skipped (no server)" in text
    assert "DBOS anchor on postgresql skipped: no PostgreSQL server at x" in text


def test_a_venv_that_cannot_install_dbos_gives_the_reason(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the venv would go")
    reason = service_anchor.dbos_python(blocker / "venv")
    assert isinstance(reason, str) and "venv" in reason


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_through_serve_every_invocation_ends_with_its_callback(tmp_path: Path) -> None:
    result = through_serve(tmp_path, latency_calls=2, submitted=5, deadline_s=120)
    assert (result.accepted, result.errors, result.lost, result.final, result.callbacks) == (
        5, 0, 0, 5, 5)
    assert result.bad_signatures == 0
