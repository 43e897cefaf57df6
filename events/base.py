"""The envelope every querylift event shares.

Every event carries an ``event_id`` that consumers use for idempotency, the ``project_id`` that is also the
Kafka message key (so one project's events stay in order on one partition), a ``type`` discriminator and a
``schema_version`` so producers in other languages can evolve without breaking consumers.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

# Event ids derived from a parent id are stable across redeliveries, which is what makes every
# downstream consumer's dedupe work even when a handler runs twice after a crash.
_NAMESPACE = uuid.UUID("6f1d5a52-2b8e-4c61-9a53-4d1f0f3c7a10")


def derived_id(parent: uuid.UUID | str, purpose: str) -> uuid.UUID:
    """A deterministic event id for the event that ``parent`` causes for ``purpose``."""
    return uuid.uuid5(_NAMESPACE, f"{parent}:{purpose}")


def utcnow() -> datetime:
    return datetime.now(UTC)


ProjectId = str


class Event(BaseModel):
    """Fields common to every event."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    #: Kafka topic (without the configured prefix) that carries this event type.
    topic: ClassVar[str] = ""

    event_id: uuid.UUID = Field(
        default_factory=uuid.uuid4,
        description="Unique id of this event; consumers drop an event whose id they already processed.",
    )
    schema_version: int = Field(1, ge=1, description="Version of this event type's schema.")
    project_id: ProjectId = Field(
        ...,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$",
        description="Customer project this event belongs to; also the Kafka message key.",
    )
    occurred_at: datetime = Field(default_factory=utcnow, description="When the event happened (UTC).")
    correlation_id: uuid.UUID | None = Field(
        None,
        description="Id of the chat.question this event descends from, for tracing one question end to end.",
    )

    def key(self) -> bytes:
        return self.project_id.encode()

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    def with_derived_id(self, parent: uuid.UUID | str, purpose: str) -> Any:
        self.event_id = derived_id(parent, purpose)
        return self
