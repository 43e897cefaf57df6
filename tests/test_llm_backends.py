"""Model backends: the served ones against small local servers speaking their protocols, the GGUF one with
the real SmolLM2-135M model, the scripted one, and the factory."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest

from services.core.llm.base import AdapterRef, ChatMessage, ModelUnavailable
from services.infra.llm.factory import build_llm
from services.infra.llm.gguf import GGUFLLM
from services.infra.llm.ollama import OllamaLLM
from services.infra.llm.openai_compat import OpenAICompatLLM
from services.infra.llm.scripted import ScriptedLLM, ScriptedNoMatch
from services.infra.settings import Settings

MESSAGES: list[ChatMessage] = [
    ChatMessage(role="system", content="You write SQLite SQL."),
    ChatMessage(role="user", content="How many users are there?"),
]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeModelServer:
    """A minimal HTTP/1.1 server: answers each request with the next scripted (status, JSON) reply."""

    replies: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.sockets[0].getsockname()[:2]
        return f"http://{host}:{port}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, v in (h.split(":", 1) for h in lines[1:] if ":" in h)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, path, headers, json.loads(body or b"{}")))
        status, payload = self.replies.pop(0) if self.replies else (500, {"error": "no reply scripted"})
        data = json.dumps(payload).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeModelServer]:
    fake = FakeModelServer()
    fake.server = await asyncio.start_server(fake.handle, "127.0.0.1", 0)
    yield fake
    fake.server.close()
    await fake.server.wait_closed()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def settings(**overrides: Any) -> Settings:
    base: dict[str, Any] = {"llm_model": "qwen2.5-coder:0.5b", "llm_retries": 2, "llm_timeout_s": 5.0}
    return Settings(**(base | overrides))


def openai_reply(text: str, prompt_tokens: int = 17, completion_tokens: int = 5) -> dict[str, Any]:
    return {
        "id": "x",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens},
    }


def ollama_reply(text: str, **counts: int) -> dict[str, Any]:
    return {"model": "m", "message": {"role": "assistant", "content": text}, "done": True, **counts}


# --- OpenAI-compatible ---------------------------------------------------------------------------------------


async def test_openai_request_shape_and_usage(fake_server: FakeModelServer) -> None:
    fake_server.replies.append((200, openai_reply("```sql\nSELECT COUNT(*) FROM users\n```", 23, 9)))
    llm = OpenAICompatLLM(settings(), base_url=fake_server.url + "/v1", api_key="sk-test", backoff_s=0.01)
    completion = await llm.complete(MESSAGES, max_tokens=64)
    await llm.close()

    assert completion.text.startswith("```sql")
    assert (completion.prompt_tokens, completion.completion_tokens) == (23, 9)
    assert completion.model == "qwen2.5-coder:0.5b" and completion.adapter_version is None
    [request] = fake_server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-test"
    assert request.body["model"] == "qwen2.5-coder:0.5b"
    assert request.body["temperature"] == 0 and request.body["max_tokens"] == 64
    assert request.body["stop"] == ["\n```"]  # decoding ends with the SQL block
    assert request.body["messages"] == [dict(m) for m in MESSAGES]


async def test_openai_sends_role_and_content_only(fake_server: FakeModelServer) -> None:
    """A repair round marks the model's own earlier reply for backends that reuse prompts; a server never
    sees the mark."""
    fake_server.replies.append((200, openai_reply("```sql\nSELECT 1\n```")))
    llm = OpenAICompatLLM(settings(), base_url=fake_server.url + "/v1", backoff_s=0.01)
    repair = [
        *MESSAGES,
        ChatMessage(role="assistant", content="```sql\nSELECT 2\n```", segment_start=True),
        ChatMessage(role="user", content="That query is wrong."),
    ]
    await llm.complete(repair, max_tokens=16)
    await llm.close()
    [request] = fake_server.requests
    assert request.body["messages"][-2] == {"role": "assistant", "content": "```sql\nSELECT 2\n```"}
    assert all(set(m) == {"role", "content"} for m in request.body["messages"])


async def test_openai_without_key_sends_no_authorization(fake_server: FakeModelServer) -> None:
    fake_server.replies.append((200, openai_reply("SELECT 1")))
    llm = OpenAICompatLLM(settings(openai_api_key=None), base_url=fake_server.url, backoff_s=0.01)
    await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    assert "authorization" not in fake_server.requests[0].headers


async def test_openai_retries_after_500(fake_server: FakeModelServer) -> None:
    fake_server.replies += [(500, {"error": "overloaded"}), (200, openai_reply("SELECT 2"))]
    llm = OpenAICompatLLM(settings(), base_url=fake_server.url, backoff_s=0.01)
    completion = await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    assert completion.text == "SELECT 2"
    assert len(fake_server.requests) == 2


async def test_openai_client_error_is_not_retried(fake_server: FakeModelServer) -> None:
    fake_server.replies += [(404, {"error": "model not found"}), (200, openai_reply("SELECT 3"))]
    llm = OpenAICompatLLM(settings(), base_url=fake_server.url, backoff_s=0.01)
    with pytest.raises(ModelUnavailable, match="404"):
        await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    assert len(fake_server.requests) == 1


async def test_openai_served_adapter_model_name(fake_server: FakeModelServer) -> None:
    fake_server.replies += [(200, openai_reply("SELECT 1")), (200, openai_reply("SELECT 1"))]
    adapter = AdapterRef(project_id="shop", version=3, path="/adapters/shop/3")
    with_adapters = OpenAICompatLLM(settings(), base_url=fake_server.url, served_adapters=True)
    completion = await with_adapters.complete(MESSAGES, max_tokens=16, adapter=adapter)
    assert fake_server.requests[0].body["model"] == "qwen2.5-coder:0.5b:shop-v3"
    assert completion.adapter_version == 3
    base_only = OpenAICompatLLM(settings(), base_url=fake_server.url, served_adapters=False)
    completion = await base_only.complete(MESSAGES, max_tokens=16, adapter=adapter)
    assert fake_server.requests[1].body["model"] == "qwen2.5-coder:0.5b"
    assert completion.adapter_version is None
    await with_adapters.close()
    await base_only.close()


async def test_openai_down_raises_model_unavailable_with_hint() -> None:
    llm = OpenAICompatLLM(settings(llm_retries=1), base_url=closed_port_url(), backoff_s=0.01)
    with pytest.raises(ModelUnavailable, match=r"after 2 attempts.*OPENAI_BASE_URL"):
        await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()


# --- Ollama --------------------------------------------------------------------------------------------------


async def test_ollama_request_shape_and_counts(fake_server: FakeModelServer) -> None:
    fake_server.replies.append(
        (200, ollama_reply("SELECT COUNT(*) FROM users", prompt_eval_count=31, eval_count=8))
    )
    llm = OllamaLLM(settings(llm_seed=7), url=fake_server.url, backoff_s=0.01)
    completion = await llm.complete(MESSAGES, max_tokens=48)
    await llm.close()
    assert completion.text == "SELECT COUNT(*) FROM users"
    assert (completion.prompt_tokens, completion.completion_tokens) == (31, 8)
    [request] = fake_server.requests
    assert request.path == "/api/chat"
    assert request.body["stream"] is False
    assert request.body["options"]["temperature"] == 0
    assert request.body["options"]["num_predict"] == 48
    assert request.body["options"]["seed"] == 7


async def test_ollama_estimates_tokens_when_counts_are_missing(fake_server: FakeModelServer) -> None:
    fake_server.replies.append((200, ollama_reply("SELECT name, email FROM users ORDER BY name")))
    llm = OllamaLLM(settings(), url=fake_server.url, backoff_s=0.01)
    completion = await llm.complete(MESSAGES, max_tokens=48)
    await llm.close()
    assert completion.prompt_tokens >= 10
    assert 3 <= completion.completion_tokens <= 20


async def test_ollama_retries_then_gives_up(fake_server: FakeModelServer) -> None:
    fake_server.replies += [(500, {"error": "a"}), (503, {"error": "b"}), (500, {"error": "c"})]
    llm = OllamaLLM(settings(llm_retries=2), url=fake_server.url, backoff_s=0.01)
    with pytest.raises(ModelUnavailable, match=r"after 3 attempts.*HTTP 500"):
        await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    assert len(fake_server.requests) == 3


async def test_ollama_retry_after_500_succeeds(fake_server: FakeModelServer) -> None:
    fake_server.replies += [(500, {"error": "loading"}), (200, ollama_reply("SELECT 5", eval_count=2))]
    llm = OllamaLLM(settings(), url=fake_server.url, backoff_s=0.01)
    completion = await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    assert completion.text == "SELECT 5" and len(fake_server.requests) == 2


async def test_ollama_down_raises_model_unavailable_with_hint() -> None:
    llm = OllamaLLM(settings(llm_retries=0), url=closed_port_url(), backoff_s=0.01)
    with pytest.raises(ModelUnavailable, match="OLLAMA_URL"):
        await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()


async def test_backoff_grows_exponentially() -> None:
    llm = OllamaLLM(settings(llm_retries=2), url=closed_port_url(), backoff_s=0.1)
    started = time.perf_counter()
    with pytest.raises(ModelUnavailable):
        await llm.complete(MESSAGES, max_tokens=16)
    await llm.close()
    # Waits 0.1 s then 0.2 s between the three attempts.
    assert 0.3 <= time.perf_counter() - started < 3.0


# --- GGUF (real SmolLM2-135M) ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smollm(tmp_path_factory: pytest.TempPathFactory) -> GGUFLLM:
    data_dir = tmp_path_factory.mktemp("gguf")
    return GGUFLLM(
        Settings(llm_model="smollm2-135m-instruct", llm_context_tokens=1024, llm_threads=2, data_dir=data_dir)
    )


@pytest.mark.real_model
async def test_gguf_smollm2_completes_deterministically(smollm: GGUFLLM) -> None:
    messages = [
        ChatMessage(role="system", content="Reply with one SQL query in a ```sql code block."),
        ChatMessage(role="user", content="Table users(id INTEGER, name TEXT). How many users are there?"),
    ]
    first = await smollm.complete(messages, max_tokens=24)
    second = await smollm.complete(messages, max_tokens=24)
    assert first.model == "smollm2-135m-instruct"
    assert first.text.strip() and first.text == second.text
    assert 0 < first.completion_tokens <= 24
    # The prompt count includes the chat template around the two messages.
    content_tokens = sum(smollm.count_tokens(m["content"]) for m in messages)
    assert content_tokens < first.prompt_tokens < content_tokens + 40


def _sql_prompt(question: str, extra_column: bool = False) -> list[ChatMessage]:
    from services.core.prompt import build_prompt
    from services.core.schema import Column, SchemaInfo, Table

    columns = [Column("id", "INTEGER", primary_key=True), Column("name", "TEXT", samples=["ann", "bo"])]
    if extra_column:
        columns.append(Column("country", "TEXT", samples=["fr", "jp"]))
    from events import ContextExample

    schema = SchemaInfo("sqlite", [Table("users", columns)])
    # An example shown as a turn of its own: with llm_prompt_batches=turns its answer starts a batch.
    example = ContextExample(
        example_id="e1",
        source="project",
        score=0.9,
        question="users named bo",
        sql="SELECT id FROM users AS U0",
    )
    return build_prompt(question, schema, examples=[example], budget_tokens=900).messages


@pytest.mark.real_model
@pytest.mark.parametrize("batches", ["turns", "prompts"])
async def test_gguf_answers_are_the_same_with_a_warm_prefix_cache_and_a_cold_one(
    tmp_path: Path, batches: Literal["turns", "prompts"]
) -> None:
    """A project's system prompt is evaluated once and reused; answers do not depend on whether it was
    (prefix still in the model, restored from a saved state, or evaluated afresh), however the rest of the
    prompt is cut into batches."""
    from services.infra.llm.gguf import unload_all

    def fresh() -> GGUFLLM:
        unload_all()  # a cold model: nothing evaluated, nothing saved
        settings = Settings(
            llm_model="smollm2-135m-instruct",
            llm_context_tokens=1024,
            llm_threads=2,
            data_dir=tmp_path,
            llm_prompt_batches=batches,
        )
        return GGUFLLM(settings)

    first, second = "How many users are there?", "List the names of users called ann."
    cold = {q: (await fresh().complete(_sql_prompt(q), max_tokens=32)) for q in (first, second)}
    assert all(c.timings["prompt_tokens_reused"] == 0 for c in cold.values())

    llm = fresh()
    a = await llm.complete(_sql_prompt(first), max_tokens=32)
    b = await llm.complete(_sql_prompt(second), max_tokens=32)  # the prefix is still in the model
    other = await llm.complete(_sql_prompt(first, extra_column=True), max_tokens=32)  # another schema
    again = await llm.complete(_sql_prompt(second), max_tokens=32)  # its prefix restored from a saved state
    assert a.text == cold[first].text and b.text == cold[second].text and again.text == b.text
    assert b.timings["prompt_tokens_reused"] > 0 and again.timings["prompt_tokens_reused"] > 0
    # ``again`` restores the saved prefix; ``b`` found it in the model, with the shared example's turn too when
    # that is a batch of its own (turns).
    assert b.timings["prompt_tokens_reused"] >= again.timings["prompt_tokens_reused"]
    # A repair round's prompt is the first prompt and more: it reuses all of it, and answers as when cold.
    repair = [
        *_sql_prompt(second),
        ChatMessage(role="assistant", content=again.text, segment_start=True),
        ChatMessage(role="user", content="That query is wrong: it returned no rows. Write it again."),
    ]
    warm_repair = await llm.complete(repair, max_tokens=32)
    assert warm_repair.timings["prompt_tokens_reused"] >= again.prompt_tokens
    # A changed schema is a new prefix: nothing stale is reused, and the answer is the cold one.
    assert other.timings["prompt_tokens_reused"] == 0
    assert other.text == (await fresh().complete(_sql_prompt(first, extra_column=True), max_tokens=32)).text
    cold_repair = await fresh().complete(repair, max_tokens=32)
    assert cold_repair.timings["prompt_tokens_reused"] == 0 and cold_repair.text == warm_repair.text
    unload_all()


@pytest.mark.real_model
async def test_gguf_a_decomposed_questions_two_prompts_share_their_examples(tmp_path: Path) -> None:
    """The phrase's prompt and the whole question's, each with its question marked as a segment's start: the
    whole question's reuses what the phrase's evaluated before the question, and answers as when cold. What an
    unmarked prompt left in the cache (the same tokens up to the question, but in one batch with it) is not
    reused past the prefix: other batches round differently."""
    from services.core.prompt import Prompt, question_starts_segment
    from services.infra.llm.gguf import unload_all

    def fresh() -> GGUFLLM:
        unload_all()
        settings = Settings(
            llm_model="smollm2-135m-instruct", llm_context_tokens=1024, llm_threads=2, data_dir=tmp_path
        )
        return GGUFLLM(settings)

    def marked(messages: list[ChatMessage]) -> list[ChatMessage]:
        return question_starts_segment(Prompt(messages=messages, tokens=0, parts=[], dropped=[])).messages

    phrase = "the user called bo"
    whole = "How many users share a name with the user called bo?"
    cold = {q: await fresh().complete(marked(_sql_prompt(q)), max_tokens=32) for q in (phrase, whole)}

    llm = fresh()
    loaded = llm.load()
    tokens, cuts = llm.prompt_tokens(loaded, marked(_sql_prompt(whole)))
    _, plain_cuts = llm.prompt_tokens(loaded, _sql_prompt(whole))
    # Cut after the prefix and where the question's message starts (the example's turn closed before it).
    assert len(cuts) == 2 and cuts[0] == plain_cuts[0] < cuts[1] < len(tokens)
    assert "users named bo" in loaded.model.detokenize(tokens[cuts[0] : cuts[1]]).decode()
    assert whole not in loaded.model.detokenize(tokens[: cuts[1]]).decode()

    # Another question, unmarked: its one batch past the prefix holds the same example tokens.
    await llm.complete(_sql_prompt("How many users are there?"), max_tokens=32)
    warm_phrase = await llm.complete(marked(_sql_prompt(phrase)), max_tokens=32)
    assert warm_phrase.timings["prompt_tokens_reused"] == cuts[0]
    warm = await llm.complete(marked(_sql_prompt(whole)), max_tokens=32)
    assert warm.timings["prompt_tokens_reused"] == cuts[1]
    assert warm_phrase.text == cold[phrase].text and warm.text == cold[whole].text
    # The same tokens unmarked are another prompt: evaluated again past the prefix, not answered from the last.
    plain = await llm.complete(_sql_prompt(whole), max_tokens=32)
    assert plain.timings["prompt_tokens_reused"] == cuts[0]
    unload_all()


@pytest.mark.real_model
async def test_gguf_alternatives_are_sampled_from_the_same_prompt(smollm: GGUFLLM) -> None:
    messages = _sql_prompt("How many users are there?")
    one = await smollm.complete(messages, max_tokens=32, alternatives=2)
    more = await smollm.complete(messages, max_tokens=32, alternatives=1, first_alternative=2)
    assert len(one.alternatives) == 2 and one.text
    assert more.text == "" and len(more.alternatives) == 1
    assert more.timings["prompt_s"] < one.timings["prompt_s"]  # the prompt was not evaluated again
    # Seeded: the same numbers give the same alternatives.
    again = await smollm.complete(messages, max_tokens=32, alternatives=2)
    assert again.alternatives == one.alternatives and again.text == one.text


@pytest.mark.real_model
async def test_gguf_completions_run_one_at_a_time(smollm: GGUFLLM) -> None:
    messages = [ChatMessage(role="user", content="Say SELECT.")]
    results = await asyncio.gather(*(smollm.complete(messages, max_tokens=6) for _ in range(3)))
    assert len({r.text for r in results}) == 1


@pytest.mark.real_model
def test_gguf_counts_tokens_with_the_model_tokenizer(smollm: GGUFLLM) -> None:
    assert smollm.count_tokens("") == 0
    short = smollm.count_tokens("SELECT name FROM users")
    long = smollm.count_tokens("SELECT name FROM users WHERE country = 'France' ORDER BY name LIMIT 10")
    assert 3 <= short < long
    # BPE merges common words: fewer tokens than characters.
    assert long < len("SELECT name FROM users WHERE country = 'France' ORDER BY name LIMIT 10") / 2


@pytest.mark.real_model
async def test_gguf_serves_base_model_for_peft_adapter(smollm: GGUFLLM, tmp_path: Path) -> None:
    adapter = AdapterRef(project_id="shop", version=2, path=str(tmp_path / "peft-adapter"))
    completion = await smollm.complete(
        [ChatMessage(role="user", content="Say SELECT.")], max_tokens=4, adapter=adapter
    )
    assert completion.adapter_version is None


def test_gguf_unknown_model_is_model_unavailable(tmp_path: Path) -> None:
    llm = GGUFLLM(Settings(llm_model="no-such-model", data_dir=tmp_path))
    with pytest.raises(ModelUnavailable, match="Unknown model"):
        llm.count_tokens("x")


# --- scripted --------------------------------------------------------------------------------------------------


async def test_scripted_rules_regex_callable_default_and_calls() -> None:
    llm = ScriptedLLM(
        [
            (r"how many users", "```sql\nSELECT COUNT(*) FROM users\n```"),
            (lambda text: text.endswith("?!"), lambda text: f"SELECT '{len(text)}'"),
            (re.compile(r"boom"), ModelUnavailable("scripted outage")),
        ],
        default="SELECT 0",
    )
    assert (await llm.complete(MESSAGES, max_tokens=64)).text.endswith("FROM users\n```")
    assert (
        await llm.complete([ChatMessage(role="user", content="why?!")], max_tokens=64)
    ).text == "SELECT '5'"
    assert (await llm.complete([ChatMessage(role="user", content="other")], max_tokens=64)).text == "SELECT 0"
    with pytest.raises(ModelUnavailable):
        await llm.complete([ChatMessage(role="user", content="boom")], max_tokens=64)
    assert [c.last_user for c in llm.calls] == ["How many users are there?", "why?!", "other", "boom"]
    assert llm.calls[0].response is not None and llm.calls[-1].response is None
    assert llm.name == "scripted"


async def test_scripted_matches_last_user_message_only() -> None:
    llm = ScriptedLLM([("users", "SELECT 1")])
    messages = [
        *MESSAGES,
        ChatMessage(role="assistant", content="x"),
        ChatMessage(role="user", content="fix it"),
    ]
    with pytest.raises(ScriptedNoMatch):
        await llm.complete(messages, max_tokens=8)


async def test_scripted_latency_and_adapter_version() -> None:
    llm = ScriptedLLM([], default="SELECT 1", latency_s=0.05)
    started = time.perf_counter()
    completion = await llm.complete(
        MESSAGES, max_tokens=8, adapter=AdapterRef(project_id="p", version=4, path="/x")
    )
    assert time.perf_counter() - started >= 0.05
    assert completion.adapter_version == 4 and completion.prompt_tokens > 0


# --- factory ---------------------------------------------------------------------------------------------------


async def test_factory_scripted_backend_answers_select_1() -> None:
    llm = build_llm(settings(llm_backend="scripted"))
    assert (await llm.complete(MESSAGES, max_tokens=8)).text == "SELECT 1"


def test_factory_builds_each_backend(tmp_path: Path) -> None:
    assert isinstance(build_llm(settings(llm_backend="gguf", data_dir=tmp_path)), GGUFLLM)
    assert isinstance(build_llm(settings(llm_backend="ollama", ollama_url="http://o:11434")), OllamaLLM)
    assert isinstance(
        build_llm(settings(llm_backend="openai", openai_base_url="http://v:8000/v1")), OpenAICompatLLM
    )
    with pytest.raises(ValueError, match="OLLAMA_URL"):
        build_llm(settings(llm_backend="ollama", ollama_url=None))
    with pytest.raises(ValueError, match="OPENAI_BASE_URL"):
        build_llm(settings(llm_backend="openai", openai_base_url=None))


# --- the served path: llama-cpp-python's OpenAI-compatible server, real ------------------------------------


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from services.infra.llm.local_server import serving
    from services.infra.llm.model_files import resolve_gguf

    served_dir = tmp_path_factory.mktemp("served")
    model = resolve_gguf("smollm2-135m-instruct", served_dir)
    with serving(model, threads=2, n_ctx=1024, alias="smollm2-135m-instruct", cache_dir=served_dir) as url:
        yield url


@pytest.mark.real_model
async def test_openai_backend_against_a_real_llama_cpp_server(llama_server: str, tmp_path: Path) -> None:
    from services.infra.llm.openai_compat import OpenAICompatLLM

    llm = OpenAICompatLLM(
        Settings(llm_model="smollm2-135m-instruct", data_dir=tmp_path), base_url=f"{llama_server}/v1"
    )
    messages = [
        ChatMessage(role="system", content="Reply with one SQL query in a ```sql code block."),
        ChatMessage(role="user", content="Table users(id INTEGER, name TEXT). How many users are there?"),
    ]
    try:
        results = await asyncio.gather(*(llm.complete(messages, max_tokens=32) for _ in range(3)))
    finally:
        await llm.close()
    # Three questions at once are all answered (the server takes them one after another), with usage.
    assert all(r.text.strip() for r in results)
    assert all(r.prompt_tokens > 20 and 0 < r.completion_tokens <= 32 for r in results)
    assert all(r.model == "smollm2-135m-instruct" for r in results)


@pytest.mark.real_model
def test_gguf_prompt_batches_end_at_every_answer_or_only_at_earlier_prompts(smollm: GGUFLLM) -> None:
    """``turns``: a batch ends at the prefix and at each answer of the chat (the example's too); ``prompts``:
    at the prefix and where the question's own earlier prompt ended (the start of the model's reply)."""
    from services.infra.settings import Settings

    first = _sql_prompt("How many users are there?")
    repair = [
        *first,
        ChatMessage(role="assistant", content="```sql\nSELECT 1\n```", segment_start=True),
        ChatMessage(role="user", content="That query is wrong. Write it again."),
    ]
    loaded = smollm._loaded(None)
    by_batches = {}
    for batches in ("turns", "prompts"):
        llm = GGUFLLM(smollm.settings.model_copy(update={"llm_prompt_batches": batches}))
        assert isinstance(llm.settings, Settings)
        by_batches[batches] = (llm.prompt_tokens(loaded, first), llm.prompt_tokens(loaded, repair))
    (turn_tokens, turn_cuts), (turn_repair_tokens, turn_repair_cuts) = by_batches["turns"]
    (tokens, cuts), (repair_tokens, repair_cuts) = by_batches["prompts"]
    assert tokens == turn_tokens and repair_tokens == turn_repair_tokens  # the same text either way
    assert len(turn_cuts) == 2 and len(cuts) == 1 and cuts[0] == turn_cuts[0]  # prefix; the example's answer
    assert repair_cuts == [cuts[0], len(tokens)]  # the first prompt is a batch boundary of the repair round
    assert turn_repair_cuts == [*turn_cuts, len(tokens)]


@pytest.mark.real_model
async def test_gguf_the_prompt_writes_the_replys_opening_fence(smollm: GGUFLLM) -> None:
    """``llm_reply_fence``: the prompt ends with the reply's opening ```sql fence and the model writes from
    there (the reply's text still starts with it, its tokens are not counted as decoded); off, the prompt ends
    where the assistant's turn opens. A repair round's batch ends after its first reply's fence, where its
    first prompt ended."""
    prompt = _sql_prompt("How many users are there?")
    loaded = smollm._loaded(None)
    plain = GGUFLLM(smollm.settings.model_copy(update={"llm_reply_fence": False}))
    fence = loaded.model.tokenize(b"```sql\n", add_bos=False, special=True)
    tokens, _ = smollm.prompt_tokens(loaded, prompt)
    plain_tokens, _ = plain.prompt_tokens(loaded, prompt)
    assert tokens == plain_tokens + fence

    written = await smollm.complete(prompt, max_tokens=24)
    assert written.text.startswith("```sql\n") and written.prompt_tokens == len(tokens)
    assert written.completion_tokens == written.timings["answer_tokens"] <= 24

    repair = [
        *prompt,
        ChatMessage(role="assistant", content=written.text, segment_start=True),
        ChatMessage(role="user", content="That query is wrong. Write it again."),
    ]
    _, repair_cuts = smollm.prompt_tokens(loaded, repair)
    assert len(tokens) in repair_cuts


@pytest.mark.real_model
async def test_gguf_forget_answers_keeps_only_the_prefix(smollm: GGUFLLM) -> None:
    """After ``forget_answers`` the same prompt is evaluated again past the project's prefix (a benchmark's
    next build meets the question as new), and answers the same."""
    from services.infra.llm.gguf import forget_answers

    prompt = _sql_prompt("List the names of users called ann.")
    first = await smollm.complete(prompt, max_tokens=24)
    cached = await smollm.complete(prompt, max_tokens=24)
    forget_answers()
    forgotten = await smollm.complete(prompt, max_tokens=24)
    assert cached.timings["prompt_tokens_reused"] == cached.prompt_tokens
    assert 0 < forgotten.timings["prompt_tokens_reused"] < forgotten.prompt_tokens
    assert first.text == cached.text == forgotten.text
