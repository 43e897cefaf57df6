"""The process's one thread for the CPU-parallel work of models: torch embeddings and llama.cpp evaluation.

Both run their parallel loops on OpenMP, and the two share one libgomp (torch's wheel and llama.cpp's build
load the same ``libgomp.so.1``). libgomp gives every thread that starts parallel work a team of worker threads
of its own; once a process holds more such threads than there are cores, it stops letting idle workers spin
between operations and puts them to sleep instead, and waking them costs more than a small operation itself.
Decoding one token is hundreds of small operations: from whichever thread of asyncio's pool was free, beside
embeddings from another, the 0.5B decoded 25-30 % slower on 2 cores than from one thread that does all of it
(bench/README.md, "One thread for the models"). So every such call goes through here, one at a time, which the
cores could not run side by side anyway.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_NAME = "querylift-compute"
_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_NAME)


def _new_after_fork() -> None:
    # A forked child has none of its parent's threads: work handed to the parent's executor would wait forever.
    global _executor
    _executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=_NAME)


os.register_at_fork(after_in_child=_new_after_fork)


def on_compute_thread() -> bool:
    return threading.current_thread().name.startswith(_NAME)


def run_blocking(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, waiting for it (directly when already there)."""
    if on_compute_thread():
        return fn(*args, **kwargs)
    return _executor.submit(fn, *args, **kwargs).result()


async def run(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """``fn(*args, **kwargs)`` on the compute thread, awaited; as with ``asyncio.to_thread``, the call sees the
    caller's context variables."""
    call = functools.partial(contextvars.copy_context().run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_executor, call)


__all__ = ["on_compute_thread", "run", "run_blocking"]
