"""Hostile and careless input on the command line: every one a clean exit 2 naming the problem.

Deep nesting, bytes that are not UTF-8, duplicate keys, out-of-range numbers, oversized
prompts, callback URLs that are not http(s), a missing API key: none may reach a model call,
and none may print a traceback.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli import JOKE, clean_env, invoke, one_line, write_json

__all__ = ["clean_env"]  # the autouse fixture: each test starts without backend variables

DEPTH = 10_000


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def chain_text(plugin_config: str = "{}", prompt: str = "x", **extra: Any) -> str:
    extras = "".join(f", {json.dumps(k)}: {json.dumps(v)}" for k, v in extra.items())
    shown = json.dumps(prompt, ensure_ascii=False)
    return ('{"handle": "c", "steps": [{"handle": "a", "plugin": "mock", "prompt": '
            f'{shown}, "plugin_config": {plugin_config}}}]{extras}}}')


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def assert_refused(args: tuple[str | Path, ...], message: str, kind: str = "invalid_chain",
                   stdin: str | None = None) -> None:
    """Exit 2 with `message` on stderr, and under --json one document holding it."""
    plain = invoke(*args, stdin=stdin)
    assert plain.exit_code == 2, plain.output
    assert message in one_line(plain.stderr)
    assert "Traceback" not in plain.output
    as_json = invoke(*args, "--json", stdin=stdin)
    assert as_json.exit_code == 2
    document = json.loads(as_json.stdout)
    assert document["kind"] == kind
    assert any(message in problem for problem in document["problems"]), document


@pytest.mark.parametrize("text", [nested(DEPTH), chain_text(plugin_config=nested(DEPTH)),
                                  "[" * DEPTH + "]" * DEPTH],
                         ids=["top-level", "in-plugin-config", "arrays"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_chain_nested_10000_deep_is_refused(tmp_path: Path, text: str, command: str) -> None:
    spec = write(tmp_path / "deep.json", text)
    assert_refused((command, spec), f"{spec} is nested deeper than the JSON parser goes "
                                    "(Python's recursion limit, 1,000 levels); flatten it")


@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_chain_file_that_is_not_utf8_is_refused_naming_the_byte(tmp_path: Path,
                                                                  command: str) -> None:
    spec = write(tmp_path / "latin1.json", chain_text(prompt="café").encode("latin-1"))
    position = spec.read_bytes().index(b"\xe9") + 1
    assert_refused((command, spec), f"{spec} is not UTF-8 text: byte 0xe9 at line 1, column "
                                    f"{position} is not valid UTF-8; save it as UTF-8")


def test_a_chain_on_stdin_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    spec = write(tmp_path / "latin1.json", chain_text(prompt="café").encode("latin-1"))
    # CliRunner encodes str input as UTF-8: pass the bytes through a file object instead.
    with spec.open("rb") as stdin:
        from click.testing import CliRunner

        from chainrunner.cli import main

        result = CliRunner().invoke(main, ["validate", "-"], input=stdin)
    assert result.exit_code == 2
    assert "<stdin> is not UTF-8 text: byte 0xe9" in result.stderr


def test_a_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    spec = write(tmp_path / "bom.json", b"\xef\xbb\xbf" + chain_text().encode())
    result = invoke("validate", spec)
    assert result.exit_code == 0, result.output


def test_an_inputs_file_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    inputs = write(tmp_path / "inputs.json", '{"topic": "café"}'.encode("latin-1"))
    assert_refused(("run", JOKE, "--llm", "mock", "--inputs-file", inputs),
                   f"{inputs} is not UTF-8 text: byte 0xe9 at line 1, column 15", kind="usage")


def test_an_inputs_file_nested_10000_deep_is_refused(tmp_path: Path) -> None:
    inputs = write(tmp_path / "inputs.json", '{"topic": ' + nested(DEPTH) + "}")
    assert_refused(("run", JOKE, "--llm", "mock", "--inputs-file", inputs),
                   f"{inputs} is nested deeper than the JSON parser goes", kind="usage")


@pytest.mark.parametrize(("text", "key", "keys"), [
    ('{"handle": "c", "handle": "d", "steps": []}', "handle", "`handle`, `steps`"),
    (chain_text(plugin_config='{"max_words": 3, "max_words": 30}'), "max_words", "`max_words`"),
], ids=["chain", "plugin-config"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_a_duplicate_key_in_a_chain_is_refused_naming_it(tmp_path: Path, text: str, key: str,
                                                         keys: str, command: str) -> None:
    spec = write(tmp_path / "dup.json", text)
    assert_refused((command, spec), f"{spec}: key `{key}` appears more than once in the JSON "
                                    f"object with keys {keys}; a key may appear once: keep "
                                    "the one you mean")


def test_a_duplicate_key_in_an_inputs_file_is_refused(tmp_path: Path) -> None:
    inputs = write(tmp_path / "inputs.json", '{"topic": "a", "topic": "b"}')
    assert_refused(("run", JOKE, "--llm", "mock", "--inputs-file", inputs),
                   f"{inputs}: key `topic` appears more than once", kind="usage")


def test_the_python_api_refuses_a_deeply_nested_chain_built_in_code() -> None:
    import chainrunner

    config: Any = 1
    for _ in range(DEPTH):
        config = {"a": config}
    chain = {"handle": "c", "steps": [{"handle": "a", "plugin": "mock", "prompt": "x",
                                       "plugin_config": config}]}
    with pytest.raises(chainrunner.ChainDefinitionError,
                       match="nested deeper than Python's recursion limit"):
        chainrunner.validate(chain)


def test_a_valid_chain_still_runs(tmp_path: Path) -> None:
    result = invoke("run", write_json(tmp_path / "ok.json", json.loads(chain_text())), "--llm",
                    "mock", "--json")
    assert result.exit_code == 0, result.output
