"""``querylift status``: health, lag and accuracy of each running consumer, read from its /metrics endpoint."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import asyncpg
import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.table import Table

from services.core.projects import projects_with_role_warnings
from services.infra.embedded import dsn_for_socket
from services.infra.settings import get_settings

#: Pipeline order; ``querylift up`` gives consumer i the metrics port base + i.
CONSUMER_ORDER = ("query", "retrieval", "generation", "feedback", "training")


@dataclass
class ConsumerStatus:
    url: str
    consumer: str
    reachable: bool = False
    healthy: bool = False
    checks: dict[str, bool] = field(default_factory=dict)
    lag: float = 0.0
    consumed: float = 0.0
    failed: float = 0.0
    dead_letters: float = 0.0
    answers: float = 0.0
    sql_success_rate: float | None = None
    mean_rating: float | None = None
    error: str | None = None


def default_urls(base_port: int, host: str = "127.0.0.1") -> list[str]:
    return [f"http://{host}:{base_port + i}" for i in range(len(CONSUMER_ORDER))]


def _sums(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name → [(labels, value)] from the Prometheus text format."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), float(sample.value)))
    return samples


def _total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **match: str) -> float:
    return sum(
        v for labels, v in samples.get(name, []) if all(labels.get(k) == want for k, want in match.items())
    )


def summarize(
    url: str, fallback_name: str, metrics_text: str, healthz: dict[str, Any] | None
) -> ConsumerStatus:
    """Everything the table shows for one consumer, from its /metrics text and /healthz body."""
    samples = _sums(metrics_text)
    names = [
        labels["consumer"] for labels, _ in samples.get("querylift_consumer_up", []) if "consumer" in labels
    ]
    status = ConsumerStatus(url=url, consumer=names[0] if len(names) == 1 else fallback_name, reachable=True)
    if healthz is not None:
        status.checks = {str(k): bool(v) for k, v in (healthz.get("checks") or {}).items()}
        status.healthy = healthz.get("status") == "ok"
    status.lag = _total(samples, "querylift_consumer_lag")
    status.consumed = _total(samples, "querylift_events_consumed_total")
    status.failed = _total(samples, "querylift_events_failed_total")
    status.dead_letters = _total(samples, "querylift_dead_letters_total")
    status.answers = _total(samples, "querylift_answers_total")
    executions = _total(samples, "querylift_sql_executions_total")
    if executions:
        status.sql_success_rate = _total(samples, "querylift_sql_executions_total", outcome="ok") / executions
    ratings = _total(samples, "querylift_feedback_ratings_total")
    if ratings:
        status.mean_rating = _total(samples, "querylift_feedback_rating_points_total") / ratings
    return status


def fetch(client: httpx.Client, url: str, fallback_name: str) -> ConsumerStatus:
    base = url.rstrip("/")
    try:
        metrics = client.get(f"{base}/metrics")
        metrics.raise_for_status()
    except httpx.HTTPError as exc:
        return ConsumerStatus(url=url, consumer=fallback_name, error=f"{type(exc).__name__}: {exc}"[:200])
    healthz: dict[str, Any] | None
    try:
        # 503 still carries the JSON body that says which check failed.
        body = client.get(f"{base}/healthz").json()
        healthz = body if isinstance(body, dict) else None
    except (httpx.HTTPError, ValueError):
        healthz = None
    try:
        return summarize(url, fallback_name, metrics.text, healthz)
    except ValueError as exc:  # not the Prometheus text format
        return ConsumerStatus(url=url, consumer=fallback_name, error=f"unreadable /metrics: {exc}"[:200])


def collect(urls: Sequence[str], timeout_s: float = 3.0) -> list[ConsumerStatus]:
    names = [CONSUMER_ORDER[i] if i < len(CONSUMER_ORDER) else f"#{i}" for i in range(len(urls))]
    with httpx.Client(timeout=timeout_s) as client:
        return [fetch(client, url, name) for url, name in zip(urls, names, strict=True)]


def _fmt(value: float) -> str:
    return f"{value:,.0f}"


def render(rows: Iterable[ConsumerStatus], console: Console) -> None:
    table = Table(title="querylift consumers")
    for column in ("consumer", "endpoint", "health", "lag", "consumed", "failed", "dead letters", "answers"):
        table.add_column(column, justify="left" if column in ("consumer", "endpoint", "health") else "right")
    table.add_column("SQL success", justify="right")
    table.add_column("mean rating", justify="right")
    for row in rows:
        if not row.reachable:
            health = "[red]down[/red]"
        elif row.healthy:
            health = "[green]ok[/green]"
        else:
            failing = ", ".join(k for k, ok in row.checks.items() if not ok) or "unknown"
            health = f"[yellow]degraded ({failing})[/yellow]"
        table.add_row(
            row.consumer,
            row.url,
            health,
            _fmt(row.lag) if row.reachable else "-",
            _fmt(row.consumed) if row.reachable else "-",
            _fmt(row.failed) if row.reachable else "-",
            _fmt(row.dead_letters) if row.reachable else "-",
            _fmt(row.answers) if row.reachable else "-",
            f"{row.sql_success_rate:.1%}" if row.sql_success_rate is not None else "-",
            f"{row.mean_rating:.2f}" if row.mean_rating is not None else "-",
        )
    console.print(table)
    for row in rows:
        if row.error:
            console.print(f"[dim]{row.consumer}: {row.error}[/dim]")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("status", help="Health, lag and accuracy of the running consumers.")
    parser.add_argument(
        "--metrics-url",
        action="append",
        dest="urls",
        metavar="URL",
        help="A consumer's metrics endpoint (repeatable); default: 127.0.0.1 on the metrics base port + i.",
    )
    parser.add_argument("--timeout", type=float, default=3.0, help="Seconds per request (default 3).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.add_argument(
        "--database-url",
        default=None,
        help="System of record to read project warnings from (default: DATABASE_URL, or the embedded "
        "PostgreSQL when `querylift up` runs it).",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    urls = args.urls
    if not urls:
        urls = default_urls(get_settings().metrics_port or 9400)
    rows = collect(urls, args.timeout)
    warnings = asyncio.run(project_warnings(args.database_url, args.timeout))
    if args.json:
        print(json.dumps({"consumers": [asdict(r) for r in rows], "project_warnings": warnings}, indent=2))
    else:
        console = Console()
        render(rows, console)
        for project, lines in warnings.items():
            for line in lines:
                colour = "red" if line.startswith("too strong") else "yellow"
                console.print(f"[{colour}]{project}: database account {line}[/]")
    return 0 if all(r.reachable and r.healthy for r in rows) else 1


def _record_dsn(explicit: str | None) -> str | None:
    """Where the system of record is, without starting anything: an explicit URL, DATABASE_URL, or the
    embedded server's socket when its data directory shows it running."""
    if explicit:
        return explicit

    settings = get_settings()
    if settings.database_url is not None:
        return settings.database_url.get_secret_value()
    pgdata = settings.data_dir.resolve() / "pg"
    pid = pgdata / "postmaster.pid"
    if not pid.is_file():
        return None
    lines = pid.read_text(encoding="utf-8", errors="replace").splitlines()
    socket_dir = lines[4] if len(lines) > 4 and lines[4] else None
    return dsn_for_socket(socket_dir) if socket_dir else None


async def project_warnings(database_url: str | None, timeout_s: float) -> dict[str, list[str]]:
    """Per project, what its database account may do beyond reading its schema (registration found it).
    Empty when the system of record cannot be reached: status is about the consumers first."""
    dsn = _record_dsn(database_url)
    if dsn is None:
        return {}
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout_s)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError):
        return {}
    try:
        return await projects_with_role_warnings(conn)
    except asyncpg.PostgresError:
        return {}  # no projects table yet
    finally:
        await conn.close()
