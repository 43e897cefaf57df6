"""``querylift examples export PROJECT --out FILE``: a project's training examples as chat-messages JSONL;
``querylift examples review PROJECT``: the answers that most need a look (low confidence, no feedback)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console
from rich.table import Table

from events import LOW_CONFIDENCE
from services.core.answers import review_queue
from services.core.projects import load_project
from services.infra.runtime_db import open_pool
from services.infra.settings import get_settings
from services.training.dataset import NoSchema, export_jsonl

console = Console()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("examples", help="a project's verified question/SQL examples")
    esub = p.add_subparsers(dest="examples_command", required=True)
    export = esub.add_parser("export", help="write the examples LoRA training uses as chat-messages JSONL")
    export.add_argument("project")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=lambda a: asyncio.run(_export(a)))
    review = esub.add_parser(
        "review", help="answers below the confidence threshold that got no feedback, least sure first"
    )
    review.add_argument("project")
    review.add_argument(
        "--below", type=float, default=LOW_CONFIDENCE, help=f"threshold (default {LOW_CONFIDENCE})"
    )
    review.add_argument("--limit", type=int, default=50)
    review.set_defaults(func=lambda a: asyncio.run(_review(a)))


async def _review(args: argparse.Namespace) -> int:
    pool = await open_pool(get_settings())
    try:
        if await load_project(pool, args.project) is None:
            console.print(f"[red]No project {args.project!r}.[/]")
            return 2
        rows = await review_queue(pool, args.project, below=args.below, limit=args.limit)
    finally:
        await pool.close()
    table = Table("answer id", "confidence", "basis", "question", "sql")
    for r in rows:
        table.add_row(
            str(r["id"]), f"{r['confidence']:.2f}", r["confidence_basis"] or "", r["question"], r["sql"] or ""
        )
    console.print(table)
    console.print(
        f"{len(rows)} answers to review; verify one with `querylift feedback ANSWER_ID --thumbs up` or correct it."
    )
    return 0


async def _export(args: argparse.Namespace) -> int:
    pool = await open_pool(get_settings())
    try:
        count = await export_jsonl(pool, args.project, args.out)
    except NoSchema as exc:
        console.print(f"[red]{exc}[/]")
        return 2
    finally:
        await pool.close()
    console.print(f"[green]✓[/] {count} examples of {args.project} → {args.out}")
    return 0
