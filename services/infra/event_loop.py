"""Running a consumer's coroutine on the configured event loop.

uvloop (libuv) does the same socket work as asyncio's own loop with far less Python per read, write and
callback; a consumer spends most of its CPU there (broker fetches and produces, PostgreSQL round trips).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T], loop: Literal["uvloop", "asyncio"] = "uvloop") -> T:
    if loop == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.warning("uvloop is not installed; running on asyncio's own event loop")
        else:
            return uvloop.run(main)
    return asyncio.run(main)
