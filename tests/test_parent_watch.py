"""A consumer started by `querylift up` stops when `up` is killed: real processes, a parent killed with SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

# The child: watches the parent it was given, reports its pid, then waits far longer than the test does.
CHILD = """
import os, sys, time
from services.infra.parent_watch import watch_parent
watch_parent(int(sys.argv[1]), interval_s=0.1)
open(sys.argv[2], "w").write(str(os.getpid()))
time.sleep(120)
"""
# The parent: starts the child as `up` starts a consumer, then waits to be killed.
PARENT = """
import os, subprocess, sys, time
subprocess.Popen([sys.executable, "-c", sys.argv[1], str(os.getpid()), sys.argv[2]])
time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child that exited but is not yet reaped by init is gone for this purpose.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "zombie" in status.read_text())


def _wait(predicate: object, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_a_child_stops_when_its_parent_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, CHILD, str(pid_file)], env=env)
    try:
        assert _wait(lambda: pid_file.exists() and pid_file.read_text(), 30), "the child never started"
        child = int(pid_file.read_text())
        time.sleep(0.5)
        assert _alive(child)  # the parent is there: the child keeps running
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        assert _wait(lambda: not _alive(child), 10), "the child outlived its killed parent"
    finally:
        parent.kill()
        if pid_file.exists() and pid_file.read_text():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass
