"""Events of the second learning loop: training requests, job status and model updates."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar, Literal

from pydantic import Field

from events.base import Event


class TrainingRequested(Event):
    """A project crossed its threshold of verified examples since its last training."""

    topic: ClassVar[str] = "training.requested"
    type: Literal["training.requested"] = "training.requested"
    examples_count: int = Field(..., ge=0, description="Verified examples available for training.")
    new_examples: int = Field(..., ge=0, description="Verified examples added since the last training.")
    threshold: int = Field(..., ge=1)
    base_model: str | None = Field(None, description="Base model to adapt; the service default when empty.")


class TrainingStatus(Event):
    """Progress and outcome of one training job (never lost: failures and cancellations too)."""

    topic: ClassVar[str] = "training.status"
    type: Literal["training.status"] = "training.status"
    job_id: uuid.UUID
    status: Literal["submitted", "running", "succeeded", "failed", "cancelled", "rejected"]
    progress: float | None = Field(None, ge=0, le=1)
    message: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)


class ModelUpdated(Event):
    """A project's served model changed: an adapter was promoted, put on canary, or rolled back."""

    topic: ClassVar[str] = "model.updated"
    type: Literal["model.updated"] = "model.updated"
    model_version_id: int | None = Field(None, description="model_versions.id; None means the base model.")
    version: int | None = None
    base_model: str
    adapter_path: str | None = None
    adapter_checksum: str | None = None
    status: Literal["active", "canary", "retired", "candidate"]
    canary_share: float = Field(0.0, ge=0, le=1)
    metrics: dict[str, Any] = Field(default_factory=dict)
