"""Runs :func:`train_lora` as a Ray task and awaits it from asyncio, with progress and cancellation.

Ray is local (``ray.init()`` with a small footprint) unless ``ray_address`` names a cluster. The task asks for
one GPU when the cluster has any, otherwise for CPUs. Progress travels through a small Ray actor the task
reports to and the runner polls, so it works on a remote cluster without a shared filesystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.infra.settings import Settings
from services.training.lora_train import partial_path, train_lora

log = logging.getLogger(__name__)

ProgressHandler = Callable[[dict[str, Any]], Awaitable[None] | None]
_REPO_ROOT = str(Path(__file__).resolve().parents[2])


class TrainingFailed(Exception):
    """The training task raised or its worker died; the message says why."""


class TrainingCancelled(Exception):
    """The training task was cancelled before it finished."""


class _ProgressBoard:
    """Latest progress event per job (a Ray actor; methods are tiny and never block)."""

    def __init__(self) -> None:
        self._latest: dict[str, dict[str, Any]] = {}

    def report(self, job_key: str, event: dict[str, Any]) -> None:
        self._latest[job_key] = event

    def latest(self, job_key: str) -> dict[str, Any] | None:
        return self._latest.get(job_key)

    def forget(self, job_key: str) -> None:
        self._latest.pop(job_key, None)


def _train_task(config: dict[str, Any], board: Any, job_key: str) -> dict[str, Any]:
    # Ray starts workers with a high nice value to keep its own daemons responsive; on a busy machine
    # that starves training, the one job this worker exists for. Best effort: lowering needs privileges.
    with contextlib.suppress(OSError, AttributeError):
        os.setpriority(os.PRIO_PROCESS, 0, 0)

    def report(event: dict[str, Any]) -> None:
        board.report.remote(job_key, event)  # fire-and-forget: progress must never slow training

    return train_lora(config, progress=report)


@dataclass
class _Running:
    ref: Any
    cancel_requested: bool = False


@dataclass
class RayTrainingRunner:
    """One per process. ``await runner.run(job_key, config, on_progress)``; ``runner.cancel(job_key)``."""

    settings: Settings
    num_cpus: int | None = None
    poll_s: float = 0.5
    cancel_grace_s: float = 10.0
    _board: Any = field(default=None, init=False, repr=False)
    _running: dict[str, _Running] = field(default_factory=dict, init=False, repr=False)
    _started_ray: bool = field(default=False, init=False, repr=False)

    def start(self) -> None:
        import ray

        if not ray.is_initialized():
            if self.settings.ray_address:
                ray.init(
                    address=self.settings.ray_address, logging_level=logging.WARNING, log_to_driver=False
                )
            else:
                # Small on purpose: CI has two cores, and training is the only thing this cluster runs.
                ray.init(
                    num_cpus=self.num_cpus or min(os.cpu_count() or 2, 2),
                    include_dashboard=False,
                    object_store_memory=128 * 1024 * 1024,
                    logging_level=logging.WARNING,
                    log_to_driver=False,
                    runtime_env={"env_vars": {"PYTHONPATH": _REPO_ROOT, "HF_HUB_OFFLINE": "1"}},
                )
            self._started_ray = True
        if self._board is None:
            self._board = ray.remote(num_cpus=0)(_ProgressBoard).remote()

    def resources(self) -> dict[str, Any]:
        """How the training task will be scheduled on this cluster."""
        import ray

        self.start()
        total = ray.cluster_resources()
        if total.get("GPU", 0) >= 1:
            return {"num_gpus": 1, "num_cpus": 1}
        cpus = max(1, int(total.get("CPU", 1)))
        return {"num_cpus": cpus}

    async def run(
        self, job_key: str, config: dict[str, Any], on_progress: ProgressHandler | None = None
    ) -> dict[str, Any]:
        """Train and return :func:`train_lora`'s result; raises TrainingFailed or TrainingCancelled."""
        import ray
        from ray.exceptions import RayError, RayTaskError, TaskCancelledError, WorkerCrashedError

        if job_key in self._running:
            raise TrainingFailed(f"training job {job_key} is already running")
        resources = self.resources()
        config = {**config, "threads": config.get("threads") or resources["num_cpus"]}
        task = ray.remote(max_retries=0)(_train_task).options(**resources)
        board = self._board
        ref = task.remote(config, board, job_key)
        running = _Running(ref)
        self._running[job_key] = running
        log.info("training submitted", extra={"job": job_key, "resources": resources})
        future = asyncio.wrap_future(ref.future())
        last: dict[str, Any] | None = None
        finished = False
        try:
            while True:
                done, _ = await asyncio.wait({future}, timeout=self.poll_s)
                event = await board.latest.remote(job_key)
                if event is not None and event != last and on_progress is not None:
                    last = event
                    outcome = on_progress(event)
                    if inspect.isawaitable(outcome):
                        await outcome
                if done:
                    result: dict[str, Any] = future.result()
                    finished = True
                    if on_progress is not None and (last or {}).get("stage") != "done":
                        # The task's own last report may still be in flight: the handler always sees the end.
                        outcome = on_progress({"stage": "done", "progress": 1.0, "step": result.get("steps")})
                        if inspect.isawaitable(outcome):
                            await outcome
                    return result
        except (TaskCancelledError, WorkerCrashedError) as exc:
            if running.cancel_requested:
                raise TrainingCancelled(f"training job {job_key} was cancelled") from exc
            raise TrainingFailed(f"training worker for job {job_key} died: {exc}") from exc
        except RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if running.cancel_requested and isinstance(cause, KeyboardInterrupt | TaskCancelledError):
                raise TrainingCancelled(f"training job {job_key} was cancelled") from exc
            reason = f"{type(cause).__name__}: {cause}" if cause is not None else str(exc).splitlines()[0]
            raise TrainingFailed(f"training job {job_key} failed: {reason}") from exc
        except RayError as exc:
            raise TrainingFailed(f"training job {job_key} failed: {exc}") from exc
        except asyncio.CancelledError:
            # The awaiting coroutine was cancelled (shutdown): do not leave the task running.
            self.cancel(job_key, force=True)
            raise
        finally:
            self._running.pop(job_key, None)
            if not finished:
                self._discard_partial(running, config)
            with contextlib.suppress(Exception):  # the board is gone after shutdown(); nothing to forget then
                board.forget.remote(job_key)

    def cancel(self, job_key: str, *, force: bool = False) -> bool:
        """Ask the job's task to stop (KeyboardInterrupt in the worker; ``force`` kills the worker)."""
        import ray

        running = self._running.get(job_key)
        if running is None:
            return False
        running.cancel_requested = True
        ray.cancel(running.ref, force=force)
        if not force:
            # A task stuck in native code ignores the interrupt; kill its worker after a grace period.
            try:
                asyncio.get_running_loop().call_later(self.cancel_grace_s, self._force_if_running, job_key)
            except RuntimeError:  # called outside the event loop: no grace period to schedule
                pass
        log.info("training cancel requested", extra={"job": job_key, "force": force})
        return True

    @staticmethod
    def _discard_partial(running: _Running, config: dict[str, Any]) -> None:
        """Remove the half-written adapter of a run that did not finish.

        The task removes it itself when it is interrupted, but not in a worker that was killed (a cancel past
        its grace period, a crash), and a cancelled task's result can arrive while its worker still unwinds;
        so the worker is asked to be killed first (Ray kills it asynchronously: a worker busy in native code
        could still write, and the next run of the same version clears the folder before it starts). A few
        small files: removed in place. On a cluster without a shared filesystem there is nothing here to remove,
        and the worker's own cleanup is what counts."""
        import ray

        with contextlib.suppress(Exception):  # a finished task: nothing to kill
            ray.cancel(running.ref, force=True)
        shutil.rmtree(partial_path(config), ignore_errors=True)

    def _force_if_running(self, job_key: str) -> None:
        import ray

        running = self._running.get(job_key)
        if running is not None:
            ray.cancel(running.ref, force=True)

    def running(self) -> list[str]:
        return list(self._running)

    def shutdown(self) -> None:
        import ray

        for job_key in list(self._running):
            self.cancel(job_key, force=True)
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._board = None
        self._started_ray = False
