"""SQLite statements run in worker processes that can be killed.

An interrupt stops a SQLite statement only between VM steps, and one step can run for seconds even with every
value bounded (``instr`` or ``replace`` of a megabyte by half a megabyte is quadratic in one call). So no
customer statement runs on the event loop or in a thread of this process: each runs in a worker process, which
interrupts it at its deadline itself, and which this process kills if it has not answered shortly after
(``KILL_GRACE``): the deadline holds within 10 % for any statement, and a killed worker is replaced.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
from multiprocessing.connection import Connection
from typing import Any

from services.core.customer_db.engine import QueryResult
from services.core.customer_db.errors import DatabaseUnavailable, QueryFailed, QueryTimeout
from services.core.customer_db.sqlite_statement import run_statement
from services.core.customer_db.values import QueryLimits

#: A worker that has not answered by ``timeout * KILL_FACTOR + KILL_GRACE_S`` is killed.
KILL_FACTOR = 1.05
KILL_GRACE_S = 0.01


def _context() -> Any:
    # A fork server forks workers from a small clean process (fast to replace, no threads of ours copied);
    # where there is none (Windows), workers are spawned.
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(["services.core.customer_db.sqlite_statement"])
        return ctx
    return multiprocessing.get_context("spawn")


_CTX = _context()
_ERRORS: dict[str, type[Exception]] = {
    "timeout": QueryTimeout,
    "failed": QueryFailed,
    "unavailable": DatabaseUnavailable,
}


def _serve(conn: Connection, allowed_functions: frozenset[str]) -> None:
    """The worker's loop: one statement at a time, its outcome sent back."""
    while True:
        try:
            url, text, limits = conn.recv()
        except (EOFError, OSError):
            return
        reply: tuple[str, Any]
        try:
            reply = ("ok", run_statement(url, text, limits, allowed_functions))
        except QueryTimeout as error:
            reply = ("timeout", str(error))
        except QueryFailed as error:
            reply = ("failed", str(error))
        except DatabaseUnavailable as error:
            reply = ("unavailable", str(error))
        except Exception as error:  # anything else is reported, never kills the worker
            reply = ("failed", f"{type(error).__name__}: {error}")
        try:
            conn.send(reply)
        except (OSError, ValueError):
            return


class _Worker:
    def __init__(self, allowed_functions: frozenset[str]) -> None:
        parent, child = _CTX.Pipe()
        self.process = _CTX.Process(target=_serve, args=(child, allowed_functions), daemon=True)
        self.process.start()
        child.close()
        self.conn: Connection = parent

    def call(self, request: tuple[str, str, QueryLimits], wait_s: float) -> tuple[str, Any] | None:
        """Runs in a thread: the reply, or None when the worker did not answer within ``wait_s``."""
        self.conn.send(request)
        if not self.conn.poll(wait_s):
            return None
        reply: tuple[str, Any] = self.conn.recv()
        return reply

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(timeout=2)
        self.conn.close()


class SQLiteWorkers:
    """A few warm worker processes; a statement waits for a free one."""

    def __init__(self, allowed_functions: frozenset[str], size: int | None = None) -> None:
        self.allowed_functions = allowed_functions
        self.size = size or max(1, min(4, os.cpu_count() or 1))
        self._idle: list[_Worker] = []
        self._slots: asyncio.Semaphore | None = None

    async def run(self, url: str, text: str, limits: QueryLimits) -> QueryResult:
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.size)
        async with self._slots:
            worker = (
                self._idle.pop() if self._idle else await asyncio.to_thread(_Worker, self.allowed_functions)
            )
            wait = limits.timeout_s * KILL_FACTOR + KILL_GRACE_S
            try:
                reply = await asyncio.to_thread(worker.call, (url, text, limits), wait)
            except BaseException:
                # The worker died (out of memory, say) or we were cancelled mid-statement: it is not reused.
                await asyncio.to_thread(worker.kill)
                raise
            if reply is None:
                await asyncio.to_thread(worker.kill)
                raise QueryTimeout(f"query exceeded the {limits.timeout_s:g} s time limit")
            self._idle.append(worker)
        kind, value = reply
        if kind == "ok":
            result: QueryResult = value
            return result
        raise _ERRORS[kind](value)

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for worker in idle:
            worker.kill()
