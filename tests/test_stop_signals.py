"""`querylift up` stops through its cleanup on SIGINT and SIGTERM, even when started with SIGINT ignored.

Real processes: a child runs the very helper `up` calls, started as a non-interactive shell starts a
background job (SIGINT ignored), and is sent each signal.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

CHILD = textwrap.dedent(
    """
    import sys, time
    from services.infra.stop_signals import stop_on_signals
    stop_on_signals()
    try:
        print("ready", flush=True)
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt as stop:
        print("cleaned up after", stop, flush=True)
    """
)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_runs_the_cleanup_even_with_sigint_ignored_at_start(signum: signal.Signals) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=_ignore_sigint,
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.send_signal(signum)
        out, _ = child.communicate(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == 0
    assert out.strip() == f"cleaned up after {signum.name}"
