"""Model speed with all model work on one thread, against asyncio's thread pool, builds in turn by process.

    python -m bench.model_thread --model qwen2.5-coder-0.5b-instruct --rounds 3 \
        --out bench/results/model_thread_0.5b.json

A child process per build and round, builds taking turns so the host's changing speed falls on both alike. A
child does what a generation process does per question: embeds the question (the product's embedder, torch),
then answers a prompt on the GGUF backend (a fixed system part reused, a varying part evaluated, up to 48 tokens
decoded). Builds:

* ``one thread``: as shipped, every model call on ``services.core.compute_thread``;
* ``thread pool``: the threading before it, reproduced by patching that module: completions and embeddings in
  whichever thread of asyncio's pool is free (``asyncio.to_thread``), as the code ran until 2026-12-07.

Speed only; the answers are the same either way (the same model calls, in the same order).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from services.core import compute_thread
from services.core.examples.embedder import embed_async, get_embedder
from services.core.llm.base import ChatMessage
from services.infra.llm.gguf import GGUFLLM
from services.infra.settings import Settings

BUILDS = ("one thread", "thread pool")


def _use_thread_pool() -> None:
    async def run(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await asyncio.to_thread(fn, *args, **kwargs)

    def run_blocking(fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    compute_thread.run = run  # type: ignore[assignment]
    compute_thread.run_blocking = run_blocking  # type: ignore[assignment]


async def _child(model: str, questions: int, text: str) -> dict[str, float]:
    settings = Settings(llm_model=model)
    embedder = get_embedder(settings.embedding_model)
    llm = GGUFLLM(settings)
    system, rest = text[:3000], text[3000:]
    decode, prompt, answer = [], [], []
    for i in range(questions + 1):
        part = rest[i * 1100 : (i + 1) * 1100]
        await embed_async(embedder, [part[:200]])
        started = time.perf_counter()
        completion = await llm.complete(
            [
                ChatMessage(role="system", content=system),
                ChatMessage(
                    role="user", content=part + "\nWrite one SQL query listing ten columns of a table."
                ),
            ],
            max_tokens=48,
        )
        seconds = time.perf_counter() - started
        if i == 0:
            continue  # the first evaluates the system part too
        t = completion.timings
        decode.append(t["answer_tokens"] / t["decode_s"])
        prompt.append((completion.prompt_tokens - t["prompt_tokens_reused"]) / t["prompt_s"])
        answer.append(seconds)
    return {
        "decode_tok_s": statistics.median(decode),
        "prompt_tok_s": statistics.median(prompt),
        "answer_s": statistics.median(answer),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="qwen2.5-coder-0.5b-instruct")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--questions", type=int, default=8)
    parser.add_argument("--out", type=Path, default=Path("bench/results/model_thread.json"))
    parser.add_argument("--child", choices=BUILDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        if args.child == "thread pool":
            _use_thread_pool()
        # Any text times the same; the repository's README is long enough and always there.
        text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
        print(json.dumps(asyncio.run(_child(args.model, args.questions, text))))
        return

    runs: dict[str, list[dict[str, float]]] = {b: [] for b in BUILDS}
    for _ in range(args.rounds):
        for build in BUILDS:
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.model_thread",
                    "--child",
                    build,
                    "--model",
                    args.model,
                    "--questions",
                    str(args.questions),
                ],
                check=True,
                capture_output=True,
                text=True,
            )
            runs[build].append(json.loads(out.stdout.strip().splitlines()[-1]))

    table = Table(title=f"One thread for the models · {args.model} · {args.rounds} rounds (medians)")
    for column in ("build", "prompt tok/s", "decode tok/s", "answer s"):
        table.add_column(column, justify="left" if column == "build" else "right")
    summary: dict[str, dict[str, float]] = {}
    for build, results in runs.items():
        summary[build] = {k: statistics.median(r[k] for r in results) for k in results[0]}
        s = summary[build]
        table.add_row(build, f"{s['prompt_tok_s']:.0f}", f"{s['decode_tok_s']:.1f}", f"{s['answer_s']:.2f}")
    Console().print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps({"model": args.model, "rounds": runs, "medians": summary}, indent=2) + "\n"
    )
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
