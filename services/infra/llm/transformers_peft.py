"""A local transformers model serving many per-project LoRA adapters on one base model.

Each request names its adapter (``AdapterRef``) or none (the base model). Adapters are loaded on first use and
kept in an LRU of ``adapter_cache_size``; ``load_adapter`` / ``evict`` let the generation service swap them
when a ``model.updated`` event arrives. Switching the active adapter mutates the shared model, so generation
runs in a worker thread under one lock: one request at a time per base model, which on CPU is what the
hardware does anyway.

An adapter is only applied to the project it was trained for: its ``metrics.json`` names that project, and a
reference from another project is refused rather than served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

from services.core import compute_thread
from services.core.llm.base import (
    AdapterMismatch,
    AdapterRef,
    ChatMessage,
    Completion,
    ModelUnavailable,
)
from services.infra.llm.base_model import load_base_model
from services.infra.settings import Settings

log = logging.getLogger(__name__)


def adapter_name(ref: AdapterRef) -> str:
    """A peft adapter name (module-attribute safe) unique to the project and version."""
    safe = re.sub(r"[^A-Za-z0-9_]", "_", ref.project_id)[:40]
    digest = hashlib.sha1(f"{ref.project_id}\0{ref.version}".encode()).hexdigest()[:8]
    return f"p_{safe}_v{ref.version}_{digest}"


class TransformersLLM:
    """The LLM interface over transformers + peft. ``model`` defaults to ``settings.training_base_model``."""

    def __init__(self, settings: Settings, *, model: str | None = None, device: str = "auto") -> None:
        self.settings = settings
        self.base_name = model or settings.training_base_model
        self.name = f"transformers:{self.base_name}"
        self.device = device
        self.cache_size = settings.adapter_cache_size
        self._lock = threading.Lock()
        self._base: Any = None
        self._peft: Any = None
        self._tokenizer: Any = None
        self._loaded: OrderedDict[AdapterRef, str] = OrderedDict()

    # --- loading -------------------------------------------------------------------------------------------

    def _ensure_base(self) -> None:
        if self._base is not None:
            return
        import torch

        torch.set_num_threads(self.settings.llm_threads)
        try:
            self._base, self._tokenizer = load_base_model(
                self.base_name, cache_dir=self.settings.model_cache_dir, device=self.device
            )
        except Exception as exc:
            raise ModelUnavailable(f"base model {self.base_name!r} could not be loaded: {exc}") from exc
        self._base.eval()

    def _check_adapter(self, ref: AdapterRef) -> None:
        folder = Path(ref.path)
        if not (folder / "adapter_config.json").exists():
            raise ModelUnavailable(f"no adapter at {ref.path} for project {ref.project_id!r}")
        try:
            trained: dict[str, Any] = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            return  # an adapter from elsewhere (imported by hand) carries no provenance to check
        if trained.get("project_id") not in (None, ref.project_id):
            raise AdapterMismatch(f"adapter {ref.path} belongs to another project, not {ref.project_id!r}")
        if trained.get("base_model") not in (None, self.base_name):
            raise AdapterMismatch(
                f"adapter {ref.path} was trained on {trained['base_model']!r}, not {self.base_name!r}"
            )

    def _load_adapter_locked(self, ref: AdapterRef) -> str:
        name = self._loaded.get(ref)
        if name is not None:
            self._loaded.move_to_end(ref)
            return name
        self._ensure_base()
        self._check_adapter(ref)
        name = adapter_name(ref)
        try:
            if self._peft is None:
                from peft import PeftModel

                self._peft = PeftModel.from_pretrained(
                    self._base, ref.path, adapter_name=name, is_trainable=False
                )
                self._peft.eval()
            else:
                self._peft.load_adapter(ref.path, adapter_name=name, is_trainable=False)
        except Exception as exc:
            raise ModelUnavailable(f"adapter {ref.path} could not be loaded: {exc}") from exc
        self._loaded[ref] = name
        log.info("adapter loaded", extra={"project": ref.project_id, "version": ref.version})
        while len(self._loaded) > self.cache_size:
            old_ref, _ = next(iter(self._loaded.items()))
            self._drop_locked(old_ref)
        return name

    def _drop_locked(self, ref: AdapterRef) -> None:
        name = self._loaded.pop(ref, None)
        if name is not None and self._peft is not None:
            self._peft.delete_adapter(name)
            log.info("adapter evicted", extra={"project": ref.project_id, "version": ref.version})

    async def load_adapter(self, ref: AdapterRef) -> None:
        """Load (or refresh the recency of) an adapter ahead of its first request."""

        def work() -> None:
            with self._lock:
                self._load_adapter_locked(ref)

        await compute_thread.run(work)

    async def evict(self, project_id: str, *, keep: AdapterRef | None = None) -> int:
        """Unload every adapter of ``project_id`` except ``keep``; returns how many were unloaded."""

        def work() -> int:
            with self._lock:
                refs = [r for r in self._loaded if r.project_id == project_id and r != keep]
                for ref in refs:
                    self._drop_locked(ref)
                return len(refs)

        return await compute_thread.run(work)

    def loaded_adapters(self) -> list[AdapterRef]:
        """Loaded adapters, least recently used first."""
        return list(self._loaded)

    # --- generation ----------------------------------------------------------------------------------------

    def _generate(
        self, messages: list[ChatMessage], max_tokens: int, adapter: AdapterRef | None
    ) -> Completion:
        import torch

        started = time.perf_counter()
        with self._lock:
            self._ensure_base()
            tokenizer = self._tokenizer
            encoded = tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, return_tensors="pt", return_dict=True
            )
            inputs = {k: v.to(self._base.device) for k, v in encoded.items()}
            kwargs: dict[str, Any] = {
                "max_new_tokens": max_tokens,
                "do_sample": False,
                "pad_token_id": tokenizer.pad_token_id,
                "eos_token_id": tokenizer.eos_token_id,
            }
            with torch.inference_mode():
                if adapter is not None:
                    name = self._load_adapter_locked(adapter)
                    self._peft.set_adapter(name)
                    output = self._peft.generate(**inputs, **kwargs)
                elif self._peft is not None:
                    with self._peft.disable_adapter():
                        output = self._peft.generate(**inputs, **kwargs)
                else:
                    output = self._base.generate(**inputs, **kwargs)
        prompt_len = int(inputs["input_ids"].shape[1])
        new_tokens = output[0][prompt_len:]
        return Completion(
            text=tokenizer.decode(new_tokens, skip_special_tokens=True),
            prompt_tokens=prompt_len,
            completion_tokens=int(new_tokens.shape[0]),
            model=self.name,
            seconds=time.perf_counter() - started,
            adapter_version=adapter.version if adapter is not None else None,
        )

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        # On the compute thread, as every model call of the process (services.core.compute_thread).
        return await compute_thread.run(self._generate, messages, max_tokens, adapter)

    def count_tokens(self, text: str) -> int:
        if self._tokenizer is None:
            with self._lock:
                self._ensure_base()
        return len(self._tokenizer(text, add_special_tokens=False)["input_ids"])

    async def close(self) -> None:
        with self._lock:
            self._loaded.clear()
            self._peft = None
            self._base = None
            self._tokenizer = None
