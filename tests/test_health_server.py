"""The /metrics and /healthz server: real sockets, real HTTP clients, hostile input."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from services.infra import metrics
from services.infra.health_server import (
    MAX_HEADER_BYTES,
    bound_port,
    broker_check,
    start_health_server,
)


class Switch:
    """A dependency check whose answer the test controls."""

    def __init__(self, ok: bool = True) -> None:
        self.ok = ok
        self.calls = 0

    async def __call__(self) -> bool:
        self.calls += 1
        return self.ok


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, Switch]]]:
    checks = {"broker": Switch(), "database": Switch()}
    srv = await start_health_server("127.0.0.1", 0, dict(checks))
    try:
        yield f"http://127.0.0.1:{bound_port(srv)}", checks
    finally:
        srv.close()
        await srv.wait_closed()


async def _raw(url: str, payload: bytes, *, close_write: bool = True) -> bytes:
    port = int(url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    if close_write:
        writer.write_eof()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return data


async def test_metrics_exposes_querylift_metrics_in_prometheus_format(
    server: tuple[str, dict[str, Switch]],
) -> None:
    url, _ = server
    metrics.record_sql_execution("healthsrv-proj", "ok")
    metrics.record_sql_execution("healthsrv-proj", "timeout")
    metrics.record_feedback("healthsrv-proj", rating=4, thumbs="up")
    async with httpx.AsyncClient() as client:
        resp = await client.get(f"{url}/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == CONTENT_TYPE_LATEST
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(resp.text)
        for s in family.samples
    }
    ok = samples[("querylift_sql_executions_total", (("outcome", "ok"), ("project", "healthsrv-proj")))]
    assert ok >= 1
    assert samples[("querylift_feedback_rating_points_total", (("project", "healthsrv-proj"),))] >= 4


async def test_healthz_is_200_when_every_check_passes_and_503_otherwise(
    server: tuple[str, dict[str, Switch]],
) -> None:
    url, checks = server
    async with httpx.AsyncClient() as client:
        ok = await client.get(f"{url}/healthz")
        assert ok.status_code == 200
        assert ok.json()["status"] == "ok"
        assert ok.json()["checks"] == {"broker": True, "database": True}

        checks["database"].ok = False
        down = await client.get(f"{url}/healthz")
        assert down.status_code == 503
        assert down.json()["checks"] == {"broker": True, "database": False}
        assert down.json()["status"] != "ok"

        head = await client.head(f"{url}/healthz")
        assert head.status_code == 503 and head.content == b""
    assert checks["broker"].calls == 3


async def test_a_check_that_raises_or_hangs_counts_as_failed(monkeypatch: pytest.MonkeyPatch) -> None:
    import services.infra.health_server as hs

    monkeypatch.setattr(hs, "CHECK_TIMEOUT_S", 0.2)

    async def boom() -> bool:
        raise RuntimeError("database exploded")

    async def hang() -> bool:
        await asyncio.sleep(30)
        return True

    checks: dict[str, Callable[[], Awaitable[bool]]] = {"broker": hang, "database": boom}
    srv = await start_health_server("127.0.0.1", 0, checks)
    try:
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{bound_port(srv)}/healthz", timeout=10)
        assert resp.status_code == 503
        assert json.loads(resp.content)["checks"] == {"broker": False, "database": False}
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        (b"\x00\xff\xfe garbage\r\n\r\n", b"400"),
        (b"GET\r\n\r\n", b"400"),
        (b"GET /metrics\r\n\r\n", b"400"),
        (b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n", b"404"),
        (b"POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n", b"405"),
        (b"GET /\xc3\x28 HTTP/1.1\r\n\r\n", b"400"),
        (b"GET /metrics HTTP/1.1\nHost: x\n\n", b"200"),
        (b"GET /healthz?verbose=1 HTTP/1.0\r\n\r\n", b"200"),
        (b"", b"400"),
        (b"GET /metrics HTTP/1.1\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES * 2) + b"\r\n\r\n", b"431"),
    ],
)
async def test_bad_requests_get_an_error_not_a_crash(
    server: tuple[str, dict[str, Switch]], payload: bytes, status: bytes
) -> None:
    url, _ = server
    data = await _raw(url, payload)
    assert data.split(b"\r\n", 1)[0].split(b" ")[1] == status
    # and the server still answers afterwards
    async with httpx.AsyncClient() as client:
        assert (await client.get(f"{url}/healthz")).status_code == 200


async def test_a_silent_client_is_timed_out(
    server: tuple[str, dict[str, Switch]], monkeypatch: pytest.MonkeyPatch
) -> None:
    import services.infra.health_server as hs

    monkeypatch.setattr(hs, "READ_TIMEOUT_S", 0.3)
    url, _ = server
    data = await _raw(url, b"GET /metrics HTTP/1.1\r\n", close_write=False)
    assert data.startswith(b"HTTP/1.1 408")


async def test_many_concurrent_scrapes(server: tuple[str, dict[str, Switch]]) -> None:
    url, _ = server
    async with httpx.AsyncClient() as client:
        responses = await asyncio.gather(*(client.get(f"{url}/metrics") for _ in range(30)))
    assert {r.status_code for r in responses} == {200}


async def test_broker_check_connects_over_tcp() -> None:
    srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
    port = bound_port(srv)
    try:
        assert await broker_check(f"127.0.0.1:1,127.0.0.1:{port}")()
    finally:
        srv.close()
        await srv.wait_closed()
    assert not await broker_check(f"127.0.0.1:{port}")()
    assert not await broker_check("not-a-host-port")()
