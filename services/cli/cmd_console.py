"""``querylift console``: the review console on a local port, talking to the stack ``querylift up`` runs (or
the configured broker and system of record)."""

from __future__ import annotations

import argparse
import asyncio

from rich.console import Console

from services.cli import exit_codes
from services.console.app import ConsoleDeps, create_app
from services.console.security import Guard, binding_problem
from services.infra.bus import Bus, ensure_topics
from services.infra.local_stack import NotRunning, connected_settings
from services.infra.runtime_db import open_pool
from services.infra.settings import Settings, get_settings
from services.wiring import build_databases

console = Console(stderr=True, soft_wrap=True)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("console", help="the review console: answers, review queue, learning, models (web)")
    p.add_argument("--host", default=None, help="address to bind (default QUERYLIFT_CONSOLE_HOST, 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default QUERYLIFT_CONSOLE_PORT, 8400)")
    p.set_defaults(func=_console)


def _console(args: argparse.Namespace) -> int:
    settings = get_settings()
    host = args.host or settings.console_host
    port = settings.console_port if args.port is None else args.port
    token = settings.console_token.get_secret_value() if settings.console_token else None
    problem = binding_problem(host, token)
    if problem:
        console.print(f"[red]Not serving:[/] {problem}")
        return exit_codes.UNKNOWN
    try:
        settings = connected_settings(settings)
    except NotRunning as exc:
        console.print(f"[red]{exc}[/]")
        return exit_codes.NOT_RUNNING
    return asyncio.run(serve(settings, host, port, token))


async def serve(settings: Settings, host: str, port: int, token: str | None) -> int:
    import uvicorn

    assert settings.kafka_bootstrap_servers
    pool = await open_pool(settings, max_size=4)
    await ensure_topics(settings.kafka_bootstrap_servers, settings.topic_prefix, settings.topic_partitions)
    bus = Bus(settings.kafka_bootstrap_servers, prefix=settings.topic_prefix, client="querylift-console")
    await bus.start()
    databases = build_databases(settings)
    try:
        app = create_app(
            ConsoleDeps(
                pool=pool,
                publisher=bus,
                databases=databases,
                guard=Guard(token=token),
                sql_timeout_s=settings.sql_timeout_s,
                row_limit=settings.sql_row_limit,
                default_base_model=settings.training_base_model,
            )
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)
        )
        console.print(f"[green]✓[/] review console at http://{host}:{port}/ (Ctrl-C stops)")
        await server.serve()
    finally:
        await bus.stop()
        await databases.close()
        await pool.close()
    return 0
