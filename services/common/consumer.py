"""The consumer loop every service shares: at-least-once delivery made effectively-once.

For each message: parse and validate it (else dead-letter it with the reason), skip it if its event id was
already handled (re-publishing that run's outputs if they never went out), run the handler, record the event
id with its outputs in PostgreSQL, publish the outputs, and only then commit the offset. Output event ids are
derived from input ids, so a handler that runs twice after a crash still yields events downstream drops.

The loop works a poll batch at a time, so the fixed costs are paid once per batch rather than per message:
one idempotency lookup, one insert of every outcome, one producer flush, one "published" update and one
offset commit. Events of different projects (message keys) are handled concurrently; one project's events
are handled one after another in offset order, and outputs are published in input order.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from pydantic import ValidationError

from events import DeadLetter, Event
from services.common.bus import Bus
from services.common.metrics import (
    CONSUMER_LAG,
    DEAD_LETTERS,
    EVENTS_CONSUMED,
    EVENTS_DUPLICATE,
    EVENTS_FAILED,
    HANDLER_SECONDS,
    UP,
)

log = logging.getLogger(__name__)

MAX_EVENT_BYTES = 1_000_000
_PAYLOAD_KEEP = 20_000
_RETRYABLE_INFRA = (
    OSError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.InterfaceError,
)
# The broker being away (publish, commit) is waited out like the system of record.
_RETRYABLE_BROKER = (*_RETRYABLE_INFRA, KafkaError)
#: How long the broker may hold a fetch that found nothing. Kafka answers a waiting fetch as soon as data
#: arrives, so this only bounds idle polling there; the embedded Tansu broker answers at the end of the wait,
#: which makes it the latency of every hop, hence short.
FETCH_MAX_WAIT_MS = 10
#: Handlers of different projects running at once in one consumer (bounded: they share a small PG pool).
MAX_CONCURRENT_KEYS = 64


class Handler(Protocol):
    """What a service plugs into the loop. Domain work lives behind it, not in it."""

    name: ClassVar[str]
    subscriptions: ClassVar[dict[str, type[Event]]]

    async def handle(self, event: Event) -> Sequence[Event]: ...

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        """Events to emit besides the dead letter for an event that failed validation."""
        ...

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        """Events to emit besides the dead letter when handling kept failing."""
        ...


class BaseHandler(ABC):
    name: ClassVar[str] = ""
    subscriptions: ClassVar[dict[str, type[Event]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @abstractmethod
    async def handle(self, event: Event) -> Sequence[Event]:
        """The events this event causes (derived ids); raising makes the loop retry, then dead-letter it."""

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        return ()

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        return ()

    async def prepare_batch(self, events: Sequence[Event]) -> None:
        """Called with a poll batch's new events before any is handled, so a handler can do shared work
        (e.g. embed every question in one model call) once; the default does nothing."""
        return None


class Rejected(Exception):
    """Raised while parsing: the event goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str, error: str, raw: dict[str, Any] | None = None) -> None:
        super().__init__(error)
        self.reason = reason
        self.error = error
        self.raw = raw


def parse_event(model: type[Event], value: bytes | None) -> Event:
    if value is None:
        raise Rejected("unparseable", "empty message")
    if len(value) > MAX_EVENT_BYTES:
        raise Rejected("invalid", f"event of {len(value)} bytes exceeds the {MAX_EVENT_BYTES}-byte limit")
    try:
        raw = json.loads(value.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Rejected("unparseable", f"not UTF-8 JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise Rejected("unparseable", "event is not a JSON object")
    version = raw.get("schema_version", 1)
    supported = model.model_fields["schema_version"].default
    if isinstance(version, int) and not isinstance(version, bool) and version > supported:
        raise Rejected(
            "unknown_version", f"{model.topic} schema_version {version} is newer than {supported}", raw
        )
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        summary = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or '<event>'}: {e['msg']}" for e in exc.errors()[:8]
        )
        raise Rejected("invalid", summary, raw) from None


@dataclass
class _Item:
    """One consumed record on its way through a batch."""

    record: ConsumerRecord[bytes, bytes]
    event: Event
    produced: Sequence[Event] | None = None
    error: BaseException | None = None


class ConsumerRunner:
    def __init__(
        self,
        handler: BaseHandler,
        *,
        bootstrap_servers: str,
        pool: asyncpg.Pool,
        bus: Bus,
        prefix: str = "",
        max_attempts: int = 3,
        group_id: str | None = None,
        max_poll_interval_ms: int = 300_000,
        max_batch: int = 500,
    ) -> None:
        self.handler = handler
        self.pool = pool
        self.bus = bus
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.max_batch = max_batch
        self.group_id = group_id or f"querylift-{handler.name}"
        self._topics = {prefix + topic: model for topic, model in handler.subscriptions.items()}
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=max_batch,
            client_id=f"querylift-{handler.name}",
            max_poll_interval_ms=max_poll_interval_ms,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        )
        self._stopping = asyncio.Event()
        self._keys = asyncio.Semaphore(MAX_CONCURRENT_KEYS)
        self.processed = 0

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        await self._consumer.start()
        UP.labels(self.handler.name).set(1)
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=self.max_batch)
                if not batches:
                    continue
                records = [record for records in batches.values() for record in records]
                await self._process_batch(records)
                await self._commit({tp: records[-1].offset + 1 for tp, records in batches.items()})
                self._report_lag(batches)
        finally:
            UP.labels(self.handler.name).set(0)
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            await self._forever(lambda: self._consumer.commit(offsets), "commit", _RETRYABLE_BROKER)
        except (CommitFailedError, IllegalStateError) as exc:
            # The group rebalanced while this batch ran: the partitions' new owner gets these records again
            # and the idempotency records make that harmless. Not a reason to stop consuming.
            log.warning("offset commit skipped after a rebalance", extra={"error": str(exc)[:200]})

    def _report_lag(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp in batches:
            end = self._consumer.highwater(tp)
            position = batches[tp][-1].offset + 1
            if end is not None:
                CONSUMER_LAG.labels(self.handler.name, tp.topic, str(tp.partition)).set(
                    max(0, end - position)
                )

    async def _forever(
        self,
        action: Callable[[], Awaitable[Any]],
        what: str,
        retry_on: tuple[type[BaseException], ...] = _RETRYABLE_INFRA,
    ) -> Any:
        """Retry infrastructure outages (broker, system of record) until they pass; nothing is skipped."""
        delay = 0.2
        while True:
            try:
                return await action()
            except retry_on as exc:
                if self._stopping.is_set():
                    raise
                log.warning(
                    "infrastructure unavailable, retrying", extra={"what": what, "error": str(exc)[:200]}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    async def _system_of_record_up(self) -> bool:
        try:
            await self.pool.fetchval("SELECT 1")
        except _RETRYABLE_INFRA:
            return False
        return True

    # ------------------------------------------------------------------ one batch
    async def _process_batch(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        letters: list[tuple[ConsumerRecord[bytes, bytes], str, str, Sequence[Event], uuid.UUID | None]] = []
        parsed: list[_Item] = []
        for record in records:
            short = record.topic[len(self.prefix) :]
            EVENTS_CONSUMED.labels(self.handler.name, short).inc()
            try:
                event = parse_event(self._topics[record.topic], record.value)
            except Rejected as rej:
                extra = self.handler.on_invalid(short, rej.raw, rej.error)
                letters.append((record, rej.reason, rej.error, extra, None))
                continue
            parsed.append(_Item(record, event))

        done: dict[uuid.UUID, list[dict[str, Any]] | bool] = {}
        if parsed:
            ids = list({item.event.event_id for item in parsed})
            done = await self._forever(lambda: self._already_done(ids), "idempotency check")
        fresh: list[_Item] = []
        republish: list[tuple[uuid.UUID, list[dict[str, Any]]]] = []
        seen: set[uuid.UUID] = set()
        for item in parsed:
            event_id = item.event.event_id
            if event_id in seen or event_id in done:
                # A redelivery, or the same event twice in one batch (an upstream retry).
                EVENTS_DUPLICATE.labels(self.handler.name, item.record.topic[len(self.prefix) :]).inc()
                state = done.pop(event_id, True)
                if state is not True:
                    republish.append((event_id, list(state)))  # type: ignore[arg-type]
                continue
            seen.add(event_id)
            fresh.append(item)

        if fresh:
            await self.handler.prepare_batch([item.event for item in fresh])
            by_key: dict[str, list[_Item]] = {}
            for item in fresh:
                by_key.setdefault(item.event.project_id, []).append(item)
            await asyncio.gather(*(self._handle_in_order(items) for items in by_key.values()))

        succeeded = [item for item in fresh if item.produced is not None]
        payloads = {
            item.event.event_id: [
                e.model_dump(mode="json") | {"__topic": type(e).topic} for e in item.produced or ()
            ]
            for item in succeeded
        }
        if payloads:
            await self._forever(lambda: self._record_done(payloads), "record processed")
        for item in fresh:
            if item.produced is None:
                assert item.error is not None
                extra = self.handler.on_failure(item.event, item.error)
                error = f"{type(item.error).__name__}: {item.error}"[:2000]
                letters.append((item.record, "processing_failed", error, extra, item.event.event_id))

        outgoing: list[Event | DeadLetter] = []
        for _, outputs in republish:
            outgoing.extend(_revive(o) for o in outputs)
        for item in succeeded:
            outgoing.extend(item.produced or ())
        for record, reason, error, extra, _ in letters:
            letter = await self._store_dead_letter(record, reason, error)
            outgoing.extend([letter, *extra])
        if outgoing:
            await self._forever(lambda: self.bus.publish_many(outgoing), "publish", _RETRYABLE_BROKER)
        published = [event_id for event_id, _ in republish] + list(payloads)
        if published:
            await self._forever(lambda: self._mark_published(published), "mark published")
        self.processed += len(succeeded)

    async def _handle_in_order(self, items: list[_Item]) -> None:
        async with self._keys:
            for item in items:
                item.produced, item.error = await self._handle(item)

    async def _handle(self, item: _Item) -> tuple[Sequence[Event] | None, BaseException | None]:
        event = item.event
        short = item.record.topic[len(self.prefix) :]
        started = time.perf_counter()
        error: BaseException | None = None
        attempt = 0
        try:
            while attempt < self.max_attempts:
                attempt += 1
                try:
                    return await self.handler.handle(event), None
                except _RETRYABLE_INFRA as exc:
                    error = exc
                    log.warning(
                        "handler hit an outage, retrying",
                        extra={"consumer": self.handler.name, "error": str(exc)[:200]},
                    )
                    await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                    if not await self._system_of_record_up():
                        # The system of record is away: wait for it without spending attempts, so an outage
                        # delays events instead of dead-lettering them.
                        await self._forever(self._probe, "system of record")
                        attempt -= 1
                except Exception as exc:
                    error = exc
                    log.exception(
                        "handler failed",
                        extra={
                            "consumer": self.handler.name,
                            "event_id": str(event.event_id),
                            "attempt": attempt,
                        },
                    )
                    await asyncio.sleep(0.05 * attempt)
            return None, error
        finally:
            HANDLER_SECONDS.labels(self.handler.name, short).observe(time.perf_counter() - started)

    async def _probe(self) -> None:
        await self.pool.fetchval("SELECT 1")

    async def _already_done(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[dict[str, Any]] | bool]:
        rows = await self.pool.fetch(
            "SELECT event_id, outputs, published FROM processed_events"
            " WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            self.handler.name,
            event_ids,
        )
        return {r["event_id"]: True if r["published"] else list(r["outputs"]) for r in rows}

    async def _record_done(self, payloads: dict[uuid.UUID, list[dict[str, Any]]]) -> None:
        await self.pool.execute(
            "INSERT INTO processed_events (consumer, event_id, outputs)"
            " SELECT $1, e, o::jsonb FROM unnest($2::uuid[], $3::text[]) AS t(e, o) ON CONFLICT DO NOTHING",
            self.handler.name,
            list(payloads),
            [json.dumps(outputs) for outputs in payloads.values()],
        )

    async def _mark_published(self, event_ids: list[uuid.UUID]) -> None:
        await self.pool.execute(
            "UPDATE processed_events SET published = true, outputs = '[]'"
            " WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            self.handler.name,
            event_ids,
        )

    async def _store_dead_letter(
        self, record: ConsumerRecord[bytes, bytes], reason: str, error: str
    ) -> DeadLetter:
        short = record.topic[len(self.prefix) :]
        value = record.value or b""
        letter = DeadLetter(
            event_id=uuid.uuid5(
                uuid.NAMESPACE_URL, f"{self.group_id}/{record.topic}/{record.partition}/{record.offset}"
            ),
            consumer=self.handler.name,
            source_topic=short,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key else None,
            reason=reason,  # type: ignore[arg-type]
            error=error[:2000],
            payload_text=value[:_PAYLOAD_KEEP].decode("utf-8", "replace"),
            payload_size=len(value),
        )
        EVENTS_FAILED.labels(self.handler.name, short, reason).inc()
        DEAD_LETTERS.labels(self.handler.name, reason).inc()
        log.warning(
            "event dead-lettered",
            extra={
                "consumer": self.handler.name,
                "topic": short,
                "offset": record.offset,
                "reason": reason,
                "error": error[:300],
            },
        )
        await self._forever(
            lambda: self.pool.execute(
                'INSERT INTO dead_letters (id, consumer, source_topic, partition, "offset", reason, error, payload_text)'
                " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING",
                letter.event_id,
                letter.consumer,
                letter.source_topic,
                letter.partition,
                letter.offset,
                letter.reason,
                letter.error,
                letter.payload_text.replace("\x00", "\ufffd"),
            ),
            "store dead letter",
        )
        return letter


_BY_TOPIC: dict[str, type[Event]] = {}


def _revive(item: dict[str, Any]) -> Event:
    if not _BY_TOPIC:
        from events import EVENT_TYPES

        _BY_TOPIC.update({t.topic: t for t in EVENT_TYPES})
    data = dict(item)
    topic = data.pop("__topic")
    return _BY_TOPIC[topic].model_validate(data)
