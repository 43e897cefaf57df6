"""Hand-offs between querylift's own consumers (query → retrieval → generation)."""

from __future__ import annotations

import uuid
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from events.base import Event


class Turn(BaseModel):
    """An earlier question of the same conversation, so follow-ups can be resolved."""

    model_config = ConfigDict(extra="forbid")
    question: str
    sql: str | None = None
    answer_text: str | None = None


class QueryResolved(Event):
    """A validated question with its project, schema version and conversation context."""

    topic: ClassVar[str] = "query.resolved"
    type: Literal["query.resolved"] = "query.resolved"
    question_event_id: uuid.UUID
    conversation_id: str
    user_id: str
    question: str
    asked_at_ms: float = Field(
        ..., description="Unix time in ms when the question entered querylift, for end-to-end latency."
    )
    dialect: Literal["sqlite", "postgres", "mysql"]
    domain: str | None = None
    schema_version_id: int = Field(..., description="schema_versions.id the SQL must be checked against.")
    history: list[Turn] = Field(
        default_factory=list, description="Recent turns of the conversation, oldest first."
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)


class ContextExample(BaseModel):
    """A retrieved question/SQL pair with its score."""

    model_config = ConfigDict(extra="forbid")
    example_id: str
    source: Literal["project", "library"]
    question: str
    sql: str
    score: float


class ContextReady(Event):
    """A resolved question plus the examples retrieval selected for its prompt."""

    topic: ClassVar[str] = "retrieval.context"
    type: Literal["retrieval.context"] = "retrieval.context"
    query: QueryResolved
    examples: list[ContextExample] = Field(
        default_factory=list, description="Verified project examples, best first."
    )
    fewshot: list[ContextExample] = Field(
        default_factory=list, description="Domain-library examples, best first."
    )
    reserve: list[ContextExample] = Field(
        default_factory=list,
        description="More project examples similar to the question, not in the prompt: generation may choose "
        "among them by the shape of a drafted query (DAIL-SQL's second pass).",
    )
    timings_ms: dict[str, float] = Field(default_factory=dict)
