"""``querylift models list|promote|rollback|export``: a project's LoRA adapters in the model registry."""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.core import model_registry as registry
from services.infra.bus import Bus
from services.infra.runtime_db import open_pool
from services.infra.settings import Settings, get_settings
from services.training import canary
from services.training.announce import serving_changed
from services.training.export import export_merged

console = Console()
log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("models", help="list, promote, roll back and export a project's adapters")
    msub = p.add_subparsers(dest="models_command", required=True)
    lst = msub.add_parser("list", help="model versions of a project")
    lst.add_argument("project")
    lst.set_defaults(func=lambda a: asyncio.run(_list(a)))
    promote = msub.add_parser("promote", help="serve a version (default: the newest candidate or canary)")
    promote.add_argument("project")
    promote.add_argument("--version", type=int, default=None)
    promote.set_defaults(func=lambda a: asyncio.run(_promote(a)))
    rollback = msub.add_parser(
        "rollback", help="serve the previously active version again (or the base model)"
    )
    rollback.add_argument("project")
    rollback.set_defaults(func=lambda a: asyncio.run(_rollback(a)))
    export = msub.add_parser(
        "export", help="merge an adapter into its base model: HF folder + Ollama Modelfile"
    )
    export.add_argument("project")
    export.add_argument("--version", type=int, default=None, help="default: the active version")
    export.add_argument("--out", type=Path, required=True)
    export.set_defaults(func=lambda a: asyncio.run(_export(a)))


async def _list(args: argparse.Namespace) -> int:
    settings = get_settings()
    pool = await open_pool(settings)
    try:
        versions = await registry.list_versions(pool, args.project)
        review = await canary.review(pool, args.project, min_ratings=settings.canary_min_ratings, apply=False)
    finally:
        await pool.close()
    if not versions:
        console.print(f"{args.project}: no adapters yet; the base model answers.")
        return 0
    table = Table("version", "status", "base model", "eval accuracy", "train loss", "steps", "created")
    for v in versions:
        acc = v.metrics.get("eval_accuracy")
        loss = v.metrics.get("train_loss")
        table.add_row(
            str(v.version),
            v.status,
            v.base_model,
            f"{acc:.1%}" if isinstance(acc, int | float) else "",
            f"{loss:.3f}" if isinstance(loss, int | float) else "",
            str(v.metrics.get("steps", "")),
            v.created_at.strftime("%Y-%m-%d %H:%M") if v.created_at else "",
        )
    console.print(table)
    if review is not None:
        _print_arms(review)
    return 0


def _print_arms(review: canary.CanaryReview) -> None:
    """Both arms of the A/B split since the canary started, and what their ratings say so far."""
    arms = Table(f"arm (canary: v{review.version})", "answers", "rated", "good", "bad", "good share")
    for figures in (review.control, review.candidate):
        share = figures.good_share
        arms.add_row(
            figures.arm,
            str(figures.answers),
            str(figures.rated),
            str(figures.good),
            str(figures.bad),
            f"{share:.0%}" if share is not None else "",
        )
    console.print(arms)
    console.print(f"canary: {review.verdict.action} ({review.verdict.reason})")


async def _announce(settings: Settings, project_id: str, version: registry.ModelVersion | None) -> None:
    """Tell running generation consumers (model.updated) so they switch without a restart."""
    if not settings.kafka_bootstrap_servers:
        console.print(
            "[dim]No Kafka configured: running services pick the change up on their next restart.[/]"
        )
        return

    event = serving_changed(project_id, version, settings.training_base_model)
    bus = Bus(settings.kafka_bootstrap_servers, prefix=settings.topic_prefix, client="querylift-cli")
    await bus.start()
    try:
        await bus.publish(event)
    finally:
        await bus.stop()


async def _promote(args: argparse.Namespace) -> int:
    settings = get_settings()
    pool = await open_pool(settings)
    try:
        version = args.version
        if version is None:
            waiting = [
                v
                for v in await registry.list_versions(pool, args.project)
                if v.status in ("candidate", "canary")
            ]
            if not waiting:
                console.print(f"[red]{args.project} has no candidate to promote;[/] pass --version N.")
                return 2
            version = waiting[-1].version
        try:
            promoted = await registry.promote(pool, args.project, version)
        except registry.RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            return 2
    finally:
        await pool.close()
    console.print(f"[green]✓[/] {args.project}: version {promoted.version} is active")
    await _announce(settings, args.project, promoted)
    return 0


async def _rollback(args: argparse.Namespace) -> int:
    settings = get_settings()
    pool = await open_pool(settings)
    try:
        active = await registry.rollback(pool, args.project)
    finally:
        await pool.close()
    if active is None:
        console.print(f"[green]✓[/] {args.project}: rolled back to the base model")
    else:
        console.print(f"[green]✓[/] {args.project}: version {active.version} is active again")
    await _announce(settings, args.project, active)
    return 0


async def _export(args: argparse.Namespace) -> int:
    settings = get_settings()
    pool = await open_pool(settings)
    try:
        if args.version is not None:
            chosen = await registry.get_version(pool, args.project, args.version)
            if chosen is None:
                console.print(f"[red]{args.project} has no version {args.version}.[/]")
                return 2
        else:
            chosen = (await registry.active_and_canary(pool, args.project)).active
    finally:
        await pool.close()
    base = chosen.base_model if chosen else settings.training_base_model
    info = {"project_id": args.project, "version": chosen.version if chosen else None}
    if chosen is not None:
        info["checksum"] = chosen.checksum
    result = await asyncio.to_thread(
        export_merged,
        base,
        chosen.adapter_path if chosen else None,
        args.out,
        cache_dir=settings.model_cache_dir,
        info=info,
    )
    what = f"version {chosen.version}" if chosen else "the base model (no active adapter)"
    console.print(f"[green]✓[/] {args.project}: {what} merged into {base} → {result.out_dir}")
    console.print(f"  ollama create {args.project} -f {result.out_dir / 'Modelfile'}")
    return 0
