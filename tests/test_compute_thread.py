"""Every model call of a process runs on one thread (services.core.compute_thread): llama.cpp's and torch's
OpenMP workers then form one team, which libgomp lets spin between operations."""

from __future__ import annotations

import asyncio
import contextvars
import os
import select
import signal
import threading
from pathlib import Path

import pytest

from services.core import compute_thread
from services.core.llm.base import ChatMessage

REQUEST = contextvars.ContextVar("request", default="none")


def _where() -> str:
    return threading.current_thread().name


async def test_calls_run_on_one_thread_that_is_not_the_callers() -> None:
    names = await asyncio.gather(*(compute_thread.run(_where) for _ in range(4)))
    assert len(set(names)) == 1 and names[0] != _where()
    blocking = await asyncio.to_thread(compute_thread.run_blocking, _where)
    assert blocking == names[0]


async def test_a_call_from_the_compute_thread_runs_in_place() -> None:
    # Waiting on the one worker from that worker would never end: a nested call runs directly.
    def nested() -> tuple[str, str]:
        return _where(), compute_thread.run_blocking(_where)

    outer, inner = await asyncio.wait_for(compute_thread.run(nested), timeout=10)
    assert outer == inner and compute_thread.on_compute_thread() is False


async def test_the_call_sees_the_callers_context_and_errors_come_back() -> None:
    REQUEST.set("q-17")
    assert await compute_thread.run(REQUEST.get) == "q-17"

    def fail() -> None:
        raise ValueError("bad prompt")

    with pytest.raises(ValueError, match="bad prompt"):
        await compute_thread.run(fail)


@pytest.mark.real_model
async def test_gguf_completions_and_embeddings_run_on_the_compute_thread(tmp_path: Path) -> None:
    from services.core.examples.embedder import get_embedder
    from services.infra.llm.gguf import GGUFLLM
    from services.infra.settings import Settings

    seen: list[str] = []
    llm = GGUFLLM(Settings(llm_model="smollm2-135m-instruct", llm_context_tokens=1024, data_dir=tmp_path))
    decoder = llm.load().decoder
    evaluate = decoder.evaluate

    def recording_evaluate(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(_where())
        return evaluate(*args, **kwargs)

    decoder.evaluate = recording_evaluate  # type: ignore[method-assign]
    embedder = get_embedder("all-MiniLM-L6-v2")
    encode = embedder._model.encode

    def recording_encode(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(_where())
        return encode(*args, **kwargs)

    embedder._model.encode = recording_encode
    try:
        await llm.complete([ChatMessage(role="user", content="Say SELECT 1.")], max_tokens=4)
        await asyncio.to_thread(embedder.embed, ["a question never embedded before in this test run"])
    finally:
        decoder.evaluate = evaluate  # type: ignore[method-assign]
        embedder._model.encode = encode
    compute = await compute_thread.run(_where)
    assert seen == [compute, compute]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_forked_child_gets_a_compute_thread_of_its_own() -> None:
    compute_thread.run_blocking(_where)  # the parent's thread exists
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: must not wait on the parent's thread, which it does not have
        try:
            os.write(write, str(compute_thread.run_blocking(lambda: 41 + 1)).encode())
        finally:
            os._exit(0)
    os.close(write)
    ready, _, _ = select.select([read], [], [], 10)
    got = os.read(read, 16) if ready else b""
    os.close(read)
    if not ready:
        os.kill(pid, signal.SIGKILL)  # it hangs: do not wait for it
    os.waitpid(pid, 0)
    assert got == b"42"


@pytest.mark.real_model
async def test_tokenizing_a_loaded_model_does_not_wait_for_the_compute_thread(tmp_path: Path) -> None:
    """Prompt budgeting counts tokens on the event loop: with the model loaded, that must not queue behind a
    completion (here: the compute thread held until the count is back)."""
    from services.infra.llm.gguf import GGUFLLM
    from services.infra.settings import Settings

    llm = GGUFLLM(Settings(llm_model="smollm2-135m-instruct", llm_context_tokens=1024, data_dir=tmp_path))
    llm.load()
    release = threading.Event()
    busy = asyncio.ensure_future(compute_thread.run(release.wait, 30))
    try:
        count = await asyncio.wait_for(asyncio.to_thread(llm.count_tokens, "SELECT 1"), timeout=10)
    finally:
        release.set()
        await busy
    assert count > 0
