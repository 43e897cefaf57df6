"""llama-cpp-python's OpenAI-compatible server (``llama_cpp.server``) for a local GGUF file, as the served-path
test and the throughput benchmark start it (``serving``).

The server loads its model with llama.cpp's defaults, weight repacking included, and has no option to turn that
off; on a CPU whose llama.cpp cannot serve the file repacked (``repack_probe``: a Xeon with AMX crashed at the
first completion) the server is started through this module instead, which loads with plain CPU buffers as the
product's own loader does.

    python -m services.infra.llm.local_server --model M.gguf --port P ...   # llama_cpp.server's arguments
"""

from __future__ import annotations

import contextlib
import runpy
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from services.infra.embedded import free_port
from services.infra.llm.gguf import _model_params_without_extra_buffers
from services.infra.llm.repack_probe import repacking_works


def server_command(
    model: Path, port: int, *, threads: int, n_ctx: int, alias: str, cache_dir: Path
) -> list[str]:
    """The command that serves ``model`` on 127.0.0.1:``port`` under the name ``alias`` (``cache_dir`` keeps the
    repacking trial's verdict)."""
    repacks = repacking_works(model, threads, cache_dir)
    module = "llama_cpp.server" if repacks else "services.infra.llm.local_server"
    return [
        sys.executable, "-m", module, "--model", str(model), "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx), "--n_threads", str(threads), "--model_alias", alias,
    ]  # fmt: skip


@contextlib.contextmanager
def serving(
    model: Path, *, threads: int, n_ctx: int, alias: str, cache_dir: Path, start_timeout_s: float = 120.0
) -> Iterator[str]:
    """A server for ``model`` on a free local port, its base URL while the block runs; stopped after it.
    Raises RuntimeError when the server does not answer within ``start_timeout_s``."""
    port = free_port()
    command = server_command(model, port, threads=threads, n_ctx=n_ctx, alias=alias, cache_dir=cache_dir)
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_timeout_s
        while True:
            with contextlib.suppress(httpx.HTTPError):  # not listening yet: ask again
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"llama_cpp.server did not start in {start_timeout_s:g} s")
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


def main() -> None:
    # Held for the server's life: it loads its model after parsing the arguments.
    with _model_params_without_extra_buffers():
        runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
