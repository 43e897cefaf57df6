"""Records a consumer sets aside: the ``DeadLetter`` event published for them and the row kept in
``dead_letters`` for a person to look at."""

from __future__ import annotations

import hashlib
import logging
import uuid

import asyncpg
from aiokafka import ConsumerRecord

from events import DeadLetter
from events.dead_letter import DeadLetterReason
from services.infra.metrics import DEAD_LETTERS, EVENTS_FAILED

log = logging.getLogger(__name__)

#: Bytes of the original record kept in a dead letter; enough to see what it was, not to store a flood.
_PAYLOAD_KEEP = 20_000


class DeadLetters:
    """Dead letters of one consumer group. ``prefix`` is the deployment's topic prefix, left out of the
    source topic a letter names (but not of its id: see ``_dead_letter_id``)."""

    def __init__(self, pool: asyncpg.Pool, *, consumer: str, group_id: str, prefix: str = "") -> None:
        self.pool = pool
        self.consumer = consumer
        self.group_id = group_id
        self.prefix = prefix

    def letter_for(
        self, record: ConsumerRecord[bytes, bytes], reason: DeadLetterReason, error: str
    ) -> DeadLetter:
        """The letter for a record given up on. Counted and logged here, once: storing it may then wait out
        an outage, but the record is dead-lettered either way."""
        short = record.topic[len(self.prefix) :]
        value = record.value or b""
        letter = DeadLetter(
            event_id=_dead_letter_id(self.group_id, record, value),
            consumer=self.consumer,
            source_topic=short,
            partition=record.partition,
            offset=record.offset,
            key=record.key.decode("utf-8", "replace") if record.key else None,
            reason=reason,
            error=error[:2000],
            payload_text=value[:_PAYLOAD_KEEP].decode("utf-8", "replace"),
            payload_size=len(value),
        )
        EVENTS_FAILED.labels(self.consumer, short, reason).inc()
        DEAD_LETTERS.labels(self.consumer, reason).inc()
        log.warning(
            "event dead-lettered",
            extra={
                "consumer": self.consumer,
                "topic": short,
                "offset": record.offset,
                "reason": reason,
                "error": error[:300],
            },
        )
        return letter

    async def store(self, letter: DeadLetter) -> None:
        """One statement, no retries; a redelivered record's letter has the same id and is stored once."""
        await self.pool.execute(
            'INSERT INTO dead_letters (id, consumer, source_topic, partition, "offset", reason, error, payload_text)'
            " VALUES ($1,$2,$3,$4,$5,$6,$7,$8) ON CONFLICT DO NOTHING",
            letter.event_id,
            letter.consumer,
            letter.source_topic,
            letter.partition,
            letter.offset,
            letter.reason,
            letter.error,
            # PostgreSQL text cannot hold NUL.
            letter.payload_text.replace("\x00", "\ufffd"),
        )


def _dead_letter_id(group_id: str, record: ConsumerRecord[bytes, bytes], value: bytes) -> uuid.UUID:
    """The same record redelivered gets the same id (stored once); another record at the same position, as
    after a restart of a broker that keeps topics in memory, gets its own."""
    digest = hashlib.sha256(value).hexdigest()
    position = f"{group_id}/{record.topic}/{record.partition}/{record.offset}/{record.timestamp}/{digest}"
    return uuid.uuid5(uuid.NAMESPACE_URL, position)
