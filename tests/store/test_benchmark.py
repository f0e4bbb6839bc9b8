"""The store benchmark still runs: every measure at tiny scale, untimed."""

from pathlib import Path

from benchmarks import store as bench
from chainlets.store import MemoryStore, StoreSettings, open_store


async def test_every_measure_runs_and_renders(tmp_path: Path) -> None:
    sqlite = await open_store(StoreSettings(url=f"sqlite:///{tmp_path / 'bench.db'}"))
    try:
        rows = [await bench.measure(store, name, steps=3, invocations=4, workers=2)
                for name, store in (("memory", MemoryStore()), ("sqlite", sqlite))]
    finally:
        await sqlite.close()
    assert [r.double_claims for r in rows] == [0, 0]
    assert all(r.write_p50_ms > 0 and r.invocations_per_s > 0 for r in rows)
    table = bench.render(rows, workers=2)
    assert "| sqlite |" in table and "sqlite: a step's two writes add" in table
