"""Whether llama.cpp can serve a model file with its weights repacked on this CPU, found out in a child process.

Repacking ("extra buffer types") picks a kernel family by what the CPU reports: on a host with AMX it repacks
Q4_0 weights for AMX tiles, and on such a virtual machine the first evaluation was seen to end the process with a
segmentation fault (llama-cpp-python 0.3.36, Xeon with amx_int8). A crash there would take the generation
consumer down with every question in flight, so the first load of a file repacked is tried in a child process,
and the answer is kept in the model cache, per file and CPU: a file the CPU cannot serve repacked is served plainly.
"""

from __future__ import annotations

import hashlib
import logging
import platform
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

log = logging.getLogger(__name__)

#: Load the model repacked and evaluate as generation does: a prompt batch, then tokens one at a time.
_CHILD = """
import sys
from llama_cpp import Llama
model = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=int(sys.argv[2]), verbose=False)
tokens = model.tokenize(b"SELECT name, COUNT(*) FROM employees WHERE dept = 'sales' GROUP BY name")
model.eval(tokens[:-4])
for token in tokens[-4:]:
    model.eval([token])
print("repacked evaluation ok")
"""
_TIMEOUT_S = 300


def cpu_tag() -> str:
    """A short name for this CPU's model and features: a verdict holds only for the CPU that gave it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = [platform.machine(), platform.processor()]
    described = sorted({line for line in lines if line.startswith(("model name", "flags", "Features"))})
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:10]


def verdict_path(path: Path, cache_dir: Path, verdict: str) -> Path:
    """Where the ``verdict`` ("ok" or "fails") on ``path`` for this CPU is kept: in ``cache_dir``, named by the
    file's name and location (a model shipped in a package is not written next to)."""
    where = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:8]
    return cache_dir / f"{path.name}.{where}.repack-{cpu_tag()}.{verdict}"


@lru_cache(maxsize=16)
def repacking_works(path: Path, threads: int, cache_dir: Path) -> bool:
    """Whether ``path`` loads and evaluates repacked on this CPU (tried once per file and CPU, the verdict kept
    in ``cache_dir``)."""
    for verdict, works in (("ok", True), ("fails", False)):
        if verdict_path(path, cache_dir, verdict).exists():
            return works
    try:
        child = subprocess.run(
            [sys.executable, "-c", _CHILD, str(path), str(threads)],
            capture_output=True,
            text=True,
            timeout=_TIMEOUT_S,
            check=False,
        )
        works = child.returncode == 0 and "repacked evaluation ok" in child.stdout
        outcome = f"exit status {child.returncode}"
    except subprocess.TimeoutExpired:
        works, outcome = False, f"no answer in {_TIMEOUT_S} s"
    if not works:
        log.warning(
            "llama.cpp cannot serve these weights repacked on this CPU; serving them plainly",
            extra={"path": str(path), "outcome": outcome},
        )
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        verdict_path(path, cache_dir, "ok" if works else "fails").touch()
    except OSError:
        pass  # a read-only cache: the child runs again next process
    return works


__all__ = ["cpu_tag", "repacking_works", "verdict_path"]
