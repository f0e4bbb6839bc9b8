"""`truss chains push --dryrun` for every chain in chains/: complete trusses, exactly our code.

Each dryrun runs offline with its own HOME and TMPDIR, so nothing lands in ~/.truss or
/tmp/.chains_generated. What would be uploaded is checked after truss's own gather step (the
one push runs, which copies external package dirs into packages/).
"""

import ast
import filecmp
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CHAINS = sorted(REPO.joinpath("chains").glob("*.py"))
PROJECT_PACKAGES = {"chainlets", "chainrunner", "mocks"}
BIN = Path(sys.executable).parent

# Run by truss's interpreter: gather each generated truss as `truss chains push` does.
_GATHER = """
import json, sys
from pathlib import Path
from truss.truss_handle.truss_handle import TrussHandle
print(json.dumps({d: str(TrussHandle(Path(d)).gather()) for d in sys.argv[1:]}))
"""


@dataclass
class Pushed:
    chain: Path
    returncode: int
    output: str
    chainlets: dict[str, Path]  # generated truss dir by chainlet dir name
    gathered: dict[str, Path]


def _generated_dirs(tmp: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(tmp.glob(".chains_generated/*/chainlet_*"))}


@pytest.fixture(scope="module")
def pushed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Pushed]:
    """Every chain pushed with --dryrun, all at once (each dryrun is seconds of imports)."""
    root = tmp_path_factory.mktemp("push")
    env = {**os.environ, "HOME": str(root / "home"),
           "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}
    runs = {}
    for chain in CHAINS:
        tmp = root / chain.stem
        tmp.mkdir()
        runs[chain.stem] = (tmp, subprocess.Popen(
            [str(BIN / "truss"), "chains", "push", "--dryrun", str(chain), "--non-interactive"],
            env={**env, "TMPDIR": str(tmp)}, cwd=REPO, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True))
    outputs = {stem: process.communicate(timeout=300)[0] for stem, (_, process) in runs.items()}
    dirs = {stem: _generated_dirs(tmp) for stem, (tmp, _) in runs.items()}
    every_dir = [str(d) for by_name in dirs.values() for d in by_name.values()]
    done = subprocess.run([sys.executable, "-c", _GATHER, *every_dir], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    gathered = {Path(d): Path(g) for d, g in json.loads(done.stdout).items()}
    return {stem: Pushed(REPO / "chains" / f"{stem}.py", process.returncode, outputs[stem],
                         dirs[stem], {n: gathered[d] for n, d in dirs[stem].items()})
            for stem, (_, process) in runs.items()}


def _deployed_imports(path: Path) -> set[str]:
    """Top-level modules `path` imports, except under `if __name__ == "__main__":`."""
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and "__main__" in ast.unparse(node.test):
            continue
        for inner in ast.walk(node):
            if isinstance(inner, ast.Import):
                names.update(alias.name.partition(".")[0] for alias in inner.names)
            elif isinstance(inner, ast.ImportFrom) and inner.level == 0 and inner.module:
                names.add(inner.module.partition(".")[0])
    return names


def _project_packages_needed(chain: Path) -> set[str]:
    """Our packages the deployed chain imports, followed through their own imports."""
    needed = _deployed_imports(chain) & PROJECT_PACKAGES
    seen: set[str] = set()
    while needed - seen:
        package = (needed - seen).pop()
        seen.add(package)
        for module in REPO.joinpath(package).rglob("*.py"):
            needed |= _deployed_imports(module) & PROJECT_PACKAGES
    return needed


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"}


def _shipped_files(package: str) -> set[str]:
    """What a chainlet gets of one of our packages: the whole folder (local tooling lives in
    `chainrunner`, which no chainlet imports)."""
    return _files(REPO / package)


chain_ids = pytest.mark.parametrize("stem", [c.stem for c in CHAINS])


def test_every_chain_file_is_covered() -> None:
    assert {c.stem for c in CHAINS} >= {"hello", "runner", "poems", "soundtrack"}


@chain_ids
def test_dryrun_succeeds_offline(pushed: dict[str, Pushed], stem: str) -> None:
    result = pushed[stem]
    assert result.returncode == 0, result.output
    assert result.chainlets, f"no chainlet generated:\n{result.output}"


@chain_ids
def test_packages_hold_exactly_the_code_the_chain_imports(pushed: dict[str, Pushed],
                                                          stem: str) -> None:
    result = pushed[stem]
    # Truss always ships the chain root, the folder of the file defining the entrypoint.
    chain_root = _files(REPO / "chains")
    shipped = _project_packages_needed(result.chain)
    assert "chainlets" in shipped
    for name, gathered in result.gathered.items():
        packages = gathered / "packages"
        top = {p.name for p in packages.iterdir()}
        assert top == {"_model_dbg.py"} | {f.split("/")[0] for f in chain_root} | shipped, name
        for package in shipped:
            expected = _shipped_files(package)
            assert _files(packages / package) == expected, (name, package)
            mismatched = filecmp.cmpfiles(REPO / package, packages / package,
                                          sorted(expected), shallow=False)[1:]
            assert mismatched == ([], []), (name, package)
        assert not {"tests", "benchmarks", "mocks", ".chainrunner"} & set(
            p.name for p in packages.rglob("*")), name
        assert not (packages / "chainrunner").exists(), name


@chain_ids
def test_generated_config_ships_the_package_folder_alone(pushed: dict[str, Pushed],
                                                         stem: str) -> None:
    for name, truss_dir in pushed[stem].chainlets.items():
        config = yaml.safe_load((truss_dir / "config.yaml").read_text())
        [external] = config["external_package_dirs"]
        folder = Path(external)
        assert folder.name == "packages", name
        assert [p.name for p in folder.iterdir()] == ["chainlets"], name
        assert (folder / "chainlets").resolve() == REPO / "chainlets", name
        # The gathered truss no longer depends on paths of this machine.
        gathered = yaml.safe_load(
            (pushed[stem].gathered[name] / "config.yaml").read_text())
        assert gathered["external_package_dirs"] == [], name


_PINNED = re.compile(r"^[A-Za-z0-9_.\-\[\]]+==[A-Za-z0-9_.+\-]+$")


@chain_ids
def test_requirements_are_pinned(pushed: dict[str, Pushed], stem: str) -> None:
    for name, truss_dir in pushed[stem].chainlets.items():
        lines = [line.strip() for line in
                 (truss_dir / "pip_requirements.txt").read_text().splitlines() if line.strip()]
        assert lines, name
        assert [line for line in lines if not _PINNED.match(line)] == [], name
        pins = dict(line.split("==") for line in lines)
        assert pins["truss"] == version("truss"), name
        for runtime in ("pydantic", "httpx", "openai", "jsonschema", "referencing"):
            assert pins[runtime] == version(runtime), (name, runtime)


def test_chainlets_declare_resources_and_secrets(pushed: dict[str, Pushed]) -> None:
    configs = {name: yaml.safe_load((d / "config.yaml").read_text())
               for name, d in pushed["runner"].chainlets.items()}
    assert set(configs) == {"chainlet_Runner", "chainlet_MockGenerator",
                            "chainlet_OpenAIGenerator", "chainlet_CodeRunner"}
    assert "openai_api_key" in configs["chainlet_OpenAIGenerator"]["secrets"]
    # Code steps' functions run in a service of their own, fewer at once than model calls.
    assert configs["chainlet_CodeRunner"]["runtime"]["predict_concurrency"] == 32
    assert "openai_api_key" not in (configs["chainlet_CodeRunner"].get("secrets") or {})
    for name, config in configs.items():
        assert config["resources"]["use_gpu"] is False, name
        assert config["resources"]["cpu"] == "1", name
        assert config["runtime"]["predict_concurrency"] >= 1, name
    poems = {name: yaml.safe_load((d / "config.yaml").read_text())
             for name, d in pushed["poems"].chainlets.items()}
    assert poems["chainlet_PhiLLM"]["resources"]["accelerator"] == "A10G"
