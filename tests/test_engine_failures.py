"""What a record says about a failed call, for errors raised in process and re-raised by truss.

Deployed, truss re-raises a generator chainlet's error in the runner from its HTTP reply, with
the remote traceback in the message; these tests make those errors with truss's own code.
"""

from collections.abc import Callable

import fastapi
import pytest
from truss_chains.remote_chainlet import utils as truss_utils

from chainlets.engine.failures import Failure, describe_failure
from chainlets.engine.models import ErrorKind, RunOptions, RunState
from chainlets.engine.scheduler import run_chain
from chainlets.errors import GenerationError
from chainlets.language.compiler import compile_chain
from chainlets.language.spec import parse_chain
from mocks.fake_generator import FakeGenerator


class _Unknown(Exception):
    """Stands for a class the runner cannot import: truss falls back to its generic error."""


def _raised_remotely(raise_it: Callable[[], None], chainlet: str = "MockGenerator") -> Exception:
    """The error truss raises in the caller when `raise_it` raises in a remote chainlet."""
    try:
        try:
            raise_it()
        except Exception as exc:
            truss_utils._handle_exception(exc)  # the chainlet's server: error → HTTP detail
    except fastapi.HTTPException as http:
        try:  # the caller's stub: HTTP detail → the same class, re-raised
            truss_utils._handle_response_error(
                {"error": http.detail}, truss_utils._make_base_error_message(chainlet, 500), 500)
        except Exception as re_raised:
            return re_raised
    raise AssertionError("nothing was raised")


def _raise(exc: Exception) -> Callable[[], None]:
    def raise_it() -> None:
        raise exc
    return raise_it


def _scripted_failure() -> None:
    raise GenerationError("mock: scripted failure for step `judge`\nsecond line")


def _division() -> None:
    print(1 / 0)


def _forwarded() -> None:  # a chainlet that calls another, which fails
    raise _raised_remotely(_scripted_failure, "MockGenerator")


@pytest.mark.parametrize(("raise_it", "expected"), [
    (_scripted_failure, Failure(ErrorKind.MODEL, "GenerationError: mock: scripted failure for "
                                                 "step `judge`\nsecond line")),
    (_division, Failure(ErrorKind.INTERNAL, "internal error in generator `mock`: "
                                            "ZeroDivisionError: division by zero")),
    (_forwarded, Failure(ErrorKind.MODEL, "GenerationError: mock: scripted failure for step "
                                          "`judge`\nsecond line")),
    (_raise(_Unknown("")), Failure(ErrorKind.INTERNAL, "internal error in generator `mock`: "
                                                       "_Unknown")),
    (_raise(KeyError("k")), Failure(ErrorKind.INTERNAL, "internal error in generator `mock`: "
                                                        "KeyError: 'k'")),
], ids=["model", "internal", "chained", "empty-message", "builtin"])
def test_a_remote_error_is_recorded_as_its_root_type_and_message(
        raise_it: Callable[[], None], expected: Failure) -> None:
    re_raised = _raised_remotely(raise_it)
    assert "Chainlet-Traceback" in str(re_raised)  # what truss puts in the message
    failure = describe_failure(re_raised, "generator `mock`")
    assert failure == expected
    assert "File " not in failure.message and __file__ not in failure.message


def test_an_unparsable_remote_error_keeps_only_the_line_naming_the_chainlet() -> None:
    garbled = GenerationError("(showing chained remote errors, root error at the bottom)\n"
                              "├─ Error calling dependency Chainlet `MockGenerator`, HTTP "
                              "status=500.\n│   File \"/srv/app.py\", line 3\n╰   garbage")
    assert describe_failure(garbled, "generator `mock`") == Failure(
        ErrorKind.MODEL, "GenerationError: Error calling dependency Chainlet `MockGenerator`, "
                         "HTTP status=500.")


@pytest.mark.parametrize(("error", "kind"), [
    (TimeoutError("slow"), ErrorKind.TIMEOUT),
    (ConnectionResetError("reset"), ErrorKind.CONNECTION),
    (ValueError("bad"), ErrorKind.INTERNAL),
], ids=["timeout", "connection", "internal"])
def test_an_error_raised_in_process_keeps_its_message(error: Exception, kind: ErrorKind) -> None:
    failure = describe_failure(error, "the engine")
    assert failure.kind == kind
    assert failure.message.endswith(f"{type(error).__name__}: {error}")
    assert failure.message.startswith("internal error in the engine: ") == \
        (kind == ErrorKind.INTERNAL)


async def test_a_step_failed_by_a_remote_error_shows_no_traceback() -> None:
    compiled = compile_chain(parse_chain({"handle": "c", "steps": [
        {"handle": "judge", "prompt": "go", "plugin": "mock"}]}))
    fake = FakeGenerator(replies={"judge": _raised_remotely(_division)})
    result = await run_chain(compiled, {}, {"mock": fake}, RunOptions())
    record = result.step("judge")
    assert (record.state, record.error_kind, record.statusMessage) == (
        RunState.FAILED, ErrorKind.INTERNAL,
        "internal error in generator `mock`: ZeroDivisionError: division by zero")
    assert result.statusMessage == f"step `judge` failed: {record.statusMessage}"
    assert "Traceback" not in result.model_dump_json()
