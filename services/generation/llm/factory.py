"""Settings → the configured model backend. Heavy backends are imported only when chosen."""

from __future__ import annotations

from collections import deque

from services.common.settings import Settings
from services.generation.llm.base import LLM


def build_llm(settings: Settings) -> LLM:
    backend = settings.llm_backend
    if backend == "gguf":
        from services.generation.llm.gguf import GGUFLLM

        return GGUFLLM(settings)
    if backend == "ollama":
        from services.generation.llm.ollama import OllamaLLM

        return OllamaLLM(settings)
    if backend == "openai":
        from services.generation.llm.openai_compat import OpenAICompatLLM

        return OpenAICompatLLM(settings)
    if backend == "scripted":
        from services.generation.llm.scripted import ScriptedLLM

        # Wiring checks and the pipeline benchmark: every question gets the same SQL after a fixed latency.
        scripted = ScriptedLLM(default=settings.scripted_sql, latency_s=settings.scripted_latency_ms / 1000)
        # A long-running consumer must not keep every prompt it saw (tests inspect calls; services don't).
        scripted.calls = deque(maxlen=32)  # type: ignore[assignment]
        return scripted
    if backend == "transformers":
        from services.generation.llm.transformers_peft import TransformersLLM

        llm: LLM = TransformersLLM(settings)
        return llm
    raise ValueError(
        f"Unknown QUERYLIFT_LLM_BACKEND {backend!r}: use gguf, transformers, ollama, openai or scripted"
    )


__all__ = ["build_llm"]
