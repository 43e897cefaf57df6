"""A real Prometheus scrapes the querylift health server and sees our metrics.

Needs the ``prometheus`` binary (Debian: ``apt-get install -y prometheus``; ``make test`` installs it).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services.infra import metrics
from services.infra.health_server import bound_port, start_health_server

PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="the prometheus binary is not installed (apt-get install -y prometheus)"
)
PROJECT = "scrape-test-project"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
async def target() -> AsyncIterator[int]:
    async def ok() -> bool:
        return True

    metrics.record_sql_execution(PROJECT, "ok")
    metrics.record_sql_execution(PROJECT, "ok")
    metrics.record_sql_execution(PROJECT, "error")
    metrics.record_answer(PROJECT, "control", schema_valid=True)
    metrics.CONSUMER_LAG.labels("scrape-test", "chat.question", "0").set(7)
    srv = await start_health_server("127.0.0.1", 0, {"broker": ok, "database": ok})
    try:
        yield bound_port(srv)
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
def prometheus(tmp_path: Path, target: int) -> Iterator[str]:
    assert PROMETHEUS is not None
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {
                "job_name": "querylift",
                "scrape_interval": "1s",
                "static_configs": [{"targets": [f"127.0.0.1:{target}"], "labels": {"service": "query"}}],
            }
        ],
    }
    config_file = tmp_path / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    port = _free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config_file}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


async def _query(client: httpx.AsyncClient, base: str, promql: str) -> list[dict[str, Any]]:
    try:
        resp = await client.get(f"{base}/api/v1/query", params={"query": promql})
    except httpx.TransportError:
        return []  # Prometheus still starting
    if resp.status_code != 200:
        return []
    body = resp.json()
    assert body["status"] == "success", body
    return list(body["data"]["result"])


async def test_prometheus_scrapes_our_metrics(prometheus: str, target: int, tmp_path: Path) -> None:
    deadline = time.monotonic() + 60
    up: list[dict[str, Any]] = []
    ok: list[dict[str, Any]] = []
    lag: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            up = await _query(client, prometheus, 'up{job="querylift"}')
            ok = await _query(
                client, prometheus, f'querylift_sql_executions_total{{project="{PROJECT}",outcome="ok"}}'
            )
            lag = await _query(client, prometheus, "sum(querylift_consumer_lag)")
            if up and up[0]["value"][1] == "1" and ok and lag:
                break
            await asyncio.sleep(0.5)
    log = (tmp_path / "prometheus.log").read_text()[-3000:]
    assert up, f"Prometheus never reported the target; its log:\n{log}"
    assert up[0]["metric"]["instance"] == f"127.0.0.1:{target}"
    assert up[0]["value"][1] == "1", f"target not up: {up}\n{log}"
    assert ok, "querylift_sql_executions_total not scraped"
    assert float(ok[0]["value"][1]) >= 2
    assert ok[0]["metric"]["service"] == "query"
    assert lag and float(lag[0]["value"][1]) >= 7
