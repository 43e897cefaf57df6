"""A model served by Ollama (POST /api/chat, non-streaming)."""

from __future__ import annotations

from typing import Any

import httpx

from services.core.llm.base import ChatMessage, wire_messages
from services.infra.llm._http import HTTPChatLLM, usage_int
from services.infra.settings import Settings


class OllamaLLM(HTTPChatLLM):
    backend = "Ollama"
    path = "/api/chat"
    hint = "check OLLAMA_URL and run `ollama pull <QUERYLIFT_LLM_MODEL>` on that server"

    def __init__(
        self,
        settings: Settings,
        *,
        url: str | None = None,
        model: str | None = None,
        backoff_s: float = 0.5,
        served_adapters: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = url or settings.ollama_url
        if not base:
            raise ValueError("QUERYLIFT_LLM_BACKEND=ollama needs OLLAMA_URL (e.g. http://localhost:11434)")
        super().__init__(
            settings,
            base,
            model=model,
            backoff_s=backoff_s,
            served_adapters=served_adapters,
            transport=transport,
        )

    def body(self, model: str, messages: list[ChatMessage], max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "messages": wire_messages(messages),
            "stream": False,
            "options": {
                "temperature": 0,
                "num_predict": max_tokens,
                "seed": self.settings.llm_seed,
                "num_ctx": self.settings.llm_context_tokens,
                "stop": ["\n```"],  # nothing after the SQL block is used
            },
        }

    def parse(self, data: dict[str, Any]) -> tuple[str, int | None, int | None]:
        text = data["message"].get("content") or ""
        return text, usage_int(data, "prompt_eval_count"), usage_int(data, "eval_count")


__all__ = ["OllamaLLM"]
