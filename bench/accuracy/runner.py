"""Runs the accuracy benchmark: per project, register it, replay its history through the product's learner,
then answer its test questions with every strategy through ``generate_answer`` and score the answers.

One model load per run and one embedder are shared by everything; per question the work is what the product
does for a question (retrieval consumer, generation pipeline) plus running the gold SQL once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import hashlib
import json
import logging
import os
import platform
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import asyncpg
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bench.accuracy.data import BenchProject, TestItem, discover_projects, spread_sample
from bench.accuracy.options import AccuracyOptions
from bench.accuracy.replay import ReplayStats, replay_history, reset_project
from bench.accuracy.report import write_results
from bench.accuracy.scoring import Outcome, is_correct, summarize
from bench.accuracy.strategies import Strategy, resolve
from events import ContextExample
from services.core.column_values_store import ValueIndexes
from services.core.customer_db import CustomerDatabases, QueryFailed, QueryTimeout, SqlRefused
from services.core.examples.embedder import get_embedder
from services.core.examples.fewshot import FewshotLibrary
from services.core.examples.paraphrases import Paraphrases, learn_project
from services.core.examples.selection import select_with_reserve
from services.core.examples.store import count_usable
from services.core.llm.base import LLM, AdapterRef, ModelUnavailable
from services.core.model_registry import promote, register_candidate
from services.core.projects import load_project
from services.core.prompt import build_prompt
from services.core.schema import SchemaInfo
from services.core.values import ValueIndex
from services.feedback.learn import Learner
from services.generation.pipeline import generate_answer
from services.generation.serving import ModelRouter
from services.infra.db import create_pool, migrate
from services.infra.embedded import EmbeddedPostgres
from services.infra.llm.gguf import forget_answers
from services.infra.settings import Settings, get_settings
from services.query.register import register_project
from services.training.dataset import load_dataset
from services.training.job import enriched, training_render
from services.training.lora_train import adapter_path, make_config, train_lora
from services.wiring import build_databases, build_index, build_llm

log = logging.getLogger(__name__)

_GOLD_ROW_LIMIT = 1_000_000


@dataclass
class _ProjectState:
    project: BenchProject
    schema: SchemaInfo
    version_id: int
    domain: str
    test: list[TestItem]
    gold: dict[str, list[Any]]
    skipped_gold: list[str] = field(default_factory=list)
    replay: ReplayStats = field(default_factory=ReplayStats)
    replayed: int = 0
    adapter: AdapterRef | None = None
    adapter_info: dict[str, Any] | None = None
    values: ValueIndex | None = None
    #: The project's learned wordings as of the history replayed so far.
    paraphrases: Paraphrases = field(default_factory=Paraphrases)


def machine_info() -> dict[str, Any]:
    cpu_model = ""
    mem_gib: float | None = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
                break
    except OSError:
        pass
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    versions = {}
    for dist in ("llama_cpp_python", "torch", "transformers", "peft", "sentence-transformers", "sqlglot"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model or platform.processor(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_gib": mem_gib,
        "accelerator": "none (CPU)",
        "packages": versions,
    }


def settings_record(settings: Settings) -> dict[str, Any]:
    keys = (
        "llm_backend",
        "llm_model",
        "llm_threads",
        "llm_context_tokens",
        "llm_cpu_weights",
        "llm_max_tokens",
        "llm_seed",
        "prompt_token_budget",
        "embedding_model",
        "vector_backend",
        "retrieval_top_k",
        "fewshot_top_k",
        "repair_rounds",
        "sql_timeout_s",
        "sql_row_limit",
        "training_base_model",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "lora_epochs",
        "lora_learning_rate",
        "lora_batch_size",
        "lora_max_steps",
        "lora_time_budget_s",
        "lora_precision",
        "lora_shared_prefix",
        "training_seed",
        "validation_share",
    )
    record = {k: getattr(settings, k) for k in keys}
    record["decoding"] = "greedy (temperature 0, top_k 1)"
    return record


def bench_settings(options: AccuracyOptions, base: Settings | None = None) -> Settings:
    settings = base or get_settings()
    update: dict[str, Any] = {}
    if options.model:
        update["llm_model"] = options.model
        if settings.llm_backend not in ("gguf",):
            update["llm_backend"] = "gguf"
    if options.lora_base_model:
        update["training_base_model"] = options.lora_base_model
    else:
        # The adapter is for the model that answers: trained on it, llama.cpp applies it to that same base.
        update["training_base_model"] = update.get("llm_model", settings.llm_model)
    if options.lora_max_steps is not None:
        update["lora_max_steps"] = options.lora_max_steps
    return settings.model_copy(update=update) if update else settings


class AccuracyBench:
    """One benchmark run's shared components; ``run()`` returns the results document."""

    def __init__(
        self,
        options: AccuracyOptions,
        settings: Settings,
        *,
        pool: asyncpg.Pool,
        llm: LLM,
        embedder: Any,
        index: Any,
        databases: CustomerDatabases,
        llm_factory: Callable[[Settings], LLM] | None = None,
    ) -> None:
        self.options = options
        self.settings = settings
        self.pool = pool
        self.llm = llm
        self.embedder = embedder
        self.index = index
        self.databases = databases
        self.learner = Learner(pool, index, embedder, databases, sql_timeout_s=settings.sql_timeout_s)
        self.library = FewshotLibrary()
        self.strategies = resolve(options.strategies, options.variants)
        self._llm_factory = llm_factory
        #: Backends of variants that change model settings (``llm_*``), by those settings.
        self._variant_llms: dict[tuple[tuple[str, str], ...], LLM] = {}
        self.predictions: list[dict[str, Any]] = []
        self._answers: dict[str, Outcome] = {}
        self._progress: Any = None

    # --- context and answers ---------------------------------------------------------------------------

    def _llm_for(self, strategy: Strategy) -> LLM:
        """The run's model, or for a variant that changes model settings a backend built with them (a GGUF
        backend shares the loaded weights, so this costs no second load)."""
        model_keys = tuple((k, v) for k, v in strategy.overrides if k.startswith("llm_"))
        if not model_keys:
            return self.llm
        llm = self._variant_llms.get(model_keys)
        if llm is None:
            if self._llm_factory is None:
                raise ValueError(
                    f"{strategy.name} changes model settings, which needs a backend built by the benchmark"
                )
            llm = self._llm_factory(strategy.settings_for(self.settings))
            self._variant_llms[model_keys] = llm
        return llm

    async def close(self) -> None:
        for llm in self._variant_llms.values():
            await llm.close()
        self._variant_llms.clear()

    async def _context(
        self, state: _ProjectState, strategy: Strategy, item: TestItem
    ) -> tuple[list[ContextExample], list[ContextExample], list[ContextExample]]:
        """(project examples, library examples, reserve) as the retrieval consumer would send them."""
        settings = strategy.settings_for(self.settings)
        top_k, fewshot_k = strategy.retrieval_k(settings)
        if top_k == 0 and fewshot_k == 0:
            return [], [], []
        # The retrieval consumer's rules: the project's own examples first, library ones only fill the room
        # they leave (services.retrieval.handler.RetrievalHandler).
        examples: list[ContextExample] = []
        reserve: list[ContextExample] = []
        if top_k > 0:
            examples, reserve = await select_with_reserve(
                self.pool,
                self.index,
                self.embedder,
                project_id=state.project.project_id,
                question=item.question,
                schema=state.schema,
                k=top_k,
                # Value grounding includes masking the question's values for retrieval (the services always do).
                known_values=(
                    [m.phrase for m in state.values.matches(item.question)]
                    if state.values is not None and (strategy.values or strategy.product_wiring)
                    else []
                ),
                parts=settings.retrieval_parts,
                part_min_similarity=settings.retrieval_part_similarity,
                reserve=settings.retrieval_reserve,
                paraphrases=state.paraphrases if settings.learned_paraphrases else None,
            )
        fewshot: list[ContextExample] = []
        room = max(0, fewshot_k - max(0, len(examples) - top_k // 2))
        if room > 0:
            fewshot = await asyncio.to_thread(
                self.library.select, item.question, state.domain or "generic", room, self.embedder
            )
        return examples, fewshot, reserve

    async def _answer(
        self, state: _ProjectState, strategy: Strategy, item: TestItem, adapter: AdapterRef | None
    ) -> Outcome:
        started = time.perf_counter()
        examples, fewshot, reserve = await self._context(state, strategy, item)
        error: str | None = None
        config = strategy.generation_config(strategy.settings_for(self.settings))
        llm = self._llm_for(strategy)
        domain_note = state.project.description if strategy.domain_note else None
        values = state.values if config.prompt.value_hints or config.value_check else None
        hints = (
            values.hints(item.question, entity_words=config.prompt.entity_value_hints)
            if values is not None and config.prompt.value_hints
            else []
        )
        # Greedy decoding makes an answer a function of the prompt and the loop settings: a strategy whose
        # prompt for this question is identical to one already answered (e.g. few-shot adds nothing when
        # project examples fill the room) gets that answer instead of a second identical model run.
        prompt = build_prompt(
            item.question,
            state.schema,
            examples=examples,
            fewshot=fewshot,
            options=config.prompt,
            budget_tokens=config.budget_tokens,
            count_tokens=llm.count_tokens,
            domain_note=domain_note,
            value_hints=hints,
        )
        key = json.dumps(
            [
                item.id,
                prompt.messages,
                [
                    config.static_check,
                    config.repair_rounds,
                    config.execution_repair,
                    config.max_tokens,
                    config.template_answers,
                    config.mechanical_fixes,
                    config.value_check and values is not None,
                    config.vote_candidates,
                ],
                repr(adapter),
                [e.example_id for e in reserve] if config.draft_reselect else [],
                # A variant's settings may reach past the config (the model's decoding): never shared.
                list(strategy.overrides),
            ],
            default=str,
        )
        cached = self._answers.get(key)
        if cached is not None:
            reused = dataclasses.replace(cached, reused=True)
            return reused
        try:
            result = await generate_answer(
                llm,
                self.databases,
                question=item.question,
                schema=state.schema,
                database_url=state.project.database_url,
                examples=examples,
                fewshot=fewshot,
                config=config,
                adapter=adapter,
                domain_note=domain_note,
                values=values,
                reserve=reserve,
                paraphrases=state.paraphrases
                if strategy.settings_for(self.settings).learned_paraphrases
                else None,
            )
        except ModelUnavailable as exc:
            latency = time.perf_counter() - started
            return Outcome(
                item.id, item.question, item.sql, "", item.pattern_seen, False, False, False, latency, 0,
                error=f"model unavailable: {exc}"[:300],
            )  # fmt: skip
        latency = time.perf_counter() - started
        rows = result.result.rows if result.ok and result.result is not None else None
        if not result.ok:
            error = (
                f"{result.error_code.value if result.error_code else 'error'}: {result.error_message or ''}"[
                    :300
                ]
            )
        if rows is not None and result.result is not None and result.result.truncated:
            # What the user gets is the whole result (the row limit only caps what one event carries): score
            # the predicted SQL by its full result, run again through the guarded path with the gold's cap.
            rows = await self._full_rows(state, result.sql, rows)
        correct = is_correct(item.sql, state.gold[item.id], rows, state.schema.dialect)
        outcome = Outcome(
            item_id=item.id,
            question=item.question,
            gold_sql=item.sql,
            predicted_sql=result.sql,
            pattern_seen=item.pattern_seen,
            correct=correct,
            executed=rows is not None,
            schema_valid=result.schema_valid,
            latency_s=round(latency, 4),
            prompt_tokens=result.prompt_tokens,
            attempts=result.attempts,
            repaired=result.repaired,
            from_example=result.sql_source == "example",
            error=error,
            examples=len(examples),
            fewshot=len(fewshot),
            confidence=result.confidence,
            confidence_basis=result.confidence_basis,
            candidates=result.candidates,
            agreeing=result.agreeing,
            fixes=list(result.fixes),
            value_hints=len(result.value_hints),
            part_tokens=dict(result.prompt_part_tokens),
            model_timings={k: round(v, 4) for k, v in result.model_timings.items()},
        )
        self._answers[key] = outcome
        return outcome

    async def _full_rows(self, state: _ProjectState, sql: str, capped: list[Any]) -> list[Any]:
        try:
            _, full = await self.databases.check_and_run(
                state.project.database_url, sql, state.schema, timeout_s=60.0, row_limit=_GOLD_ROW_LIMIT
            )
        except (SqlRefused, QueryFailed, QueryTimeout):
            return capped
        return list(full.rows)

    async def _answer_all(
        self, state: _ProjectState, strategy: Strategy, adapter: AdapterRef | None, label: str
    ) -> tuple[list[Outcome], float]:
        started = time.perf_counter()
        task = None
        if self._progress is not None:
            task = self._progress.add_task(label, total=len(state.test))
        outcomes: list[Outcome] = []
        for item in state.test:
            outcomes.append(await self._answer(state, strategy, item, adapter))
            if task is not None:
                right = sum(o.correct for o in outcomes)
                self._progress.update(task, advance=1, description=f"{label} acc {right}/{len(outcomes)}")
        return outcomes, time.perf_counter() - started

    async def _answer_interleaved(
        self,
        state: _ProjectState,
        runs: list[tuple[Strategy, AdapterRef | None, str]],
        label: str,
    ) -> list[tuple[list[Outcome], float]]:
        """Every question answered by each strategy in turn, the first one rotating from question to question:
        this host's speed drifts within a run, and interleaving spreads the drift evenly over the strategies
        compared. Seconds are each strategy's own."""
        task = None
        if self._progress is not None:
            task = self._progress.add_task(label, total=len(state.test))
        outcomes: list[list[Outcome]] = [[] for _ in runs]
        seconds = [0.0 for _ in runs]
        for i, item in enumerate(state.test):
            for turn in range(len(runs)):
                j = (i + turn) % len(runs)
                strategy, adapter, _ = runs[j]
                # Each build meets the question as a new one: the one before it must not have evaluated
                # its prompt for it (two builds often write the same prompt).
                forget_answers()
                started = time.perf_counter()
                outcomes[j].append(await self._answer(state, strategy, item, adapter))
                seconds[j] += time.perf_counter() - started
            if task is not None:
                self._progress.update(task, advance=1)
        return list(zip(outcomes, seconds, strict=True))

    # --- project setup -------------------------------------------------------------------------------------

    async def _prepare(self, project: BenchProject) -> _ProjectState:
        project_id = project.project_id
        await reset_project(self.pool, project_id)
        schema, version_id, domain = await register_project(
            self.pool,
            project_id=project_id,
            database_url=project.database_url,
            description=project.description,
        )
        test = spread_sample(project.test, self.options.limit)
        gold: dict[str, list[Any]] = {}
        skipped: list[str] = []
        for item in test:
            try:
                # Gold SQL runs through the same guarded path as everything else.
                _, result = await self.databases.check_and_run(
                    project.database_url, item.sql, schema, timeout_s=60.0, row_limit=_GOLD_ROW_LIMIT
                )
            except (SqlRefused, QueryFailed, QueryTimeout) as exc:
                # The format promises running gold SQL; one that fails says nothing about a strategy.
                log.warning("gold SQL failed; question left out", extra={"item": item.id, "error": str(exc)})
                skipped.append(item.id)
                continue
            gold[item.id] = list(result.rows)
        test = [t for t in test if t.id in gold]
        registered = await load_project(self.pool, project_id)
        values = await ValueIndexes(self.pool).get(
            project_id, registered.values_collected_at if registered else None
        )
        return _ProjectState(project, schema, version_id, domain, test, gold, skipped, values=values)

    async def _replay_to(self, state: _ProjectState, count: int) -> None:
        items = state.project.history[state.replayed : count]
        if items:
            stats = await replay_history(self.pool, self.learner, state.project.project_id, items)
            state.replay.items += stats.items
            state.replay.actions.update(stats.actions)
            state.paraphrases = await learn_project(self.pool, state.project.project_id, state.schema.dialect)
        state.replayed = max(state.replayed, count)

    async def _usable_examples(self, project_id: str) -> int:
        return await count_usable(self.pool, project_id)

    # --- LoRA ---------------------------------------------------------------------------------------------

    def _adapter_root(self) -> Path:
        return (self.options.work_dir or self.settings.data_dir / "bench") / "adapters"

    async def _train_adapter(self, state: _ProjectState) -> tuple[AdapterRef | None, dict[str, Any]]:
        """The project's adapter trained on its usable examples, cached on disk by content and settings."""
        project_id = state.project.project_id
        dataset = await load_dataset(
            self.pool,
            project_id,
            validation_share=self.settings.validation_share,
            seed=self.settings.training_seed,
            render=training_render(self.settings, state.project.description),
        )
        # The product's training data: value variants and serving-like prompts (services.training.job).
        dataset = await enriched(
            self.pool,
            self.settings,
            dataset,
            databases=self.databases,
            database_url=state.project.database_url,
        )
        if not dataset.train:
            return None, {"status": "skipped", "reason": "the project has no verified examples to train on"}
        config = make_config(
            self.settings,
            project_id=project_id,
            version=1,
            train=dataset.train_records(),
            validation=dataset.validation_records(),
            threads=self.settings.llm_threads,
        )
        # Keyed by everything that shapes the adapter: the rendered examples and the training settings.
        keyed = {k: v for k, v in config.items() if k not in ("adapter_dir", "model_cache_dir", "threads")}
        key = hashlib.sha256(json.dumps(keyed, sort_keys=True, default=str).encode()).hexdigest()[:20]
        config["adapter_dir"] = str((self._adapter_root() / key).resolve())
        path = adapter_path(config["adapter_dir"], project_id, 1)
        info: dict[str, Any] = {
            "base_model": config["base_model"],
            "cache_key": key,
            "path": str(path),
            "train_examples": len(dataset.train),
            "validation_examples": len(dataset.validation),
            "dataset": dataset.describe(),
            "history_hash": state.project.history_hash(state.replayed),
        }
        started = time.perf_counter()
        if (path / "metrics.json").is_file():
            metrics = json.loads((path / "metrics.json").read_text())
            info["cached"] = True
        else:
            try:
                metrics = await asyncio.to_thread(train_lora, config)
            except Exception as exc:  # a failed run is reported, never replaced by made-up numbers
                return None, {**info, "status": "skipped", "reason": f"training failed: {exc}"[:500]}
            info["cached"] = False
        info["train_seconds"] = round(time.perf_counter() - started, 1)
        info["metrics"] = {
            k: metrics.get(k)
            for k in (
                "steps",
                "epochs",
                "first_loss",
                "train_loss",
                "eval_loss",
                "losses",
                "seconds",
                "load_seconds",
                "train_seconds",
                "seconds_per_step",
                "planned_steps",
                "time_budget_s",
                "stopped",
                "device",
                "precision",
            )
        }
        # Served as in production: registered, promoted, then chosen by the generation router.
        version = await register_candidate(
            self.pool,
            project_id,
            base_model=config["base_model"],
            adapter_path=str(path),
            checksum=metrics.get("checksum"),
            metrics={k: v for k, v in info["metrics"].items() if k != "losses"},
            version=1,
        )
        await promote(self.pool, project_id, version.version)
        adapter, _arm = await ModelRouter(self.pool).choose(project_id, uuid.uuid4())
        if adapter is None:
            return None, {
                **info,
                "status": "skipped",
                "reason": "the router did not pick the promoted adapter",
            }
        return adapter, {**info, "status": "ok"}

    # --- the run -------------------------------------------------------------------------------------------

    async def run_project(
        self, project: BenchProject
    ) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
        state = await self._prepare(project)
        history_total = len(project.history)
        points = sorted(set(self.options.curve_points) | {1.0}) if self.options.learning_curve else [1.0]
        curve: dict[str, list[dict[str, Any]]] = {s.name: [] for s in self.strategies}
        final: dict[str, dict[str, Any]] = {}
        # History-independent strategies answer identically at every history size; identical configurations
        # (same prompt, retrieval, checks and adapter) answer identically: both are answered once.
        answered: dict[str, tuple[list[Outcome], float, str]] = {}
        # `full` is everything on, the adapter included: it trains one even without `lora` in the run.
        lora_wanted = any(s.adapter for s in self.strategies)
        for share in points:
            count = round(share * history_total)
            await self._replay_to(state, count)
            usable = await self._usable_examples(project.project_id)
            last = share == points[-1]
            planned: list[tuple[Strategy, AdapterRef | None, str]] = []
            for strategy in self.strategies:
                adapter: AdapterRef | None = None
                if strategy.adapter:
                    if not last and strategy.name == "lora":
                        continue  # adapters are trained once, on the whole history
                    if last and lora_wanted and state.adapter_info is None:
                        state.adapter, state.adapter_info = await self._train_adapter(state)
                    if strategy.name == "lora" and state.adapter is None:
                        reason = (state.adapter_info or {}).get("reason", "no adapter")
                        final[strategy.name] = {
                            "status": "skipped",
                            "reason": reason,
                            "adapter": state.adapter_info,
                        }
                        continue
                    adapter = state.adapter if last else None
                planned.append((strategy, adapter, self._signature(strategy, adapter, share)))
            runs: dict[str, tuple[Strategy, AdapterRef | None, str]] = {}
            for strategy, adapter, signature in planned:
                if signature not in answered and signature not in runs:
                    label = f"{project.name} · {strategy.name} · history {count}/{history_total}"
                    runs[signature] = (strategy, adapter, label)
            if self.options.interleave and len(runs) > 1:
                label = f"{project.name} · {len(runs)} interleaved · history {count}/{history_total}"
                results = await self._answer_interleaved(state, list(runs.values()), label)
            else:
                results = [await self._answer_all(state, *run) for run in runs.values()]
            for (signature, (strategy, _, _)), (outcomes, seconds) in zip(runs.items(), results, strict=True):
                answered[signature] = (outcomes, seconds, strategy.name)
            for strategy, adapter, signature in planned:
                label = f"{project.name} · {strategy.name} · history {count}/{history_total}"
                outcomes, seconds, same_as = answered[signature]
                reused = same_as if same_as != strategy.name else None
                if self.options.progress and not sys.stderr.isatty():
                    # A progress bar only renders on a terminal; logs and pipes get a line per strategy.
                    right = sum(o.correct for o in outcomes)
                    print(
                        f"{label}: {right}/{len(outcomes)} right, {seconds:.0f} s",
                        file=sys.stderr,
                        flush=True,
                    )
                metrics = summarize(outcomes)
                point = {
                    "history_share": share,
                    "history_items": count,
                    "usable_examples": usable,
                    "adapter": adapter is not None,
                    **metrics,
                }
                curve[strategy.name].append(point)
                if last:
                    final[strategy.name] = {
                        "status": "ok",
                        **metrics,
                        "seconds": round(seconds, 1),
                        "seconds_per_question": round(seconds / max(len(outcomes), 1), 2),
                        "answered_as": reused,
                        "answers_reused": sum(o.reused for o in outcomes),
                        "adapter": state.adapter_info if adapter is not None else None,
                        "failures": [
                            {
                                "id": o.item_id,
                                "question": o.question,
                                "predicted": o.predicted_sql,
                                "gold": o.gold_sql,
                                "error": o.error,
                            }
                            for o in outcomes
                            if not o.correct
                        ][: self.options.failures_kept],
                    }
                    for o in outcomes:
                        self.predictions.append(
                            {"project": project.name, "strategy": strategy.name, **o.as_dict()}
                        )
        summary = {
            "project_id": project.project_id,
            "description": project.description,
            "history": {**state.replay.as_dict(), "total": history_total},
            "usable_examples": await self._usable_examples(project.project_id),
            "test_total": len(project.test),
            "test_used": len(state.test),
            "gold_failed": state.skipped_gold,
            "strategies": final,
        }
        return summary, {k: v for k, v in curve.items() if v}

    def _signature(self, strategy: Strategy, adapter: AdapterRef | None, share: float) -> str:
        config = strategy.generation_config(strategy.settings_for(self.settings))
        # The benchmark passes no conversation turns, so the history flag changes nothing.
        config = dataclasses.replace(config, prompt=config.prompt.but(history=False))
        parts = {
            "config": repr(config),
            "k": strategy.retrieval_k(self.settings),
            "note": strategy.domain_note,
            "adapter": repr(adapter),
            "share": share if strategy.uses_history else None,
            "overrides": list(strategy.overrides),
        }
        return json.dumps(parts, sort_keys=True, default=str)

    async def run(self, projects: Sequence[BenchProject]) -> dict[str, Any]:
        started = time.perf_counter()
        results: dict[str, Any] = {}
        curves: dict[str, Any] = {}
        progress_cm: Any = None
        if self.options.progress:
            progress_cm = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                transient=False,
            )
            self._progress = progress_cm.__enter__()
        try:
            for project in projects:
                results[project.name], curve = await self.run_project(project)
                if curve:
                    curves[project.name] = curve
        finally:
            if progress_cm is not None:
                progress_cm.__exit__(None, None, None)
                self._progress = None
        overall: dict[str, Any] = {}
        for strategy in self.strategies:
            pooled = [
                Outcome(**{k: v for k, v in p.items() if k not in ("project", "strategy")})
                for p in self.predictions
                if p["strategy"] == strategy.name
            ]
            if pooled and len(projects) > 1:
                overall[strategy.name] = summarize(pooled)
        document: dict[str, Any] = {
            "meta": {
                "model": self.llm.name,
                "settings": settings_record(self.settings),
                "strategies": {s.name: s.describe(s.settings_for(self.settings)) for s in self.strategies},
                "interleaved": self.options.interleave,
                "limit": self.options.limit,
                "data": str(self.options.data),
                "machine": machine_info(),
                "command": self.options.command or " ".join(sys.argv),
                "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
                "seconds_total": round(time.perf_counter() - started, 1),
                "scoring": "execution accuracy: multiset of result rows, ordered only where the gold SQL has "
                "ORDER BY; latency = retrieval + generation + execution per answer; prompt tokens summed "
                "over the answer's model calls",
            },
            "projects": results,
        }
        if overall:
            document["overall"] = overall
        if self.options.learning_curve:
            document["learning_curve"] = curves
        return document


async def run_accuracy(
    options: AccuracyOptions,
    settings: Settings | None = None,
    *,
    llm: LLM | None = None,
    embedder: Any = None,
) -> dict[str, Any]:
    """Run the benchmark and write ``options.out`` (plus predictions and, with a curve, the plot)."""
    settings = bench_settings(options, settings)
    projects = discover_projects(options.data, options.projects)
    resolve(options.strategies, options.variants)  # fail on a typo before anything slow starts
    work_dir = options.work_dir or settings.data_dir / "bench"
    server = None
    dsn = options.database_url or (
        settings.database_url.get_secret_value() if settings.database_url is not None else None
    )
    if dsn is None:
        server = EmbeddedPostgres(work_dir / "pg" / "data").start()
        dsn = server.dsn
    pool = await create_pool(dsn, max_size=4)

    databases = build_databases(settings)
    own_llm = llm is None
    try:
        await migrate(pool)

        if llm is None:
            llm = build_llm(settings)
        if embedder is None:
            embedder = get_embedder(settings.embedding_model)
        assert llm is not None
        bench = AccuracyBench(
            options,
            settings,
            pool=pool,
            llm=llm,
            embedder=embedder,
            index=build_index(settings, pool),
            databases=databases,
            llm_factory=build_llm if own_llm else None,
        )
        try:
            document = await bench.run(projects)
        finally:
            await bench.close()

        write_results(document, bench.predictions, options)
        return document
    finally:
        if own_llm and llm is not None:
            await llm.close()
        await databases.close()
        await pool.close()
        if server is not None:
            server.stop()
