"""A tiny HTTP server for ``GET /metrics`` (Prometheus) and ``GET /healthz`` (dependency checks).

Plain asyncio on purpose: it runs inside every consumer's event loop, needs no web framework, and must stay up
whatever a scanner or a misconfigured probe sends it. Requests are read with a size cap and a deadline, and
anything that is not a well-formed ``GET``/``HEAD`` gets a short error response instead of an exception.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.registry import CollectorRegistry

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[bool]]

MAX_HEADER_BYTES = 8192
READ_TIMEOUT_S = 5.0
CHECK_TIMEOUT_S = 3.0

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    431: "Request Header Fields Too Large",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


async def run_checks(checks: Mapping[str, Check], timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, bool]:
    """Run every check concurrently; a check that raises or overruns counts as failed."""

    async def one(check: Check) -> bool:
        try:
            return bool(await asyncio.wait_for(check(), timeout_s))
        except Exception:
            return False

    results = await asyncio.gather(*(one(c) for c in checks.values()))
    return dict(zip(checks, results, strict=True))


def _response(status: int, body: bytes, content_type: str, *, head: bool = False) -> bytes:
    headers = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    )
    return headers.encode("ascii") + (b"" if head else body)


def _text(status: int, message: str) -> bytes:
    return _response(status, (message + "\n").encode(), "text/plain; charset=utf-8")


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line and headers up to the blank line (CRLF or bare LF), or None when too large."""
    head = b""
    while True:
        try:
            line = await reader.readline()
        except ValueError:  # one line longer than the stream limit
            return None
        head += line
        if len(head) > MAX_HEADER_BYTES:
            return None
        if not line or line in (b"\r\n", b"\n"):
            return head  # end of head, or the client closed early: answer what came


async def _handle(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    checks: Mapping[str, Check],
    registry: CollectorRegistry,
) -> None:
    try:
        try:
            head = await asyncio.wait_for(_read_head(reader), READ_TIMEOUT_S)
        except TimeoutError:
            writer.write(_text(408, "request timeout"))
            return
        if head is None:
            writer.write(_text(431, "request head too large"))
            return
        writer.write(await _respond(head, checks, registry))
    except Exception:
        log.exception("health server failed to answer a request")
        try:
            writer.write(_text(500, "internal error"))
        except Exception:
            pass
    finally:
        try:
            await writer.drain()
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass  # the client went away; nothing to tell it


async def _respond(head: bytes, checks: Mapping[str, Check], registry: CollectorRegistry) -> bytes:
    line = head.split(b"\n", 1)[0].strip()
    parts = line.split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _text(400, "bad request")
    try:
        method = parts[0].decode("ascii")
        target = parts[1].decode("ascii")
    except UnicodeDecodeError:
        return _text(400, "bad request")
    path = target.split("?", 1)[0]
    if path not in ("/metrics", "/healthz"):
        return _text(404, "not found: try /metrics or /healthz")
    if method not in ("GET", "HEAD"):
        return _text(405, "method not allowed")
    head_only = method == "HEAD"

    if path == "/metrics":
        return _response(200, generate_latest(registry), CONTENT_TYPE_LATEST, head=head_only)

    started = time.perf_counter()
    results = await run_checks(checks)
    healthy = all(results.values())
    body: dict[str, Any] = {
        "status": "ok" if healthy else "unavailable",
        "checks": results,
        "duration_ms": round((time.perf_counter() - started) * 1000, 1),
    }
    return _response(200 if healthy else 503, json.dumps(body).encode(), "application/json", head=head_only)


async def start_health_server(
    host: str,
    port: int,
    checks: dict[str, Callable[[], Awaitable[bool]]],
    *,
    registry: CollectorRegistry = REGISTRY,
) -> asyncio.Server:
    """Serve /metrics and /healthz on ``host:port`` (port 0 picks a free one); close the server to stop."""

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _handle(reader, writer, checks, registry)

    server = await asyncio.start_server(on_client, host, port, limit=MAX_HEADER_BYTES)
    log.info("metrics and health server listening", extra={"host": host, "port": bound_port(server)})
    return server


def bound_port(server: asyncio.Server) -> int:
    return int(server.sockets[0].getsockname()[1])


# --- ready-made checks for the two dependencies every consumer has --------------------------------------


def broker_check(bootstrap_servers: str) -> Check:
    """True when a TCP connection to any bootstrap broker opens (cheap; no Kafka client needed)."""
    hosts = [h.strip() for h in bootstrap_servers.split(",") if h.strip()]

    async def check() -> bool:
        for hostport in hosts:
            host, _, port = hostport.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(asyncio.open_connection(host.strip("[]"), int(port)), 2.0)
            except (OSError, TimeoutError, ValueError):
                continue
            writer.close()
            return True
        return False

    return check


def database_check(pool: Any) -> Check:
    """True when the system of record answers ``SELECT 1`` (pool: an asyncpg pool)."""

    async def check() -> bool:
        return bool(await pool.fetchval("SELECT 1") == 1)

    return check
