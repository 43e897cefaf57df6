"""querylift event contracts (pydantic v2). Every type is exported to JSON Schema under ``schemas/``."""

from events.base import Event, derived_id, utcnow
from events.chat import (
    LOW_CONFIDENCE,
    ChartSpec,
    ChartType,
    ChatAnswer,
    ChatError,
    ChatFeedback,
    ChatQuestion,
    ErrorCode,
    UsedExample,
)
from events.dead_letter import DeadLetter
from events.internal import ContextExample, ContextReady, QueryResolved, Turn
from events.training import ModelUpdated, TrainingRequested, TrainingStatus

#: Every event type that travels on a topic, in pipeline order.
EVENT_TYPES: tuple[type[Event], ...] = (
    ChatQuestion,
    QueryResolved,
    ContextReady,
    ChatAnswer,
    ChatError,
    ChatFeedback,
    TrainingRequested,
    TrainingStatus,
    ModelUpdated,
)

__all__ = [
    "EVENT_TYPES",
    "LOW_CONFIDENCE",
    "ChartSpec",
    "ChartType",
    "ChatAnswer",
    "ChatError",
    "ChatFeedback",
    "ChatQuestion",
    "ContextExample",
    "ContextReady",
    "DeadLetter",
    "ErrorCode",
    "Event",
    "ModelUpdated",
    "QueryResolved",
    "TrainingRequested",
    "TrainingStatus",
    "Turn",
    "UsedExample",
    "derived_id",
    "utcnow",
]
