"""Running one consumer: system of record, broker, handler, loop, and its /metrics + /healthz server."""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import AsyncExitStack, suppress

from services.infra.bus import Bus, ensure_topics
from services.infra.consumer import ConsumerRunner
from services.infra.health_server import broker_check, database_check, start_health_server
from services.infra.runtime_db import open_pool
from services.infra.settings import Settings
from services.wiring import Overrides, build_handler

log = logging.getLogger(__name__)

# Training holds one message for the whole job; the broker must not take its partitions away meanwhile.
_POLL_INTERVAL_MS = {"training": 24 * 3600 * 1000}


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
    async with AsyncExitStack() as stack:
        pool = await open_pool(settings)
        stack.push_async_callback(pool.close)
        await ensure_topics(bootstrap, settings.topic_prefix, settings.topic_partitions)
        bus = Bus(bootstrap, prefix=settings.topic_prefix, client=name)
        await bus.start()
        stack.push_async_callback(bus.stop)
        handler = await build_handler(name, settings, pool, overrides)
        stack.push_async_callback(handler.close)
        await handler.start()
        runner = ConsumerRunner(
            handler,
            bootstrap_servers=bootstrap,
            pool=pool,
            bus=bus,
            prefix=settings.topic_prefix,
            max_poll_interval_ms=_POLL_INTERVAL_MS.get(name, 300_000),
            fetch_max_wait_ms=settings.fetch_wait_ms
            if handler.answer_path
            else settings.background_fetch_wait_ms,
        )
        port = settings.metrics_port if metrics_port is None else metrics_port
        if port:
            server = await start_health_server(
                settings.metrics_host,
                port,
                {"broker": broker_check(bootstrap), "database": database_check(pool)},
            )
            stack.callback(server.close)
        if install_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                with suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, runner.stop)
        log.info("consumer started", extra={"consumer": name, "metrics_port": port})
        if ready is not None:
            ready.set()
        await runner.run()
    log.info("consumer stopped", extra={"consumer": name})
