"""Per-key turns for asynchronous jobs: one key's jobs run one at a time, in the order they were submitted,
while jobs of different keys run at once. The consumer loop keys events by what must stay in order (a
project, a conversation), so a slow event holds back only the events that have to wait for it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from functools import partial

Job = Callable[[], Awaitable[None]]


class KeyedScheduler:
    """Chains each key's jobs: a job starts once the one submitted before it under its key has ended, however
    that one ended (a job that raised or was cancelled does not stop its key's later jobs). Bounding how many
    keys run at once is the jobs' business, so that a job can choose which part of it is bounded."""

    def __init__(self) -> None:
        # The last job submitted per key; its task is what the next job of that key waits on. A key is
        # dropped once its last job has ended, so only keys with work pending are held.
        self._tails: dict[str, asyncio.Task[None]] = {}

    def submit(self, key: str, job: Job) -> asyncio.Task[None]:
        previous = self._tails.get(key)
        task = asyncio.create_task(self._in_turn(previous, job))
        self._tails[key] = task
        task.add_done_callback(partial(self._ended, key))
        return task

    def pending_keys(self) -> set[str]:
        """Keys with a job waiting or running."""
        return set(self._tails)

    @staticmethod
    async def _in_turn(previous: asyncio.Task[None] | None, job: Job) -> None:
        if previous is not None:
            # asyncio.wait, not await: the previous job's failure is its own, not this one's.
            await asyncio.wait([previous])
        await job()

    def _ended(self, key: str, task: asyncio.Task[None]) -> None:
        if self._tails.get(key) is task:
            del self._tails[key]
