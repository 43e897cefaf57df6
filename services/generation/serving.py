"""Which model answers a project's question: the base, its active adapter, or (for a canary share of
questions) its candidate adapter. Kept in memory and refreshed on model.updated, without a restart."""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from typing import Literal

import asyncpg

from events import ModelUpdated
from services.core import model_registry
from services.core.llm.base import LLM, AdapterRef, ChatMessage, Completion

log = logging.getLogger(__name__)

Arm = Literal["control", "candidate"]


@dataclass
class ProjectModels:
    active: AdapterRef | None = None
    canary: AdapterRef | None = None
    canary_share: float = 0.0


def canary_draw(question_id: uuid.UUID | str) -> float:
    """A stable number in [0, 1) per question, so a redelivered question lands in the same arm."""
    digest = hashlib.sha256(str(question_id).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class ModelRouter:
    def __init__(self, pool: asyncpg.Pool | None) -> None:
        self.pool = pool
        self._projects: dict[str, ProjectModels] = {}

    async def _load(self, project_id: str) -> ProjectModels:
        models = ProjectModels()
        if self.pool is not None:
            state = await model_registry.active_and_canary(self.pool, project_id)
            models.active = state.active.adapter_ref() if state.active else None
            models.canary = state.canary.adapter_ref() if state.canary else None
            models.canary_share = state.canary_share if models.canary else 0.0
        self._projects[project_id] = models
        return models

    async def choose(self, project_id: str, question_id: uuid.UUID) -> tuple[AdapterRef | None, Arm]:
        models = self._projects.get(project_id) or await self._load(project_id)
        if models.canary is not None and canary_draw(question_id) < models.canary_share:
            return models.canary, "candidate"
        return models.active, "control"

    async def apply(self, update: ModelUpdated) -> None:
        await self._load(update.project_id)
        log.info(
            "model routing updated",
            extra={"project": update.project_id, "version": update.version, "status": update.status},
        )


class AdapterRoutingLLM:
    """Sends base-model requests to ``base`` (e.g. the fast GGUF model), and adapter requests to ``base`` too
    when it can apply that adapter itself (a GGUF LoRA converted for it, see ``GGUFLLM.adapter_file``);
    other adapter requests go to ``adapted`` (a transformers model that applies peft adapters), created on
    first use."""

    def __init__(self, base: LLM, adapted_factory: object) -> None:
        self.base = base
        self._factory = adapted_factory
        self._adapted: LLM | None = None
        self.name = base.name

    def _adapted_llm(self) -> LLM:
        if self._adapted is None:
            self._adapted = self._factory()  # type: ignore[operator]
        assert self._adapted is not None
        return self._adapted

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        if adapter is None or self._base_serves(adapter):
            return await self.base.complete(
                messages,
                max_tokens=max_tokens,
                adapter=adapter,
                alternatives=alternatives,
                first_alternative=first_alternative,
            )
        return await self._adapted_llm().complete(
            messages,
            max_tokens=max_tokens,
            adapter=adapter,
            alternatives=alternatives,
            first_alternative=first_alternative,
        )

    def _base_serves(self, adapter: AdapterRef) -> bool:
        # Raises AdapterMismatch for another project's adapter rather than routing it anywhere.
        adapter_file = getattr(self.base, "adapter_file", None)
        return callable(adapter_file) and adapter_file(adapter) is not None

    def count_tokens(self, text: str) -> int:
        return self.base.count_tokens(text)

    async def close(self) -> None:
        await self.base.close()
        if self._adapted is not None:
            await self._adapted.close()
