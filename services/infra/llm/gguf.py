"""Local GGUF models on CPU through llama-cpp-python.

One model instance per (file, context, threads, LoRA) per process, shared by every GGUFLLM that asks for it:
loading is the slow part, and several backends in one process must not hold several copies. llama.cpp is not
re-entrant, so each loaded model has a lock, and completions run one at a time on the process's compute thread
(``services.core.compute_thread``: one thread for all OpenMP work, which keeps llama.cpp's workers spinning
between operations; the time a completion waits for it is reported as its queue time). Prompts are evaluated and answers decoded by
``llama_decode``: a project's prompt prefix once, prompt-lookup drafts, a stop at the end of the SQL block, whose
opening fence the prompt writes (``llm_reply_fence``).

A project's adapter is served here when it is a GGUF LoRA: a ``.gguf`` file, or a trained adapter folder
holding ``adapter.gguf`` converted for this very base model (see services.training.gguf_lora).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.core import compute_thread
from services.core.llm.base import (
    GGUF_LORA_FILE,
    AdapterMismatch,
    AdapterRef,
    ChatMessage,
    Completion,
    ModelUnavailable,
)
from services.core.prompt import SQL_BLOCK_OPENING
from services.infra.llm.cpu_weights import RequantizeError, cpu_weights_file
from services.infra.llm.llama_decode import (
    Decoded,
    DecodeOptions,
    DecodeReport,
    LlamaDecoder,
    PrefixStates,
)
from services.infra.llm.model_files import ModelFileError, resolve_gguf
from services.infra.llm.repack_probe import repacking_works
from services.infra.settings import Settings

log = logging.getLogger(__name__)

NOT_INSTALLED = (
    "llama-cpp-python is not installed: `pip install 'querylift[ml]'` or choose another QUERYLIFT_LLM_BACKEND"
)


@dataclass(frozen=True)
class _Key:
    path: str
    n_ctx: int
    threads: int
    seed: int
    lora_path: str | None


@dataclass
class _Loaded:
    model: Any  # llama_cpp.Llama
    lock: threading.Lock
    decoder: LlamaDecoder
    #: The model's chat template, rendering a whole chat (with the assistant's turn opened) and a prefix.
    chat: Any
    prefix_chat: Any


_models: dict[_Key, _Loaded] = {}
# Keys of the models loaded with a LoRA, least recently used first.
_adapted: OrderedDict[_Key, None] = OrderedDict()
_load_lock = threading.Lock()


@contextlib.contextmanager
def _model_params_without_extra_buffers() -> Iterator[None]:
    # Weight repacking into "extra buffer types" (AMX / repacked CPU kernels) was seen to crash batched
    # decoding on some CPUs, and gains nothing on the shipped weights (most are Q5_0, which has no repacked
    # kernel; bench/README.md, "Weights the CPU runs fastest"), so plain CPU buffers are the default. Weights
    # requantized by cpu_weights load with it: the repack is their point.
    # Llama() reads llama_model_default_params() while loading, so it is swapped for the load only.
    import llama_cpp.llama as llama_module

    lib = llama_module.llama_cpp
    original = lib.llama_model_default_params

    def params() -> Any:
        p = original()
        p.use_extra_bufts = False
        return p

    lib.llama_model_default_params = params
    try:
        yield
    finally:
        lib.llama_model_default_params = original


def _chat_formatters(model: Any) -> tuple[Any, Any]:
    """The chat template stored in the GGUF file, as llama-cpp-python reads it: once with the assistant's turn
    opened (the prompt) and once without (to find where the system message ends)."""
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    template = model.metadata.get("tokenizer.chat_template")
    if not template:
        raise ModelUnavailable(f"{model.model_path} has no chat template")
    eos = model._model.token_get_text(model.token_eos())
    bos_id = model.token_bos()
    bos = model._model.token_get_text(bos_id) if bos_id != -1 else ""
    return (
        Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos),
        Jinja2ChatFormatter(template=template, eos_token=eos, bos_token=bos, add_generation_prompt=False),
    )


def _load(key: _Key, extra_buffers: bool, max_adapted: int, prefix_states: int = 8) -> _Loaded:
    with _load_lock:
        loaded = _models.get(key)
        if loaded is not None:
            if key in _adapted:
                _adapted.move_to_end(key)
            return loaded
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise ModelUnavailable(NOT_INSTALLED) from exc
        started = time.perf_counter()
        params = contextlib.nullcontext() if extra_buffers else _model_params_without_extra_buffers()
        try:
            with params:
                model = Llama(
                    model_path=key.path,
                    n_ctx=key.n_ctx,
                    n_threads=key.threads,
                    n_threads_batch=key.threads,
                    seed=key.seed,
                    lora_path=key.lora_path,
                    verbose=False,
                )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelUnavailable(f"Loading GGUF model {key.path} failed: {exc}") from exc
        log.info(
            "gguf model loaded",
            extra={
                "path": key.path,
                "n_ctx": key.n_ctx,
                "threads": key.threads,
                "lora": key.lora_path,
                "seconds": round(time.perf_counter() - started, 2),
            },
        )
        chat, prefix_chat = _chat_formatters(model)
        loaded = _Loaded(
            model=model,
            lock=threading.Lock(),
            decoder=LlamaDecoder(model, PrefixStates(prefix_states)),
            chat=chat,
            prefix_chat=prefix_chat,
        )
        _models[key] = loaded
        if key.lora_path is not None:
            _adapted[key] = None
            # llama-cpp-python binds a LoRA to its model at load time (and then loads without mmap), so each
            # adapter costs a full copy of the base: keep the most recently used few. A dropped model that is
            # still finishing a completion is freed (Llama.__del__) when that completion lets go of it.
            while len(_adapted) > max_adapted:
                old, _ = _adapted.popitem(last=False)
                _models.pop(old, None)
                log.info("gguf adapter model unloaded", extra={"lora": old.lora_path})
        return loaded


class GGUFLLM:
    """Greedy chat completions from a local GGUF model, using the chat template stored in the file."""

    def __init__(
        self,
        settings: Settings,
        *,
        model: str | None = None,
        extra_buffers: bool = False,
    ) -> None:
        self.settings = settings
        self._model_name = model or settings.llm_model
        # Requantized weights are there to be repacked for the fast CPU kernels, so they load with them, where
        # this CPU's llama.cpp serves them so (repack_probe).
        self._repack = extra_buffers or settings.llm_cpu_weights != "shipped"
        self._path: Path | None = None
        self._served: Path | None = None
        self._warned_adapter = False
        is_file = self._model_name.lower().endswith(".gguf")
        self.name = Path(self._model_name).stem if is_file else self._model_name

    @property
    def path(self) -> Path:
        if self._path is None:
            try:
                self._path = resolve_gguf(self._model_name, self.settings.model_cache_dir)
            except ModelFileError as exc:
                raise ModelUnavailable(str(exc)) from exc
        return self._path

    @property
    def served_path(self) -> Path:
        """The file loaded: the model's own, or its copy in the format ``llm_cpu_weights`` names."""
        if self._served is None:
            try:
                self._served = cpu_weights_file(
                    self.path,
                    self.settings.llm_cpu_weights,
                    self.settings.model_cache_dir,
                    self.settings.llm_threads,
                )
            except (RequantizeError, OSError) as exc:
                raise ModelUnavailable(f"Requantizing {self.path} failed: {exc}") from exc
            except ImportError as exc:
                raise ModelUnavailable(NOT_INSTALLED) from exc
        return self._served

    def _key(self, lora_path: str | None) -> _Key:
        return _Key(
            path=str(self.served_path),
            n_ctx=self.settings.llm_context_tokens,
            threads=self.settings.llm_threads,
            seed=self.settings.llm_seed,
            lora_path=lora_path,
        )

    def load(self, adapter: AdapterRef | None = None) -> _Loaded:
        """Load (once per process) the model, with the adapter when it is a GGUF LoRA file; the loading on the
        compute thread, where everything that may start llama.cpp's OpenMP workers runs. A model already loaded
        is returned here: tokenizing (count_tokens, on the event loop) must not wait behind a completion."""
        lora_path = self._lora_path(adapter)
        if self._key(lora_path) in _models:
            return self._loaded(lora_path)
        return compute_thread.run_blocking(self._loaded, lora_path)

    @property
    def repacked(self) -> bool:
        """Whether the weights are served repacked for the fast CPU kernels."""
        return self._repack and repacking_works(
            self.served_path, self.settings.llm_threads, self.settings.model_cache_dir
        )

    def _loaded(self, lora_path: str | None) -> _Loaded:
        return _load(
            self._key(lora_path),
            self.repacked,
            self.settings.adapter_cache_size,
            self.settings.llm_prefix_cache_size,
        )

    def adapter_file(self, adapter: AdapterRef) -> Path | None:
        """The GGUF LoRA that applies ``adapter`` to this model, or None when it has none (peft only).

        A trained adapter folder qualifies when its ``adapter.gguf`` was converted for this model: llama.cpp
        checks only the architecture and tensor shapes, so an adapter of another model of the same family
        would load and answer wrongly. As the transformers backend does, an adapter whose ``metrics.json``
        names another project is refused (AdapterMismatch), never served.
        """
        path = Path(adapter.path)
        if path.suffix.lower() == ".gguf":
            return path if path.is_file() else None
        candidate = path / GGUF_LORA_FILE
        if not candidate.is_file():
            return None
        try:
            trained: dict[str, Any] = json.loads((path / "metrics.json").read_text())
        except (OSError, ValueError):
            return None  # no provenance: which base model it was converted for is unknown
        if trained.get("project_id") not in (None, adapter.project_id):
            raise AdapterMismatch(
                f"adapter {adapter.path} belongs to another project, not {adapter.project_id!r}"
            )
        return candidate if self._is_model(str(trained.get("base_model") or "")) else None

    def _is_model(self, name: str) -> bool:
        """Whether ``name`` (a training base model: a known name or a .gguf path) is the model served here."""
        if not name:
            return False
        if name.strip().lower() == self._model_name.strip().lower():
            return True
        if not name.lower().endswith(".gguf"):
            return False
        try:
            return Path(name).expanduser().resolve() == self.path.resolve()
        except (OSError, ModelUnavailable):
            return False

    def _lora_path(self, adapter: AdapterRef | None) -> str | None:
        if adapter is None:
            return None
        lora = self.adapter_file(adapter)
        if lora is not None:
            return str(lora)
        if not self._warned_adapter:
            # peft-only adapters need the transformers backend; answering from the base model beats failing.
            log.warning(
                "gguf backend serves the base model: adapter has no GGUF LoRA for this model",
                extra={"project": adapter.project_id, "version": adapter.version},
            )
            self._warned_adapter = True
        return None

    def reply_written(self) -> str:
        """The reply's opening that the prompt writes for the model (``llm_reply_fence``): its text starts so."""
        return SQL_BLOCK_OPENING if self.settings.llm_reply_fence else ""

    def prompt_tokens(self, loaded: _Loaded, messages: list[ChatMessage]) -> tuple[list[int], list[int]]:
        """The chat's tokens, the reply's opening last (``reply_written``), and where its segments end: after
        the system message (a project's fixed prefix), before every message marked ``segment_start`` (where
        another prompt of the same answer ends: a repair round's first prompt, a decomposed question's examples)
        and, with ``llm_prompt_batches=turns``, at the start of every answer in it. Prompts of one answer then
        share segments, so the later one reuses them, and each is evaluated in the same batches as when nothing
        is cached. A boundary is kept only where the chat's text and tokens agree that it is one."""
        model = loaded.model
        chat = [dict(m) for m in messages]
        written = self.reply_written()
        text = loaded.chat(messages=chat).prompt + written
        tokens: list[int] = model.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        if not self.settings.llm_prefix_reuse:
            return tokens, []
        heads: list[str] = []
        if chat and chat[0]["role"] == "system" and len(chat) > 1:
            heads.append(loaded.prefix_chat(messages=chat[:1]).prompt)
        every_turn = self.settings.llm_prompt_batches == "turns"

        def head_before(i: int, message: dict[str, Any]) -> str:
            # Before an answer the head ends with the assistant's turn opened, and past the opening the prompt
            # wrote for it (so a repair round reuses its first prompt whole); before any other message, closed.
            if message["role"] != "assistant":
                return str(loaded.prefix_chat(messages=chat[:i]).prompt)
            opened = str(loaded.chat(messages=chat[:i]).prompt)
            return opened + written if written and str(message["content"]).startswith(written) else opened

        heads += [
            head_before(i, m)
            for i, m in enumerate(chat)
            if i > 0 and (m.get("segment_start", False) or (every_turn and m["role"] == "assistant"))
        ]
        boundaries = []
        for head in heads:
            if text.startswith(head):
                head_tokens = model.tokenize(head.encode("utf-8"), add_bos=False, special=True)
                if tokens[: len(head_tokens)] == head_tokens:
                    boundaries.append(len(head_tokens))
        return tokens, boundaries

    def _complete_sync(
        self,
        messages: list[ChatMessage],
        max_tokens: int,
        lora_path: str | None,
        alternatives: int,
        first_alternative: int,
        submitted: float,
    ) -> tuple[DecodeReport, float]:
        waited = time.perf_counter() - submitted  # behind other completions on the compute thread
        loaded = self._loaded(lora_path)
        waiting = time.perf_counter()
        with loaded.lock:
            queued = waited + time.perf_counter() - waiting
            tokens, boundaries = self.prompt_tokens(loaded, messages)
            try:
                logits, report = loaded.decoder.evaluate(tokens, boundaries)
            except ValueError as exc:
                raise ModelUnavailable(
                    f"The prompt does not fit the model context ({self.settings.llm_context_tokens} tokens): "
                    f"{exc}; lower QUERYLIFT_PROMPT_TOKEN_BUDGET or raise QUERYLIFT_LLM_CONTEXT_TOKENS"
                ) from exc
            options = DecodeOptions(
                max_tokens=max_tokens,
                lookup_tokens=self.settings.llm_lookup_tokens,
                stop_on_loop=self.settings.llm_stop_on_loop,
                written=self.reply_written(),
            )
            if first_alternative == 0:
                loaded.decoder.decode(logits, len(tokens), options, report)
            for i in range(first_alternative, first_alternative + alternatives):
                loaded.decoder.decode(
                    logits,
                    len(tokens),
                    options,
                    report,
                    temperature=self.settings.llm_vote_temperature,
                    seed=self.settings.llm_seed + 1 + i,
                )
        return report, queued

    async def complete(
        self,
        messages: list[ChatMessage],
        *,
        max_tokens: int,
        adapter: AdapterRef | None = None,
        alternatives: int = 0,
        first_alternative: int = 0,
    ) -> Completion:
        lora_path = self._lora_path(adapter)
        started = time.perf_counter()
        report, queued = await compute_thread.run(
            self._complete_sync, messages, max_tokens, lora_path, alternatives, first_alternative, started
        )
        answers = list(report.answers)
        best = answers.pop(0) if first_alternative == 0 else Decoded(text="", tokens=0)
        others = answers
        return Completion(
            text=best.text,
            prompt_tokens=report.prompt_tokens,
            completion_tokens=sum(a.tokens for a in report.answers),
            model=self.name,
            seconds=time.perf_counter() - started,
            adapter_version=adapter.version if adapter is not None and lora_path is not None else None,
            alternatives=[a.text for a in others],
            runaway=best.runaway,
            timings={
                "queue_s": queued,
                "prompt_s": report.prompt_s,
                "decode_s": report.decode_s,
                "prompt_tokens_reused": float(report.reused_tokens),
                "drafted_tokens": float(report.drafted),
                "accepted_tokens": float(report.accepted),
                "answer_tokens": float(best.tokens),
            },
        )

    def count_tokens(self, text: str) -> int:
        # Tokenizing only reads the vocabulary, so it does not take the completion lock.
        model = self.load().model
        return len(model.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    async def close(self) -> None:
        # The model is shared by the process and freed at exit; nothing per instance to release.
        return None


def forget_answers() -> None:
    """Every loaded model's cache cut back to its project prefix (``LlamaDecoder.forget``)."""
    with _load_lock:
        for loaded in _models.values():
            with loaded.lock:
                loaded.decoder.forget()


def unload_all() -> None:
    """Drop every loaded model (tests, or a process switching models)."""
    with _load_lock:
        for loaded in _models.values():
            with loaded.lock:
                close = getattr(loaded.model, "close", None)
                if callable(close):
                    close()
        _models.clear()
        _adapted.clear()


# llama.cpp's finalizers fail once the interpreter has torn down its modules; close models before that.
atexit.register(unload_all)

__all__ = ["GGUFLLM", "forget_answers", "unload_all"]
