"""What the served-model backends (Ollama, OpenAI-compatible) share: one pooled client, retries with
exponential backoff on transient failures, and an error a person can act on when the model stays away."""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from typing import Any

import httpx

from services.core.llm.base import (
    AdapterRef,
    ChatMessage,
    Completion,
    ModelUnavailable,
    estimate_tokens,
)
from services.infra.settings import Settings

log = logging.getLogger(__name__)

# 408/429 and 5xx are worth another try; other 4xx (bad key, unknown model) will not get better by waiting.
_RETRY_STATUS = {408, 409, 425, 429}


class HTTPChatLLM(ABC):
    """Base for backends that POST a chat to a served model; subclasses build the body and read the reply."""

    backend = "http"
    path = ""
    hint = ""

    def __init__(
        self,
        settings: Settings,
        base_url: str,
        *,
        model: str | None = None,
        headers: dict[str, str] | None = None,
        backoff_s: float = 0.5,
        served_adapters: bool | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = base_url.rstrip("/")
        self.name = model or settings.llm_model
        self.retries = settings.llm_retries
        self.backoff_s = backoff_s
        # Served adapters are addressed as "<base>:<project>-v<version>" (an Ollama tag, a vLLM LoRA name);
        # only when the operator says the server has them, otherwise adapter requests get the base model.
        if served_adapters is None:
            served_adapters = bool(getattr(settings, "llm_served_adapters", False))
        self.served_adapters = served_adapters
        self._headers = headers or {}
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._warned_adapter = False

    def _client_for_use(self) -> httpx.AsyncClient:
        if self._client is None or self._client.is_closed:
            seconds = self.settings.llm_timeout_s
            timeout = httpx.Timeout(seconds, connect=min(10.0, seconds))
            self._client = httpx.AsyncClient(
                base_url=self.base_url, headers=self._headers, timeout=timeout, transport=self._transport
            )
        return self._client

    def model_for(self, adapter: AdapterRef | None) -> tuple[str, int | None]:
        if adapter is None:
            return self.name, None
        if self.served_adapters:
            return f"{self.name}:{adapter.project_id}-v{adapter.version}", adapter.version
        if not self._warned_adapter:
            log.warning(
                "served backend answers with the base model: served adapters are not enabled",
                extra={"backend": self.backend, "project": adapter.project_id, "version": adapter.version},
            )
            self._warned_adapter = True
        return self.name, None

    @abstractmethod
    def body(self, model: str, messages: list[ChatMessage], max_tokens: int) -> dict[str, Any]:
        """The request body in the server's protocol."""

    @abstractmethod
    def parse(self, data: dict[str, Any]) -> tuple[str, int | None, int | None]:
        """(text, prompt tokens, completion tokens) of a reply; a count is None when the server gave none."""

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        model, adapter_version = self.model_for(adapter)
        started = time.perf_counter()
        data = await self._post(self.body(model, messages, max_tokens))
        try:
            text, prompt_tokens, completion_tokens = self.parse(data)
        except (KeyError, IndexError, TypeError) as exc:
            raise ModelUnavailable(
                f"{self.backend} at {self.base_url} answered in an unexpected shape ({exc!r}); {self.hint}"
            ) from exc
        if prompt_tokens is None:
            prompt_tokens = sum(estimate_tokens(m["content"]) + 4 for m in messages)
        if completion_tokens is None:
            completion_tokens = estimate_tokens(text)
        return Completion(
            text=text,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=model,
            seconds=time.perf_counter() - started,
            adapter_version=adapter_version,
        )

    async def _post(self, body: dict[str, Any]) -> dict[str, Any]:
        client = self._client_for_use()
        last_error = ""
        for attempt in range(self.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = await client.post(self.path, json=body)
            except httpx.TimeoutException as exc:
                last_error = f"timed out after {self.settings.llm_timeout_s:g} s ({type(exc).__name__})"
            except httpx.TransportError as exc:
                last_error = f"could not connect ({type(exc).__name__}: {exc})"
            else:
                if response.status_code < 400:
                    try:
                        result: dict[str, Any] = response.json()
                    except ValueError as exc:
                        raise ModelUnavailable(
                            f"{self.backend} at {self.base_url} did not answer with JSON; {self.hint}"
                        ) from exc
                    return result
                detail = response.text[:300].replace("\n", " ")
                last_error = f"HTTP {response.status_code}: {detail}"
                if response.status_code < 500 and response.status_code not in _RETRY_STATUS:
                    raise ModelUnavailable(
                        f"{self.backend} at {self.base_url} refused the request for model "
                        f"{body.get('model')!r} ({last_error}); {self.hint}"
                    )
            log.warning(
                "model request failed",
                extra={"backend": self.backend, "attempt": attempt + 1, "error": last_error},
            )
        raise ModelUnavailable(
            f"{self.backend} at {self.base_url} is unavailable after {self.retries + 1} attempts "
            f"({last_error}); {self.hint}"
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def usage_int(data: dict[str, Any], *keys: str) -> int | None:
    """The first integer found under the nested ``keys`` path, else None."""
    node: Any = data
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return int(node) if isinstance(node, int | float) and not isinstance(node, bool) else None
