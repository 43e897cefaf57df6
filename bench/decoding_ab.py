"""Prompt reuse and prompt-lookup decoding, before and after, interleaved on the same prompts.

    python -m bench.decoding_ab --model qwen2.5-coder-0.5b-instruct --questions 30 \
        --out bench/results/decoding_ab.json

Three builds of the local GGUF backend answer the same product prompts (instructions, schema with sample
values, the three most similar history examples as chat turns, the question), one question at a time and
in turn, so the host's changing speed falls on all of them alike:

- ``whole``: every prompt evaluated whole (``QUERYLIFT_LLM_PREFIX_REUSE=false``), as before prefix reuse;
- ``reuse``: a project's fixed prefix evaluated once and reused (the product default);
- ``reuse+lookup``: the same with prompt-lookup drafts (``QUERYLIFT_LLM_LOOKUP_TOKENS``).

Each build is its own model instance (they differ in context size by a few tokens, which is what keeps
their caches apart), so no build reuses another's evaluated tokens. Reported per build: answer seconds
(p50, mean, p95), prompt tokens evaluated against reused, decoding tokens per second, and how many
answers are byte-identical to the ``whole`` build's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from rapidfuzz import fuzz, process
from rich.console import Console
from rich.table import Table

from bench.accuracy.data import BenchProject, discover_projects
from events.internal import ContextExample
from services.core.customer_db import discover_schema
from services.core.llm.base import ChatMessage
from services.core.prompt import build_prompt
from services.infra.llm.gguf import GGUFLLM
from services.infra.settings import Settings


def _examples(project: BenchProject, question: str, k: int) -> list[ContextExample]:
    """The ``k`` history questions closest in wording: a stand-in for retrieval that needs no embedder."""
    verified = [h for h in project.history if h.rating > 0]
    found = process.extract(question, [h.question for h in verified], scorer=fuzz.token_set_ratio, limit=k)
    return [
        ContextExample(
            example_id=verified[i].id,
            source="project",
            question=verified[i].question,
            sql=verified[i].sql,
            score=score / 100,
        )
        for _, score, i in found
    ]


def _builds(settings: Settings, lookup_tokens: int) -> dict[str, GGUFLLM]:
    n_ctx = settings.llm_context_tokens
    return {
        "whole": GGUFLLM(
            settings.model_copy(update={"llm_prefix_reuse": False, "llm_context_tokens": n_ctx})
        ),
        "reuse": GGUFLLM(settings.model_copy(update={"llm_context_tokens": n_ctx + 8})),
        "reuse+lookup": GGUFLLM(
            settings.model_copy(update={"llm_context_tokens": n_ctx + 16, "llm_lookup_tokens": lookup_tokens})
        ),
    }


def _summary(rows: list[dict[str, Any]], reference: list[str]) -> dict[str, Any]:
    seconds = sorted(r["seconds"] for r in rows)
    decode_s = sum(r["decode_s"] for r in rows)
    return {
        "answers": len(rows),
        "p50_s": round(statistics.median(seconds), 3),
        "mean_s": round(statistics.fmean(seconds), 3),
        "p95_s": round(seconds[min(len(seconds) - 1, int(0.95 * len(seconds)))], 3),
        "prompt_tokens_mean": round(statistics.fmean(r["prompt_tokens"] for r in rows), 1),
        "evaluated_tokens_mean": round(statistics.fmean(r["prompt_tokens"] - r["reused"] for r in rows), 1),
        "prompt_s_mean": round(statistics.fmean(r["prompt_s"] for r in rows), 3),
        "decode_tokens_per_s": round(sum(r["answer_tokens"] for r in rows) / decode_s, 1)
        if decode_s
        else None,
        "same_as_whole": sum(r["text"] == ref for r, ref in zip(rows, reference, strict=True)),
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    settings = Settings(llm_model=args.model, data_dir=Path(args.data_dir))
    project = discover_projects(Path(args.data))[0]
    schema = await discover_schema(project.database_url)
    builds = _builds(settings, args.lookup_tokens)
    counter = builds["whole"].count_tokens
    questions = [t.question for t in project.test[: args.questions]]
    prompts: list[list[ChatMessage]] = [
        build_prompt(
            q,
            schema,
            examples=_examples(project, q, 3),
            count_tokens=counter,
            budget_tokens=settings.prompt_token_budget,
        ).messages
        for q in questions
    ]
    warm = build_prompt("how many rows are there", schema, count_tokens=counter).messages
    for llm in builds.values():
        await llm.complete(
            warm, max_tokens=args.max_tokens
        )  # load the model; the reuse builds keep the prefix
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in builds}
    for i, messages in enumerate(prompts):
        order = list(builds) if i % 2 == 0 else list(reversed(builds))  # neither build always goes first
        for name in order:
            started = time.perf_counter()
            completion = await builds[name].complete(messages, max_tokens=args.max_tokens)
            rows[name].append(
                {
                    "seconds": time.perf_counter() - started,
                    "prompt_tokens": completion.prompt_tokens,
                    "reused": completion.timings.get("prompt_tokens_reused", 0.0),
                    "prompt_s": completion.timings.get("prompt_s", 0.0),
                    "decode_s": completion.timings.get("decode_s", 0.0),
                    "answer_tokens": completion.timings.get("answer_tokens", 0.0),
                    "text": completion.text,
                }
            )
    reference = [r["text"] for r in rows["whole"]]
    return {
        "model": args.model,
        "project": project.name,
        "questions": len(prompts),
        "threads": settings.llm_threads,
        "lookup_tokens": args.lookup_tokens,
        "builds": {name: _summary(r, reference) for name, r in rows.items()},
    }


def _print(results: dict[str, Any]) -> None:
    table = Table(title=f"Decoding A/B · {results['model']} · {results['questions']} prompts, interleaved")
    columns = (
        "build",
        "p50 s",
        "mean s",
        "p95 s",
        "prompt tok",
        "evaluated",
        "prompt s",
        "decode tok/s",
        "same",
    )
    for name in columns:
        table.add_column(name, justify="right")
    for name, s in results["builds"].items():
        table.add_row(
            name,
            f"{s['p50_s']}",
            f"{s['mean_s']}",
            f"{s['p95_s']}",
            f"{s['prompt_tokens_mean']}",
            f"{s['evaluated_tokens_mean']}",
            f"{s['prompt_s_mean']}",
            f"{s['decode_tokens_per_s']}",
            f"{s['same_as_whole']}/{s['answers']}",
        )
    Console().print(table)


def cli() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--data", default="../shared/bench/projects")
    parser.add_argument("--data-dir", default=".querylift", help="model cache (QUERYLIFT_DATA_DIR)")
    parser.add_argument("--questions", type=int, default=30)
    parser.add_argument("--max-tokens", type=int, default=160)
    parser.add_argument("--lookup-tokens", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/decoding_ab.json"))
    args = parser.parse_args()
    results = asyncio.run(main(args))
    _print(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    cli()
