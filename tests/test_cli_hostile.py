"""Hostile and careless input on the command line: every one a clean exit 2 naming the problem.

Deep nesting, bytes that are not UTF-8, duplicate keys, out-of-range numbers, oversized
prompts, callback URLs that are not http(s), a missing API key: none may reach a model call,
and none may print a traceback.
"""

import json
from pathlib import Path
from typing import Any

import pytest

from chainlets.errors import ConfigurationError
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


# --- limits: max_tokens, max_words, the prompt's length; callback_url --------------------------


def one_step(plugin: str, plugin_config: dict[str, Any]) -> dict[str, Any]:
    return {"handle": "c", "steps": [
        {"handle": "a", "plugin": plugin, "prompt": "x", "plugin_config": plugin_config}]}


@pytest.mark.parametrize(("plugin", "config", "message"), [
    ("gpt-3", {"max_words": 1e30}, "step `a`: plugin_config.max_words = 1e+30 is invalid for "
     "plugin `gpt-3`: 1e+30 is over the limit of 50,000 words set by CHAINRUNNER_MAX_WORDS; "
     "lower it or raise CHAINRUNNER_MAX_WORDS"),
    ("mock", {"max_words": 50_001}, "50,001 is over the limit of 50,000 words set by "
     "CHAINRUNNER_MAX_WORDS"),
    ("openai", {"max_tokens": 10**6}, "step `a`: plugin_config.max_tokens = 1000000 is invalid "
     "for plugin `openai`: 1,000,000 is over the limit of 128,000 tokens set by "
     "CHAINRUNNER_MAX_TOKENS; lower it or raise CHAINRUNNER_MAX_TOKENS"),
], ids=["gpt-3-max-words-1e30", "mock-max-words", "openai-max-tokens"])
@pytest.mark.parametrize("command", ["validate", "run"])
def test_max_words_and_max_tokens_have_an_upper_bound(tmp_path: Path, plugin: str,
                                                      config: dict[str, Any], message: str,
                                                      command: str) -> None:
    spec = write_json(tmp_path / "c.json", one_step(plugin, config))
    backend = ("--llm", "mock") if command == "run" else ()
    assert_refused((command, spec, *backend), message)


def test_the_bounds_are_raised_by_their_variables(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_WORDS", "100000")
    monkeypatch.setenv("CHAINRUNNER_MAX_TOKENS", "1_000_000")
    for plugin, config in (("gpt-3", {"max_words": 60_000}), ("openai", {"max_tokens": 10**6})):
        result = invoke("validate", write_json(tmp_path / "c.json", one_step(plugin, config)))
        assert result.exit_code == 0, result.output


def test_a_malformed_limit_variable_is_a_usage_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_WORDS", "lots")
    assert_refused(("validate", JOKE), "CHAINRUNNER_MAX_WORDS='lots' is not valid; set it to a "
                                       "positive whole number of words (default 50,000)",
                   kind="usage")


def test_an_input_that_makes_a_prompt_too_long_is_refused_before_any_call(
        tmp_path: Path) -> None:
    inputs = write_json(tmp_path / "inputs.json", {"topic": "x" * 1_000_000})
    assert_refused(("run", JOKE, "--llm", "mock", "--inputs-file", inputs),
                   "step `tell-joke`: the prompt with these inputs is 1,000,021 characters, over "
                   "the limit of 1,000,000 characters set by CHAINRUNNER_MAX_PROMPT_CHARS; "
                   "shorten it or raise CHAINRUNNER_MAX_PROMPT_CHARS", kind="invalid_inputs")


def test_a_prompt_template_over_the_limit_is_an_invalid_chain(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_PROMPT_CHARS", "20")
    spec = write_json(tmp_path / "c.json", {"handle": "c", "steps": [
        {"handle": "a", "plugin": "mock", "prompt": "y" * 15, "system_prompt": "z" * 15}]})
    assert_refused(("validate", spec), "step `a`: the prompt's own text (its messages' "
                                       "templates together) is 30 characters, over the limit "
                                       "of 20 characters set by CHAINRUNNER_MAX_PROMPT_CHARS")


def test_a_prompt_an_earlier_output_makes_too_long_fails_its_step_without_a_call(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHAINRUNNER_MAX_PROMPT_CHARS", "100")
    spec = write_json(tmp_path / "c.json", {"handle": "c", "steps": [
        {"handle": "a", "plugin": "mock", "prompt": "talk"},
        {"handle": "b", "plugin": "mock", "prompt": "Summarize: {a}"}]})
    script = write_json(tmp_path / "script.json",
                        {"rules": [{"step": "a", "reply": " ".join(["word"] * 30)}]})
    result = invoke("run", spec, "--llm", "mock", "--mock-script", script, "--json")
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    b = next(step for step in document["steps"] if step["handle"] == "b")
    assert b["state"] == "failed"
    assert b["statusMessage"] == (
        "PayloadTooLargeError: step `b`: the rendered prompt is 160 characters, over the limit "
        "of 100 characters set by CHAINRUNNER_MAX_PROMPT_CHARS; shorten it or raise "
        "CHAINRUNNER_MAX_PROMPT_CHARS")
    assert b["attempts"] == []  # refused before its call


@pytest.mark.parametrize("url", ["ftp://example.com/hook", "example.com/hook", "https://",
                                 "javascript:alert(1)"])
def test_a_callback_url_that_is_not_http_is_refused(tmp_path: Path, url: str) -> None:
    spec = write_json(tmp_path / "c.json", {**one_step("mock", {}), "callback_url": url})
    assert_refused(("validate", spec), f"chain: `callback_url` = {json.dumps(url)} is invalid: "
                                       "not an http(s) URL; write it as https://host/path (or "
                                       "http://)")


@pytest.mark.parametrize("url", ["https://example.com/hook?x=1", "http://127.0.0.1:8080/cb",
                                 "HTTPS://Example.com"])
def test_an_http_callback_url_is_accepted_as_written(url: str) -> None:
    import chainrunner

    chain = chainrunner.validate({**one_step("mock", {}), "callback_url": url})
    assert chain.spec.callback_url == url


# --- configuration found before any call --------------------------------------------------------

NO_KEY = ("the openai backend (--llm openai) would serve steps `tell-joke`, `judge-joke`, and "
          "OPENAI_API_KEY is not set: export OPENAI_API_KEY=sk-… (any value for a local "
          "OpenAI-compatible server at OPENAI_BASE_URL), or run with --llm mock for the offline "
          "mock")


def test_llm_openai_without_a_key_exits_2_before_any_call(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A server that would fail the test if called: nothing may reach it.
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert_refused(("run", JOKE, "-i", "topic=x", "--llm", "openai"), NO_KEY, kind="usage")
    monkeypatch.setenv("CHAINRUNNER_LLM", "openai")
    assert_refused(("run", JOKE, "-i", "topic=x"), NO_KEY, kind="usage")


def test_llm_openai_without_a_key_is_fine_when_no_step_uses_it(tmp_path: Path) -> None:
    spec = write_json(tmp_path / "c.json", one_step("mock", {}))
    result = invoke("run", spec, "--llm", "openai", "--json")
    assert result.exit_code == 0, result.output


def test_the_python_api_raises_for_openai_without_a_key() -> None:
    import chainrunner

    with pytest.raises(ConfigurationError, match="OPENAI_API_KEY is not set"):
        chainrunner.run_sync(JOKE, {"topic": "x"}, llm="openai")
