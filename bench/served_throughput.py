"""Answers per minute at 1, 2 and 4 concurrent questions: the local GGUF backend (one model in the process,
answering one question at a time) against llama-cpp-python's OpenAI-compatible server on the same model.

    python -m bench.served_throughput --model qwen2.5-coder-0.5b-instruct --questions 12 \
        --out bench/results/served_throughput.json

Prompts are the product's (``build_prompt`` with the project's schema) for questions of a benchmark project;
each concurrency level asks the same questions. The local backend reports how long calls waited for the
model (queue time); the server is timed from outside.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.accuracy.data import discover_projects
from services.core.customer_db import discover_schema
from services.core.llm.base import LLM, ChatMessage
from services.core.prompt import build_prompt
from services.infra.llm.gguf import GGUFLLM
from services.infra.llm.local_server import serving
from services.infra.llm.model_files import resolve_gguf
from services.infra.llm.openai_compat import OpenAICompatLLM
from services.infra.settings import Settings

LEVELS = (1, 2, 4)


async def _round(
    llm: LLM, prompts: list[list[ChatMessage]], concurrency: int, max_tokens: int
) -> dict[str, Any]:
    slots = asyncio.Semaphore(concurrency)
    latencies: list[float] = []
    queued: list[float] = []

    async def one(messages: list[ChatMessage]) -> None:
        async with slots:
            started = time.perf_counter()
            completion = await llm.complete(messages, max_tokens=max_tokens)
            latencies.append(time.perf_counter() - started)
            queued.append(completion.timings.get("queue_s", 0.0))

    started = time.perf_counter()
    await asyncio.gather(*(one(p) for p in prompts))
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "concurrency": concurrency,
        "answers": len(prompts),
        "seconds": round(wall, 2),
        "answers_per_minute": round(60 * len(prompts) / wall, 1),
        "latency_p50_s": round(latencies[len(latencies) // 2], 2),
        "queue_mean_s": round(sum(queued) / len(queued), 2),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(llm_model=args.model, data_dir=Path(args.data_dir))
    project = discover_projects(Path(args.data))[0]
    schema = await discover_schema(project.database_url)
    questions = [t.question for t in project.test[: args.questions]]
    local = GGUFLLM(settings)
    prompts = [
        build_prompt(
            q, schema, count_tokens=local.count_tokens, budget_tokens=settings.prompt_token_budget
        ).messages
        for q in questions
    ]
    results: dict[str, Any] = {"model": args.model, "questions": len(prompts), "local": [], "served": []}
    await local.complete(prompts[0], max_tokens=args.max_tokens)  # load the model and its prefix once
    for level in LEVELS:
        results["local"].append(await _round(local, prompts, level, args.max_tokens))
    with serving(
        resolve_gguf(args.model, settings.model_cache_dir),
        threads=settings.llm_threads,
        n_ctx=4096,
        alias="served",
        cache_dir=settings.model_cache_dir,
        start_timeout_s=300,
    ) as url:
        served = OpenAICompatLLM(settings.model_copy(update={"llm_model": "served"}), base_url=f"{url}/v1")
        try:
            await served.complete(prompts[0], max_tokens=args.max_tokens)
            for level in LEVELS:
                results["served"].append(await _round(served, prompts, level, args.max_tokens))
        finally:
            await served.close()
    return results


def _print(results: dict[str, Any]) -> None:
    table = Table(title=f"Answers per minute · {results['model']} · {results['questions']} questions")
    for name in ("backend", "concurrent", "answers/min", "p50 s", "queue s"):
        table.add_column(name, justify="right")
    for backend in ("local", "served"):
        for r in results[backend]:
            table.add_row(
                backend,
                str(r["concurrency"]),
                f"{r['answers_per_minute']}",
                f"{r['latency_p50_s']}",
                f"{r['queue_mean_s']}",
            )
    Console().print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--data", default="../shared/bench/projects")
    parser.add_argument("--data-dir", default=".querylift")
    parser.add_argument("--questions", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--out", default="bench/results/served_throughput.json")
    args = parser.parse_args()
    results = asyncio.run(main(args))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    _print(results)


if __name__ == "__main__":
    cli()
