"""Publishing events and creating topics on any Kafka-compatible broker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from pydantic import BaseModel

from events import EVENT_TYPES, DeadLetter, Event
from services.infra.metrics import EVENTS_PRODUCED, LabelledChildren

log = logging.getLogger(__name__)

ALL_TOPICS: tuple[str, ...] = (*(t.topic for t in EVENT_TYPES), DeadLetter.topic)


async def ensure_topics(bootstrap_servers: str, prefix: str = "", partitions: int = 6) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [NewTopic(prefix + t, partitions, 1) for t in ALL_TOPICS if prefix + t not in existing]
        if missing:
            try:
                await admin.create_topics(missing)
            except TopicAlreadyExistsError:
                pass  # another consumer created them first
    finally:
        await admin.close()


class Bus:
    """A producer that keys every event by project id (one project's events stay in order)."""

    def __init__(self, bootstrap_servers: str, *, prefix: str = "", client: str = "querylift") -> None:
        self.prefix = prefix
        self.client = client
        self._producer = AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers,
            acks="all",
            # A settle group is sent in one go (send() only queues until the loop yields), so waiting for more
            # would only delay every hop.
            linger_ms=0,
            client_id=client,
            max_request_size=4 * 1024 * 1024,
        )
        self._produced = LabelledChildren(EVENTS_PRODUCED)

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    def topic_of(self, event: BaseModel) -> str:
        return self.prefix + type(event).topic  # type: ignore[attr-defined]

    async def publish(self, event: Event | DeadLetter) -> None:
        await self.publish_many([event])

    async def publish_many(self, events: Iterable[Event | DeadLetter]) -> None:
        """Send all, then wait for every acknowledgement (a failure raises, so nothing is marked sent)."""
        await self.publish_encoded((event, None) for event in events)

    async def publish_encoded(self, events: Iterable[tuple[Event | DeadLetter, str | None]]) -> None:
        """``publish_many`` for events whose JSON is already at hand (None: serialise it here)."""
        futures = []
        for event, encoded in events:
            key = event.key() if isinstance(event, Event) else (event.key or "").encode() or None
            topic = self.topic_of(event)
            value = (encoded if encoded is not None else event.model_dump_json()).encode()
            futures.append(await self._producer.send(topic, value, key=key))
            self._produced(self.client, type(event).topic).inc()
        if futures:
            await asyncio.gather(*futures)

    async def publish_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """For tests and upstream simulators: bytes exactly as given, valid or not."""
        await self._producer.send_and_wait(self.prefix + topic, value, key=key)
