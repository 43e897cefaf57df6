"""A consumer that ``querylift up`` started stops once ``up`` is gone, however it went.

Ctrl-C stops the stack in order; but an ``up`` that is killed (kill -9, a terminal closed under load, a test
that gave up waiting) would leave its five consumers running as orphans, still holding their ports and the
cores. Each consumer watches its parent and, once it has been re-parented, stops itself as ``up`` would have
stopped it: with SIGTERM, which the consumer handles by finishing its in-flight records. Polling the parent
pid works on Linux and macOS alike (Linux's PR_SET_PDEATHSIG would not).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

log = logging.getLogger(__name__)


def watch_parent(parent_pid: int, interval_s: float = 1.0) -> threading.Thread:
    """Send this process SIGTERM once its parent is no longer ``parent_pid`` (checked every ``interval_s``)."""

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(interval_s)
        log.warning("parent process gone: stopping", extra={"parent_pid": parent_pid})
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="parent-watch", daemon=True)
    thread.start()
    return thread
