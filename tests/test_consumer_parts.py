"""The consumer loop's parts on their own, without a broker or PostgreSQL: per-key turns, the outcome
type, the recorded form of outputs and the dead-letter id."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import uuid

import pytest
from aiokafka import ConsumerRecord

from events import ChatError, ChatQuestion, ErrorCode
from services.infra.dead_letters import DeadLetters, _dead_letter_id
from services.infra.keyed_scheduler import Job, KeyedScheduler
from services.infra.outcomes import AlreadyDone, Failed, Handled, Invalid, Outcome, Republish
from services.infra.processed_events import _outputs_json, revive


def _recorder(log: list[str], label: str, seconds: float, fail: bool = False) -> Job:
    async def job() -> None:
        log.append(f"start {label}")
        await asyncio.sleep(seconds)
        log.append(f"end {label}")
        if fail:
            raise RuntimeError(label)

    return job


async def test_one_keys_jobs_run_one_at_a_time_in_submission_order() -> None:
    turns = KeyedScheduler()
    log: list[str] = []
    tasks = [
        turns.submit("k", _recorder(log, "a", 0.05)),
        turns.submit("k", _recorder(log, "b", 0.0)),
        turns.submit("k", _recorder(log, "c", 0.01)),
    ]
    await asyncio.gather(*tasks)
    assert log == ["start a", "end a", "start b", "end b", "start c", "end c"]


async def test_other_keys_run_at_once_and_a_slow_key_holds_back_only_itself() -> None:
    turns = KeyedScheduler()
    log: list[str] = []
    slow = turns.submit("slow", _recorder(log, "slow", 0.2))
    fast = [turns.submit("fast", _recorder(log, f"fast-{i}", 0.0)) for i in range(3)]
    other = turns.submit("other", _recorder(log, "other", 0.0))
    await asyncio.gather(*fast, other)
    assert not slow.done()
    assert "end slow" not in log
    assert [e for e in log if e.startswith("end fast")] == ["end fast-0", "end fast-1", "end fast-2"]
    await slow
    assert log[-1] == "end slow"


async def test_a_job_that_fails_or_is_cancelled_does_not_stop_its_keys_later_jobs() -> None:
    turns = KeyedScheduler()
    log: list[str] = []
    failing = turns.submit("k", _recorder(log, "failing", 0.01, fail=True))
    started = asyncio.Event()

    async def never_ends() -> None:
        log.append("start cancelled")
        started.set()
        await asyncio.sleep(3600)

    cancelled = turns.submit("k", never_ends)
    after = turns.submit("k", _recorder(log, "after", 0.0))
    await asyncio.wait_for(started.wait(), 5)
    # The later job still waits its turn, behind a job that raised and one that is still running.
    assert "start after" not in log
    cancelled.cancel()
    await after
    assert log == ["start failing", "end failing", "start cancelled", "start after", "end after"]
    with pytest.raises(RuntimeError):
        failing.result()
    assert cancelled.cancelled()


async def test_a_job_submitted_to_a_busy_key_waits_and_idle_keys_are_forgotten() -> None:
    turns = KeyedScheduler()
    log: list[str] = []
    first = turns.submit("k", _recorder(log, "first", 0.05))
    await asyncio.sleep(0.01)
    assert turns.pending_keys() == {"k"}
    second = turns.submit("k", _recorder(log, "second", 0.0))
    await first
    # The key stays held while its last job is still to run.
    assert turns.pending_keys() == {"k"}
    await second
    await asyncio.sleep(0)
    assert log == ["start first", "end first", "start second", "end second"]
    assert turns.pending_keys() == set()
    # A key whose jobs all ended starts afresh: nothing to wait on.
    again = turns.submit("k", _recorder(log, "again", 0.0))
    await again
    assert log[-2:] == ["start again", "end again"]


def _question() -> ChatQuestion:
    return ChatQuestion(project_id="p", conversation_id="c", user_id="u", question="q")


def _answer(question: ChatQuestion) -> ChatError:
    out = ChatError(
        project_id="p",
        question_event_id=question.event_id,
        conversation_id="c",
        code=ErrorCode.internal,
        message="m",
        stage="parts-test",
    )
    return out.with_derived_id(question.event_id, "parts-test")  # type: ignore[no-any-return]


def _settles_to(outcome: Outcome) -> str:
    # The same shape of match the finisher uses: every outcome is one of these, and nothing else.
    match outcome:
        case Handled(outputs=outputs):
            return f"record and publish {len(outputs)}"
        case Republish(outputs=stored):
            return f"re-publish {len(stored)}"
        case Invalid(reason=reason):
            return f"dead-letter {reason}"
        case Failed(error=error):
            return f"dead-letter processing_failed ({error})"
        case AlreadyDone():
            return "nothing"


def test_each_outcome_is_one_immutable_case() -> None:
    question = _question()
    outcomes: list[Outcome] = [
        Handled(question, [_answer(question)]),
        Republish(question, []),
        Invalid("unparseable", "empty message", []),
        Failed(question, ValueError("boom")),
        AlreadyDone(),
    ]
    assert [_settles_to(o) for o in outcomes] == [
        "record and publish 1",
        "re-publish 0",
        "dead-letter unparseable",
        "dead-letter processing_failed (boom)",
        "nothing",
    ]
    with pytest.raises(dataclasses.FrozenInstanceError):
        outcomes[0].outputs = []  # type: ignore[misc,union-attr]


def test_recorded_outputs_revive_as_the_events_that_were_published() -> None:
    question = _question()
    answer = _answer(question)
    stored = json.loads(_outputs_json([(answer, answer.model_dump_json())]))
    assert stored[0]["__topic"] == ChatError.topic
    revived = revive(stored[0])
    assert revived == answer
    assert json.loads(_outputs_json([])) == []


def _record(
    value: bytes, *, topic: str = "pfx.chat.question", offset: int = 7, timestamp: int = 1000
) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(
        topic=topic,
        partition=2,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=b"p",
        value=value,
        checksum=None,
        serialized_key_size=1,
        serialized_value_size=len(value),
        headers=[],
    )


def test_a_dead_letters_id_is_the_records_identity() -> None:
    record = _record(b"not json")
    digest = hashlib.sha256(b"not json").hexdigest()
    expected = uuid.uuid5(uuid.NAMESPACE_URL, f"group/pfx.chat.question/2/7/1000/{digest}")
    assert _dead_letter_id("group", record, b"not json") == expected
    # Redelivered, the same record is the same letter; another record at that position is another letter.
    assert _dead_letter_id("group", _record(b"not json"), b"not json") == expected
    others = [
        _dead_letter_id("group", _record(b"other"), b"other"),
        _dead_letter_id("group", _record(b"not json", timestamp=1001), b"not json"),
        _dead_letter_id("group", _record(b"not json", topic="qa.chat.question"), b"not json"),
        _dead_letter_id("other-group", record, b"not json"),
    ]
    assert expected not in others and len(set(others)) == len(others)


def test_a_letter_names_the_topic_without_the_prefix_and_keeps_a_capped_payload() -> None:
    letters = DeadLetters(None, consumer="parts-test", group_id="group", prefix="pfx.")  # type: ignore[arg-type]
    value = b"x" * 30_000
    letter = letters.letter_for(_record(value), "invalid", "e" * 3000)
    assert letter.source_topic == "chat.question"
    assert letter.event_id == _dead_letter_id("group", _record(value), value)
    assert (letter.partition, letter.offset, letter.key) == (2, 7, "p")
    assert len(letter.error) == 2000
    assert letter.payload_size == 30_000 and len(letter.payload_text) == 20_000
