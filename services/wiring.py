"""Builds each consumer's handler with its adapters from settings. The only place that knows them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import asyncpg

from services.core.customer_db import CustomerDatabases
from services.core.examples.embedder import Embedder, get_embedder
from services.core.examples.index import VectorIndex
from services.core.examples.index_pgvector import PgVectorIndex
from services.core.examples.index_weaviate import WeaviateIndex
from services.core.llm.base import LLM
from services.feedback.handler import FeedbackHandler
from services.feedback.learn import Learner
from services.generation.handler import GenerationHandler
from services.generation.pipeline import GenerationConfig
from services.generation.serving import AdapterRoutingLLM
from services.infra.consumer import BaseHandler
from services.infra.llm.factory import build_llm as build_backend
from services.infra.llm.transformers_peft import TransformersLLM
from services.infra.prompt_settings import prompt_options
from services.infra.settings import Settings
from services.query.handler import QueryHandler
from services.retrieval.handler import RetrievalHandler
from services.training.handler import TrainingHandler
from services.training.ray_runner import RayTrainingRunner

SERVICES = ("query", "retrieval", "generation", "feedback", "training")


@dataclass
class Overrides:
    """Injected adapters for tests and benchmarks (a scripted model, a shared embedder, ...)."""

    llm: LLM | None = None
    embedder: Embedder | None = None
    index: VectorIndex | None = None
    trainer: RayTrainingRunner | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def build_databases(settings: Settings) -> CustomerDatabases:
    """Customer databases with the configured size limits."""
    return CustomerDatabases(
        max_value_bytes=settings.sql_max_value_bytes, max_result_bytes=settings.sql_max_result_bytes
    )


def build_index(settings: Settings, pool: asyncpg.Pool) -> VectorIndex:
    if settings.vector_backend == "weaviate":
        if not settings.weaviate_url:
            raise SystemExit("QUERYLIFT_VECTOR_BACKEND=weaviate needs QUERYLIFT_WEAVIATE_URL")
        return WeaviateIndex(settings.weaviate_url)

    return PgVectorIndex(pool)


def build_llm(settings: Settings) -> LLM:
    base = build_backend(settings)
    if settings.llm_backend == "transformers":
        return base

    def adapted() -> LLM:
        return TransformersLLM(settings)

    # Projects with a LoRA adapter: by the configured backend when it can apply the adapter itself (a GGUF
    # LoRA converted for the model it serves), otherwise by a transformers model with peft.
    return AdapterRoutingLLM(base, adapted)


def generation_config(settings: Settings) -> GenerationConfig:
    return GenerationConfig(
        prompt=prompt_options(settings),
        mechanical_fixes=settings.mechanical_fixes,
        literal_word_fixes=settings.literal_word_fixes,
        value_check=settings.value_hints,
        value_templates=settings.value_templates,
        value_template_min_score=settings.value_template_min_score,
        shape_templates=settings.shape_templates,
        entity_templates=settings.entity_templates,
        prominent_readings=settings.prominent_readings,
        composed_answers=settings.composed_answers,
        decomposed_answers=settings.decomposed_answers,
        draft_reselect=settings.draft_reselect,
        vote_candidates=settings.vote_candidates,
        repair_rounds=settings.repair_rounds,
        repair_runaways=settings.repair_runaways,
        budget_tokens=settings.prompt_token_budget,
        max_tokens=settings.llm_max_tokens,
        timeout_s=settings.sql_timeout_s,
        row_limit=settings.sql_row_limit,
        preview_rows=settings.preview_rows,
        template_answers=settings.template_answers,
    )


async def build_handler(
    name: str, settings: Settings, pool: asyncpg.Pool, overrides: Overrides | None = None
) -> BaseHandler:
    o = overrides or Overrides()
    if name == "query":
        return QueryHandler(pool)
    if name == "retrieval":
        return RetrievalHandler(
            pool,
            o.index or build_index(settings, pool),
            o.embedder or get_embedder(settings.embedding_model, cache_size=settings.embedding_cache_size),
            top_k=settings.retrieval_top_k,
            fewshot_k=settings.fewshot_top_k,
            parts=settings.retrieval_parts,
            part_similarity=settings.retrieval_part_similarity,
            reserve=settings.retrieval_reserve,
            paraphrases=settings.learned_paraphrases,
        )
    if name == "generation":
        return GenerationHandler(
            pool,
            o.llm or build_llm(settings),
            build_databases(settings),
            generation_config(settings),
            project_cache_s=settings.project_cache_s,
            paraphrases=settings.learned_paraphrases,
        )
    if name == "feedback":
        learner = Learner(
            pool,
            o.index or build_index(settings, pool),
            o.embedder or get_embedder(settings.embedding_model, cache_size=settings.embedding_cache_size),
            build_databases(settings),
            sql_timeout_s=settings.sql_timeout_s,
        )
        return FeedbackHandler(pool, learner, training_threshold=settings.training_threshold)
    if name == "training":
        return TrainingHandler(
            pool,
            settings,
            trainer=o.trainer,
            evaluator=lambda: (build_llm(settings), build_databases(settings)),
        )
    raise ValueError(f"unknown service {name!r}; choose one of {', '.join(SERVICES)}")
