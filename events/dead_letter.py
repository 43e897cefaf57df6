"""What a consumer publishes when it cannot parse or process an event."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import utcnow

#: Why an event was set aside; consumers name the reason when they reject or give up on an event.
DeadLetterReason = Literal["unparseable", "invalid", "unknown_version", "processing_failed"]


class DeadLetter(BaseModel):
    """An event set aside with the reason; the consumer goes on with the next one."""

    model_config = ConfigDict(extra="forbid")
    topic: ClassVar[str] = "querylift.dlq"
    type: Literal["dead_letter"] = "dead_letter"
    event_id: uuid.UUID = Field(default_factory=uuid.uuid4)
    schema_version: int = 1
    consumer: str = Field(..., description="Consumer group that gave up on the event.")
    source_topic: str
    partition: int
    offset: int
    key: str | None = None
    reason: DeadLetterReason
    error: str = Field(..., max_length=2000, description="Why, for a person (no customer rows).")
    payload_text: str = Field(
        ..., description="The original bytes, decoded with replacement characters, capped."
    )
    payload_size: int
    occurred_at: datetime = Field(default_factory=utcnow)
