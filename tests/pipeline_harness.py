"""Runs the five real consumers in this test process, on the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence

from services.client import QueryliftClient
from services.consumer_process import run_consumer
from services.infra.settings import Settings
from services.wiring import SERVICES, Overrides


@contextlib.asynccontextmanager
async def running_pipeline(
    settings: Settings, overrides: Overrides, services: Sequence[str] = SERVICES
) -> AsyncIterator[QueryliftClient]:
    tasks: list[asyncio.Task[None]] = []
    client = QueryliftClient(
        settings.kafka_bootstrap_servers or "",
        prefix=settings.topic_prefix,
        partitions=settings.topic_partitions,
    )
    await client.start()
    try:
        for name in services:
            ready = asyncio.Event()
            task = asyncio.create_task(
                run_consumer(
                    name, settings, metrics_port=0, overrides=overrides, ready=ready, install_signals=False
                )
            )
            tasks.append(task)
            done, _ = await asyncio.wait(
                {task, asyncio.create_task(ready.wait())}, timeout=180, return_when=asyncio.FIRST_COMPLETED
            )
            if task in done:
                task.result()  # a consumer that died at start raises here
        yield client
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await client.stop()
