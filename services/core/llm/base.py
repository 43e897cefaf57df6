"""The one small interface every model backend implements."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NotRequired, Protocol, TypedDict


class ChatMessage(TypedDict):
    role: str  # system, user, assistant
    content: str
    #: Another prompt of the same answer is the chat before this message (a repair round's reply follows the
    #: first prompt; a decomposed question's phrase prompt has the whole question's examples): a backend that
    #: keeps evaluated prompts ends a batch here, so either prompt reuses what the other evaluated, and in the
    #: same batches whatever its cache holds. Never sent to a server.
    segment_start: NotRequired[bool]


def wire_messages(messages: list[ChatMessage]) -> list[dict[str, str]]:
    """The messages as a chat API takes them: role and content only."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


@dataclass(frozen=True)
class AdapterRef:
    """A per-project LoRA adapter to apply on top of the base model for one request."""

    project_id: str
    version: int
    path: str  # a trained adapter folder (peft files, metrics.json), or a GGUF LoRA file


# A trained adapter folder holds its llama.cpp form under this name when its base model is a GGUF file
# (written by services.training.gguf_lora), so the GGUF backend can serve it without transformers.
GGUF_LORA_FILE = "adapter.gguf"


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    model: str
    seconds: float
    adapter_version: int | None = None
    #: Sampled alternatives to ``text`` (execution-consistency voting), when asked for and supported.
    alternatives: list[str] = field(default_factory=list)
    #: Where the time went (queue, prompt, decode seconds; prompt tokens reused, drafted, accepted), when known.
    timings: dict[str, float] = field(default_factory=dict)
    #: The answer was cut off rather than finished (it repeated itself, or reached max_tokens), when known.
    runaway: bool = False


class ModelUnavailable(Exception):
    """The model could not be reached or loaded after the configured retries."""


class AdapterMismatch(ModelUnavailable):
    """The adapter at a reference's path was trained for another project or base model."""


class LLM(Protocol):
    name: str

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        """Deterministic (greedy) completion of a chat, plus up to ``alternatives`` sampled ones (seeded, so
        also reproducible) where the backend can sample; raises ModelUnavailable. With ``first_alternative``
        n > 0 only alternatives n+1, n+2, ... are drawn (``text`` is then empty): more candidates for the
        same chat, at the cost of their decoding alone where the backend keeps the evaluated prompt."""
        ...

    def count_tokens(self, text: str) -> int: ...

    async def close(self) -> None: ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free token estimate (about four characters or one word-piece per token), for backends
    that report no usage and for prompt budgeting before a model is loaded."""
    if not text:
        return 0
    words = len(text.split())
    return max(1, round(max(len(text) / 4, words * 1.3)))
