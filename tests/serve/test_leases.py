"""Leases: a serve's contexts are held while it lives; a killed serve's folder is cleared."""

import json
import os
from pathlib import Path

from chainrunner.serve.leases import Lease, hold, leased, remove_stale_runs


def test_a_lease_holds_its_contexts_while_its_process_lives(tmp_path: Path) -> None:
    mine, theirs = tmp_path / "Entry-d1", tmp_path / "Entry-d2"
    hold(tmp_path / "9000" / "lease.json", [mine, mine])
    dead = Lease(pid=2 ** 22 + 1, contexts=[theirs])  # above pid_max: dead
    (tmp_path / "9001").mkdir()
    (tmp_path / "9001" / "lease.json").write_text(dead.model_dump_json())
    (tmp_path / "9002").mkdir()
    (tmp_path / "9002" / "lease.json").write_text("not a lease")
    assert leased(tmp_path) == {mine}
    lease = Lease.model_validate_json((tmp_path / "9000" / "lease.json").read_bytes())
    assert lease == Lease(pid=os.getpid(), contexts=[mine])


def test_run_folders_of_serves_killed_outright_are_removed(tmp_path: Path) -> None:
    live, dead, old, new = (tmp_path / port for port in ("8000", "8001", "8002", "8003"))
    for run_dir, pid in ((live, os.getpid()), (dead, 2 ** 22 + 1)):  # above pid_max: dead
        run_dir.mkdir()
        (run_dir / "lease.json").write_text(json.dumps({"pid": pid, "contexts": []}))
    old.mkdir()  # from a serve that predates leases
    os.utime(old, (1_000_000, 1_000_000))
    new.mkdir()  # a serve that is about to write its lease
    assert sorted(remove_stale_runs(tmp_path)) == [dead, old]
    assert sorted(tmp_path.iterdir()) == [live, new]
