"""The repair loop: a reply that is not JSON or does not meet the step's output_schema is
re-prompted with its errors, up to max_repairs; each repair is an attempt of kind `schema`;
then the step fails with error kind `schema`. Path reads of outputs at run time."""

import json
from typing import Any

from chainlets.engine.models import ErrorKind, GenerationRequest, InvocationResult, RunOptions
from chainlets.engine.models import RunState as S
from chainlets.engine.scheduler import run_chain
from chainlets.errors import GenerationError, TransientGenerationError
from chainlets.generators.mock_model import MockModel, MockScript
from chainlets.language.compiler import compile_chain
from mocks.fake_generator import FakeGenerator
from tests.test_catalog import ScriptedMock

FAST = RunOptions(initial_backoff_s=0, max_backoff_s=0)
SCORE: dict[str, Any] = {"type": "object", "properties": {"score": {"type": "integer"},
                                                         "why": {"type": "string"}},
                         "required": ["score"]}


def judge(**more: Any) -> dict[str, Any]:
    return {"handle": "judge", "plugin": "mock", "prompt": "Score {topic} as JSON",
            "output_schema": SCORE, **more}


async def run(steps: list[dict[str, Any]], fake: FakeGenerator | ScriptedMock,
              options: RunOptions = FAST) -> InvocationResult:
    chain = compile_chain({"handle": "c", "steps": steps})
    return await run_chain(chain, {"topic": "tea"}, {"mock": fake}, options)


async def test_an_invalid_reply_is_repaired_and_each_repair_is_an_attempt() -> None:
    fake = FakeGenerator(replies={"judge": ["Sure: score 7", '{"score": "7"}',
                                            '{"score": 7, "why": "fine"}']})
    result = await run([judge(), {"handle": "say", "plugin": "mock",
                                  "prompt": "{judge.score} because {judge.why}"}], fake)
    record = result.step("judge")
    assert result.state == record.state == S.SUCCEEDED
    assert record.output == '{"score": 7, "why": "fine"}'
    assert [(a.number, a.error_kind) for a in record.attempts] == [
        (1, ErrorKind.SCHEMA), (2, ErrorKind.SCHEMA), (3, None)]
    assert record.attempts[0].error == (
        "OutputSchemaError: the reply does not meet output_schema: the reply is not JSON: "
        "Expecting value at line 1, column 1")
    assert record.attempts[1].error == (
        "OutputSchemaError: the reply does not meet output_schema: at `$.score`: '7' is not of "
        "type 'integer'")
    # Every call's tokens: the fake counts 2 a call.
    assert record.usage is not None and record.usage.total_tokens == 6
    assert fake.requests[-1].messages[-1].content == "7 because fine"


async def test_a_repair_sends_the_reply_and_its_errors_after_the_step_messages() -> None:
    fake = FakeGenerator(replies={"judge": ['{"why": 3}', '{"score": 1}']})
    await run([judge(system_prompt="Be fair.")], fake)
    first, repair = fake.requests
    assert [m.role for m in first.messages] == ["system", "user"]
    assert repair.messages[:2] == first.messages
    assert (repair.messages[2].role, repair.messages[2].content) == ("assistant", '{"why": 3}')
    assert repair.messages[3].role == "user"
    assert repair.messages[3].content == (
        "Your reply does not meet the required JSON Schema:\n"
        "- at `$.why`: 3 is not of type 'string'\n"
        "- at `$`: 'score' is a required property\n\n"
        f"The schema: {json.dumps(SCORE)}\n\n"
        "Reply again with only the corrected JSON document.")
    assert first.output_schema == repair.output_schema == SCORE


async def test_after_its_bound_the_step_fails_with_error_kind_schema() -> None:
    fake = FakeGenerator(replies={"judge": '{"score": "high"}'})
    result = await run([judge(max_repairs=1), {"handle": "after", "plugin": "mock",
                                               "prompt": "{judge}"}], fake)
    record = result.step("judge")
    assert result.state == record.state == S.FAILED
    assert record.error_kind == ErrorKind.SCHEMA
    assert record.statusMessage == (
        "OutputSchemaError: step `judge`: the reply does not meet output_schema after 1 "
        "repair(s) (max_repairs=1): at `$.score`: 'high' is not of type 'integer'")
    assert [a.error_kind for a in record.attempts] == [ErrorKind.SCHEMA, ErrorKind.SCHEMA]
    assert fake.calls("judge") == 2
    assert result.step("after").state == S.SKIPPED


async def test_max_repairs_zero_fails_at_the_first_invalid_reply() -> None:
    fake = FakeGenerator(replies={"judge": "[1, 2]"})
    result = await run([judge(max_repairs=0)], fake)
    assert result.step("judge").error_kind == ErrorKind.SCHEMA
    assert "after 0 repair(s) (max_repairs=0): at `$`: [1, 2] is not of type 'object'" in (
        result.step("judge").statusMessage or "")
    assert fake.calls("judge") == 1


async def test_a_transient_failure_during_a_repair_is_retried_as_any_call() -> None:
    fake = FakeGenerator(replies={"judge": [
        "nope", TransientGenerationError("busy"), '{"score": 2}']})
    result = await run([judge()], fake)
    record = result.step("judge")
    assert record.state == S.SUCCEEDED and record.output == '{"score": 2}'
    assert [a.error_kind for a in record.attempts] == [ErrorKind.SCHEMA, ErrorKind.MODEL, None]


async def test_a_fatal_failure_during_a_repair_fails_the_step_with_its_own_kind() -> None:
    fake = FakeGenerator(replies={"judge": ["nope", GenerationError("refused")]})
    result = await run([judge()], fake)
    assert result.step("judge").error_kind == ErrorKind.MODEL
    assert result.step("judge").statusMessage == "GenerationError: refused"


async def test_the_output_is_canonical_json_text() -> None:
    fake = FakeGenerator(replies={"judge": '```json\n{ "score" : 3,\n "why": "é" }\n```'})
    result = await run([judge()], fake)
    assert result.step("judge").output == '{"score": 3, "why": "é"}'
    assert len(result.step("judge").attempts) == 1


async def test_nan_is_not_json() -> None:
    fake = FakeGenerator(replies={"judge": ['{"score": NaN}', '{"score": 0}']})
    result = await run([judge()], fake)
    assert result.step("judge").attempts[0].error == (
        "OutputSchemaError: the reply does not meet output_schema: the reply is not JSON: "
        "`NaN` is not JSON")


async def test_the_mock_repairs_as_scripted_and_answers_the_schema_unscripted() -> None:
    script = MockScript(rules=[{"step": "judge", "times": 1, "reply": "no JSON here"}])
    result = await run([judge()], ScriptedMock(script))
    record = result.step("judge")
    assert record.state == S.SUCCEEDED
    assert json.loads(record.output or "") == {"score": 0}
    assert [a.error_kind for a in record.attempts] == [ErrorKind.SCHEMA, None]


async def test_the_mock_is_asked_for_json_and_gets_the_schema() -> None:
    model = MockModel()
    chain = compile_chain({"handle": "c", "steps": [judge()]})
    seen: list[GenerationRequest] = []

    class Recording:
        async def run_remote(self, request: GenerationRequest) -> Any:
            seen.append(request)
            return await model.generate(request)

    result = await run_chain(chain, {"topic": "t"}, {"mock": Recording()}, FAST)
    assert result.state == S.SUCCEEDED
    assert seen[0].output_schema == SCORE
    assert result.step("judge").capabilities == {"json_mode": "native"}


async def test_a_path_read_of_a_value_that_is_not_json_fails_the_reading_step() -> None:
    fake = FakeGenerator(replies={"plain": "just words"})
    result = await run([{"handle": "plain", "plugin": "mock", "prompt": "x"},
                        {"handle": "read", "plugin": "mock", "prompt": "{plain.score}"}], fake)
    record = result.step("read")
    assert result.state == record.state == S.FAILED
    assert record.statusMessage == (
        "StepDataError: step `read`: `{plain.score}` reads a field of `plain`, which is not "
        'JSON (Expecting value): "just words"')
    assert record.attempts == [] and fake.calls("read") == 0


async def test_a_path_read_of_a_missing_field_fails_the_reading_step() -> None:
    fake = FakeGenerator(replies={"plain": '{"scores": [1]}'})
    result = await run([{"handle": "plain", "plugin": "mock", "prompt": "x"},
                        {"handle": "read", "plugin": "mock", "prompt": "{plain.scores[1]}",
                         "system_prompt": "s"}], fake)
    assert result.step("read").statusMessage == (
        "StepDataError: step `read`: `{plain.scores[1]}`: `plain` has nothing at `scores[1]` "
        "(at `scores` it has a list of 1 item)")


async def test_path_reads_of_inputs_and_map_items() -> None:
    fake = FakeGenerator(default=lambda r: r.messages[-1].content)
    chain = compile_chain({"handle": "c", "steps": [
        {"handle": "m", "plugin": "mock", "prompt": "{p.name} of {cfg.who[1]}",
         "map": {"over": "people", "item": "p"}}]})
    result = await run_chain(chain, {"people": [{"name": "Ann"}, {"name": "Bob"}],
                                     "cfg": {"who": ["x", "y"]}}, {"mock": fake}, FAST)
    assert json.loads(result.step("m").output or "") == ["Ann of y", "Bob of y"]


async def test_retry_on_schema_starts_over_with_a_fresh_conversation_once_repairs_are_spent(
) -> None:
    fake = FakeGenerator(replies={"judge": ['{"score": "a"}', '{"score": "b"}',
                                            '{"score": 4}']})
    result = await run([judge(max_repairs=1, retry={"max_attempts": 2, "on": ["schema"],
                                                    "initial_backoff_s": 0})], fake)
    record = result.step("judge")
    assert result.state == record.state == S.SUCCEEDED
    assert record.output == '{"score": 4}'
    assert [a.error_kind for a in record.attempts] == [ErrorKind.SCHEMA, ErrorKind.SCHEMA, None]
    first, repair, again = fake.requests
    assert len(repair.messages) == 3  # the prompt, the reply, its errors
    assert again.messages == first.messages  # a fresh conversation, not a third repair


async def test_retry_on_schema_stops_at_max_attempts_and_without_it_nothing_starts_over(
) -> None:
    bad = FakeGenerator(replies={"judge": '{"score": "a"}'})
    result = await run([judge(max_repairs=0, retry={"max_attempts": 3, "on": ["schema"],
                                                    "initial_backoff_s": 0})], bad)
    assert result.step("judge").error_kind == ErrorKind.SCHEMA
    assert len(bad.requests) == 3
    other = FakeGenerator(replies={"judge": '{"score": "a"}'})
    result = await run([judge(max_repairs=0, retry={"max_attempts": 3, "on": ["timeout"],
                                                    "initial_backoff_s": 0})], other)
    assert result.step("judge").state == S.FAILED
    assert len(other.requests) == 1


async def test_a_map_with_an_output_schema_holds_its_items_as_json_values() -> None:
    chain = compile_chain({"handle": "c", "inputs": [{"name": "xs", "default": ["a", "b"]}],
                           "steps": [judge(prompt="Score {item}", map={"over": "xs"}),
                                     {"handle": "say", "plugin": "mock",
                                      "prompt": "{judge[0].score} then {judge[1].score}"}]})
    fake = FakeGenerator(replies={"judge[0]": '{"score": 3}', "judge[1]": '{"score": 5}'})
    result = await run_chain(chain, {}, {"mock": fake}, FAST)
    assert json.loads(result.step("judge").output or "") == [{"score": 3}, {"score": 5}]
    assert fake.requests[-1].messages[-1].content == "3 then 5"
