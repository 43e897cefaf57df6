"""``querylift up``: everything on one machine — embedded broker and PostgreSQL for addresses not configured,
then the five consumers as child processes. Ctrl-C (or SIGTERM) stops the consumers first, then the
infrastructure."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from services.infra import runtime_db
from services.infra.embedded import EmbeddedBroker
from services.infra.local_stack import LocalStack, clear_state, write_state
from services.infra.runtime_db import database_dsn
from services.infra.settings import Settings, get_settings
from services.infra.stop_signals import stop_on_signals
from services.wiring import SERVICES

console = Console(stderr=True)


@dataclass
class Stack:
    bootstrap: str
    database_url: str
    metrics_ports: dict[str, int]
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    broker: EmbeddedBroker | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS"] = self.bootstrap
        env["DATABASE_URL"] = self.database_url
        env["QUERYLIFT_PARENT_PID"] = str(os.getpid())  # the consumers stop if this process is killed
        return env


def start_infrastructure(settings: Settings) -> tuple[str, str, EmbeddedBroker | None]:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = None
    bootstrap = settings.kafka_bootstrap_servers
    if not bootstrap:
        broker = EmbeddedBroker().start(settings.data_dir / "broker.log")
        bootstrap = broker.bootstrap_servers
        console.print(f"[green]✓[/] embedded Kafka-compatible broker (Tansu) at {bootstrap}")
    dsn = database_dsn(settings)
    if settings.database_url is None:
        console.print(f"[green]✓[/] embedded PostgreSQL 18 + pgvector, data in {settings.data_dir / 'pg'}")
    return bootstrap, dsn, broker


@contextmanager
def running_stack(
    settings: Settings, services: tuple[str, ...] = SERVICES, log_dir: Path | None = None
) -> Iterator[Stack]:
    bootstrap, dsn, broker = start_infrastructure(settings)
    base_port = settings.metrics_port
    stack = Stack(
        bootstrap=bootstrap,
        database_url=dsn,
        metrics_ports={s: (base_port + i if base_port else 0) for i, s in enumerate(SERVICES)},
        broker=broker,
    )
    log_dir = log_dir or settings.data_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    try:
        for name in services:
            out = open(log_dir / f"{name}.log", "ab")
            stack.processes[name] = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "services.cli.main",
                    "run",
                    name,
                    "--metrics-port",
                    str(stack.metrics_ports[name]),
                ],
                env=stack.env(),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            console.print(
                f"[green]✓[/] consumer [bold]{name}[/] (pid {stack.processes[name].pid}, "
                f"metrics :{stack.metrics_ports[name]}, log {log_dir / (name + '.log')})"
            )
        # `querylift ask`, `feedback` and `console` in other terminals find the stack through this file.
        write_state(
            settings,
            LocalStack(
                bootstrap_servers=bootstrap,
                embedded_database_url=dsn if settings.database_url is None else None,
                pid=os.getpid(),
            ),
        )
        yield stack
    finally:
        clear_state(settings, os.getpid())
        stop_stack(stack)


def stop_stack(stack: Stack) -> None:
    for proc in stack.processes.values():
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 20
    for proc in stack.processes.values():
        try:
            proc.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
    if stack.broker is not None:
        stack.broker.stop()

    if runtime_db._embedded is not None:
        runtime_db._embedded.stop()
        runtime_db._embedded = None


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "up", help="start broker, PostgreSQL and the five consumers locally (Ctrl-C stops all)"
    )
    p.set_defaults(func=_up)


def _up(args: argparse.Namespace) -> int:
    settings = get_settings()
    stop_on_signals()
    with running_stack(settings) as stack:
        console.print(
            f"[bold]querylift is up.[/] Kafka {stack.bootstrap}. In another terminal: "
            '`querylift ask PROJECT "question"`, `querylift console`. Ctrl-C stops.'
        )
        try:
            while True:
                for name, proc in stack.processes.items():
                    if proc.poll() is not None:
                        console.print(f"[red]consumer {name} exited with {proc.returncode}; see its log[/]")
                        return 1
                time.sleep(1)
        except KeyboardInterrupt:
            console.print("stopping…")
    return 0
