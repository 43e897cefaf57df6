"""How a second process finds what ``querylift up`` started: a small state file under the data dir.

The embedded broker listens on a free port chosen at start, so ``querylift ask``, ``feedback`` and
``console`` cannot know it from the settings alone. ``up`` writes the addresses it uses to
``<data_dir>/running.json`` (owner-only) and removes the file when it stops. Addresses configured in the
settings always win; the file fills in only those left empty. A configured ``DATABASE_URL`` (which may hold a
password) is never written: a second process reads it from its own settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from services.infra.settings import Settings

STATE_FILE = "running.json"


class NotRunning(Exception):
    """No broker to talk to: ``querylift up`` is not running and none is configured."""


@dataclass(frozen=True)
class LocalStack:
    bootstrap_servers: str
    #: The embedded PostgreSQL's DSN (a local socket, no password); None when DATABASE_URL is configured.
    embedded_database_url: str | None
    pid: int


def state_path(settings: Settings) -> Path:
    return settings.data_dir / STATE_FILE


def write_state(settings: Settings, stack: LocalStack) -> Path:
    path = state_path(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {
        "bootstrap_servers": stack.bootstrap_servers,
        "embedded_database_url": stack.embedded_database_url,
        "pid": stack.pid,
    }
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(body, out)
    tmp.replace(path)
    return path


def clear_state(settings: Settings, pid: int) -> None:
    """Remove the state file if it is this process's (a second ``up`` must not lose the first one's)."""
    stack = read_state(settings)
    if stack is not None and stack.pid == pid:
        with contextlib.suppress(FileNotFoundError):
            state_path(settings).unlink()


def read_state(settings: Settings) -> LocalStack | None:
    try:
        data = json.loads(state_path(settings).read_text())
        return LocalStack(
            bootstrap_servers=str(data["bootstrap_servers"]),
            embedded_database_url=data.get("embedded_database_url"),
            pid=int(data["pid"]),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _listening(bootstrap: str, timeout_s: float = 2.0) -> bool:
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
                return True
        except (OSError, ValueError):
            continue
    return False


def connected_settings(settings: Settings) -> Settings:
    """``settings`` with the broker and system-of-record addresses of the running stack filled in.

    Raises NotRunning (with what to do) when no broker is configured or reachable."""
    bootstrap = settings.kafka_bootstrap_servers
    updates: dict[str, object] = {}
    if not bootstrap:
        stack = read_state(settings)
        if stack is None or not _alive(stack.pid):
            raise NotRunning(
                f"querylift is not running (no live `querylift up` recorded in {state_path(settings)}): "
                "start it with `querylift up` in another terminal, or set QUERYLIFT_KAFKA_BOOTSTRAP_SERVERS "
                "and DATABASE_URL to a running deployment."
            )
        bootstrap = stack.bootstrap_servers
        updates["kafka_bootstrap_servers"] = bootstrap
        if settings.database_url is None and stack.embedded_database_url:
            updates["database_url"] = SecretStr(stack.embedded_database_url)
    if not _listening(bootstrap):
        raise NotRunning(
            f"no Kafka broker answers at {bootstrap}: is `querylift up` (or your broker) still running?"
        )
    return settings.model_copy(update=updates) if updates else settings
