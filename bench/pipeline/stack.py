"""The real pipeline as separate processes: embedded broker and PostgreSQL, the sample project registered as
one or more tenants, and K ``querylift run SERVICE`` processes per consumer (one consumer group each).

Used by ``querylift bench pipeline``, ``bench/soak.py`` and the fault tests, so all three exercise exactly what
production runs: consumers that only meet through topics and the system of record.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from services.infra.db import create_pool, migrate
from services.infra.embedded import EmbeddedBroker, EmbeddedPostgres
from services.query.register import register_project
from services.wiring import SERVICES

REPO = Path(__file__).resolve().parents[2]
SAMPLE = REPO / "samples" / "bikeshop"
#: What the scripted model answers every question with: valid for the sample project, returns rows.
SAMPLE_SQL = "SELECT status, COUNT(*) AS orders FROM orders GROUP BY status"


def sample_questions() -> list[str]:
    lines = (SAMPLE / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["question"] for line in lines if line.strip()]


@dataclass
class ConsumerProcess:
    service: str
    index: int
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def name(self) -> str:
        return f"{self.service}-{self.index}"

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class ConsumerFleet:
    """Starts, kills and stops ``querylift run`` processes against one broker and one system of record."""

    bootstrap: str
    database_url: str
    log_dir: Path
    env_extra: dict[str, str] = field(default_factory=dict)
    processes: list[ConsumerProcess] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
                "DATABASE_URL": self.database_url,
                "QUERYLIFT_METRICS_PORT": "0",
                "QUERYLIFT_LOG_JSON": "false",
                "QUERYLIFT_LOG_LEVEL": "WARNING",
                "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                # One consumer process should not fight its siblings for the cores with torch threads.
                "OMP_NUM_THREADS": "1",
            }
        )
        env.update(self.env_extra)
        return env

    def spawn(self, service: str) -> ConsumerProcess:
        index = sum(1 for p in self.processes if p.service == service)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{service}-{index}.log"
        with open(log_path, "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "services.cli.main", "run", service, "--metrics-port", "0"],
                env=self.env(),
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        proc = ConsumerProcess(service, index, popen, log_path)
        self.processes.append(proc)
        return proc

    def spawn_all(self, services: Sequence[str] = SERVICES, instances: int = 1) -> None:
        for _ in range(instances):
            for service in services:
                self.spawn(service)

    def kill(self, proc: ConsumerProcess) -> None:
        """SIGKILL: no shutdown code runs, exactly like a crashed node."""
        if proc.alive():
            proc.popen.send_signal(signal.SIGKILL)
            proc.popen.wait(10)
        self.processes.remove(proc)

    def of(self, service: str) -> list[ConsumerProcess]:
        return [p for p in self.processes if p.service == service]

    def dead(self) -> list[ConsumerProcess]:
        return [p for p in self.processes if not p.alive()]

    def stop(self) -> None:
        for proc in self.processes:
            if proc.alive():
                proc.popen.send_signal(signal.SIGTERM)
        for proc in self.processes:
            try:
                proc.popen.wait(15)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)
        self.processes.clear()


@dataclass
class Infrastructure:
    """Embedded broker and PostgreSQL in ``work_dir`` (both removed on stop)."""

    work_dir: Path
    broker: EmbeddedBroker | None = None
    postgres: EmbeddedPostgres | None = None

    def start(self) -> Infrastructure:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.broker = EmbeddedBroker().start(self.work_dir / "broker.log")
        self.postgres = EmbeddedPostgres(self.work_dir / "pg", delete_on_stop=True).start()
        return self

    @property
    def bootstrap(self) -> str:
        assert self.broker is not None
        return self.broker.bootstrap_servers

    @property
    def dsn(self) -> str:
        assert self.postgres is not None
        return self.postgres.dsn

    def stop(self) -> None:
        if self.broker is not None:
            self.broker.stop()
        if self.postgres is not None:
            self.postgres.stop()


async def open_system_of_record(dsn: str) -> asyncpg.Pool:
    pool = await create_pool(dsn, max_size=4)
    await migrate(pool)
    return pool


async def register_tenants(
    pool: asyncpg.Pool, work_dir: Path, count: int, prefix: str = "bench"
) -> list[str]:
    """Register the sample project ``count`` times (one SQLite copy each), as separate tenants."""
    meta = json.loads((SAMPLE / "project.json").read_text(encoding="utf-8"))
    projects = []
    for i in range(count):
        database = work_dir / "customers" / f"{prefix}-{i:02d}.sqlite"
        database.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SAMPLE / meta["database"], database)
        project_id = f"{prefix}-{i:02d}"
        await register_project(
            pool,
            project_id=project_id,
            database_url=f"sqlite:///{database}",
            domain=meta.get("domain"),
            description=meta.get("description"),
        )
        projects.append(project_id)
    return projects
