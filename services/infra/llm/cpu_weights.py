"""A local model's weights in a format llama.cpp's CPU kernels run fastest.

The shipped Qwen2.5-Coder GGUFs are "Q4_K_M" in name, but most of the 0.5B's weights are Q5_0 (its width, 896,
is no multiple of the K-quants' 256-wide blocks), and llama.cpp has no repacked x86 kernel for Q5_0. Q4_0 and
IQ4_NL it does repack at load into interleaved rows that its AVX2/AVX-512 matrix kernels read in one pass:
measured on this project's 2-core host, prompt evaluation and decoding 1.2-1.4x faster
(bench/README.md, "Weights the CPU runs fastest"). The requantized file is made once per source file and kind,
next to the model cache, and written atomically, so consumers starting together never read a half-written one.
Requantizing from an already-quantized file loses precision: whether a kind keeps the answers is for the
accuracy benchmark to say, which is why the kind is a setting.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

CpuWeights = Literal["shipped", "q4_0", "iq4_nl"]

#: llama.cpp's file type for each kind (llama_ftype). Variants that kept attention, embeddings or the
#: feed-forward down projection at 8 bits lost more answers, not fewer (bench/README.md), and were dropped.
_FTYPES: dict[str, str] = {"q4_0": "LLAMA_FTYPE_MOSTLY_Q4_0", "iq4_nl": "LLAMA_FTYPE_MOSTLY_IQ4_NL"}


class RequantizeError(Exception):
    """llama.cpp could not write the requantized file; the message says which."""


def requantized_path(source: Path, kind: CpuWeights, cache_dir: Path) -> Path:
    """Where the ``kind`` copy of ``source`` lives: named by the source's name, size and mtime, so a replaced
    source file is requantized again rather than served stale."""
    stat = source.stat()
    tag = hashlib.sha256(f"{source.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:10]
    return cache_dir / f"{source.stem}.{kind}.{tag}.gguf"


def cpu_weights_file(source: Path, kind: CpuWeights, cache_dir: Path, threads: int = 2) -> Path:
    """``source`` itself for "shipped", else its ``kind`` copy, made on first use (seconds for the 0.5B)."""
    if kind == "shipped":
        return source
    target = requantized_path(source, kind, cache_dir)
    if target.is_file():
        return target
    import llama_cpp

    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, _FTYPES[kind])
    # The source is already quantized: llama.cpp refuses to requantize unless told it is meant.
    params.allow_requantize = True
    params.nthread = threads
    started = time.perf_counter()
    try:
        rc = llama_cpp.llama_model_quantize(str(source).encode(), str(tmp).encode(), ctypes.byref(params))
        if rc != 0:
            raise RequantizeError(f"llama.cpp could not requantize {source} to {kind} (code {rc})")
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    log.info(
        "model weights requantized",
        extra={"source": str(source), "kind": kind, "seconds": round(time.perf_counter() - started, 1)},
    )
    return target
