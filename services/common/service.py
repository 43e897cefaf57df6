"""Running one consumer: system of record, broker, handler, loop, and its /metrics + /healthz server."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress

import asyncpg

from services.common.bus import Bus, ensure_topics
from services.common.consumer import ConsumerRunner
from services.common.runtime_db import open_pool
from services.common.settings import Settings
from services.wiring import Overrides, build_handler

log = logging.getLogger(__name__)


async def _broker_ok(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


async def _database_ok(pool: asyncpg.Pool) -> bool:
    try:
        return bool(await asyncio.wait_for(pool.fetchval("SELECT 1"), 2))
    except Exception:
        return False


async def run_consumer(
    name: str,
    settings: Settings,
    *,
    metrics_port: int | None = None,
    overrides: Overrides | None = None,
    ready: asyncio.Event | None = None,
    install_signals: bool = True,
) -> None:
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        raise SystemExit(
            "QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS is not set: `querylift run` needs a broker (`querylift up` starts one)."
        )
    pool = await open_pool(settings)
    await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions)
    bus = Bus(bootstrap, prefix=settings.topic_prefix, client=name)
    await bus.start()
    handler = await build_handler(name, settings, pool, overrides)
    await handler.start()
    runner = ConsumerRunner(
        handler,
        bootstrap_servers=bootstrap,
        pool=pool,
        bus=bus,
        prefix=settings.topic_prefix,
        max_poll_interval_ms=24 * 3600 * 1000 if name == "training" else 300_000,
    )
    server = None
    port = settings.metrics_port if metrics_port is None else metrics_port
    if port:
        from services.common.health_server import start_health_server

        server = await start_health_server(
            settings.metrics_host,
            port,
            {"broker": lambda: _broker_ok(bootstrap), "database": lambda: _database_ok(pool)},
        )
    if install_signals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, runner.stop)
    log.info("consumer started", extra={"consumer": name, "metrics_port": port})
    if ready is not None:
        ready.set()
    try:
        await runner.run()
    finally:
        if server is not None:
            server.close()
        await handler.close()
        await bus.stop()
        await pool.close()
        log.info("consumer stopped", extra={"consumer": name})
