"""SIGINT and SIGTERM both stop a foreground command the way Ctrl-C does.

Python turns SIGINT into KeyboardInterrupt only when SIGINT was not ignored at its start, and a program
started in the background by a non-interactive shell (``cmd &`` in a script, many CI runners) inherits SIGINT
ignored: ``querylift up`` then could not be stopped by SIGINT at all, and SIGTERM (``kill``, systemd, a
container's stop) would end it at once, without stopping its broker and PostgreSQL. Both now raise
KeyboardInterrupt in the main thread, so one cleanup path runs however the stop was asked for.
"""

from __future__ import annotations

import signal
from types import FrameType


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """From now on SIGINT and SIGTERM raise KeyboardInterrupt in the main thread (call it from there)."""
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
