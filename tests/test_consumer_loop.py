"""The shared consumer loop on the real broker and PostgreSQL, with a test handler whose work is a sleep:
a slow event must not hold back the poll, one ordering key's events run in offset order with their outputs
published in that order, and offsets are committed once everything before them is settled."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Sequence
from typing import ClassVar

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events import ChatError, ChatQuestion, ErrorCode, Event
from services.infra.bus import Bus, ensure_topics
from services.infra.consumer import BaseHandler, ConsumerRunner
from services.infra.settings import Settings
from tests.conftest import wait_until


class SleepingHandler(BaseHandler):
    """Sleeps for the seconds the question names and answers with a chat.error naming the question."""

    name: ClassVar[str] = "loop-test"
    subscriptions: ClassVar[dict[str, type[Event]]] = {ChatQuestion.topic: ChatQuestion}

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.ended: dict[str, float] = {}

    async def handle(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ChatQuestion)
        label, seconds = event.question.split(":")
        self.started[label] = time.monotonic()
        await asyncio.sleep(float(seconds))
        self.ended[label] = time.monotonic()
        out = ChatError(
            project_id=event.project_id,
            question_event_id=event.event_id,
            conversation_id=event.conversation_id,
            code=ErrorCode.internal,
            message=label,
            stage="loop-test",
        )
        return [out.with_derived_id(event.event_id, "loop-test")]


def _question(project: str, label: str, seconds: float) -> ChatQuestion:
    return ChatQuestion(
        project_id=project, conversation_id=f"{project}-c", user_id="u", question=f"{label}:{seconds}"
    )


async def _committed(bootstrap: str, group: str, tp: TopicPartition) -> int | None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[tp])
    finally:
        await admin.close()
    meta = offsets.get(tp)
    return meta.offset if meta is not None else None


async def test_slow_event_does_not_hold_back_others_and_one_key_keeps_its_order_scripted_handler(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    bootstrap = settings.kafka_bootstrap_servers or ""
    prefix = settings.topic_prefix
    await ensure_topics(bootstrap, prefix, 1)  # one partition: both projects share it, order is offsets
    bus = Bus(bootstrap, prefix=prefix, client="loop-test")
    await bus.start()
    handler = SleepingHandler()
    group = f"loop-test-{uuid.uuid4().hex[:8]}"
    runner = ConsumerRunner(
        handler, bootstrap_servers=bootstrap, pool=pool, bus=bus, prefix=prefix, group_id=group
    )
    outputs = AIOKafkaConsumer(
        prefix + ChatError.topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None
    )
    await outputs.start()
    running = asyncio.create_task(runner.run())
    try:
        slow_project, fast_project = f"slow-{uuid.uuid4().hex[:6]}", f"fast-{uuid.uuid4().hex[:6]}"
        await bus.publish_many(
            [
                _question(slow_project, "slow-1", 1.5),
                _question(slow_project, "slow-2", 0.0),
                _question(fast_project, "fast-1", 0.0),
            ]
        )
        await asyncio.sleep(0.3)
        await bus.publish_many([_question(fast_project, "fast-2", 0.0)])  # polled while slow-1 still runs

        async def all_handled() -> bool:
            return len(handler.ended) == 4

        await wait_until(all_handled, timeout_s=30)
        # The poll went on while slow-1 slept: the other project's events, even one published later, ended first.
        assert handler.ended["fast-1"] < handler.ended["slow-1"]
        assert handler.ended["fast-2"] < handler.ended["slow-1"]
        # One key, one at a time, in offset order.
        assert handler.started["slow-2"] >= handler.ended["slow-1"]

        published: list[str] = []
        deadline = time.monotonic() + 30
        while len(published) < 4 and time.monotonic() < deadline:
            for records in (await outputs.getmany(timeout_ms=500)).values():
                published += [ChatError.model_validate_json(r.value or b"").message for r in records]
        assert sorted(published) == ["fast-1", "fast-2", "slow-1", "slow-2"]
        assert published.index("slow-1") < published.index("slow-2")

        # Offsets are committed past the last record once all four are settled (never past an unsettled one).
        tp = TopicPartition(prefix + ChatQuestion.topic, 0)

        async def committed_all() -> bool:
            return await _committed(bootstrap, group, tp) == 4

        await wait_until(committed_all, timeout_s=30)
        stored = await pool.fetchval(
            "SELECT count(*) FROM processed_events WHERE consumer = $1 AND published", handler.name
        )
        assert stored >= 4
    finally:
        await _shut_down(runner, running, outputs, bus)


class TwoTopicHandler(BaseHandler):
    """Subscribes to two project-keyed topics, as generation does (retrieval.context and model.updated)."""

    name: ClassVar[str] = "loop-test-two"
    subscriptions: ClassVar[dict[str, type[Event]]] = {
        ChatQuestion.topic: ChatQuestion,
        ChatError.topic: ChatError,
    }

    async def handle(self, event: Event) -> Sequence[Event]:
        return ()


async def test_group_members_own_the_same_partitions_of_every_topic(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A project's events of both topics land on one member, whatever the number of members (round robin
    gives four members of six partitions different partitions per topic)."""
    bootstrap = settings.kafka_bootstrap_servers or ""
    prefix = settings.topic_prefix
    await ensure_topics(bootstrap, prefix, 6)
    bus = Bus(bootstrap, prefix=prefix, client="loop-test")
    await bus.start()
    group = f"loop-test-{uuid.uuid4().hex[:8]}"
    runners = [
        ConsumerRunner(
            TwoTopicHandler(), bootstrap_servers=bootstrap, pool=pool, bus=bus, prefix=prefix, group_id=group
        )
        for _ in range(4)
    ]
    tasks = [asyncio.create_task(r.run()) for r in runners]
    try:

        async def stable() -> bool:
            owned = [r.assignment() for r in runners]
            return all(owned) and sum(len(a) for a in owned) == 12

        await wait_until(stable, timeout_s=60)
        for runner in runners:
            by_topic: dict[str, set[int]] = {}
            for tp in runner.assignment():
                by_topic.setdefault(tp.topic, set()).add(tp.partition)
            assert len(by_topic) == 2 and len(set(map(frozenset, by_topic.values()))) == 1, by_topic
    finally:
        for runner in runners:
            runner.stop()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, 40)
        await bus.stop()


class CountingHandler(SleepingHandler):
    """SleepingHandler that also counts how often each question ran."""

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, int] = {}

    async def handle(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, ChatQuestion)
        label = event.question.split(":")[0]
        self.runs[label] = self.runs.get(label, 0) + 1
        return await super().handle(event)


async def test_retried_event_runs_and_publishes_once_before_and_after_bookkeeping_scripted_handler(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """An upstream retry can arrive while the original runs, after it was published but before the
    bookkeeper marked it (a long interval here makes that window wide), and after the mark."""
    bootstrap = settings.kafka_bootstrap_servers or ""
    prefix = settings.topic_prefix
    await ensure_topics(bootstrap, prefix, 1)
    bus = Bus(bootstrap, prefix=prefix, client="loop-test")
    await bus.start()
    handler = CountingHandler()
    group = f"loop-test-{uuid.uuid4().hex[:8]}"
    runner = ConsumerRunner(
        handler,
        bootstrap_servers=bootstrap,
        pool=pool,
        bus=bus,
        prefix=prefix,
        group_id=group,
        bookkeeping_interval_s=4.0,
    )
    outputs = AIOKafkaConsumer(
        prefix + ChatError.topic, bootstrap_servers=bootstrap, auto_offset_reset="latest", group_id=None
    )
    await outputs.start()
    await outputs.getmany(timeout_ms=200)  # joins at the end of the topic before anything is produced
    running = asyncio.create_task(runner.run())
    try:
        project = f"retry-{uuid.uuid4().hex[:6]}"
        # A first event starts the bookkeeper's interval, so the next marks wait for its end.
        warm = _question(project, f"warm-{uuid.uuid4().hex[:6]}", 0.0)
        await bus.publish_many([warm])
        await wait_until(lambda: _true(warm.question.split(":")[0] in handler.ended), timeout_s=30)
        question = _question(project, f"retried-{uuid.uuid4().hex[:6]}", 1.0)
        label = question.question.split(":")[0]
        await bus.publish_many([question])
        await wait_until(lambda: _true(label in handler.started), timeout_s=30)
        await bus.publish_many([question])  # while the original runs

        await wait_until(lambda: _true(label in handler.ended), timeout_s=30)
        await asyncio.sleep(0.3)
        marked = await pool.fetchval(
            "SELECT published FROM processed_events WHERE consumer = $1 AND event_id = $2",
            handler.name,
            question.event_id,
        )
        assert marked is False  # still inside the bookkeeping interval: the window this test is about
        await bus.publish_many([question])  # published, not yet marked

        async def marked_now() -> bool:
            return bool(
                await pool.fetchval(
                    "SELECT published FROM processed_events WHERE consumer = $1 AND event_id = $2",
                    handler.name,
                    question.event_id,
                )
            )

        await wait_until(marked_now, timeout_s=30)
        await bus.publish_many([question])  # after the mark

        tp = TopicPartition(prefix + ChatQuestion.topic, 0)
        end = (await _end_offset(bootstrap, tp)) or 0

        async def committed_all() -> bool:
            return await _committed(bootstrap, group, tp) == end

        await wait_until(committed_all, timeout_s=30)
        published: list[str] = []
        deadline = time.monotonic() + 2
        while time.monotonic() < deadline:
            for records in (await outputs.getmany(timeout_ms=300)).values():
                published += [ChatError.model_validate_json(r.value or b"").message for r in records]
        assert handler.runs[label] == 1
        assert published.count(label) == 1
    finally:
        await _shut_down(runner, running, outputs, bus)


async def _true(value: bool) -> bool:
    return value


async def _end_offset(bootstrap: str, tp: TopicPartition) -> int | None:
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await probe.start()
    try:
        return (await probe.end_offsets([tp])).get(tp)
    finally:
        await probe.stop()


async def _shut_down(
    runner: ConsumerRunner, running: asyncio.Task[None], outputs: AIOKafkaConsumer, bus: Bus
) -> None:
    runner.stop()
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(running, 40)
    await outputs.stop()
    await bus.stop()


async def test_unreadable_events_at_the_same_position_under_two_prefixes_are_both_dead_lettered_scripted_handler(
    settings: Settings, pool: asyncpg.Pool
) -> None:
    """A memory-only broker restarts its offsets, and deployments share a database under other topic
    prefixes: a second unreadable event at the same consumer, topic, partition and offset is a new letter."""
    bootstrap = settings.kafka_bootstrap_servers or ""
    marker = uuid.uuid4().hex
    letters_before = await pool.fetchval(
        "SELECT count(*) FROM dead_letters WHERE payload_text LIKE $1", f"%{marker}%"
    )
    assert letters_before == 0
    for n in range(2):
        prefix = f"{settings.topic_prefix}dl{n}."
        await ensure_topics(bootstrap, prefix, 1)  # one partition: both events sit at offset 0
        bus = Bus(bootstrap, prefix=prefix, client="loop-test")
        await bus.start()
        runner = ConsumerRunner(
            SleepingHandler(),
            bootstrap_servers=bootstrap,
            pool=pool,
            bus=bus,
            prefix=prefix,
            group_id=f"loop-test-{uuid.uuid4().hex[:8]}",
        )
        outputs = AIOKafkaConsumer(prefix + ChatError.topic, bootstrap_servers=bootstrap, group_id=None)
        await outputs.start()
        running = asyncio.create_task(runner.run())
        try:
            await bus.publish_raw(ChatQuestion.topic, f'{{"not json {marker} {n}'.encode(), key=b"k")

            async def stored(count: int = n + 1) -> bool:
                found = await pool.fetchval(
                    'SELECT count(*) FROM dead_letters WHERE payload_text LIKE $1 AND "offset" = 0',
                    f"%{marker}%",
                )
                return bool(found == count)

            await wait_until(stored, timeout_s=30)
        finally:
            await _shut_down(runner, running, outputs, bus)
    reasons = await pool.fetch("SELECT reason FROM dead_letters WHERE payload_text LIKE $1", f"%{marker}%")
    assert [r["reason"] for r in reasons] == ["unparseable", "unparseable"]
