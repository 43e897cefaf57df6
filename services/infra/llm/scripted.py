"""A scripted model for pipeline tests: deterministic answers chosen from the last user message.

Each rule is (match, response). ``match`` is a regex (searched, case-insensitive) or a callable on the last
user message; ``response`` is text, a callable producing text from that message, or an exception to raise
(e.g. ModelUnavailable). The first matching rule answers; with no match the ``default`` answers, and with no
default the call fails loudly, so a test notices a prompt it did not expect.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.core.llm.base import AdapterRef, ChatMessage, Completion, estimate_tokens

Matcher = str | re.Pattern[str] | Callable[[str], bool]
Response = str | Callable[[str], str] | BaseException
Rule = tuple[Matcher, Response]


class ScriptedNoMatch(LookupError):
    """No rule matched the prompt and the scripted model has no default."""


@dataclass
class ScriptedCall:
    messages: list[ChatMessage]
    max_tokens: int
    adapter: AdapterRef | None
    response: str | None

    @property
    def last_user(self) -> str:
        return last_user_message(self.messages)


def last_user_message(messages: Sequence[ChatMessage]) -> str:
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")


class ScriptedLLM:
    def __init__(
        self,
        rules: Sequence[Rule] = (),
        *,
        default: Response | None = None,
        latency_s: float = 0.0,
        name: str = "scripted",
        alternatives: Callable[[str], Sequence[str]] | None = None,
    ) -> None:
        self.rules: list[tuple[Callable[[str], bool], Response]] = [(self._matcher(m), r) for m, r in rules]
        #: The sampled alternatives a voting caller gets for a question (at most as many as asked for).
        self.alternatives_for = alternatives
        self.default = default
        self.latency_s = latency_s
        self.name = name
        self.calls: list[ScriptedCall] = []

    @staticmethod
    def _matcher(match: Matcher) -> Callable[[str], bool]:
        if isinstance(match, str):
            pattern = re.compile(match, re.IGNORECASE | re.DOTALL)
            return lambda text: pattern.search(text) is not None
        if isinstance(match, re.Pattern):
            compiled = match
            return lambda text: compiled.search(text) is not None
        return match

    def _respond(self, text: str) -> Response:
        for matches, response in self.rules:
            if matches(text):
                return response
        if self.default is None:
            raise ScriptedNoMatch(f"scripted model has no rule for: {text[-200:]!r}")
        return self.default

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        started = time.perf_counter()
        text = last_user_message(messages)
        call = ScriptedCall(messages=list(messages), max_tokens=max_tokens, adapter=adapter, response=None)
        self.calls.append(call)
        if self.latency_s > 0:
            await asyncio.sleep(self.latency_s)
        response = self._respond(text)
        if isinstance(response, BaseException):
            raise response
        answer = response if isinstance(response, str) else response(text)
        drawn = list(self.alternatives_for(text)) if self.alternatives_for and alternatives else []
        others = drawn[first_alternative : first_alternative + alternatives]
        if first_alternative:
            answer = ""  # only more alternatives were asked for
        # An answer longer than max_tokens is cut there, as a real backend cuts it, and reported as cut off.
        runaway = self.count_tokens(answer) > max_tokens
        while self.count_tokens(answer) > max_tokens:
            answer = answer[: max(0, len(answer) * max_tokens // self.count_tokens(answer) - 1)]
        call.response = answer
        return Completion(
            text=answer,
            runaway=runaway,
            prompt_tokens=sum(self.count_tokens(m["content"]) + 4 for m in messages),
            completion_tokens=self.count_tokens(answer),
            model=self.name,
            seconds=time.perf_counter() - started,
            adapter_version=adapter.version if adapter is not None else None,
            alternatives=others,
        )

    def count_tokens(self, text: str) -> int:
        return estimate_tokens(text)

    async def close(self) -> None:
        return None


__all__ = ["Rule", "ScriptedCall", "ScriptedLLM", "ScriptedNoMatch", "last_user_message"]
