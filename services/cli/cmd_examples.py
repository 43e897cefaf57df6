"""``querylift examples export PROJECT --out FILE``: a project's training examples as chat-messages JSONL."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from rich.console import Console

from services.common.runtime_db import open_pool
from services.common.settings import get_settings
from services.training.dataset import NoSchema, export_jsonl

console = Console()


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("examples", help="a project's verified question/SQL examples")
    esub = p.add_subparsers(dest="examples_command", required=True)
    export = esub.add_parser("export", help="write the examples LoRA training uses as chat-messages JSONL")
    export.add_argument("project")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=lambda a: asyncio.run(_export(a)))


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
