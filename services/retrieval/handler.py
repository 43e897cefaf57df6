"""Retrieval consumer: query.resolved → retrieval.context with the project's best verified examples and
domain few-shot examples."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import ClassVar

import asyncpg

from events import ContextExample, ContextReady, ErrorCode, Event, QueryResolved
from services.core.column_values_store import ValueIndexes
from services.core.examples.embedder import Embedder, embed_async
from services.core.examples.fewshot import FewshotLibrary
from services.core.examples.index import VectorIndex
from services.core.examples.masking import mask_question, retrieval_text
from services.core.examples.paraphrases import ProjectParaphrases
from services.core.examples.selection import select_with_reserve
from services.core.projects import load_schema
from services.infra import metrics
from services.infra.consumer import BaseHandler
from services.infra.errors import question_error


class RetrievalHandler(BaseHandler):
    name: ClassVar[str] = "retrieval"
    answer_path: ClassVar[bool] = True
    subscriptions: ClassVar[dict[str, type[Event]]] = {QueryResolved.topic: QueryResolved}

    def __init__(
        self,
        pool: asyncpg.Pool,
        index: VectorIndex,
        embedder: Embedder,
        *,
        top_k: int,
        fewshot_k: int,
        parts: int = 0,
        part_similarity: float = 0.85,
        reserve: int = 0,
        paraphrases: bool = False,
        library: FewshotLibrary | None = None,
    ) -> None:
        self.pool = pool
        self.index = index
        self.embedder = embedder
        self.top_k = top_k
        self.fewshot_k = fewshot_k
        self.parts = parts
        self.part_similarity = part_similarity
        self.reserve = reserve
        self.paraphrases = ProjectParaphrases(pool) if paraphrases else None
        self.library = library or FewshotLibrary()
        self.values = ValueIndexes(pool)

    async def _known_values(self, event: QueryResolved) -> list[str]:
        """The question's words that are values of the project's database (masked as values)."""
        index = await self.values.current(event.project_id)
        return [m.phrase for m in index.matches(event.question)] if index is not None else []

    def ordering_key(self, event: Event) -> str:
        # Retrieval reads, never writes, per question: only a conversation's own order is kept.
        if isinstance(event, QueryResolved):
            return f"{event.project_id}/{event.conversation_id}"
        return event.project_id

    async def prepare_batch(self, events: Sequence[Event]) -> None:
        """Embeds every text the poll's questions will need in one model pass (the stage's main cost); the
        embedder's cache then answers the handlers without running the model."""
        if self.embedder.cache_size <= 0:
            return  # no cache would keep the vectors: the handlers would embed every text again
        texts: list[str] = []
        for event in events:
            if isinstance(event, QueryResolved):
                schema = await load_schema(self.pool, event.schema_version_id)
                known = await self._known_values(event)
                texts.append(retrieval_text(event.question, mask_question(event.question, schema, known)))
                texts.append(event.question)
        unique = list(dict.fromkeys(texts))
        if unique:
            # Only the texts the cache lacks are worth a worker thread.
            await embed_async(self.embedder, unique)

    async def handle(self, event: Event) -> Sequence[Event]:
        assert isinstance(event, QueryResolved)
        started = time.perf_counter()
        schema = await load_schema(self.pool, event.schema_version_id)
        examples: list[ContextExample] = []
        reserve: list[ContextExample] = []
        if self.top_k > 0:
            examples, reserve = await select_with_reserve(
                self.pool,
                self.index,
                self.embedder,
                project_id=event.project_id,
                question=event.question,
                schema=schema,
                k=self.top_k,
                known_values=await self._known_values(event),
                parts=self.parts,
                part_min_similarity=self.part_similarity,
                reserve=self.reserve,
                paraphrases=(
                    await self.paraphrases.get(event.project_id, schema.dialect) if self.paraphrases else None
                ),
            )
        fewshot = []
        # The project's own examples take precedence: library examples only fill what they leave open.
        room = max(0, self.fewshot_k - max(0, len(examples) - self.top_k // 2))
        if room > 0:
            domain = event.domain or "generic"
            lookup = getattr(self.embedder, "lookup", None)
            if lookup is not None and lookup([event.question]) is not None:
                # The vector is cached: what is left is a little arithmetic, cheaper than a thread hop.
                fewshot = self.library.select(event.question, domain, room, self.embedder)
            else:
                fewshot = await asyncio.to_thread(
                    self.library.select, event.question, domain, room, self.embedder
                )
        for source, found in (("project", examples), ("library", fewshot)):
            metrics.RETRIEVAL_EXAMPLES.labels(source).observe(len(found))
            if found:
                metrics.RETRIEVAL_TOP_SCORE.labels(source).observe(found[0].score)
        context = ContextReady(
            project_id=event.project_id,
            correlation_id=event.question_event_id,
            query=event,
            examples=examples,
            fewshot=fewshot,
            reserve=reserve,
            timings_ms={"retrieval": (time.perf_counter() - started) * 1000},
        )
        return [context.with_derived_id(event.question_event_id, "context")]

    def on_failure(self, event: Event, error: BaseException) -> Sequence[Event]:
        if not isinstance(event, QueryResolved):
            return ()
        return [
            question_error(
                project_id=event.project_id,
                question_event_id=event.question_event_id,
                conversation_id=event.conversation_id,
                user_id=event.user_id,
                code=ErrorCode.internal,
                stage=self.name,
                message="Examples could not be retrieved because of an internal error; it was recorded for the operators.",
            )
        ]
