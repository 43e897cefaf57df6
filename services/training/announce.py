"""The model.updated event that tells generation consumers what a project serves after a promotion or a
rollback (``querylift models`` and the review console send the same one)."""

from __future__ import annotations

from events import ModelUpdated
from services.core.model_registry import ModelVersion


def serving_changed(project_id: str, version: ModelVersion | None, default_base_model: str) -> ModelUpdated:
    """``version`` is now active for ``project_id``; None means the base model."""
    return ModelUpdated(
        project_id=project_id,
        model_version_id=version.id if version else None,
        version=version.version if version else None,
        base_model=version.base_model if version else default_base_model,
        adapter_path=version.adapter_path if version else None,
        adapter_checksum=version.checksum if version else None,
        status="active",
        metrics=version.metrics if version else {},
    )
