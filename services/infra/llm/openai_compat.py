"""Any server that speaks the OpenAI chat-completions API (vLLM, llama.cpp server, LM Studio, OpenAI)."""

from __future__ import annotations

from typing import Any

import httpx

from services.core.llm.base import ChatMessage, wire_messages
from services.infra.llm._http import HTTPChatLLM, usage_int
from services.infra.settings import Settings


class OpenAICompatLLM(HTTPChatLLM):
    backend = "openai-compatible server"
    path = "/v1/chat/completions"
    hint = "check OPENAI_BASE_URL, OPENAI_API_KEY and that QUERYLIFT_LLM_MODEL is served there"

    def __init__(
        self,
        settings: Settings,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        model: str | None = None,
        backoff_s: float = 0.5,
        served_adapters: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        base = base_url or settings.openai_base_url
        if not base:
            raise ValueError(
                "QUERYLIFT_LLM_BACKEND=openai needs OPENAI_BASE_URL (e.g. http://localhost:8000)"
            )
        base = base.rstrip("/")
        # OPENAI_BASE_URL conventionally includes /v1; the path below adds it.
        if base.endswith("/v1"):
            base = base[: -len("/v1")]
        key = api_key or (settings.openai_api_key.get_secret_value() if settings.openai_api_key else None)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        super().__init__(
            settings,
            base,
            model=model,
            headers=headers,
            backoff_s=backoff_s,
            served_adapters=served_adapters,
            transport=transport,
        )

    def body(self, model: str, messages: list[ChatMessage], max_tokens: int) -> dict[str, Any]:
        return {
            "model": model,
            "messages": wire_messages(messages),
            "temperature": 0,
            "max_tokens": max_tokens,
            "seed": self.settings.llm_seed,
            # An answer ends with its ```sql block: nothing after it is used, so it is not decoded.
            "stop": ["\n```"],
            "stream": False,
        }

    def parse(self, data: dict[str, Any]) -> tuple[str, int | None, int | None]:
        text = data["choices"][0]["message"].get("content") or ""
        return text, usage_int(data, "usage", "prompt_tokens"), usage_int(data, "usage", "completion_tokens")


__all__ = ["OpenAICompatLLM"]
