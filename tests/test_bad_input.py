"""Property-based: malformed and oversized events on every consumer's topics are dead-lettered with a reason,
no consumer dies, and valid questions published in between are still answered (real broker, real PostgreSQL,
the five real consumers, a scripted model)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events import (
    ChatAnswer,
    ChatError,
    ChatFeedback,
    ChatQuestion,
    ContextReady,
    ErrorCode,
    ModelUpdated,
    QueryResolved,
    TrainingRequested,
)
from events.export import CONSUMERS
from services.client import QueryliftClient
from services.consumer_process import run_consumer
from services.infra.consumer import MAX_EVENT_BYTES
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import Settings
from services.query.register import register_project
from services.wiring import SERVICES, Overrides
from tests.conftest import SAMPLE_DB, unique, wait_until

GOOD_SQL = "SELECT COUNT(*) FROM orders"


@dataclass
class Stack:
    client: QueryliftClient
    project: str
    tasks: dict[str, asyncio.Task[None]]


@pytest.fixture(scope="module")
async def stack(
    pg_dsn: str, broker, tmp_path_factory: pytest.TempPathFactory, pool: asyncpg.Pool
) -> AsyncIterator[Stack]:
    from services.core.examples.embedder import get_embedder

    tmp = tmp_path_factory.mktemp("badinput")
    database = tmp / "bikeshop.sqlite"
    shutil.copy(SAMPLE_DB, database)
    cfg = Settings(
        database_url=pg_dsn,  # type: ignore[arg-type]
        kafka_bootstrap_servers=broker.bootstrap_servers,
        topic_prefix=f"bad{uuid.uuid4().hex[:6]}.",
        topic_partitions=2,
        data_dir=tmp,
        metrics_port=0,
        training_threshold=1000,
    )
    project = unique("bad")
    await register_project(pool, project_id=project, database_url=f"sqlite:///{database}")
    overrides = Overrides(llm=ScriptedLLM(default=GOOD_SQL), embedder=get_embedder(cfg.embedding_model))
    client = QueryliftClient(
        broker.bootstrap_servers, prefix=cfg.topic_prefix, partitions=2, watch_dead_letters=True
    )
    await client.start()
    tasks: dict[str, asyncio.Task[None]] = {}
    try:
        for name in SERVICES:
            ready = asyncio.Event()
            tasks[name] = asyncio.create_task(
                run_consumer(
                    name, cfg, metrics_port=0, overrides=overrides, ready=ready, install_signals=False
                )
            )
            await asyncio.wait_for(ready.wait(), 180)
        yield Stack(client, project, tasks)
    finally:
        for task in tasks.values():
            task.cancel()
        for task in tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await client.stop()


# --- what a malformed event looks like ------------------------------------------------------------------------


def _valid(project: str) -> dict[str, tuple[str, dict[str, Any]]]:
    """Which consumer reads each topic, and a valid event of that topic (as JSON) to break."""
    qid = uuid.uuid4()
    resolved = QueryResolved(
        project_id=project,
        question_event_id=qid,
        conversation_id="c",
        user_id="u",
        question="how many orders",
        asked_at_ms=0.0,
        dialect="sqlite",
        schema_version_id=1,
    )
    events = {
        "chat.question": (
            "query",
            ChatQuestion(project_id=project, conversation_id="c", user_id="u", question="q"),
        ),
        "query.resolved": ("retrieval", resolved),
        "retrieval.context": ("generation", ContextReady(project_id=project, query=resolved)),
        "model.updated": ("generation", ModelUpdated(project_id=project, base_model="m", status="active")),
        "chat.answer": (
            "feedback",
            ChatAnswer(
                project_id=project,
                question_event_id=qid,
                conversation_id="c",
                user_id="u",
                question="q",
                answer_text="a",
                sql="SELECT 1",
                model="m",
            ),
        ),
        "chat.error": (
            "feedback",
            ChatError(project_id=project, code=ErrorCode.internal, message="m", stage="generation"),
        ),
        "chat.feedback": ("feedback", ChatFeedback(project_id=project, answer_id=qid, rating=3)),
        "training.requested": (
            "training",
            TrainingRequested(project_id=project, examples_count=1, new_examples=1, threshold=1),
        ),
    }
    return {topic: (consumer, json.loads(e.model_dump_json())) for topic, (consumer, e) in events.items()}


#: Required, non-nullable string/uuid fields of each topic: any non-string value there is invalid.
REQUIRED_TEXT = {
    "chat.question": ("project_id", "conversation_id", "user_id", "question"),
    "query.resolved": ("question_event_id", "question", "conversation_id", "project_id"),
    "retrieval.context": ("project_id",),
    "model.updated": ("base_model", "project_id", "status"),
    "chat.answer": ("question_event_id", "sql", "answer_text", "model", "question"),
    "chat.error": ("message", "stage", "code", "project_id"),
    "chat.feedback": ("answer_id", "project_id"),
    "training.requested": ("project_id",),
}

not_text = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3),
)
KINDS = (
    "not_json",
    "invalid_utf8",
    "non_object",
    "missing_field",
    "wrong_type",
    "extra_field",
    "unknown_version",
    "bad_version",
    "huge_field",
    "oversized",
)


@dataclass
class Bad:
    topic: str
    kind: str
    payload: bytes  # carries the marker near its start, so its dead letter can be found
    marker: str
    expected: str


@st.composite
def bad_events(draw: st.DrawFn, project: str) -> Bad:
    topic = draw(st.sampled_from(sorted(REQUIRED_TEXT)))
    kind = draw(st.sampled_from(KINDS))
    _, event = _valid(project)[topic]
    # The event id is unique and serialised first, so it marks the payload (and its dead letter).
    marker = str(event["event_id"])
    if kind == "not_json":
        junk = draw(st.text(min_size=1, max_size=200))
        return Bad(topic, kind, f"{marker} {{{junk}".encode(), marker, "unparseable")
    if kind == "invalid_utf8":
        raw = draw(st.binary(min_size=1, max_size=100))
        return Bad(
            topic, kind, b'{"event_id": "' + marker.encode() + b"\xff\xfe" + raw, marker, "unparseable"
        )
    if kind == "non_object":
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.none(), st.booleans()))
        return Bad(topic, kind, json.dumps([marker, value]).encode(), marker, "unparseable")
    expected = "invalid"
    if kind == "missing_field":
        event.pop(draw(st.sampled_from(REQUIRED_TEXT[topic])))
    elif kind == "wrong_type":
        event[draw(st.sampled_from(REQUIRED_TEXT[topic]))] = draw(not_text)
    elif kind == "extra_field":
        event[draw(st.sampled_from(["unexpected", "__proto__", "drop_table"]))] = draw(not_text)
    elif kind == "unknown_version":
        event["schema_version"] = draw(st.integers(min_value=2, max_value=10**6))
        expected = "unknown_version"
    elif kind == "bad_version":
        event["schema_version"] = draw(
            st.one_of(st.integers(max_value=0), st.text(alphabet="abc-", max_size=3), st.none())
        )
    elif kind == "huge_field":
        # Over the field's limit (project ids: 128 characters) but under the message limit.
        event["project_id"] = "p" * draw(st.integers(min_value=5000, max_value=200_000))
    else:
        assert kind == "oversized"
        event["padding"] = "x" * (MAX_EVENT_BYTES + draw(st.integers(min_value=1, max_value=50_000)))
    return Bad(topic, kind, json.dumps(event).encode(), marker, expected)


#: Every consumer that reads a topic sets aside its unreadable events (chat.feedback has two readers).
TOPICS = {topic for consumer in CONSUMERS for topic in consumer.receives}
READERS = {topic: {c.name for c in CONSUMERS if topic in c.receives} for topic in TOPICS}


async def _letters(pool: asyncpg.Pool, markers: list[str]) -> dict[tuple[str, str], asyncpg.Record]:
    """(marker, consumer) → that consumer's dead letter for the event with the marker."""
    rows = await pool.fetch(
        "SELECT consumer, source_topic, reason, error, payload_text FROM dead_letters"
        " WHERE left(payload_text, 300) LIKE ANY($1)",
        [f"%{m}%" for m in markers],
    )
    return {(m, row["consumer"]): row for row in rows for m in markers if m in row["payload_text"][:300]}


PROJECT_FOR_STRATEGY = "bad-input-project"


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(batch=st.lists(bad_events(PROJECT_FOR_STRATEGY), min_size=1, max_size=8))
async def test_malformed_events_are_dead_lettered_and_valid_ones_still_answered_scripted_llm(
    stack: Stack, pool: asyncpg.Pool, batch: list[Bad]
) -> None:
    client = stack.client
    key = stack.project.encode()
    valid = []
    # Valid questions interleaved with the garbage, on the same key (same partition, same order).
    for i, bad in enumerate(batch):
        payload = bad.payload.replace(PROJECT_FOR_STRATEGY.encode(), key)
        await client.bus.publish_raw(bad.topic, payload, key=key)
        if i % 3 == 0:
            q = ChatQuestion(
                project_id=stack.project,
                conversation_id=f"bad-{uuid.uuid4().hex[:6]}",
                user_id="u",
                question="how many orders",
            )
            valid.append(await client.publish(q))
    outcomes = await asyncio.wait_for(asyncio.gather(*valid), 120)
    assert all(isinstance(o, ChatAnswer) for o in outcomes), outcomes

    markers = [b.marker for b in batch]
    expected = {(b.marker, consumer) for b in batch for consumer in READERS[b.topic]}
    letters = await wait_until(lambda: _ready(pool, markers, expected), timeout_s=60, interval_s=0.2)
    assert set(letters) == expected  # no consumer that does not read the topic set one aside
    for bad in batch:
        assert (
            _valid(stack.project)[bad.topic][0] in READERS[bad.topic]
        )  # the table here agrees with the topology
        for consumer in READERS[bad.topic]:
            letter = letters[(bad.marker, consumer)]
            assert letter["source_topic"] == bad.topic
            assert letter["reason"] == bad.expected, (
                bad.kind,
                bad.topic,
                consumer,
                letter["reason"],
                letter["error"],
            )
            assert letter["error"]
            assert "\x00" not in letter["payload_text"]
    # The dead-letter topic carries them too (the client reads it).
    on_topic = await wait_until(lambda: _on_topic(client, markers), timeout_s=30, interval_s=0.2)
    assert on_topic
    # No consumer crashed.
    dead = {name: t for name, t in stack.tasks.items() if t.done()}
    assert not dead, {n: t.exception() for n, t in dead.items()}


async def _ready(
    pool: asyncpg.Pool, markers: list[str], expected: set[tuple[str, str]]
) -> dict[tuple[str, str], asyncpg.Record] | None:
    found = await _letters(pool, markers)
    return found if expected <= set(found) else None


async def _on_topic(client: QueryliftClient, markers: list[str]) -> bool:
    seen = {m for letter in client.dead_letters for m in markers if m in letter.payload_text[:200]}
    return seen == set(markers)
