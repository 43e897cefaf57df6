"""Measuring a running pipeline from outside: consumer-group lag from the broker, CPU and RSS from the OS."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from events.export import CONSUMERS


class LagProbe:
    """Messages each consumer group has not committed yet, summed over its topics' partitions."""

    def __init__(self, bootstrap: str, prefix: str) -> None:
        self.bootstrap = bootstrap
        self.prefix = prefix
        self._admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self._offsets = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        self._partitions: dict[str, list[TopicPartition]] = {}
        self._started = False

    async def start(self) -> None:
        await self._admin.start()
        await self._offsets.start()
        self._started = True

    async def stop(self) -> None:
        if self._started:
            self._started = False
            await self._offsets.stop()
            await self._admin.close()

    async def _topic_partitions(self, topic: str) -> list[TopicPartition]:
        if topic not in self._partitions:
            found = self._offsets.partitions_for_topic(topic)
            if not found:
                await self._offsets._client.force_metadata_update()
                found = self._offsets.partitions_for_topic(topic) or set()
            self._partitions[topic] = [TopicPartition(topic, p) for p in sorted(found)]
        return self._partitions[topic]

    async def sample(self) -> dict[str, int]:
        lag: dict[str, int] = {}
        for consumer in CONSUMERS:
            tps = [tp for t in consumer.receives for tp in await self._topic_partitions(self.prefix + t)]
            if not tps:
                continue
            ends = await self._offsets.end_offsets(tps)
            committed = await self._admin.list_consumer_group_offsets(consumer.group_id, partitions=tps)
            total = 0
            for tp in tps:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                total += max(0, ends.get(tp, 0) - done)
            lag[consumer.name] = total
        return lag


@dataclass
class ProcessStats:
    name: str
    pid: int
    cpu_seconds: float = 0.0
    rss_mb: list[float] = field(default_factory=list)

    def summary(self, wall_s: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "pid": self.pid,
            "cpu_percent": round(100 * self.cpu_seconds / wall_s, 1) if wall_s > 0 else None,
            "cpu_seconds": round(self.cpu_seconds, 2),
            "rss_mb_start": round(self.rss_mb[0], 1) if self.rss_mb else None,
            "rss_mb_end": round(self.rss_mb[-1], 1) if self.rss_mb else None,
            "rss_mb_max": round(max(self.rss_mb), 1) if self.rss_mb else None,
        }


class ProcessProbe:
    """CPU time used between ``begin`` and ``end`` and RSS samples, per named process (and its children,
    which matters for PostgreSQL: one backend process per connection)."""

    def __init__(self, pids: dict[str, int], *, alone: frozenset[str] = frozenset()) -> None:
        """``alone``: names measured without their children (the benchmark's own process, whose children
        are the consumers and the infrastructure measured under their own names)."""
        self._procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self._alone = alone
        self.stats = {name: ProcessStats(name, pid) for name, pid in pids.items()}
        self._cpu0: dict[str, float] = {}
        self._t0 = 0.0
        self.wall_s = 0.0

    def _tree(self, proc: psutil.Process) -> list[psutil.Process]:
        if any(self._procs.get(name) is proc for name in self._alone):
            return [proc]
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []

    def _cpu(self, proc: psutil.Process) -> float:
        total = 0.0
        for p in self._tree(proc):
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                continue
        return total

    def _rss_mb(self, proc: psutil.Process) -> float:
        total = 0
        for p in self._tree(proc):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                continue
        return total / 2**20

    def begin(self) -> None:
        self._t0 = time.monotonic()
        self._cpu0 = {name: self._cpu(p) for name, p in self._procs.items()}
        self.sample()

    def sample(self) -> None:
        for name, proc in self._procs.items():
            self.stats[name].rss_mb.append(self._rss_mb(proc))

    def end(self) -> None:
        self.sample()
        self.wall_s = time.monotonic() - self._t0
        for name, proc in self._procs.items():
            self.stats[name].cpu_seconds = max(0.0, self._cpu(proc) - self._cpu0.get(name, 0.0))

    def summary(self) -> list[dict[str, Any]]:
        return [s.summary(self.wall_s) for s in self.stats.values()]


def run_id() -> str:
    return uuid.uuid4().hex[:6]
