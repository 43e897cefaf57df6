"""Settings → the configured model backend. Heavy backends are imported only when chosen."""

from __future__ import annotations

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

        # A wiring check only: every question gets the same trivially valid query.
        return ScriptedLLM(default="SELECT 1")
    if backend == "transformers":
        from services.generation.llm.transformers_peft import TransformersLLM  # type: ignore[import-not-found]

        llm: LLM = TransformersLLM(settings)
        return llm
    raise ValueError(
        f"Unknown QUERYLIFT_LLM_BACKEND {backend!r}: use gguf, transformers, ollama, openai or scripted"
    )


__all__ = ["build_llm"]
