"""``querylift status`` against real health servers (one healthy, one degraded, one absent)."""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge
from rich.console import Console

from services.cli import cmd_status
from services.infra.health_server import bound_port, start_health_server


def _registry(consumer: str, *, ok: int, error: int, ratings: list[int], lag: list[int]) -> CollectorRegistry:
    """A separate registry per fake consumer, with the real metric names, so numbers are exact."""
    reg = CollectorRegistry()
    Gauge("querylift_consumer_up", "", ["consumer"], registry=reg).labels(consumer).set(1)
    g = Gauge("querylift_consumer_lag", "", ["consumer", "topic", "partition"], registry=reg)
    for partition, value in enumerate(lag):
        g.labels(consumer, "t", str(partition)).set(value)
    Counter("querylift_events_consumed_total", "", ["consumer", "topic"], registry=reg).labels(
        consumer, "t"
    ).inc(10)
    Counter("querylift_events_failed_total", "", ["consumer", "topic", "reason"], registry=reg).labels(
        consumer, "t", "invalid"
    ).inc(2)
    Counter("querylift_dead_letters_total", "", ["consumer", "reason"], registry=reg).labels(
        consumer, "invalid"
    ).inc(2)
    sql = Counter("querylift_sql_executions_total", "", ["project", "outcome"], registry=reg)
    if ok:
        sql.labels("p1", "ok").inc(ok)
    if error:
        sql.labels("p2", "error").inc(error)
    Counter("querylift_answers_total", "", ["project", "arm"], registry=reg).labels("p1", "control").inc(ok)
    r = Counter("querylift_feedback_ratings_total", "", ["project", "rating"], registry=reg)
    points = Counter("querylift_feedback_rating_points_total", "", ["project"], registry=reg)
    for rating in ratings:
        r.labels("p1", str(rating)).inc()
        points.labels("p1").inc(rating)
    return reg


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def endpoints() -> AsyncIterator[list[str]]:
    async def up() -> bool:
        return True

    async def down() -> bool:
        return False

    healthy = await start_health_server(
        "127.0.0.1",
        0,
        {"broker": up, "database": up},
        registry=_registry("generation", ok=3, error=1, ratings=[5, 4, 3], lag=[4, 6]),
    )
    degraded = await start_health_server(
        "127.0.0.1",
        0,
        {"broker": up, "database": down},
        registry=_registry("feedback", ok=0, error=0, ratings=[], lag=[0]),
    )
    try:
        yield [
            f"http://127.0.0.1:{bound_port(healthy)}",
            f"http://127.0.0.1:{bound_port(degraded)}/",
            f"http://127.0.0.1:{_free_port()}",
        ]
    finally:
        for srv in (healthy, degraded):
            srv.close()
            await srv.wait_closed()


async def test_status_reads_health_lag_and_accuracy(endpoints: list[str]) -> None:
    rows = await asyncio.to_thread(cmd_status.collect, endpoints, 2.0)
    healthy, degraded, absent = rows

    assert healthy.consumer == "generation"  # from querylift_consumer_up, not the position
    assert healthy.reachable and healthy.healthy
    assert healthy.lag == 10
    assert (healthy.consumed, healthy.failed, healthy.dead_letters, healthy.answers) == (10, 2, 2, 3)
    assert healthy.sql_success_rate == pytest.approx(0.75)
    assert healthy.mean_rating == pytest.approx(4.0)

    assert degraded.reachable and not degraded.healthy
    assert degraded.checks == {"broker": True, "database": False}
    assert degraded.sql_success_rate is None and degraded.mean_rating is None

    assert not absent.reachable and absent.error
    assert absent.consumer == "generation"  # third default position


async def test_status_command_prints_a_table_and_fails_when_a_consumer_is_not_healthy(
    endpoints: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    parser = argparse.ArgumentParser()
    cmd_status.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["status", *(f"--metrics-url={u}" for u in endpoints[:1]), "--json"])
    assert await asyncio.to_thread(args.func, args) == 0
    data = json.loads(capsys.readouterr().out)
    consumers = data["consumers"]
    assert consumers[0]["consumer"] == "generation" and consumers[0]["sql_success_rate"] == pytest.approx(
        0.75
    )

    rows = await asyncio.to_thread(cmd_status.collect, endpoints, 2.0)
    console = Console(record=True, width=200)
    cmd_status.render(rows, console)
    text = console.export_text()
    assert "75.0%" in text and "4.00" in text
    assert "degraded (database)" in text and "down" in text

    args = parser.parse_args(["status", *(f"--metrics-url={u}" for u in endpoints)])
    assert await asyncio.to_thread(args.func, args) == 1


def test_an_empty_metrics_page_gives_zeros_not_rates() -> None:
    row = cmd_status.summarize("http://x", "query", "", None)
    assert row.reachable and not row.healthy and row.lag == 0 and row.sql_success_rate is None


def test_default_urls_follow_querylift_up_ports() -> None:
    assert cmd_status.default_urls(9400) == [f"http://127.0.0.1:{9400 + i}" for i in range(5)]
    assert cmd_status.default_urls(9500, "10.0.0.1")[-1] == "http://10.0.0.1:9504"
