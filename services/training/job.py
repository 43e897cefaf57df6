"""One training job end to end, without Kafka: the training consumer's handler calls :func:`run_training_job`.

data → Ray training → candidate registered → evaluated against the serving model on held-out examples →
gate → promoted (or put on canary, or rejected) → job row finished. Every outcome, failures and
cancellations included, ends in a finished ``training_jobs`` row and a :class:`TrainingOutcome` the handler
turns into ``training.status`` / ``model.updated`` events.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import asyncpg

from services.core import model_registry as registry
from services.core.column_values_store import ValueIndexes
from services.core.llm.base import LLM
from services.core.projects import load_project
from services.infra.prompt_settings import prompt_options
from services.infra.settings import Settings
from services.training.dataset import (
    ProjectDataset,
    Render,
    default_render,
    load_dataset,
    mark_trained,
)
from services.training.enrich import EnrichOptions, enrich
from services.training.evaluate import Evaluator, Executor, gate
from services.training.lora_train import make_config
from services.training.ray_runner import ProgressHandler, RayTrainingRunner, TrainingCancelled, TrainingFailed

log = logging.getLogger(__name__)

MIN_EXAMPLES = 4


@dataclass
class TrainingOutcome:
    job_id: uuid.UUID
    project_id: str
    status: Literal["succeeded", "failed", "cancelled", "rejected"]
    version: registry.ModelVersion | None = None
    promoted: Literal["active", "canary", "candidate", "rejected"] | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


async def run_training_job(
    pool: asyncpg.Pool,
    settings: Settings,
    runner: RayTrainingRunner,
    *,
    project_id: str,
    job_id: uuid.UUID,
    base_model: str | None = None,
    evaluator_llm: LLM | None = None,
    databases: Executor | None = None,
    render: Render | None = None,
    on_progress: ProgressHandler | None = None,
    train_overrides: dict[str, Any] | None = None,
) -> TrainingOutcome:
    """Train, register, evaluate and (if it beats the serving model) promote one adapter for a project.

    Without ``evaluator_llm`` and ``databases`` the adapter is registered as a candidate and left for a
    person to promote (``querylift models promote``). Raises ``registry.JobAlreadyOpen`` when the project
    already has an unfinished job.
    """
    base = base_model or settings.training_base_model
    dataset = await load_dataset(
        pool,
        project_id,
        validation_share=settings.validation_share,
        seed=settings.training_seed,
        render=render,
    )
    await registry.start_job(pool, project_id, job_id, examples_count=dataset.size, status="running")
    if dataset.size < MIN_EXAMPLES:
        error = f"{dataset.size} usable examples; at least {MIN_EXAMPLES} are needed"
        await registry.finish_job(pool, job_id, "failed", error)
        return TrainingOutcome(job_id, project_id, "failed", error=error)
    project = await load_project(pool, project_id)
    if project is None:  # removed while the job waited
        error = f"project {project_id!r} no longer exists"
        await registry.finish_job(pool, job_id, "failed", error)
        return TrainingOutcome(job_id, project_id, "failed", error=error)
    database_url = project.database_url
    if render is None:
        dataset = replace(dataset, render=training_render(settings, project.description))
    dataset = await enriched(pool, settings, dataset, databases=databases, database_url=database_url)

    version_number = await registry.next_version(pool, project_id)
    config = make_config(
        settings,
        project_id=project_id,
        version=version_number,
        train=dataset.train_records(),
        validation=dataset.validation_records(),
        base_model=base,
        **(train_overrides or {}),
    )
    try:
        trained = await runner.run(str(job_id), config, on_progress)
    except TrainingCancelled as exc:
        await registry.finish_job(pool, job_id, "cancelled", str(exc))
        return TrainingOutcome(job_id, project_id, "cancelled", error=str(exc))
    except TrainingFailed as exc:
        await registry.finish_job(pool, job_id, "failed", str(exc)[:2000])
        return TrainingOutcome(job_id, project_id, "failed", error=str(exc))

    metrics = {k: v for k, v in trained.items() if k not in ("adapter_path", "checksum")}
    metrics["dataset"] = dataset.describe()
    candidate = await registry.register_candidate(
        pool,
        project_id,
        base_model=base,
        adapter_path=trained["adapter_path"],
        checksum=trained["checksum"],
        metrics=metrics,
        training_job_id=job_id,
        version=version_number,
    )
    await mark_trained(pool, project_id, [e.id for e in dataset.verified_train], candidate.version)

    decision: Literal["active", "canary", "candidate", "rejected"] = "candidate"
    if evaluator_llm is not None and databases is not None and dataset.validation:
        evaluator = Evaluator(
            evaluator_llm,
            databases,
            database_url,
            dataset.schema,
            render=dataset.render,
            max_tokens=settings.llm_max_tokens,
            timeout_s=settings.sql_timeout_s,
            row_limit=settings.sql_row_limit,
        )
        serving = (await registry.active_and_canary(pool, project_id)).active
        current = await evaluator.accuracy(
            dataset.validation, adapter=serving.adapter_ref() if serving else None
        )
        cand = await evaluator.accuracy(dataset.validation, adapter=candidate.adapter_ref())
        verdict = gate(
            cand.accuracy,
            current.accuracy,
            settings.promote_margin,
            examples=cand.total,
            min_examples=settings.min_eval_examples,
        )
        metrics.update(
            eval_accuracy=cand.accuracy,
            current_accuracy=current.accuracy,
            current_version=serving.version if serving else None,
            eval_examples=cand.total,
            eval_seconds=round(current.seconds + cand.seconds, 3),
            gate_passed=verdict.passed,
            gate_reason=verdict.reason,
        )
        await registry.update_metrics(pool, project_id, candidate.version, metrics)
        if not verdict.judged:
            decision = "candidate"  # too little held out to judge: a person decides
        elif not verdict.passed:
            candidate = await registry.reject_candidate(pool, project_id, candidate.version)
            decision = "rejected"
        elif settings.canary_share > 0:
            candidate = await registry.set_canary(pool, project_id, candidate.version, settings.canary_share)
            decision = "canary"
        else:
            candidate = await registry.promote(pool, project_id, candidate.version)
            decision = "active"

    status: Literal["succeeded", "rejected"] = "rejected" if decision == "rejected" else "succeeded"
    await registry.finish_job(pool, job_id, status, None, {**metrics, "version": candidate.version})
    log.info(
        "training finished", extra={"project": project_id, "version": candidate.version, "decision": decision}
    )
    return TrainingOutcome(job_id, project_id, status, candidate, decision, metrics)


def training_render(settings: Settings, domain_note: str | None) -> Render:
    """The prompts a project's adapter is trained and gated on: made as serving makes them, options and
    project description included (QUERYLIFT_TRAINING_SERVING_PROMPTS), or the plain full prompt."""
    if settings.training_serving_prompts:
        return Render(prompt_options(settings), domain_note, settings.prompt_token_budget)
    return default_render


async def enriched(
    pool: asyncpg.Pool,
    settings: Settings,
    dataset: ProjectDataset,
    *,
    databases: Executor | None,
    database_url: str | None,
) -> ProjectDataset:
    """The dataset with value variants and serving-like prompts (``services.training.enrich``)."""
    index = await ValueIndexes(pool, max_projects=1).current(dataset.project_id)
    return await enrich(
        dataset,
        index=index,
        databases=databases,
        database_url=database_url,
        options=EnrichOptions(
            variants_per_example=settings.training_value_variants,
            max_variants=settings.training_max_variants,
            context_examples=settings.training_context_examples,
            unseen_pattern_share=settings.training_unseen_pattern_share,
            entity_value_hints=settings.entity_value_hints,
            seed=settings.training_seed,
            timeout_s=settings.sql_timeout_s,
            row_limit=settings.sql_row_limit,
        ),
    )
