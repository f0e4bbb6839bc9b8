"""A user's runner and installed plugins on the command line: `--runner MODULE:CLASS` and the
`chainrunner.plugins` entry point group, with a generator chainlet of the user's own."""

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from chainrunner.cli import main
from chainrunner.extensions import ENTRY_POINT_GROUP, FUNCTION_ENTRY_POINT_GROUP, RUNNER_ENV

EXTENSION = Path(__file__).resolve().parent / "extension"
REPO = EXTENSION.parent.parent

CHAIN = {"handle": "ext", "steps": [
    {"handle": "back", "prompt": "hello {who}", "plugin": "reverse",
     "plugin_config": {"upper": True}},
    {"handle": "loud", "prompt": "{back} again and again", "plugin": "shout",
     "plugin_config": {"words": 3}}]}


def install_entry_point(site: Path, entry: str = "shout = shout_plugins:PLUGINS",
                        name: str = "shout-plugins") -> None:
    """An installed distribution with a `chainrunner.plugins` entry point, as pip leaves it."""
    info = site / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n", encoding="utf-8")


@pytest.fixture
def chain_file(tmp_path: Path) -> Path:
    path = tmp_path / "chain.json"
    path.write_text(json.dumps(CHAIN), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The user's modules importable, as PYTHONPATH makes them; no runner from the env."""
    monkeypatch.syspath_prepend(str(EXTENSION))
    monkeypatch.delenv(RUNNER_ENV, raising=False)


def invoke(*args: str | Path) -> Result:
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def one_line(text: str) -> str:
    return " ".join(text.split())


# --- in a real process: what a user types ------------------------------------------------------


def _cli(args: list[str], site: Path) -> "subprocess.CompletedProcess[str]":
    env = {k: v for k, v in os.environ.items() if k not in ("CHAINRUNNER_LLM", RUNNER_ENV)}
    env["PYTHONPATH"] = os.pathsep.join([str(EXTENSION), str(site)])
    return subprocess.run([sys.executable, "-m", "chainrunner.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120, check=False)


def test_a_users_runner_and_installed_plugins_run_through_the_cli(tmp_path: Path,
                                                                  chain_file: Path) -> None:
    """`reverse` is served by the runner's own generator chainlet, `shout` by an installed
    package's entry point (on the mock generator)."""
    install_entry_point(tmp_path / "site")
    done = _cli(["run", str(chain_file), "--runner", "reverse_runner:ReverseRunner",
                 "--llm", "mock", "--input", "who=bo", "--json"], tmp_path / "site")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["steps"][0]["output"] == "OB OLLEH"
    assert result["output"] == "[mock] loud re:"  # three words: the plugin's `words`


def test_validate_without_a_runner_does_not_import_the_runner(tmp_path: Path,
                                                              chain_file: Path) -> None:
    """Installed plugins are enough to validate; `chainlets.runner` (and truss) stay
    unimported unless a runner is named."""
    install_entry_point(tmp_path / "site")
    chain_file.write_text(json.dumps({"handle": "c", "steps": [CHAIN["steps"][1]]}),
                          encoding="utf-8")
    script = ("import sys\nfrom chainrunner.cli import main\n"
              f"main(['validate', {str(chain_file)!r}], standalone_mode=False)\n"
              "print('runner imported:', 'chainlets.runner' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(EXTENSION), str(tmp_path / "site")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{chain_file}: chain `c` is valid: 1 steps, required inputs: back (used by step `loud`)",
        "runner imported: False"]


# --- in process: every message ------------------------------------------------------------------


def test_validate_uses_the_runners_plugins(chain_file: Path, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert "unknown plugin `reverse`" in one_line(invoke("validate", chain_file).stderr)
    install_entry_point(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = invoke("validate", chain_file, "--runner", "reverse_runner:ReverseRunner")
    assert result.exit_code == 0, result.stderr
    monkeypatch.setenv(RUNNER_ENV, "reverse_runner:ReverseRunner")
    assert invoke("validate", chain_file).exit_code == 0
    assert invoke("graph", chain_file).stdout.startswith("flowchart TD\n")


def test_an_installed_plugin_is_known_and_in_the_schema(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "chain.json"
    spec.write_text(json.dumps({"handle": "c", "steps": [CHAIN["steps"][1]]}), encoding="utf-8")
    assert invoke("validate", spec).exit_code == 2
    install_entry_point(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert invoke("validate", spec).exit_code == 0
    schema: dict[str, Any] = json.loads(invoke("schema").stdout)
    assert "shout" in schema["$defs"]["StepSpec"]["properties"]["plugin"]["anyOf"][0]["enum"]
    schema = json.loads(invoke("schema", "--runner", "reverse_runner:ReverseRunner").stdout)
    names = schema["$defs"]["StepSpec"]["properties"]["plugin"]["anyOf"][0]["enum"]
    assert {"reverse", "shout"} <= set(names)


@pytest.mark.parametrize(("reference", "message"), [
    ("reverse_runner", "`reverse_runner` is not MODULE:CLASS, e.g. my_chains.runner:MyRunner"),
    ("no_such_module:Runner", "cannot import module `no_such_module`: no module named "
                              "`no_such_module` (run from the directory that holds it, or add "
                              "that directory to PYTHONPATH)"),
    ("reverse_runner:Nope", "module `reverse_runner` has no attribute `Nope`"),
    ("reverse_runner:ReverseGenerator", "`reverse_runner:ReverseGenerator` is the class "
                                        "`ReverseGenerator`, not a subclass of "
                                        "chainlets.runner.ChainRunner"),
    ("json:dumps", "`json:dumps` is a function, not a subclass of chainlets.runner.ChainRunner"),
    ("broken_module:Runner", "importing module `broken_module` raised RuntimeError: the user's "
                             f"module is broken ({EXTENSION / 'broken_module.py'}, line 3)"),
], ids=["no-colon", "no-module", "no-attribute", "not-a-runner-class", "not-a-class",
        "module-raises"])
@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_a_bad_runner_reference_exits_2_saying_why(chain_file: Path, command: str,
                                                   reference: str, message: str) -> None:
    result = invoke(command, chain_file, "--runner", reference)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert f"Invalid value for '--runner': {message}" in one_line(result.stderr)


@pytest.mark.parametrize(("entry", "message"), [
    ("shout = no_such_plugins:PLUGINS",
     "loading entry point `shout = no_such_plugins:PLUGINS` of package `shout-plugins` raised "
     "ModuleNotFoundError: No module named 'no_such_plugins'"),
    ("shout = shout_plugins:NOT_A_PLUGIN",
     "entry point `shout = shout_plugins:NOT_A_PLUGIN` of package `shout-plugins` must be a "
     "Plugin or a list of Plugins, not str"),
    ("shout = shout_plugins:CLASHING",
     "entry point `shout` registers plugin `gpt-3`, which the runner already has; rename it"),
], ids=["missing-module", "not-a-plugin", "name-taken"])
def test_a_broken_installed_plugin_exits_2_naming_its_package(
        chain_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entry: str,
        message: str) -> None:
    install_entry_point(tmp_path / "site", entry)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = invoke("validate", chain_file)
    assert result.exit_code == 2
    assert f"Invalid value for installed plugins ({ENTRY_POINT_GROUP}): {message}" \
        in one_line(result.stderr)


def test_a_plugin_name_is_registered_once(chain_file: Path, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    install_entry_point(tmp_path / "site", "shout = shout_plugins:PLUGINS\n"
                                           "again = shout_plugins:PLUGINS\n"
                                           "other = shout_plugins:OTHER_SHOUT")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = invoke("validate", chain_file)
    assert result.exit_code == 2
    # The same Plugin twice is one registration; a different one of that name is a clash.
    assert "entry points `shout` and `other` both register plugin `shout`" \
        in one_line(result.stderr)


# --- functions of the user's own: code steps and tools ------------------------------------------

FUNCTION_CHAIN = {"handle": "fn", "steps": [
    {"handle": "count", "code": {"function": "count_words",
                                 "args": {"text": "{text}", "min_length": 3}}},
    {"handle": "twice", "code": {"function": "double", "args": {"n": "{count}"}}}]}


def install_functions(site: Path, entry: str = "words = word_functions:FUNCTIONS") -> None:
    """An installed distribution with a `chainrunner.functions` entry point."""
    info = site / "word_functions-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: word-functions\nVersion: 0.1\n",
                                   encoding="utf-8")
    (info / "entry_points.txt").write_text(f"[{FUNCTION_ENTRY_POINT_GROUP}]\n{entry}\n",
                                           encoding="utf-8")


def test_a_users_functions_run_as_code_steps_through_the_cli(tmp_path: Path) -> None:
    """`count_words` comes from an installed package's entry point, `double` from the user's
    runner (in its plugins only: it runs in the runner's process)."""
    install_functions(tmp_path / "site")
    spec = tmp_path / "fn.json"
    spec.write_text(json.dumps({**FUNCTION_CHAIN, "steps": [
        FUNCTION_CHAIN["steps"][0],
        {"handle": "twice", "code": {"function": "double", "args": {"n": 21}}}]}),
        encoding="utf-8")
    done = _cli(["run", str(spec), "--runner", "double_runner:DoubleRunner", "--llm", "mock",
                 "--input", "text=a lighthouse on the rocks", "--json"], tmp_path / "site")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [step["output"] for step in result["steps"]] == [
        '{"words":3,"longest":"lighthouse"}', "42"]
    assert [step["backend"] for step in result["steps"]] == ["code", "code"]


def test_an_argument_of_the_wrong_type_fails_the_step_not_the_run(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch
                                                                  ) -> None:
    install_functions(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    spec = tmp_path / "fn.json"
    spec.write_text(json.dumps(FUNCTION_CHAIN), encoding="utf-8")
    result = invoke("run", spec, "--runner", "double_runner:DoubleRunner", "--llm", "mock",
                    "--input", "text=hi", "--json")
    assert result.exit_code == 1
    twice = json.loads(result.stdout)["steps"][1]
    assert twice["statusMessage"] == (
        'FunctionCallError: step `twice`: function `double` argument `n` = '
        '"{\\"words\\":0,\\"longest\\":\\"\\"}" is not a valid int: Input should be a valid '
        "integer")


def test_validate_knows_installed_functions_and_the_schema_lists_them(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = tmp_path / "fn.json"
    spec.write_text(json.dumps({"handle": "c", "steps": [FUNCTION_CHAIN["steps"][0]]}),
                    encoding="utf-8")
    assert "unknown function `count_words`" in one_line(invoke("validate", spec).stderr)
    install_functions(tmp_path / "site")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert invoke("validate", spec).exit_code == 0
    schema: dict[str, Any] = json.loads(invoke("schema").stdout)
    assert "count_words" in schema["$defs"]["CodeSpec"]["properties"]["function"]["enum"]


@pytest.mark.parametrize(("entry", "message"), [
    ("words = word_functions:NOT_A_FUNCTION",
     "entry point `words = word_functions:NOT_A_FUNCTION` of package `word-functions` must be "
     "a Function, a function or a list of them, not int"),
    ("words = word_functions:CLASHING",
     "entry point `words` registers function `pick_winner`, which the runner already has; "
     "rename it"),
], ids=["not-a-function", "name-taken"])
def test_a_broken_installed_function_exits_2_naming_it(tmp_path: Path, chain_file: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       entry: str, message: str) -> None:
    install_functions(tmp_path / "site", entry)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    result = invoke("validate", chain_file)
    assert result.exit_code == 2
    assert (f"Invalid value for installed functions ({FUNCTION_ENTRY_POINT_GROUP}): {message}"
            in one_line(result.stderr))
