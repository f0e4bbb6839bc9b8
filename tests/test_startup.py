"""Start-up stays lean: what each command imports, and the start-up benchmark still runs.

Speed itself is measured by `python -m benchmarks.startup`, not here; these tests pin its cause:
the light commands import neither truss, rich, the openai SDK nor `serve`, and `run` on the
mock backend does not import the openai SDK.
"""

import json
import os
import subprocess
import sys

import pytest

from benchmarks import startup as bench
from tests.test_cli import JOKE, REPO, SOUNDTRACK

# Run in a fresh interpreter: this test process has imported everything already.
_PROBE = """
import json, sys
from chainrunner.cli import main
code = main(sys.argv[1:], standalone_mode=False)
sys.stderr.write("\\n" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""
HEAVY = ("truss", "truss_chains", "openai", "rich", "chainlets.runner", "chainrunner.serve")


def imported_by(*args: str) -> set[str]:
    env = {k: v for k, v in os.environ.items() if k not in bench.UNSET_ENV}
    done = subprocess.run([sys.executable, "-c", _PROBE, *args], capture_output=True,
                          text=True, cwd=REPO, env=env, check=False)
    report = json.loads(done.stderr.rsplit("\n", 1)[-1])
    assert report["code"] in (0, None), done.stderr
    return {name.split(".")[0] if not name.startswith(("chainlets.", "chainrunner."))
            else ".".join(name.split(".")[:2]) for name in report["modules"]}


@pytest.mark.parametrize("args", [
    ("validate", str(JOKE)), ("graph", str(SOUNDTRACK)), ("schema",),
], ids=["validate", "graph", "schema"])
def test_light_commands_import_no_heavy_dependency(args: tuple[str, ...]) -> None:
    assert imported_by(*args).isdisjoint(HEAVY)


def test_jsonschema_is_imported_only_for_a_chain_with_an_output_schema() -> None:
    assert "jsonschema" not in imported_by("validate", str(JOKE))
    assert "jsonschema" in imported_by("validate", str(REPO / "chains/specs/json-fixer.json"))


def test_help_imports_only_what_lists_the_commands() -> None:
    # Listing `serve` in the help imports its command module, which imports no heavy package;
    # nothing needs the chain language's models.
    assert imported_by("--help").isdisjoint({*HEAVY, "pydantic"} - {"chainrunner.serve"})


def test_a_mock_run_imports_truss_but_not_the_openai_sdk() -> None:
    modules = imported_by("run", str(JOKE), "--input", "topic=x", "--llm", "mock", "--json")
    assert {"truss_chains", "chainlets.runner"} <= modules
    assert "openai" not in modules
    assert "chainrunner.serve" not in modules


# --- the benchmark (untimed) ----------------------------------------------------------------------


def test_the_startup_benchmark_runs_every_case_and_renders_a_row_each() -> None:
    rows, floor = bench.measure(bench.CASES, repeat=1)
    assert [row.case for row in rows] == list(bench.CASES)
    assert all(len(row.times_s) == 1 and row.times_s[0] > 0 for row in (*rows, floor))
    table = bench.render(rows, floor, repeat=1)
    for case in bench.CASES:
        assert case.label in table
    assert "python -c pass" in table


def test_the_benchmark_finds_truss_among_the_imports_of_run() -> None:
    run = next(case for case in bench.CASES if case.args[0] == "run")
    assert "truss_chains" in dict(bench.heaviest_imports(run, top=20))
