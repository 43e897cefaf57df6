"""The consumer loop every service shares: at-least-once delivery made effectively-once.

For each message: parse and validate it (else dead-letter it with the reason), skip it if its event id was
already handled (re-publishing that run's outputs if they never went out), run the handler, record the event
id with its outputs in PostgreSQL, publish the outputs, and only then commit the offset. Output event ids are
derived from input ids, so a handler that runs twice after a crash still yields events downstream drops.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Sequence
from typing import Any, ClassVar, Protocol

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
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


class BaseHandler:
    name: ClassVar[str] = ""
    subscriptions: ClassVar[dict[str, type[Event]]] = {}

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def on_invalid(self, topic: str, raw: dict[str, Any] | None, error: str) -> Sequence[Event]:
        return ()

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        return ()


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
    ) -> None:
        self.handler = handler
        self.pool = pool
        self.bus = bus
        self.prefix = prefix
        self.max_attempts = max_attempts
        self.group_id = group_id or f"querylift-{handler.name}"
        self._topics = {prefix + topic: model for topic, model in handler.subscriptions.items()}
        self._consumer = AIOKafkaConsumer(
            *self._topics,
            bootstrap_servers=bootstrap_servers,
            group_id=self.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=200,
            client_id=f"querylift-{handler.name}",
            max_poll_interval_ms=max_poll_interval_ms,
        )
        self._stopping = asyncio.Event()
        self.processed = 0

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        await self._consumer.start()
        UP.labels(self.handler.name).set(1)
        try:
            while not self._stopping.is_set():
                batches = await self._consumer.getmany(timeout_ms=200, max_records=200)
                if not batches:
                    continue
                for tp, records in batches.items():
                    for record in records:
                        await self._process(record)
                    await self._commit(tp, records[-1].offset + 1)
                self._report_lag(batches)
        finally:
            UP.labels(self.handler.name).set(0)
            await self._consumer.stop()

    def stop(self) -> None:
        self._stopping.set()

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        await self._forever(lambda: self._consumer.commit({tp: offset}), "commit")

    def _report_lag(self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        for tp in batches:
            end = self._consumer.highwater(tp)
            position = batches[tp][-1].offset + 1
            if end is not None:
                CONSUMER_LAG.labels(self.handler.name, tp.topic, str(tp.partition)).set(
                    max(0, end - position)
                )

    async def _forever(self, action: Any, what: str) -> Any:
        """Retry infrastructure outages (broker, system of record) until they pass; nothing is skipped."""
        delay = 0.2
        while True:
            try:
                return await action()
            except _RETRYABLE_INFRA as exc:
                if self._stopping.is_set():
                    raise
                log.warning(
                    "infrastructure unavailable, retrying", extra={"what": what, "error": str(exc)[:200]}
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # ------------------------------------------------------------------ one message
    async def _process(self, record: ConsumerRecord[bytes, bytes]) -> None:
        topic = record.topic
        short = topic[len(self.prefix) :]
        EVENTS_CONSUMED.labels(self.handler.name, short).inc()
        model = self._topics[topic]
        try:
            event = parse_event(model, record.value)
        except Rejected as rej:
            extra = self.handler.on_invalid(short, rej.raw, rej.error)
            await self._dead_letter(record, rej.reason, rej.error, extra)
            return

        outputs = await self._forever(lambda: self._already_done(event.event_id), "idempotency check")
        if outputs is not None:
            EVENTS_DUPLICATE.labels(self.handler.name, short).inc()
            if outputs is not True:
                await self._publish_and_mark(event.event_id, outputs)
            return

        started = time.perf_counter()
        produced: Sequence[Event] | None = None
        error: BaseException | None = None
        for attempt in range(1, self.max_attempts + 1):
            try:
                produced = await self.handler.handle(event)
                break
            except _RETRYABLE_INFRA as exc:
                # The system of record or broker is away: wait for it rather than dead-lettering.
                log.warning(
                    "handler hit an outage, retrying",
                    extra={"consumer": self.handler.name, "error": str(exc)[:200]},
                )
                await asyncio.sleep(min(0.2 * 2**attempt, 5.0))
                error = exc
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
        HANDLER_SECONDS.labels(self.handler.name, short).observe(time.perf_counter() - started)

        if produced is None:
            assert error is not None
            extra = self.handler.on_failure(event, error)
            await self._dead_letter(
                record, "processing_failed", f"{type(error).__name__}: {error}"[:2000], extra, event.event_id
            )
            return
        payload = [json.loads(e.model_dump_json()) | {"__topic": type(e).topic} for e in produced]
        await self._forever(lambda: self._record_done(event.event_id, payload), "record processed")
        await self._publish_and_mark(event.event_id, payload)
        self.processed += 1

    async def _already_done(self, event_id: uuid.UUID) -> list[dict[str, Any]] | bool | None:
        row = await self.pool.fetchrow(
            "SELECT outputs, published FROM processed_events WHERE consumer = $1 AND event_id = $2",
            self.handler.name,
            event_id,
        )
        if row is None:
            return None
        return True if row["published"] else list(row["outputs"])

    async def _record_done(self, event_id: uuid.UUID, payload: list[dict[str, Any]]) -> None:
        await self.pool.execute(
            "INSERT INTO processed_events (consumer, event_id, outputs) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            self.handler.name,
            event_id,
            payload,
        )

    async def _publish_and_mark(self, event_id: uuid.UUID, payload: list[dict[str, Any]]) -> None:
        events = [_revive(item) for item in payload]
        await self._forever(lambda: self.bus.publish_many(events), "publish")
        await self._forever(
            lambda: self.pool.execute(
                "UPDATE processed_events SET published = true, outputs = '[]' WHERE consumer = $1 AND event_id = $2",
                self.handler.name,
                event_id,
            ),
            "mark published",
        )

    async def _dead_letter(
        self,
        record: ConsumerRecord[bytes, bytes],
        reason: str,
        error: str,
        extra: Sequence[Event],
        event_id: uuid.UUID | None = None,
    ) -> None:
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
        await self._forever(lambda: self.bus.publish_many([letter, *extra]), "publish dead letter")


def _revive(item: dict[str, Any]) -> Event:
    from events import EVENT_TYPES

    by_topic = {t.topic: t for t in EVENT_TYPES}
    data = dict(item)
    topic = data.pop("__topic")
    return by_topic[topic].model_validate(data)
