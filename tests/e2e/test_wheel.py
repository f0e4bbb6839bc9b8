"""A built wheel in a fresh venv runs, validates and pushes a user's own chain, no checkout needed.

The wheel is built from a copy of the repository's sources and installed with all its
dependencies (pip's cache makes that quick) into a venv that sees nothing of this checkout or
of the test's own venv. Everything then runs from a folder outside the repository, with the
fresh venv's binaries, its own HOME and TMPDIR, and a PATH holding only that venv and `ruff`
(which `truss chains push` runs), as a user's machine would.

CI runs it on the Python running the tests. $CHAINRUNNER_TEST_PYTHONS (interpreter paths,
separated by os.pathsep) adds others: each gets its own venv from the same wheel.
"""

import filecmp
import json
import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
_NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                      ".*_cache", ".chainrunner", ".chains_generated")

USER_CHAIN = '''
"""A user's own chain: the runner, subclassed with a generator of the user's."""

import truss_chains as chains
from pydantic import BaseModel, ConfigDict

from chainlets import deploy
from chainlets.engine.models import Generation, GenerationRequest
from chainlets.engine.protocols import GeneratorProtocol
from chainlets.generators.mock import MockGenerator
from chainlets.generators.openai_chat import OpenAIGenerator
from chainlets.language.plugins import DEFAULT_PLUGINS, ModelParams, Plugin
from chainlets.runner import ChainRunner


class ShoutConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")


def shout_params(config: BaseModel) -> ModelParams:
    return ModelParams()


class Shout(chains.ChainletBase):
    remote_config = chains.RemoteConfig(docker_image=deploy.image(),
                                        compute=deploy.cpu_service())

    async def run_remote(self, request: GenerationRequest) -> Generation:
        return Generation(text=request.messages[-1].content.upper())


@chains.mark_entrypoint("user-chain")
class UserRunner(ChainRunner):
    plugins = DEFAULT_PLUGINS.with_plugins(
        Plugin("shout", ShoutConfig, shout_params, generator="shout"))

    def __init__(self, openai: GeneratorProtocol = chains.depends(OpenAIGenerator),
                 mock: GeneratorProtocol = chains.depends(MockGenerator),
                 shout: GeneratorProtocol = chains.depends(Shout)) -> None:
        super().__init__(openai=openai, mock=mock)
        self.generators = {**self.generators, "shout": shout}
'''

GREET = {"handle": "greet", "inputs": [{"name": "who"}],
         "steps": [{"handle": "hello", "plugin": "mock", "plugin_config": {"max_words": 6},
                    "prompt": "Say hello to {who}"}]}

# Run by the fresh venv's interpreter: gather each generated truss as `truss chains push` does.
_GATHER = """
import json, sys
from pathlib import Path
from truss.truss_handle.truss_handle import TrussHandle
print(json.dumps({d: str(TrussHandle(Path(d)).gather()) for d in sys.argv[1:]}))
"""


@dataclass
class Installed:
    bin: Path
    user: Path  # the user's project folder, outside the repository
    env: dict[str, str]

    def run(self, *args: str | Path, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([str(a) for a in args], cwd=self.user, env=self.env,
                              capture_output=True, text=True, timeout=300)
        if check:
            assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
        return done

    def python(self, code: str) -> str:
        return self.run(self.bin / "python", "-c", textwrap.dedent(code)).stdout


def _without_project_env() -> dict[str, str]:
    """This process's environment less what would point a child at the checkout or a backend."""
    drop = {"PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "XDG_CACHE_HOME", "OPENAI_API_KEY",
            "OPENAI_BASE_URL"}
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith("CHAINRUNNER_")}


_PYTHONS = [sys.executable, *filter(None, os.environ.get("CHAINRUNNER_TEST_PYTHONS", "")
                                      .split(os.pathsep))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("build")
    shutil.copytree(REPO, root / "src", ignore=_NOT_SOURCES)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--wheel-dir", str(root / "dist"), str(root / "src")],
                   env=_without_project_env(), check=True, capture_output=True, timeout=300)
    [built] = (root / "dist").glob("chainrunner-*.whl")
    return built


@pytest.fixture(scope="module", params=_PYTHONS, ids=lambda p: Path(p).name)
def installed(request: pytest.FixtureRequest, wheel: Path,
              tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("wheel")
    base = _without_project_env()
    # `-m venv` makes a venv on the interpreter's base Python, without the packages of the venv
    # running the tests; pip then installs the wheel's declared dependencies, nothing else.
    subprocess.run([request.param, "-m", "venv", str(root / "venv")], env=base, check=True,
                   timeout=120)
    venv_bin = root / "venv" / "bin"
    done = subprocess.run([str(venv_bin / "python"), "-m", "pip", "install", "--quiet",
                           str(wheel)], env=base, capture_output=True, text=True, timeout=480)
    assert done.returncode == 0, done.stderr
    tools = root / "tools"
    tools.mkdir()
    (tools / "ruff").symlink_to(Path(sys.executable).parent / "ruff")
    for name in ("home", "tmp", "user"):
        (root / name).mkdir()
    user = root / "user"
    (user / "user_chain.py").write_text(USER_CHAIN, encoding="utf-8")
    (user / "greet.json").write_text(json.dumps(GREET), encoding="utf-8")
    env = {**base, "HOME": str(root / "home"), "TMPDIR": str(root / "tmp"),
           "PATH": os.pathsep.join([str(venv_bin), str(tools), "/usr/bin", "/bin"])}
    return Installed(venv_bin, user, env)


def test_the_wheel_installs_only_chainlets_and_chainrunner(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if ".dist-info/" not in n}
    assert top == {"chainlets", "chainrunner"}
    assert {"chainlets/py.typed", "chainrunner/py.typed"} <= set(names)
    sources = {str(p.relative_to(REPO)) for package in ("chainlets", "chainrunner")
               for p in REPO.joinpath(package).rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert {n for n in names if ".dist-info/" not in n} == sources


def test_the_packages_come_from_the_venv_not_the_checkout(installed: Installed) -> None:
    paths = json.loads(installed.python("""
        import json, chainlets, chainrunner
        print(json.dumps([chainlets.__file__, chainrunner.__file__, chainrunner.__version__]))
    """))
    site = installed.bin.parent / "lib"
    assert all(Path(p).is_relative_to(site) for p in paths[:2]), paths
    assert paths[2] == version("chainrunner")
    assert installed.run(installed.bin / "python", "-c", "import mocks",
                         check=False).returncode == 1


def test_the_cli_validates_and_runs_a_json_chain(installed: Installed) -> None:
    valid = installed.run(installed.bin / "chainrunner", "validate", "greet.json")
    assert "chain `greet` is valid" in valid.stdout
    ran = installed.run(installed.bin / "chainrunner", "run", "greet.json", "--llm", "mock",
                        "-i", "who=Ada", "--json")
    result: dict[str, Any] = json.loads(ran.stdout)
    assert result["state"] == "succeeded"
    assert result["output"] == "[mock] hello re: hello to Ada"
    bad = installed.run(installed.bin / "chainrunner", "validate", "nope.json", check=False)
    assert bad.returncode == 2
    assert "Traceback" not in bad.stderr


def test_the_python_api_runs_the_users_runner(installed: Installed) -> None:
    out = installed.python("""
        import chainrunner
        from user_chain import UserRunner

        chain = {"handle": "loud", "steps": [
            {"handle": "a", "plugin": "shout", "prompt": "hi {who}"},
            {"handle": "b", "plugin": "mock", "prompt": "{a}", "plugin_config": {"max_words": 5}}]}
        chainrunner.validate(chain, UserRunner.plugins)
        print(chainrunner.run_sync(chain, {"who": "ada"}, llm="mock",
                                   runner=UserRunner).model_dump_json())
    """)
    result = json.loads(out)
    assert result["state"] == "succeeded"
    assert [s["output"] for s in result["steps"]] == ["HI ADA", "[mock] b re: HI ADA"]


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts}


def test_push_dryrun_ships_the_installed_chainlets_package(installed: Installed) -> None:
    installed.run(installed.bin / "truss", "chains", "push", "--dryrun", "user_chain.py",
                  "--non-interactive")
    generated = sorted(Path(installed.env["TMPDIR"]).glob(".chains_generated/user-chain/*"))
    assert [d.name for d in generated] == ["chainlet_MockGenerator", "chainlet_OpenAIGenerator",
                                           "chainlet_Shout", "chainlet_UserRunner"]
    gathered = json.loads(installed.run(installed.bin / "python", "-c", _GATHER,
                                        *generated).stdout)
    site_package = Path(installed.python("import chainlets; print(chainlets.__file__)")
                        .strip()).parent
    expected = _files(site_package)
    assert "runner.py" in expected
    for truss_dir in generated:
        # Whatever Python pushes, chainlets run on Baseten's Python 3.11 image.
        config = yaml.safe_load((truss_dir / "config.yaml").read_text())
        assert config["python_version"] == "py311", truss_dir
    for truss_dir, shadow in gathered.items():
        packages = Path(shadow) / "packages"
        assert {p.name for p in packages.iterdir()} == {"_model_dbg.py", "user_chain.py",
                                                        "greet.json", "chainlets"}, truss_dir
        assert _files(packages / "chainlets") == expected, truss_dir
        mismatched = filecmp.cmpfiles(site_package, packages / "chainlets", sorted(expected),
                                      shallow=False)[1:]
        assert mismatched == ([], []), truss_dir
