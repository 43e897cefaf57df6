"""``querylift demo``: the whole pipeline on embedded infrastructure with the sample project, learning live."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time

import asyncpg
import httpx
from rich.console import Console

from services.cli.cmd_up import Stack, running_stack
from services.client import QueryliftClient
from services.core import model_registry
from services.demo.session import ask_stream, load_questions, reset_project, sample_database, summary_table
from services.demo.simulated_user import SimulatedUser
from services.generation.chart import render_chart_png
from services.infra.db import create_pool, migrate
from services.infra.llm.model_files import resolve_gguf
from services.infra.settings import Settings, get_settings
from services.query.register import register_project

# Piped output (CI logs, `| tee`) keeps whole lines rather than rich's 80-column default.
console = Console() if sys.stdout.isatty() else Console(width=160)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run the pipeline with the sample project and a simulated analyst")
    p.add_argument("--limit", type=int, default=None, help="ask only the first N questions")
    p.add_argument(
        "--training-threshold",
        type=int,
        default=25,
        help="verified examples that trigger LoRA training (25: a fifth, 5, held out, the gate's minimum)",
    )
    p.add_argument(
        "--training-wait", type=float, default=900, help="seconds to wait for the training job at the end"
    )
    p.add_argument(
        "--training-steps",
        type=int,
        default=8,
        help="optimizer steps of the demo's LoRA job (QUERYLIFT_LORA_MAX_STEPS wins when set): the training data "
        "with value variants would take the better part of an hour on 2 CPU cores",
    )
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    # The consumers are child processes that read their settings from the environment.
    os.environ.setdefault("QUERYLIFT_LORA_MAX_STEPS", str(args.training_steps))
    settings = get_settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    if settings.llm_backend == "gguf":
        path = resolve_gguf(settings.llm_model, settings.model_cache_dir)
        console.print(f"[green]✓[/] model {settings.llm_model} ({path})")
    with running_stack(settings) as stack:
        return asyncio.run(_session(settings, stack, args))


async def _wait_healthy(ports: dict[str, int], timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    pending = dict(ports)
    with console.status("waiting for the five consumers to load their models…"):
        async with httpx.AsyncClient(timeout=2) as http:
            while pending and time.monotonic() < deadline:
                for name, port in list(pending.items()):
                    try:
                        if (await http.get(f"http://127.0.0.1:{port}/healthz")).status_code == 200:
                            console.print(f"[green]✓[/] {name} healthy")
                            pending.pop(name)
                    except httpx.HTTPError:
                        pass
                await asyncio.sleep(1)
    if pending:
        raise SystemExit(
            f"consumers not healthy after {timeout_s:.0f} s: {', '.join(pending)} (see .querylift/logs)"
        )


async def _session(settings: Settings, stack: object, args: argparse.Namespace) -> int:
    assert isinstance(stack, Stack)
    await _wait_healthy(stack.metrics_ports)
    pool = await create_pool(stack.database_url)
    await migrate(pool)
    database = sample_database(settings.data_dir)
    await reset_project(pool, "bikeshop")
    schema, version, _ = await register_project(
        pool,
        project_id="bikeshop",
        database_url=f"sqlite:///{database}",
        domain="ecommerce",
        description="A bicycle retailer with six city stores",
        training_threshold=args.training_threshold,
    )
    console.print(
        f"[green]✓[/] project bikeshop registered: {len(schema.tables)} tables, schema version {version}"
    )
    questions = load_questions()[: args.limit]
    client = QueryliftClient(
        stack.bootstrap, prefix=settings.topic_prefix, partitions=settings.topic_partitions
    )
    await client.start()
    try:
        tally, chart_answer = await ask_stream(
            client, SimulatedUser(database), "bikeshop", questions, console
        )
        console.print(summary_table(tally))
        if chart_answer is not None:
            png = settings.data_dir / "demo" / "chart.png"
            png.parent.mkdir(parents=True, exist_ok=True)
            assert chart_answer.chart is not None
            render_chart_png(chart_answer.chart, chart_answer.columns, chart_answer.rows_preview, png)
            console.print(f"[green]✓[/] chart of “{chart_answer.question}” rendered to {png}")
        await _training_outcome(pool, args.training_wait)
    finally:
        await client.stop()
        await pool.close()
    ports = ", ".join(f"{n} :{p}" for n, p in stack.metrics_ports.items())
    console.print(f"Metrics (Prometheus text) at http://127.0.0.1:<port>/metrics — {ports}")
    return 0


async def _training_outcome(pool: asyncpg.Pool, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    job = await model_registry.first_job(pool, "bikeshop")
    if job is None:
        console.print("No training job was requested (the threshold of verified examples was not reached).")
        return
    with console.status("LoRA training job on Ray…"):
        while (
            job is not None
            and job.status in ("requested", "submitted", "running")
            and time.monotonic() < deadline
        ):
            await asyncio.sleep(3)
            job = await model_registry.get_job(pool, job.id)
    if job is not None:
        console.print(f"Training job {job.id}: {job.status} {job.error or ''}")
    for version in await model_registry.list_versions(pool, "bikeshop"):
        console.print(
            f"  adapter v{version.version} on {version.base_model}: {version.status} {version.metrics}"
        )
