"""How often each answer path that needs no model fires, and how often it is right, over every test question.

    python -m bench.example_paths --data ../shared/bench/projects --out bench/results/example_paths.json

Per project: the history is replayed through the product's learner (as ``querylift bench accuracy`` does), then
each test question gets the retrieval consumer's context with the product's settings and the generation
pipeline's example paths alone (``answer_from_examples``: the strict template, the same question reworded,
values adapted, two examples composed); the answer is scored against the gold result. Nothing here calls a
model, so the run takes minutes and measures only these paths' reach and precision. Split by seen and new
pattern, as the accuracy benchmark is.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.accuracy.data import discover_projects
from bench.accuracy.options import AccuracyOptions
from bench.accuracy.runner import AccuracyBench, machine_info
from bench.accuracy.scoring import is_correct
from bench.accuracy.strategies import STRATEGIES
from services.core.examples.embedder import get_embedder
from services.generation.pipeline import answer_from_examples
from services.infra.db import create_pool, migrate
from services.infra.embedded import EmbeddedPostgres
from services.infra.llm.scripted import ScriptedLLM
from services.infra.settings import get_settings
from services.wiring import build_databases, build_index


async def run(data: Path, work_dir: Path, projects: list[str] | None) -> dict[str, Any]:
    settings = get_settings()
    server = EmbeddedPostgres(work_dir / "pg" / "data").start()
    pool = await create_pool(server.dsn, max_size=4)
    databases = build_databases(settings)
    strategy = STRATEGIES["product"]
    config = strategy.generation_config(settings)
    out: dict[str, Any] = {"projects": {}}
    try:
        await migrate(pool)
        options = AccuracyOptions(
            data=data, out=work_dir / "unused.json", strategies=["product"], progress=False
        )
        bench = AccuracyBench(
            options,
            settings,
            pool=pool,
            # The paths measured here never call a model: one that did would fail loudly.
            llm=ScriptedLLM(name="no-model"),
            embedder=get_embedder(settings.embedding_model),
            index=build_index(settings, pool),
            databases=databases,
        )
        for project in discover_projects(data, projects):
            state = await bench._prepare(project)
            await bench._replay_to(state, len(project.history))
            counts: Counter[str] = Counter()
            for item in state.test:
                pattern = "seen" if item.pattern_seen else "new"
                counts[f"{pattern}:questions"] += 1
                examples, _, _ = await bench._context(state, strategy, item)
                answer = await answer_from_examples(
                    databases, item.question, state.schema, project.database_url, examples, config, {},
                    state.values, state.paraphrases if settings.learned_paraphrases else None,
                )  # fmt: skip
                if answer is None or answer.result is None:
                    continue
                right = is_correct(item.sql, state.gold[item.id], answer.result.rows, state.schema.dialect)
                counts[f"{pattern}:{answer.confidence_basis}"] += 1
                counts[f"{pattern}:{answer.confidence_basis}:right"] += int(right)
            out["projects"][project.name] = dict(sorted(counts.items()))
    finally:
        await databases.close()
        await pool.close()
        server.stop()
    out["meta"] = {"machine": machine_info(), "settings": {k: getattr(settings, k) for k in _SWITCHES}}
    return out


_SWITCHES = (
    "template_answers",
    "shape_templates",
    "entity_templates",
    "prominent_readings",
    "learned_paraphrases",
    "value_templates",
    "composed_answers",
    "retrieval_parts",
)
_BASES = ("verified_example", "adapted_example", "composed_examples")


def print_table(document: dict[str, Any]) -> None:
    table = Table(title="Answers without the model: answered / right, per pattern")
    for column in ("project", "pattern", "questions", "verified example", "adapted example", "composed"):
        table.add_column(column, justify="left" if column in ("project", "pattern") else "right")
    for name, counts in document["projects"].items():
        for pattern in ("seen", "new"):
            cells = [
                f"{counts.get(f'{pattern}:{b}', 0)} / {counts.get(f'{pattern}:{b}:right', 0)}" for b in _BASES
            ]
            table.add_row(name, pattern, str(counts.get(f"{pattern}:questions", 0)), *cells)
    Console().print(table)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path("bench/results/example_paths.json"))
    parser.add_argument("--projects", nargs="+", default=None)
    parser.add_argument("--work-dir", type=Path, default=None)
    args = parser.parse_args()
    work_dir = args.work_dir or get_settings().data_dir / "bench"
    document = asyncio.run(run(args.data, work_dir, args.projects))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(document, indent=2, default=str) + "\n")
    print_table(document)
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
