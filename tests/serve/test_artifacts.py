"""Build artifacts: what a swap replaces, what a fingerprint covers, where state lives."""

import json
import os
from pathlib import Path

import pytest

from chainrunner.serve.artifacts import (
    STATE_DIR_NAME,
    Builder,
    ChainArtifacts,
    ChainletArtifact,
    fingerprint,
    state_dir_for,
)
from chainrunner.serve.leases import hold


def _chainlet(name: str, deps: tuple[str, ...] = (), digest: str = "d0") -> ChainletArtifact:
    return ChainletArtifact(name=name, display_name=name, context_dir=Path("/nowhere") / name,
                            dependencies=deps, secrets=(), env={}, digest=digest)


def _chain(**digests: str) -> ChainArtifacts:
    """Entry → (Left → Leaf, Right); digests default to d0."""
    graph = {"Leaf": (), "Left": ("Leaf",), "Right": (), "Entry": ("Left", "Right")}
    chainlets = {n: _chainlet(n, deps, digests.get(n, "d0")) for n, deps in graph.items()}
    return ChainArtifacts(source=Path("/nowhere/chain.py"), chain_name="c", entrypoint="Entry",
                          chainlets=chainlets, inputs=(), fingerprint="f")


@pytest.mark.parametrize(("changed", "replaced"), [
    ({}, set()),
    ({"Entry": "d1"}, {"Entry"}),
    ({"Right": "d1"}, {"Right", "Entry"}),
    ({"Leaf": "d1"}, {"Leaf", "Left", "Entry"}),
], ids=["nothing", "entrypoint", "leaf-of-entry", "deep-leaf"])
def test_a_swap_replaces_changed_chainlets_and_their_callers(changed: dict[str, str],
                                                             replaced: set[str]) -> None:
    assert _chain().to_replace(_chain(**changed)) == replaced


def test_a_changed_graph_replaces_every_chainlet() -> None:
    old = _chain()
    new = old.model_copy(update={"chainlets": {
        **old.chainlets, "Right": _chainlet("Right", deps=("Leaf",))}})
    assert old.to_replace(new) == set(old.chainlets)


def test_artifacts_round_trip_through_json() -> None:
    chain = _chain(Leaf="d9")
    assert ChainArtifacts.model_validate_json(chain.model_dump_json()) == chain


def test_fingerprint_follows_sources_and_skips_caches_and_state(tmp_path: Path) -> None:
    chain = tmp_path / "chain.py"
    chain.write_text("x = 1\n")
    first = fingerprint(chain, (tmp_path,))
    for ignored in ("__pycache__/chain.cpython-311.pyc", f"{STATE_DIR_NAME}/builds/m.json"):
        (tmp_path / ignored).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / ignored).write_text("noise")
    assert fingerprint(chain, (tmp_path,)) == first
    chain.write_text("x = 2\n")
    assert fingerprint(chain, (tmp_path,)) != first


def test_fingerprint_follows_linked_package_folders(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("a = 1\n")
    shipped = tmp_path / "shipped"
    shipped.mkdir()
    (shipped / "pkg").symlink_to(package)
    first = fingerprint(tmp_path / "chain.py", (shipped,))
    (package / "mod.py").write_text("a = 2\n")
    assert fingerprint(tmp_path / "chain.py", (shipped,)) != first


def test_state_lives_in_the_project_of_the_chain_file(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "chains").mkdir()
    assert state_dir_for(tmp_path / "chains" / "x.py") == tmp_path / STATE_DIR_NAME


def test_nothing_is_cached_before_a_build(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("")
    assert Builder(tmp_path / "chain.py").cached() is None


def _contexts(builder: Builder, *names: str) -> list[Path]:
    """Context folders, oldest first (their mtimes decide what pruning keeps)."""
    folders = []
    for age, name in enumerate(reversed(names)):
        folder = builder.root / "contexts" / name
        (folder / "server").mkdir(parents=True)
        os.utime(folder, (1_000_000 - age, 1_000_000 - age))
        folders.append(folder)
    return folders[::-1]


async def test_a_commit_prunes_old_contexts_but_none_a_live_serve_holds(tmp_path: Path) -> None:
    builder = Builder(tmp_path / "chain.py", state_dir=tmp_path / STATE_DIR_NAME)
    held, dropped, *recent = _contexts(builder, *(f"Entry-d{n}" for n in range(6)))
    serving = ChainletArtifact(name="Entry", display_name="Entry", context_dir=recent[-1],
                               dependencies=(), secrets=(), env={}, digest="d5")
    current = ChainArtifacts(source=tmp_path / "chain.py", chain_name="c", entrypoint="Entry",
                             chainlets={"Entry": serving}, inputs=(), fingerprint="f")
    state = builder.state_dir / "serve"
    hold(state / "9001" / "lease.json", [held])  # another serve, running (this pid)
    dead = json.dumps({"pid": 2 ** 22 + 1, "contexts": [str(dropped)]})  # above pid_max
    (state / "9002").mkdir()
    (state / "9002" / "lease.json").write_text(dead)

    await builder.commit(current, state / "9000" / "lease.json", [recent[-1]])

    assert sorted(p.name for p in (builder.root / "contexts").iterdir()) == [
        "Entry-d0", "Entry-d3", "Entry-d4", "Entry-d5"]
    manifest = (builder.root / "manifest.json").read_bytes()
    assert ChainArtifacts.model_validate_json(manifest) == current  # what `cached` reuses


def test_fingerprint_follows_host_variables_baked_into_chainlets(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    chain = tmp_path / "chain.py"
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    unset = fingerprint(chain, (), ("OPENAI_BASE_URL",))
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert fingerprint(chain, (), ("OPENAI_BASE_URL",)) != unset
    unread = fingerprint(chain, ())
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")
    assert fingerprint(chain, ()) == unread  # variables no chainlet reads do not count
