"""The gateway's error replies: truss's error envelope in, a message without frames out."""

import json
import traceback

import pytest
from truss_chains import public_types
from truss_chains.remote_chainlet import utils

from chainlets.errors import ChainDefinitionError
from chainlets.http_errors import ChainRequestError
from chainrunner.serve.replies import REJECTION_CLASS, error_reply, without_tracebacks


def _raise_deep() -> None:
    raise ValueError("the root cause")


def _remote_detail(exc: Exception) -> dict[str, object]:
    """What truss's server answers for `exc` raised in a chainlet (its `_handle_exception`)."""
    frames = [public_types.RemoteErrorDetail.StackFrame.from_frame_summary(frame)
              for frame in traceback.extract_tb(exc.__traceback__)]
    detail: dict[str, object] = public_types.RemoteErrorDetail(
        exception_cls_name=type(exc).__name__, exception_module_name=type(exc).__module__,
        exception_message=str(exc), user_stack_trace=frames).model_dump()
    return detail


def _chained_message() -> str:
    """The message of the error a caller chainlet re-raises for a failed dependency."""
    try:
        _raise_deep()
    except ValueError as exc:
        detail = _remote_detail(exc)
    with pytest.raises(Exception) as raised:  # truss picks the class
        utils._handle_response_error({"error": detail}, "Error calling dependency Chainlet "
                                                        "`Greeter`, HTTP status=500", 500)
    return str(raised.value)


def test_a_chained_remote_error_loses_its_frames_and_keeps_its_messages() -> None:
    message = _chained_message()
    assert 'File "' in message and __file__ in message  # what truss puts in it
    cleaned = without_tracebacks(message)
    assert __file__ not in cleaned and "File " not in cleaned
    assert "Chainlet-Traceback" not in cleaned and "raise ValueError" not in cleaned
    assert "Error calling dependency Chainlet `Greeter`, HTTP status=500" in cleaned
    assert "ValueError: the root cause" in cleaned


def test_an_entrypoint_error_is_its_class_and_message_only() -> None:
    try:
        _raise_deep()
    except ValueError as exc:
        body = json.dumps({"error": _remote_detail(exc)}).encode()
    assert json.loads(error_reply(body) or b"") == {"error": "ValueError: the root cause"}


def test_a_rejection_is_answered_with_its_problems() -> None:
    error = ChainDefinitionError("chain `c` is invalid (2 problems):\n  - step `a`: x\n  - cycle",
                                 ["step `a`: x", "cycle"])
    rejection = ChainRequestError.rejecting(error)
    assert (type(rejection).__module__, type(rejection).__name__) == REJECTION_CLASS
    try:
        raise rejection
    except ChainRequestError as exc:
        body = json.dumps({"error": _remote_detail(exc)}).encode()
    assert json.loads(error_reply(body) or b"") == {
        "error": "chain `c` is invalid (2 problems)", "problems": ["step `a`: x", "cycle"]}


@pytest.mark.parametrize("body", [b'{"error": "Input Parsing Error: `chain`: Field required"}',
                                  b"not json", b'["a list"]'],
                         ids=["truss-string-error", "not-json", "not-an-object"])
def test_other_errors_pass_unchanged(body: bytes) -> None:
    assert error_reply(body) is None


def test_a_rejection_is_constructible_from_one_string() -> None:
    assert json.loads(str(ChainRequestError("bad inputs"))) == {
        "error": "bad inputs", "problems": ["bad inputs"]}
