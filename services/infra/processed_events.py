"""The idempotency records of one consumer: which events it handled, and their outputs until they are out.

A row is written with the run's outputs before they are published, and marked published (its outputs
dropped) afterwards, so a redelivered event either needs nothing or re-publishes exactly what its first run
produced, never a second, possibly different, run's outputs.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from events import EVENT_TYPES, Event

#: One recorded output: the event's JSON object with its topic under ``"__topic"``.
StoredOutput = dict[str, Any]
#: An output event with the JSON it is published as; recording the same JSON saves serialising it twice.
EncodedOutput = tuple[Event, str]


class ProcessedEvents:
    """Every statement on ``processed_events`` for one consumer. Each call is one statement, no retries:
    the caller decides how long an outage is waited out."""

    def __init__(self, pool: asyncpg.Pool, consumer: str) -> None:
        self.pool = pool
        self.consumer = consumer

    async def already_done(self, event_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[StoredOutput] | None]:
        """The given events handled before: None where their outputs went out, else the outputs to re-publish."""
        rows = await self.pool.fetch(
            "SELECT event_id, outputs, published FROM processed_events"
            " WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            self.consumer,
            event_ids,
        )
        return {r["event_id"]: None if r["published"] else list(r["outputs"]) for r in rows}

    async def record_done(self, runs: Mapping[uuid.UUID, Sequence[EncodedOutput]]) -> None:
        payloads = {event_id: _outputs_json(outputs) for event_id, outputs in runs.items()}
        await self.pool.execute(
            "INSERT INTO processed_events (consumer, event_id, outputs)"
            " SELECT $1, e, o::jsonb FROM unnest($2::uuid[], $3::text[]) AS t(e, o) ON CONFLICT DO NOTHING",
            self.consumer,
            list(payloads),
            list(payloads.values()),
        )

    async def mark_published(self, event_ids: list[uuid.UUID]) -> None:
        await self.pool.execute(
            "UPDATE processed_events SET published = true, outputs = '[]'"
            " WHERE consumer = $1 AND event_id = ANY($2::uuid[])",
            self.consumer,
            event_ids,
        )


def _outputs_json(outputs: Sequence[EncodedOutput]) -> str:
    """The recorded form of a run's outputs: a JSON array of the events, each tagged with its topic."""
    # Splicing the tag into each event's own JSON saves serialising every event a second time.
    return "[" + ",".join(f'{{"__topic":{json.dumps(type(e).topic)},{js[1:]}' for e, js in outputs) + "]"


_BY_TOPIC: dict[str, type[Event]] = {t.topic: t for t in EVENT_TYPES}


def revive(item: StoredOutput) -> Event:
    """The event a recorded output stands for."""
    data = dict(item)
    topic = data.pop("__topic")
    return _BY_TOPIC[topic].model_validate(data)
