"""The package's layers depend one way: chainrunner → chainlets → service → store → engine →
language, with `chainlets.errors` below them all; nothing shipped imports local tooling."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Lower ranks are lower layers; a module may import its own layer and those below it.
_RANKS = [("chainlets.errors", 0), ("chainlets.language", 1), ("chainlets.engine", 2),
          ("chainlets.store", 3), ("chainlets.service", 4), ("chainlets", 5),
          ("chainrunner", 6), ("mocks", 7), ("chains", 7)]


def _rank(module: str) -> int | None:
    for prefix, rank in _RANKS:
        if module == prefix or module.startswith(prefix + "."):
            return rank
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set[str]:
    """Every absolute import in `path`, at any depth (imports inside functions count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


_MODULES = sorted(p for package in ("chainlets", "chainrunner")
                  for p in (REPO / package).rglob("*.py") if "migrations" not in p.parts)


@pytest.mark.parametrize("path", _MODULES, ids=lambda p: _module_name(p))
def test_imports_point_down_the_layers(path: Path) -> None:
    own = _rank(_module_name(path))
    assert own is not None
    upward = sorted(name for name in _imports(path)
                    if (rank := _rank(name)) is not None and rank > own)
    assert upward == [], f"{_module_name(path)} imports a higher layer: {upward}"


def test_the_layers_cover_every_package() -> None:
    assert {_module_name(p).split(".")[0] for p in _MODULES} == {"chainlets", "chainrunner"}
    assert len(_MODULES) > 40
