"""Prompt evaluation and decoding on a loaded llama.cpp model, for answers in seconds on a CPU.

* **A project's prefix is evaluated once.** The prompt's system message (instructions, schema, sample values:
  fixed per project and schema version) is evaluated as batches of its own and its KV state kept; a later
  prompt with the same prefix reuses it, from the live KV cache when it still holds it, else from a small LRU
  of saved states (``PrefixStates``, across projects). A repair round's prompt is the first prompt plus the
  answer and what was wrong with it, so it reuses that whole first prompt. The prompt is always evaluated in
  the same segments whatever the cache holds, so an answer is bit for bit the same warm or cold.
* **Prompt-lookup drafts.** SQL mostly copies names and clauses from the prompt: after each token, the tokens
  that followed the latest matching n-gram in the prompt (or in the answer so far) are proposed and checked in
  one batch; the ones the model agrees with are kept (greedy verification, so the text is what greedy
  decoding of those logits gives).
* **Stop at the end of the SQL block**, not at the model's end-of-turn: nothing after it is used. The block's
  opening can be written into the prompt by the caller (``DecodeOptions.written``): three tokens that cost a
  decoding step each cost a small part of the prompt's batch instead.
* **Alternatives cost only their decoding.** Sampled alternatives (for execution-consistency voting) restart
  from the evaluated prompt: the KV cache is cut back to the prompt's end, no prompt is evaluated again.

Nothing here knows about SQL beyond the code fence that ends an answer.
"""

from __future__ import annotations

import ctypes
import hashlib
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

#: The end of an answer: the fence that closes the ```sql block.
_FENCE = "```"
#: A reply whose last _LOOP_WINDOW bytes (numbers masked: "alias7", "alias8" is still a loop) occur
#: _LOOP_REPEATS times is looping ("CROSS JOIN t AS t1 CROSS JOIN t AS t2 ..."): small models do, and until
#: max_tokens such a reply costs seconds of decoding for SQL that is never right.
_LOOP_WINDOW = 24
_LOOP_REPEATS = 5
_NUMBER = re.compile(rb"\d+")


@dataclass(frozen=True)
class DecodeOptions:
    max_tokens: int
    #: n-gram size matched for prompt-lookup drafts, and how many tokens are proposed (0: no drafts).
    lookup_ngram: int = 3
    lookup_tokens: int = 8
    #: Stop once the reply's ```sql block is closed.
    stop_after_sql_block: bool = True
    #: Stop a reply that repeats itself (see _LOOP_WINDOW).
    stop_on_loop: bool = True
    #: The reply's opening, already in the prompt (its last tokens): the answer's text starts with it, and the
    #: stop at the closed block counts its fence.
    written: str = ""


#: Why decoding ended: an end token, the closed SQL block, a loop, or max_tokens / the context.
StopReason = Literal["end", "sql_block", "loop", "length"]


@dataclass
class Decoded:
    text: str
    tokens: int
    stopped: StopReason = "end"

    @property
    def runaway(self) -> bool:
        """Cut off rather than finished: it looped or ran out of tokens."""
        return self.stopped in ("loop", "length")


@dataclass
class DecodeReport:
    """What one completion cost: the prompt tokens evaluated (not reused), time per phase, drafts."""

    prompt_tokens: int
    evaluated_tokens: int
    reused_tokens: int
    #: "prompt" (the whole prompt still in the cache), "kv" (its prefix still in the cache), "saved" (the
    #: prefix restored), "evaluated", "none"
    prefix_source: str
    prompt_s: float
    decode_s: float
    drafted: int = 0
    accepted: int = 0
    answers: list[Decoded] = field(default_factory=list)


class PrefixStates:
    """Saved KV states of evaluated prefixes, least recently used dropped first."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._states: OrderedDict[str, bytes] = OrderedDict()

    @staticmethod
    def key(tokens: Sequence[int]) -> str:
        return hashlib.sha256(np.asarray(tokens, dtype=np.int32).tobytes()).hexdigest()

    def get(self, key: str) -> bytes | None:
        state = self._states.get(key)
        if state is not None:
            self._states.move_to_end(key)
        return state

    def put(self, key: str, state: bytes) -> None:
        if self.capacity <= 0:
            return
        self._states[key] = state
        self._states.move_to_end(key)
        while len(self._states) > self.capacity:
            self._states.popitem(last=False)

    def __len__(self) -> int:
        return len(self._states)


def lookup_draft(
    tokens: npt.NDArray[np.intc], ngram: int, count: int, min_ngram: int = 2, latest: bool = True
) -> list[int]:
    """The tokens that followed the most recent earlier occurrence of the last ``ngram`` tokens (shorter
    n-grams, down to ``min_ngram``, when longer ones never occurred before), at most ``count``; [] when nothing
    matches."""
    n = len(tokens)
    for size in range(min(ngram, n - 1), min_ngram - 1, -1):
        tail = tokens[n - size :]
        windows = np.lib.stride_tricks.sliding_window_view(tokens[: n - 1], size)
        matches = np.nonzero(np.all(windows == tail, axis=1))[0]
        # The most recent occurrence first: in an answer, the clause being written; else the latest mention.
        for start in matches[::-1] if latest else matches:
            follow = start + size
            if follow < n:
                return [int(t) for t in tokens[follow : min(follow + count, n)]]
    return []


class LlamaDecoder:
    """Evaluates prompts and decodes answers on one loaded ``llama_cpp.Llama`` (not thread-safe: the caller
    holds the model's lock)."""

    def __init__(self, model: Any, prefix_states: PrefixStates) -> None:
        import llama_cpp

        self.model = model
        self.lib = llama_cpp
        self.states = prefix_states
        self.n_vocab: int = model.n_vocab()
        self.n_batch: int = model.n_batch
        self.n_ctx: int = model.n_ctx()
        self.stop_ids = self._stop_tokens()
        #: The last prompt evaluated and the logits of its last token: asked again (for more sampled
        #: alternatives), a prompt whose tokens the KV cache still holds costs nothing to evaluate.
        self._last_prompt: tuple[str, npt.NDArray[np.single]] | None = None
        #: Tokens of the last prompt's first segment (a project's prefix), what ``forget`` keeps.
        self._prefix_len = 0
        #: Where the batches that filled the KV cache ended, in order. Cached tokens are reused up to a cut only
        #: when they were evaluated in the batches a cold evaluation of the new prompt would use (two prompts
        #: with the same tokens up to a cut may have been cut differently before it: one marks its question,
        #: the other does not), since other batch shapes round differently.
        self._ends: list[int] = []

    def _stop_tokens(self) -> set[int]:
        ids = {int(self.model.token_eos())}
        for text in ("<|im_end|>", "<|endoftext|>", "<|eot_id|>"):
            found = self.model.tokenize(text.encode(), add_bos=False, special=True)
            if len(found) == 1:
                ids.add(int(found[0]))
        return ids

    # --- llama.cpp calls --------------------------------------------------------------------------------

    def _decode(self, tokens: Sequence[int], n_past: int, all_logits: bool) -> npt.NDArray[np.single]:
        """Evaluate ``tokens`` at ``n_past`` in batches; returns the logits of every token of the last batch
        (``all_logits``) or of the last token."""
        self.model._ctx.kv_cache_seq_rm(-1, n_past, -1)
        rows: npt.NDArray[np.single] = np.empty((0, self.n_vocab), dtype=np.single)
        for start in range(0, len(tokens), self.n_batch):
            chunk = list(tokens[start : start + self.n_batch])
            self.model._batch.set_batch(batch=chunk, n_past=n_past, logits_all=all_logits)
            self.model._ctx.decode(self.model._batch)
            n_past += len(chunk)
            count = len(chunk) if all_logits else 1
            pointer = self.lib.llama_get_logits(self.model._ctx.ctx)
            rows = np.ctypeslib.as_array(pointer, shape=(count, self.n_vocab)).copy()
        self.model.input_ids[n_past - len(tokens) : n_past] = tokens
        self.model.n_tokens = n_past
        return rows

    def _save(self) -> bytes:
        ctx = self.model._ctx.ctx
        size = self.lib.llama_state_seq_get_size(ctx, 0)
        buffer = (ctypes.c_uint8 * size)()
        written = self.lib.llama_state_seq_get_data(ctx, buffer, size, 0)
        return bytes(buffer)[:written]

    def _restore(self, state: bytes, prefix: Sequence[int]) -> bool:
        self.model._ctx.kv_cache_seq_rm(-1, 0, -1)
        buffer = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if self.lib.llama_state_seq_set_data(self.model._ctx.ctx, buffer, len(state), 0) != len(state):
            return False
        self.model.input_ids[: len(prefix)] = prefix
        self.model.n_tokens = len(prefix)
        self._ends = [len(prefix)]
        return True

    def forget(self) -> None:
        """Drop what the cache holds past the project's prefix, so the next prompt is evaluated as a new
        question's is (a benchmark comparing builds on the same question must not hand the second one the
        first one's evaluated prompt)."""
        self._last_prompt = None
        self.model.n_tokens = min(self.model.n_tokens, self._prefix_len)
        self._ends = [e for e in self._ends if e <= self.model.n_tokens]

    # --- prompts ----------------------------------------------------------------------------------------

    def _holds(self, prefix: Sequence[int]) -> bool:
        n = len(prefix)
        return bool(self.model.n_tokens >= n and np.array_equal(self.model.input_ids[:n], prefix))

    def _reusable(self, tokens: Sequence[int], cuts: Sequence[int], cut: int) -> bool:
        """Whether the cache holds ``tokens`` up to ``cut`` evaluated in the batches ``cuts`` make of them."""
        return [c for c in cuts if c <= cut] == [e for e in self._ends if e <= cut] and self._holds(
            tokens[:cut]
        )

    def evaluate(
        self, tokens: Sequence[int], boundaries: Sequence[int] = ()
    ) -> tuple[npt.NDArray[np.single], DecodeReport]:
        """Evaluate a prompt in segments that end at ``boundaries`` (token positions fixed by the chat itself:
        the end of the system message, where another prompt of the same answer ends), reusing the longest run
        of whole segments the cache holds as this prompt's own segments; returns the logits of the prompt's
        last token. Segments are the same whatever the cache holds, so the numbers, and the answer, are too.
        The first segment (a project's instructions and schema) is also kept as a saved state for when other
        prompts have replaced it."""
        if len(tokens) >= self.n_ctx:
            raise ValueError(f"the prompt has {len(tokens)} tokens, the context {self.n_ctx}")
        started = time.perf_counter()
        cuts = sorted({b for b in boundaries if 0 < b < len(tokens)})
        whole = f"{self.states.key(tokens)}|{cuts}"
        # Keyed by tokens and cuts: the last prompt's batches are this one's (every evaluation replaces it).
        if self._last_prompt is not None and self._last_prompt[0] == whole and self._holds(tokens):
            return self._last_prompt[1], DecodeReport(
                prompt_tokens=len(tokens),
                evaluated_tokens=0,
                reused_tokens=len(tokens),
                prefix_source="prompt",
                prompt_s=time.perf_counter() - started,
                decode_s=0.0,
            )
        self._prefix_len = cuts[0] if cuts else 0
        start, source = 0, "none"
        held = [b for b in cuts if self._reusable(tokens, cuts, b)]
        if held:
            start, source = held[-1], "kv"
        elif cuts:
            prefix = list(tokens[: cuts[0]])
            saved = self.states.get(self.states.key(prefix))
            if saved is not None and self._restore(saved, prefix):
                start, source = cuts[0], "saved"
        reused = start
        ends = [b for b in cuts if b > start] + [len(tokens)]
        logits: npt.NDArray[np.single] | None = None
        for end in ends:
            logits = self._decode(list(tokens[start:end]), start, all_logits=False)[-1]
            if cuts and end == cuts[0]:
                self.states.put(self.states.key(tokens[:end]), self._save())
                source = "evaluated" if source == "none" else source
            start = end
        assert logits is not None
        self._last_prompt = (whole, logits)
        self._ends = [*cuts, len(tokens)]
        report = DecodeReport(
            prompt_tokens=len(tokens),
            evaluated_tokens=len(tokens) - reused,
            reused_tokens=reused,
            prefix_source=source,
            prompt_s=time.perf_counter() - started,
            decode_s=0.0,
        )
        return logits, report

    # --- answers ----------------------------------------------------------------------------------------

    def decode(
        self,
        first_logits: npt.NDArray[np.single],
        prompt_len: int,
        options: DecodeOptions,
        report: DecodeReport,
        *,
        temperature: float = 0.0,
        seed: int = 0,
    ) -> Decoded:
        """One answer from the evaluated prompt (greedy at temperature 0, else sampled with ``seed``)."""
        started = time.perf_counter()
        rng = np.random.default_rng(seed)
        n_past = prompt_len
        generated: list[int] = []
        logits = first_logits
        text = options.written.encode("utf-8")
        # The KV cache may hold another answer's tokens past the prompt: they are cut at the first decode.
        done = False
        # A draft batch costs more than one token; after one that gained nothing, drafting pauses for a while
        # (twice as long after each such miss) so an answer that copies nothing pays little for trying.
        pause = 0
        backoff = 1
        stopped: StopReason = "length"
        while not done and len(generated) < options.max_tokens and n_past < self.n_ctx - 1:
            token = self._pick(logits, temperature, rng)
            if token in self.stop_ids:
                stopped = "end"
                break
            generated.append(token)
            text += self.model.detokenize([token])
            if options.stop_after_sql_block and _block_closed(text):
                stopped = "sql_block"
                break
            if options.stop_on_loop and _looping(text):
                stopped = "loop"
                break
            context = np.concatenate(
                [self.model.input_ids[:n_past], np.asarray(generated[-1:], dtype=np.intc)]
            )
            room = min(options.lookup_tokens, options.max_tokens - len(generated), self.n_ctx - n_past - 2)
            drafts: list[int] = []
            if options.lookup_tokens and room > 0:
                if pause > 0:
                    pause -= 1
                else:
                    drafts = lookup_draft(context, options.lookup_ngram, room)
            batch = [token, *drafts]
            rows = self._decode(batch, n_past, all_logits=bool(drafts))
            n_past += 1
            report.drafted += len(drafts)
            logits = rows[0] if drafts else rows[-1]
            accepted_here = 0
            for i, draft in enumerate(drafts):
                choice = self._pick(logits, temperature, rng)
                if choice != draft:
                    break
                if choice in self.stop_ids:
                    done, stopped = True, "end"
                    break
                generated.append(choice)
                text += self.model.detokenize([choice])
                report.accepted += 1
                accepted_here += 1
                n_past += 1
                logits = rows[i + 1]
                if options.stop_after_sql_block and _block_closed(text):
                    done, stopped = True, "sql_block"
                    break
                if options.stop_on_loop and _looping(text):
                    done, stopped = True, "loop"
                    break
                if len(generated) >= options.max_tokens:
                    done = True
                    break
            if drafts:
                if accepted_here:
                    backoff = 1
                else:
                    pause, backoff = backoff, min(backoff * 2, 16)
            # Whatever of the batch was not accepted is dropped from the cache at the next decode.
            self.model.n_tokens = n_past
        report.decode_s += time.perf_counter() - started
        answer = Decoded(text=text.decode("utf-8", errors="replace"), tokens=len(generated), stopped=stopped)
        report.answers.append(answer)
        return answer

    def _pick(self, logits: npt.NDArray[np.single], temperature: float, rng: np.random.Generator) -> int:
        if temperature <= 0:
            return int(np.argmax(logits))
        top = np.argpartition(logits, -40)[-40:]
        scaled = logits[top].astype(np.float64) / temperature
        probs = np.exp(scaled - scaled.max())
        probs /= probs.sum()
        return int(top[rng.choice(len(top), p=probs)])


def _looping(text: bytes) -> bool:
    masked = _NUMBER.sub(b"0", text)
    if len(masked) < _LOOP_WINDOW * _LOOP_REPEATS:
        return False
    return masked.count(masked[-_LOOP_WINDOW:]) >= _LOOP_REPEATS


def _block_closed(text: bytes) -> bool:
    """Whether the reply has opened and then closed a code fence."""
    decoded = text.decode("utf-8", errors="ignore")
    first = decoded.find(_FENCE)
    return first >= 0 and decoded.find(_FENCE, first + len(_FENCE)) >= 0


__all__ = ["DecodeOptions", "DecodeReport", "Decoded", "LlamaDecoder", "PrefixStates", "lookup_draft"]
