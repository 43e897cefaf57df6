"""Events exchanged with upstream chat products: questions in, answers, errors and feedback."""

from __future__ import annotations

import uuid
from enum import StrEnum
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from events.base import Event

JsonValue = Any


class ChatQuestion(Event):
    """A user's question about one project's data, published by an upstream chat product."""

    topic: ClassVar[str] = "chat.question"
    type: Literal["chat.question"] = "chat.question"
    conversation_id: str = Field(
        ...,
        min_length=1,
        max_length=128,
        description="Chat thread; follow-ups resolve against its earlier turns.",
    )
    user_id: str = Field(
        ..., min_length=1, max_length=128, description="Who asked (opaque id from the upstream product)."
    )
    question: str = Field(..., min_length=1, max_length=4000, description="The question in natural language.")


class ChartType(StrEnum):
    line = "line"
    bar = "bar"
    pie = "pie"
    table = "table"
    number = "number"


class ChartSpec(BaseModel):
    """A small, renderer-neutral chart suggestion derived from the result's shape and the question."""

    model_config = ConfigDict(extra="forbid")
    type: ChartType = Field(..., description="line, bar, pie, table or number.")
    x: str | None = Field(None, description="Result column on the x axis (categories for bar and pie).")
    y: list[str] = Field(default_factory=list, description="Result columns plotted as values.")
    series: str | None = Field(None, description="Result column that splits the values into series.")
    title: str | None = Field(None, description="A short title, usually the question.")


class UsedExample(BaseModel):
    """An example the prompt contained, so every answer records what it learned from."""

    model_config = ConfigDict(extra="forbid")
    example_id: str = Field(..., description="Id of the project example or library example.")
    source: Literal["project", "library"] = Field(
        ..., description="project: verified from this project; library: domain few-shot library."
    )
    score: float = Field(..., description="Selection score (higher is more similar).")


class ChatAnswer(Event):
    """The answer to a chat.question: text, SQL, a capped preview of rows and a chart suggestion."""

    topic: ClassVar[str] = "chat.answer"
    type: Literal["chat.answer"] = "chat.answer"
    question_event_id: uuid.UUID = Field(..., description="event_id of the chat.question answered.")
    conversation_id: str
    user_id: str
    question: str
    answer_text: str = Field(..., description="Short natural-language answer derived from the result.")
    sql: str = Field(..., description="The SQL that produced the result.")
    columns: list[str] = Field(default_factory=list, description="Result column names.")
    rows_preview: list[list[JsonValue]] = Field(
        default_factory=list, description="First rows of the result (capped)."
    )
    row_count: int = Field(0, ge=0, description="Rows returned (up to the row limit).")
    truncated: bool = Field(False, description="True when the row limit cut the result.")
    chart: ChartSpec | None = None
    suggestions: list[str] = Field(
        default_factory=list,
        max_length=3,
        description="Suggested next questions: questions of this project's verified examples near this one "
        "(the same question with other values, the next step of the same analysis), so each can be answered "
        "from a verified example.",
    )
    model: str = Field(..., description="Model that wrote the SQL.")
    adapter_version: int | None = Field(None, description="Project adapter version used, if any.")
    arm: Literal["control", "candidate"] = Field(
        "control", description="A/B arm: candidate answers came from a canary adapter."
    )
    examples_used: list[UsedExample] = Field(default_factory=list)
    schema_valid: bool = Field(
        True, description="The SQL referenced only tables and columns of the current schema."
    )
    repaired: bool = Field(False, description="A repair round changed the SQL.")
    attempts: int = Field(
        1, ge=0, description="Model calls made to reach this SQL (0 when a verified example answered)."
    )
    sql_source: Literal["model", "example"] = Field(
        "model",
        description="model: the language model wrote the SQL; example: the SQL of a verified example of this "
        "project whose question is this one with other values, with this question's values (examples_used "
        "names it).",
    )
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    confidence: float = Field(
        0.0,
        ge=0,
        le=1,
        description="How sure querylift is of this answer (calibrated on the benchmark); below 0.5 an upstream "
        "product may show it as a draft.",
    )
    confidence_basis: Literal[
        "verified_example",
        "adapted_example",
        "composed_examples",
        "composed_model",
        "agreement",
        "single_candidate",
    ] = Field(
        "single_candidate",
        description="What the confidence rests on: a verified example's SQL (the question that example's with "
        "other values); a verified example adapted through the values the question names for the same columns; "
        "two verified examples, one nested in the other (a question of a new shape made of two known ones); a "
        "verified example with a model-written query for its inner phrase nested in it; "
        "the share of sampled candidates whose result agreed; or a single candidate (its check outcome and "
        "result).",
    )
    candidates: int = Field(0, ge=0, description="Candidate queries that ran (execution-consistency voting).")
    agreeing: int = Field(0, ge=0, description="Candidates whose result was this answer's.")
    timings_ms: dict[str, float] = Field(
        default_factory=dict,
        description="Milliseconds spent per stage (query, retrieval, llm, execute, ...).",
    )


#: Below this confidence an answer is a draft: upstream products may show it so, and querylift's review queue
#: lists the ones that got no feedback.
LOW_CONFIDENCE = 0.5


class ErrorCode(StrEnum):
    invalid_event = "invalid_event"
    unknown_project = "unknown_project"
    refused = "refused"
    unsafe_sql = "unsafe_sql"
    invalid_sql = "invalid_sql"
    execution_failed = "execution_failed"
    database_unavailable = "database_unavailable"
    model_unavailable = "model_unavailable"
    internal = "internal"


class ChatError(Event):
    """A question that could not be answered, with a reason a person can act on."""

    topic: ClassVar[str] = "chat.error"
    type: Literal["chat.error"] = "chat.error"
    question_event_id: uuid.UUID | None = Field(
        None, description="event_id of the chat.question, when known."
    )
    conversation_id: str | None = None
    user_id: str | None = None
    code: ErrorCode = Field(..., description="Machine-readable reason.")
    message: str = Field(..., description="What went wrong and what to do about it.")
    stage: str = Field(..., description="Consumer that gave up: query, retrieval, generation.")
    retryable: bool = Field(False, description="True when asking again later may succeed.")
    sql: str | None = Field(None, description="The last SQL tried, when the failure is about SQL.")


class ChatFeedback(Event):
    """A user's judgement of an answer: thumbs and/or rating, optionally a corrected SQL."""

    topic: ClassVar[str] = "chat.feedback"
    type: Literal["chat.feedback"] = "chat.feedback"
    answer_id: uuid.UUID = Field(..., description="event_id of the chat.answer judged.")
    user_id: str | None = Field(None, max_length=128)
    thumbs: Literal["up", "down"] | None = None
    rating: int | None = Field(None, ge=1, le=5, description="1 (wrong) to 5 (exactly right).")
    corrected_sql: str | None = Field(None, max_length=20000, description="The SQL the user says is right.")
    comment: str | None = Field(None, max_length=4000)
    chart_relevant: bool | None = Field(None, description="Whether the suggested chart fit the question.")

    @model_validator(mode="after")
    def _has_signal(self) -> ChatFeedback:
        if (
            self.thumbs is None
            and self.rating is None
            and not self.corrected_sql
            and self.chart_relevant is None
        ):
            raise ValueError("feedback needs thumbs, rating, corrected_sql or chart_relevant")
        return self
