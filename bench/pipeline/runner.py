"""``querylift bench pipeline``: questions at a fixed rate through the five real consumer processes, with a
scripted model of fixed latency, measuring what the pipeline itself costs.

Latency the pipeline adds over the model = the client's own clock from publishing chat.question to receiving
chat.answer, minus the model's time (``timings_ms.llm``). Per stage it reports the handlers' own timings
(query, retrieval, generation without the model) and what is left: broker hops, polling and queueing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.pipeline.probes import LagProbe, ProcessProbe, run_id
from bench.pipeline.stack import (
    SAMPLE_SQL,
    ConsumerFleet,
    Infrastructure,
    open_system_of_record,
    register_tenants,
    sample_questions,
)
from events import ChatAnswer, ChatQuestion
from services.client import Outcome, QueryliftClient
from services.infra.settings import Settings
from services.wiring import SERVICES

log = logging.getLogger(__name__)

MODEL_NAME = "scripted model"
CLIENT_PROCESS = "bench client (publishes, awaits answers)"
GENERATION_STAGES = ("prompt", "check", "execute", "answer")


@dataclass
class PipelineOptions:
    questions: int = 2000
    rate: float = 200.0
    out: Path | None = None
    consumers: int = 1
    model_latency_ms: float = 50.0
    projects: int = 12
    partitions: int = 6
    warmup: int = 40
    work_dir: Path | None = None
    sample_every_s: float = 1.0
    timeout_s: float = 300.0
    #: Unique question texts (the sample has a few dozen, which the embedding cache then answers).
    distinct_questions: bool = False
    command: str = ""


@dataclass
class Sent:
    question: ChatQuestion
    sent_at: float
    done_at: float | None = None
    outcome: Outcome | None = None


def percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}  # type: ignore[dict-item]
    ordered = sorted(values)

    def pick(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)

    return {
        "p50": pick(0.50),
        "p95": pick(0.95),
        "p99": pick(0.99),
        "max": round(ordered[-1], 2),
        "n": len(ordered),
    }


async def _drive(
    client: QueryliftClient, questions: list[ChatQuestion], rate: float, timeout_s: float
) -> list[Sent]:
    """Publish at a steady rate (each on its own schedule, not after the previous ack) and await outcomes."""
    sent: list[Sent] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending: list[asyncio.Future[Outcome]] = []

    def finished(entry: Sent, fut: asyncio.Future[Outcome]) -> None:
        entry.done_at = time.perf_counter()
        if not fut.cancelled() and fut.exception() is None:
            entry.outcome = fut.result()

    for i, question in enumerate(questions):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        entry = Sent(question, time.perf_counter())
        future = await client.publish(question)
        future.add_done_callback(lambda f, e=entry: finished(e, f))  # type: ignore[misc]
        sent.append(entry)
        pending.append(future)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*pending, return_exceptions=True), timeout_s)
    return sent


def _questions(
    projects: list[str], n: int, tag: str, conversations: int | None = None, distinct: bool = False
) -> list[ChatQuestion]:
    """Questions spread over concurrent conversations (about one turn per conversation per second at the
    offered rate, as people reading answers ask), each conversation within one project, so the query
    consumer resolves real history."""
    texts = sample_questions()
    count = max(len(projects), conversations or len(projects))
    out = []
    for i in range(n):
        conversation = i % count
        out.append(
            ChatQuestion(
                project_id=projects[conversation % len(projects)],
                conversation_id=f"{tag}-c{conversation}",
                user_id="bench",
                question=f"{texts[i % len(texts)]} (request {tag}-{i})"
                if distinct
                else texts[i % len(texts)],
            )
        )
    return out


def summarize(sent: list[Sent], options: PipelineOptions) -> dict[str, Any]:
    answered = [s for s in sent if isinstance(s.outcome, ChatAnswer)]
    errors = [s for s in sent if s.outcome is not None and not isinstance(s.outcome, ChatAnswer)]
    lost = [s for s in sent if s.outcome is None]
    e2e, added, model, transport = [], [], [], []
    stages: dict[str, list[float]] = {"query": [], "retrieval": [], "generation": []}
    for s in answered:
        assert isinstance(s.outcome, ChatAnswer) and s.done_at is not None
        t = s.outcome.timings_ms
        total = (s.done_at - s.sent_at) * 1000
        llm = t.get("llm", 0.0)
        gen = sum(t.get(k, 0.0) for k in GENERATION_STAGES)
        e2e.append(total)
        model.append(llm)
        added.append(total - llm)
        stages["query"].append(t.get("query", 0.0))
        stages["retrieval"].append(t.get("retrieval", 0.0))
        stages["generation"].append(gen)
        transport.append(total - llm - gen - t.get("query", 0.0) - t.get("retrieval", 0.0))
    completed = [s.done_at for s in sent if s.done_at is not None]
    span = (max(completed) - min(s.sent_at for s in sent)) if completed else 0.0
    return {
        "questions": len(sent),
        "answered": len(answered),
        "errors": len(errors),
        "error_codes": sorted({str(getattr(s.outcome, "code", "")) for s in errors}),
        "unanswered": len(lost),
        "offered_rate": options.rate,
        "throughput_qps": round(len(completed) / span, 1) if span > 0 else 0.0,
        "latency_ms": {
            "end_to_end": percentiles(e2e),
            "model": percentiles(model),
            "added_over_model": percentiles(added),
            "stage_query": percentiles(stages["query"]),
            "stage_retrieval": percentiles(stages["retrieval"]),
            "stage_generation_without_model": percentiles(stages["generation"]),
            "transport_and_queueing": percentiles(transport),
        },
    }


async def run_pipeline_benchmark(options: PipelineOptions) -> dict[str, Any]:
    tag = run_id()
    settings = Settings()  # what the consumers read from the same environment
    own_dir = options.work_dir is None
    work = options.work_dir or Path(tempfile.mkdtemp(prefix="ql-bench-"))
    infra = Infrastructure(work).start()
    prefix = f"bench{tag}."
    fleet = ConsumerFleet(
        infra.bootstrap,
        infra.dsn,
        work / "logs",
        env_extra={
            "QUERYLIFT_LLM_BACKEND": "scripted",
            "QUERYLIFT_SCRIPTED_LATENCY_MS": str(options.model_latency_ms),
            "QUERYLIFT_SCRIPTED_SQL": SAMPLE_SQL,
            "QUERYLIFT_TOPIC_PREFIX": prefix,
            "QUERYLIFT_TOPIC_PARTITIONS": str(max(options.partitions, options.consumers)),
            "QUERYLIFT_TRAINING_THRESHOLD": "1000000",
            "QUERYLIFT_DATA_DIR": str(work / "data"),
        },
    )
    client = QueryliftClient(
        infra.bootstrap,
        prefix=prefix,
        partitions=max(options.partitions, options.consumers),
        # An upstream product waits on answers like the answer-path consumers do.
        fetch_max_wait_ms=settings.fetch_wait_ms,
    )
    lag_probe = LagProbe(infra.bootstrap, prefix)
    try:
        pool = await open_system_of_record(infra.dsn)
        try:
            projects = await register_tenants(pool, work, options.projects)
        finally:
            await pool.close()
        await client.start()
        fleet.spawn_all(SERVICES, options.consumers)
        # Warm-up: every consumer is up (models loaded, partitions assigned) once these are answered.
        warm = await _drive(client, _questions(projects, options.warmup, f"warm{tag}"), 20.0, 300.0)
        if dead := fleet.dead():
            raise RuntimeError(f"consumers exited during start: {[p.log_path for p in dead]}")
        if any(s.outcome is None for s in warm):
            raise RuntimeError(f"the pipeline did not answer its warm-up questions; logs in {work / 'logs'}")

        await lag_probe.start()
        pids = {p.name: p.pid for p in fleet.processes}
        if infra.broker is not None and infra.broker.process is not None:
            pids["broker (tansu)"] = infra.broker.process.pid
        pg_pid = infra.postgres._server.get_pid() if infra.postgres and infra.postgres._server else None  # type: ignore[attr-defined]
        if pg_pid:
            pids["postgresql"] = pg_pid
        # The load generator shares the two cores too: it is measured, not hidden.
        pids[CLIENT_PROCESS] = os.getpid()
        probe = ProcessProbe(pids, alone=frozenset({CLIENT_PROCESS}))
        lag_samples: list[dict[str, Any]] = []
        stop_sampling = asyncio.Event()

        async def sampler() -> None:
            t0 = time.monotonic()
            while not stop_sampling.is_set():
                probe.sample()
                with contextlib.suppress(Exception):
                    lag_samples.append({"t_s": round(time.monotonic() - t0, 1), **await lag_probe.sample()})
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_sampling.wait(), options.sample_every_s)

        probe.begin()
        sampling = asyncio.create_task(sampler())
        sent = await _drive(
            client,
            _questions(
                projects,
                options.questions,
                tag,
                conversations=round(options.rate),
                distinct=options.distinct_questions,
            ),
            options.rate,
            options.timeout_s,
        )
        probe.end()
        stop_sampling.set()
        await sampling
        result = summarize(sent, options)
        lag_by_consumer = {
            name: {
                "max": max((s.get(name, 0) for s in lag_samples), default=0),
                "final": lag_samples[-1].get(name, 0) if lag_samples else None,
            }
            for name in SERVICES
        }
        document = {
            "meta": {
                "benchmark": "pipeline",
                "command": options.command,
                "model": MODEL_NAME,
                "model_latency_ms": options.model_latency_ms,
                "scripted_sql": SAMPLE_SQL,
                "distinct_questions": options.distinct_questions,
                "question_texts": "unique per question"
                if options.distinct_questions
                else f"{len(sample_questions())} sample texts, repeated (the embedding cache answers repeats)",
                "consumers_per_service": options.consumers,
                "projects": options.projects,
                "partitions": max(options.partitions, options.consumers),
                "machine": {
                    "cpus": psutil.cpu_count(),
                    "python": platform.python_version(),
                    "platform": platform.platform(),
                },
                "broker": "embedded Tansu",
                "event_loop": settings.event_loop,
                "fetch_wait_ms": settings.fetch_wait_ms,
                "background_fetch_wait_ms": settings.background_fetch_wait_ms,
                "system_of_record": "embedded PostgreSQL",
            },
            "results": result,
            "consumer_lag": {"by_consumer": lag_by_consumer, "samples": lag_samples},
            "processes": probe.summary(),
            "target": {"throughput_qps": 200, "added_p99_ms": 25},
        }
        if options.out:
            options.out.parent.mkdir(parents=True, exist_ok=True)
            options.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        return document
    finally:
        with contextlib.suppress(Exception):
            await lag_probe.stop()
        with contextlib.suppress(Exception):
            await client.stop()
        fleet.stop()
        infra.stop()
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
