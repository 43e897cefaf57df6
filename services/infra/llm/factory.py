"""Settings → the configured model backend. Heavy backends are imported only when chosen."""

from __future__ import annotations

from collections import deque

from services.core.llm.base import LLM
from services.infra.llm.gguf import GGUFLLM
from services.infra.llm.ollama import OllamaLLM
from services.infra.llm.openai_compat import OpenAICompatLLM
from services.infra.llm.scripted import ScriptedLLM
from services.infra.llm.transformers_peft import TransformersLLM
from services.infra.settings import Settings


def build_llm(settings: Settings) -> LLM:
    backend = settings.llm_backend
    if backend == "gguf":
        return GGUFLLM(settings)
    if backend == "ollama":
        return OllamaLLM(settings)
    if backend == "openai":
        return OpenAICompatLLM(settings)
    if backend == "scripted":
        # Wiring checks and the pipeline benchmark: every question gets the same SQL after a fixed latency.
        scripted = ScriptedLLM(default=settings.scripted_sql, latency_s=settings.scripted_latency_ms / 1000)
        # A long-running consumer must not keep every prompt it saw (tests inspect calls; services don't).
        scripted.calls = deque(maxlen=32)  # type: ignore[assignment]
        return scripted
    if backend == "transformers":
        llm: LLM = TransformersLLM(settings)
        return llm
    raise ValueError(
        f"Unknown QUERYLIFT_LLM_BACKEND {backend!r}: use gguf, transformers, ollama, openai or scripted"
    )


__all__ = ["build_llm"]
